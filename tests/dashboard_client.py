"""A dashboard client for tests without a browser: signs in through the form, keeps the cookie.

The session cookie is ``__Host-`` and Secure, which httpx will not send over http; the client
sends it itself, as a browser on 127.0.0.1 does (Chromium treats loopback as a secure origin).
"""

from __future__ import annotations

import re
from typing import Any

import httpx

from prediction_provider.dashboard.session import COOKIE, LOGIN_COOKIE

CSRF_META = re.compile(r'<meta name="csrf-token" content="([^"]+)"')
LOGIN_FIELD = re.compile(r'name="csrf_token" value="([^"]+)"')


def cookie_from(response: httpx.Response, name: str) -> str | None:
    for header in response.headers.get_list("set-cookie"):
        key, _, rest = header.partition("=")
        if key.strip() == name:
            value = rest.split(";", 1)[0]
            return value or None
    return None


def login_form(http: httpx.Client) -> tuple[str, str]:
    """The sign-in form's token and its pre-session cookie."""
    page = http.get("/dashboard/login")
    assert page.status_code == 200, page.text
    match = LOGIN_FIELD.search(page.text)
    nonce = cookie_from(page, LOGIN_COOKIE)
    assert match, page.text
    assert nonce
    return match.group(1), nonce


def sign_in(http: httpx.Client, **credentials: str) -> httpx.Response:
    """POST the form with ``username``/``password`` or ``api_key``; the answer is not followed."""
    token, nonce = login_form(http)
    return http.post(
        "/dashboard/login",
        data={"csrf_token": token, **credentials},
        headers={"Cookie": f"{LOGIN_COOKIE}={nonce}"},
    )


class DashboardClient:
    """A signed-in browser, as far as HTTP goes."""

    def __init__(self, base_url: str, **credentials: str) -> None:
        self.http = httpx.Client(base_url=base_url, timeout=60, follow_redirects=False)
        answer = sign_in(self.http, **credentials)
        assert answer.status_code == 303, answer.text
        token = cookie_from(answer, COOKIE)
        assert token
        self.session = token

    @property
    def cookie(self) -> dict[str, str]:
        return {"Cookie": f"{COOKIE}={self.session}"}

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        headers = {**self.cookie, **kwargs.pop("headers", {})}
        return self.http.get(path, headers=headers, **kwargs)

    def csrf(self, path: str = "/dashboard/models") -> str:
        """The session's synchronizer token, from the <meta> of a page it can see."""
        page = self.get(path)
        match = CSRF_META.search(page.text)
        assert match, f"no CSRF token on {path} ({page.status_code})"
        return match.group(1)

    def post(self, path: str, data: dict[str, Any] | None = None, **kwargs: Any) -> httpx.Response:
        headers = {**self.cookie, **kwargs.pop("headers", {})}
        return self.http.post(path, data=data, headers=headers, **kwargs)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> DashboardClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
