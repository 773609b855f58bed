"""Mount the dashboard: its pages, its static files, and its error pages, in ``create_app``."""

from __future__ import annotations

import importlib
import os
import pkgutil

from fastapi import FastAPI
from starlette.responses import Response
from starlette.types import Scope

from prediction_provider.api.docs import DocsStaticFiles
from prediction_provider.dashboard.errors import render_error
from prediction_provider.dashboard.render import TEMPLATES_DIR

STATIC_DIR = TEMPLATES_DIR.parent / "static"
STATIC_PATH = "/dashboard/static"


def view_modules() -> list[str]:
    """Every module under ``dashboard/views``: one per page, each with a ``router``."""
    from prediction_provider.dashboard import views

    return sorted(info.name for info in pkgutil.iter_modules(views.__path__))


class ImmutableStaticFiles(DocsStaticFiles):
    """The vendored files carry their version in the name, so a browser may keep them for a year;
    the dashboard's own script and styles are revalidated, as the docs' files are."""

    def file_response(
        self,
        full_path: str | os.PathLike[str],
        stat_result: os.stat_result,
        scope: Scope,
        status_code: int = 200,
    ) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        if "/vendor/" in str(full_path).replace(os.sep, "/"):
            response.headers["Cache-Control"] = "public, max-age=31536000, immutable"
        return response


def install_dashboard(app: FastAPI) -> None:
    app.state.dashboard_error = render_error
    for name in view_modules():
        module = importlib.import_module(f"prediction_provider.dashboard.views.{name}")
        app.include_router(module.router)
    app.mount(STATIC_PATH, ImmutableStaticFiles(directory=STATIC_DIR), name="dashboard-static")
