"""Sign in (password, or a one-time exchange of an API key for a session) and sign out.

Both checks go through ``Throttle.login_attempt``, the API's own login throttle, and every failure
reads the same, so the page tells nobody which usernames exist or which accounts are inactive.
The form carries a token bound to a pre-session cookie, against login CSRF.
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import APIRouter, Form, Query, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import RedirectResponse, Response

from prediction_provider.accounts.principal import Principal
from prediction_provider.api.auth import client_address
from prediction_provider.api.deps import services_of
from prediction_provider.api.query_params import DeclaredQueryOnly
from prediction_provider.dashboard.nav import landing
from prediction_provider.dashboard.render import render
from prediction_provider.dashboard.session import (
    COOKIE,
    LOGIN_COOKIE,
    Checked,
    CsrfRefused,
    check_origin,
    clear_cookie,
    current_viewer,
    login_token,
    new_login_nonce,
    safe_next,
    set_cookie,
    web_sessions,
)
from prediction_provider.errors import AuthenticationFailed, PermissionDenied, RateLimited

router = APIRouter(prefix="/dashboard", include_in_schema=False)
FAILED = "Sign-in failed: wrong username or password, or the account is not active."
FAILED_KEY = "Sign-in failed: the API key is unknown, revoked, or its account is not active."
MAX_FIELD = 256


def _form(request: Request, next_path: str, status: int = 200, error: str | None = None) -> Response:
    sessions = web_sessions(request)
    nonce = new_login_nonce()
    response = render(
        request, "login.html", None, None, status_code=status, next=safe_next(next_path), error=error,
        login_token=login_token(sessions.secret, nonce),
    )  # fmt: skip
    set_cookie(response, LOGIN_COOKIE, nonce, max_age=3600)
    return response


@router.get("/login")
async def login_page(
    request: Request,
    next: Annotated[str | None, Query(max_length=512)] = None,
    _query: DeclaredQueryOnly = None,
) -> Response:
    viewer = await current_viewer(request)
    if viewer is not None:
        return RedirectResponse(_after(next, viewer.principal), status_code=303)
    return _form(request, next or "")


def _after(next_path: str | None, principal: Principal) -> str:
    target = safe_next(next_path)
    return landing(principal.role) if target == "/dashboard" else target


@router.post("/login")
async def sign_in(
    request: Request,
    csrf_token: Annotated[str, Form(max_length=MAX_FIELD)] = "",
    username: Annotated[str, Form(max_length=MAX_FIELD)] = "",
    password: Annotated[str, Form(max_length=MAX_FIELD)] = "",
    api_key: Annotated[str, Form(max_length=MAX_FIELD)] = "",
    next: Annotated[str, Form(max_length=512)] = "",
) -> Response:
    check_origin(request)
    sessions = web_sessions(request)
    nonce = request.cookies.get(LOGIN_COOKIE, "")
    if not nonce or not hmac.compare_digest(
        csrf_token.encode(), login_token(sessions.secret, nonce).encode()
    ):
        raise CsrfRefused("the sign-in form expired; reload the page", {"reason": "login_token"})
    services = services_of(request)
    address = client_address(request)
    via = "api_key" if api_key else "password"
    try:
        if api_key:
            with services.throttle.login_attempt(f"api-key@{address}", address):
                principal = await run_in_threadpool(services.accounts.principal_for_key, api_key.strip())
        else:
            with services.throttle.login_attempt(username, address):
                principal = await run_in_threadpool(
                    services.accounts.principal_for_password, username, password
                )
    except RateLimited as exc:
        response = _form(request, next, 429, f"Too many failed sign-ins. Try again in {exc.retry_after} s.")
        response.headers["Retry-After"] = str(exc.retry_after)
        return response
    except (AuthenticationFailed, PermissionDenied):
        return _form(request, next, 401, FAILED_KEY if api_key else FAILED)
    old = request.cookies.get(COOKIE)
    if old:
        await run_in_threadpool(sessions.end, old)  # a new id at every sign-in: no session fixation
    token = await run_in_threadpool(
        sessions.create, principal, via, address, request.headers.get("user-agent")
    )
    request.state.principal = principal
    response = RedirectResponse(_after(next, principal), status_code=303)
    set_cookie(response, COOKIE, token, max_age=int(sessions.lifetime.total_seconds()))
    clear_cookie(response, LOGIN_COOKIE)
    return response


@router.post("/logout")
async def sign_out(request: Request, viewer: Checked) -> Response:
    token = request.cookies.get(COOKIE)
    if token:
        await run_in_threadpool(web_sessions(request).end, token)
    response = RedirectResponse("/dashboard/login", status_code=303)
    clear_cookie(response, COOKIE)
    return response
