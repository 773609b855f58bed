"""``/docs`` (Swagger UI) and ``/redoc``, served with the package's own copies of their scripts.

FastAPI's own pages load Swagger UI and ReDoc from a CDN, which leaves a blank
page on a machine without internet access. The copies under ``api/static/``
come from the npm packages named in ``static/manifest.json`` (refreshed by
``scripts/vendor_docs_assets.sh``), and are served under ``/docs/static``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from starlette.responses import HTMLResponse, Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

STATIC_DIR = Path(__file__).resolve().parent / "static"
STATIC_PATH = "/docs/static"
DOCS_PATH = "/docs"
OAUTH2_REDIRECT_PATH = "/docs/oauth2-redirect"
REDOC_PATH = "/redoc"
SWAGGER_UI_PARAMETERS: dict[str, Any] = {
    # Swagger UI's default validator badge calls an outside service.
    "validatorUrl": None,
    # "Try it out" is open at once and the key survives a reload of the page.
    "tryItOutEnabled": True,
    "persistAuthorization": True,
    # Tags start closed: expanding every operation of the whole API at once (over 130 of them)
    # left the page showing the first three tags only.
    "docExpansion": "none",
}


class DocsStaticFiles(StaticFiles):
    """Static files that a browser may keep and revalidate (the app answers ``no-store`` by default)."""

    def file_response(
        self,
        full_path: str | os.PathLike[str],
        stat_result: os.stat_result,
        scope: Scope,
        status_code: int = 200,
    ) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        response.headers["Cache-Control"] = "no-cache"
        return response


def install_docs(app: FastAPI) -> None:
    """Serve the docs pages and their static files (``app`` built with ``docs_url=redoc_url=None``)."""
    openapi_url = app.openapi_url or "/openapi.json"
    title = app.title

    async def swagger_ui(request: Request) -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=openapi_url,
            title=f"{title} - Swagger UI",
            swagger_js_url=f"{STATIC_PATH}/swagger-ui/swagger-ui-bundle.js",
            swagger_css_url=f"{STATIC_PATH}/swagger-ui/swagger-ui.css",
            swagger_favicon_url=f"{STATIC_PATH}/swagger-ui/favicon-32x32.png",
            oauth2_redirect_url=OAUTH2_REDIRECT_PATH,
            swagger_ui_parameters=SWAGGER_UI_PARAMETERS,
        )

    async def oauth2_redirect(request: Request) -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    async def redoc(request: Request) -> HTMLResponse:
        return get_redoc_html(
            openapi_url=openapi_url,
            title=f"{title} - ReDoc",
            redoc_js_url=f"{STATIC_PATH}/redoc/redoc.standalone.js",
            redoc_favicon_url=f"{STATIC_PATH}/swagger-ui/favicon-32x32.png",
            with_google_fonts=False,
        )

    app.add_route(DOCS_PATH, swagger_ui, include_in_schema=False)
    app.add_route(OAUTH2_REDIRECT_PATH, oauth2_redirect, include_in_schema=False)
    app.add_route(REDOC_PATH, redoc, include_in_schema=False)
    app.mount(STATIC_PATH, DocsStaticFiles(directory=STATIC_DIR), name="docs-static")
