"""Errors on dashboard routes: pages get a page (or a way to sign in), data routes the API's JSON."""

from __future__ import annotations

from urllib.parse import quote

from fastapi import Request
from starlette.responses import RedirectResponse, Response

from prediction_provider.dashboard.nav import PAGES
from prediction_provider.dashboard.render import render
from prediction_provider.dashboard.session import SignInRequired, Viewer, current_viewer
from prediction_provider.errors import PredictionProviderError

JSON_PREFIXES = ("/dashboard/data", "/dashboard/stream", "/dashboard/static")


def wants_json(request: Request) -> bool:
    return request.url.path.startswith(JSON_PREFIXES)


async def render_error(request: Request, status: int, code: str, message: str) -> Response | None:
    """The page for an error on a dashboard page; None leaves the API's JSON answer."""
    if wants_json(request):
        return None
    if status == 401 or code == SignInRequired.code:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        # Only a page can be returned to: after sign-in a POST-only path would answer 405.
        login = "/dashboard/login"
        if request.method == "GET":
            login += f"?next={quote(target, safe='')}"
        if request.headers.get("hx-request") == "true":
            return Response(status_code=401, headers={"HX-Redirect": login})
        return RedirectResponse(login, status_code=303)
    try:  # a 404 comes before any dependency ran: show the page signed in all the same
        viewer: Viewer | None = await current_viewer(request)
    except PredictionProviderError:
        viewer = None
    page = next((p for p in PAGES if p.path == request.url.path), None)
    return render(
        request, "error.html", viewer, page, status_code=status, status=status, code=code, message=message
    )
