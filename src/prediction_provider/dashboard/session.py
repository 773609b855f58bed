"""Who is looking at a dashboard page: the session cookie, CSRF tokens and the same-origin check.

The cookie is read here and nowhere else, and only for ``/dashboard`` routes: the API never
accepts it, so the API stays free of CSRF by construction. A viewer's ``Principal`` is the same
one an API key would give (``via="session"``) and is stored on ``request.state`` so the audit
entry names the user, and the dashboard's JSON routes call the same permission checks as the API.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated
from urllib.parse import urlsplit

from fastapi import Depends, Request, Response
from starlette.concurrency import run_in_threadpool

from prediction_provider.accounts.principal import Principal
from prediction_provider.accounts.web_sessions import WebSessions
from prediction_provider.api.auth import caller_key, client_address
from prediction_provider.api.deps import services_of
from prediction_provider.dashboard.nav import Page, may_see
from prediction_provider.errors import AuthenticationFailed, PermissionDenied

# __Host-: Secure, Path=/ and no Domain, so no subdomain or plain-http page can plant or read it.
COOKIE = "__Host-pp_session"
LOGIN_COOKIE = "__Host-pp_login"  # the pre-session nonce that the sign-in form's token is bound to
CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf_token"
PREFIX = "/dashboard"


class SignInRequired(AuthenticationFailed):
    """No live session: pages answer with a redirect to the sign-in page."""

    code = "sign_in_required"


class PageForbidden(PermissionDenied):
    code = "page_forbidden"


class CsrfRefused(PermissionDenied):
    code = "csrf_refused"


@dataclass(frozen=True, slots=True)
class Viewer:
    principal: Principal
    session_id: int
    csrf: str

    @property
    def role(self) -> str:
        return str(self.principal.role)

    @property
    def username(self) -> str:
        return self.principal.username or ""

    @property
    def user_id(self) -> int:
        assert self.principal.user_id is not None
        return self.principal.user_id


def web_sessions(request: Request) -> WebSessions:
    sessions: WebSessions | None = services_of(request).web_sessions
    if sessions is None:
        raise RuntimeError("the dashboard is not enabled")
    return sessions


def _mac(secret: str, purpose: str, value: str) -> str:
    return hmac.new(secret.encode(), f"{purpose}:{value}".encode(), hashlib.sha256).hexdigest()


def csrf_token(secret: str, digest: str) -> str:
    """The synchronizer token of a session: an HMAC of its stored digest, so nothing extra is stored."""
    return _mac(secret, "csrf", digest)


def login_token(secret: str, nonce: str) -> str:
    return _mac(secret, "login", nonce)


def new_login_nonce() -> str:
    return secrets.token_urlsafe(24)


async def current_viewer(request: Request) -> Viewer | None:
    """The signed-in viewer, or None; looked up once per request."""
    if hasattr(request.state, "viewer"):
        viewer: Viewer | None = request.state.viewer
        return viewer
    viewer = None
    token = request.cookies.get(COOKIE)
    if token and request.url.path.startswith(PREFIX):
        sessions = web_sessions(request)
        found = await run_in_threadpool(sessions.lookup, token)
        if found is not None:
            viewer = Viewer(found.principal, found.session_id, csrf_token(sessions.secret, found.digest))
            request.state.principal = found.principal  # the audit entry names the user
            services_of(request).throttle.request(caller_key(found.principal, client_address(request)))
    request.state.viewer = viewer
    return viewer


async def signed_in_viewer(request: Request) -> Viewer:
    viewer = await current_viewer(request)
    if viewer is None:
        raise SignInRequired("sign in to see this page")
    return viewer


SignedIn = Annotated[Viewer, Depends(signed_in_viewer)]


def page_viewer(page: Page) -> Callable[[Request], Awaitable[Viewer]]:
    """A dependency: a signed-in viewer whose role may see ``page`` (403 otherwise)."""

    async def dependency(request: Request) -> Viewer:
        viewer = await signed_in_viewer(request)
        if not may_see(viewer.principal.role, page):
            raise PageForbidden(
                f"the {viewer.role} role may not see the {page.title} page",
                {"page": page.key, "role": viewer.role},
            )
        return viewer

    return dependency


def safe_next(target: str | None) -> str:
    """Where to go after sign-in: a dashboard path on this origin only (no open redirect)."""
    if not target or not target.startswith(PREFIX) or target.startswith("//") or "\\" in target:
        return PREFIX
    parts = urlsplit(target)
    # Not /dashboardx, nor /dashboard/../api (browsers resolve dot segments, encoded ones too).
    inside = parts.path == PREFIX or parts.path.startswith(PREFIX + "/")
    inside = inside and ".." not in parts.path and "%2e" not in parts.path.lower()
    if parts.scheme or parts.netloc or not inside or parts.path.startswith(f"{PREFIX}/login"):
        return PREFIX
    return target


def same_origin(request: Request) -> bool:
    """Fetch Metadata first, then Origin: a state change must come from a page of this origin."""
    site = request.headers.get("sec-fetch-site")
    if site is not None and site != "same-origin":
        return False
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        return site == "same-origin" or origin is None
    host = request.headers.get("host", "")
    return urlsplit(origin).netloc == host


async def posted_token(request: Request) -> str:
    header = request.headers.get(CSRF_HEADER)
    if header:
        return header
    if request.headers.get("content-type", "").startswith(
        ("application/x-www-form-urlencoded", "multipart/form-data")
    ):
        form = await request.form()
        value = form.get(CSRF_FIELD)
        return value if isinstance(value, str) else ""
    return ""


def check_origin(request: Request) -> None:
    if not same_origin(request):
        raise CsrfRefused("cross-site request refused", {"reason": "origin"})


async def checked_viewer(request: Request) -> Viewer:
    """For every POST: a live session, a same-origin request and the session's synchronizer token."""
    check_origin(request)
    viewer = await signed_in_viewer(request)
    if not hmac.compare_digest((await posted_token(request)).encode(), viewer.csrf.encode()):
        raise CsrfRefused("missing or wrong CSRF token; reload the page", {"reason": "token"})
    return viewer


Checked = Annotated[Viewer, Depends(checked_viewer)]


def set_cookie(response: Response, name: str, value: str, max_age: int | None) -> None:
    response.set_cookie(name, value, max_age=max_age, path="/", secure=True, httponly=True, samesite="strict")


def clear_cookie(response: Response, name: str) -> None:
    response.delete_cookie(name, path="/", secure=True, httponly=True, samesite="strict")
