"""/docs and /redoc in a real headless browser (Debian's chromium), with every outside host blocked.

A person on a machine without internet opens /docs, authorizes with an API key
and runs a protected route; ReDoc renders the same schema. No browser is
downloaded: playwright drives /usr/bin/chromium (scripts/test.sh installs it).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.conftest import Account, LiveServer

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}
# ReDoc's footer always shows Redocly's logo from their CDN; the docs' CSP refuses it (no request
# leaves the page) and ReDoc hides the broken image. Anything else refused would be a missing file.
REDOC_LOGO_REFUSED = "Loading the image 'https://cdn.redoc.ly/redoc/logo-mini.svg' violates"
PROTECTED = "/api/v1/users/profile"  # GET: the caller's own profile


class OfflinePage:
    """A page that may reach only this machine; what it tried elsewhere and what it logged are kept."""

    def __init__(self, browser: Any) -> None:
        self.context = browser.new_context()
        self.blocked: list[str] = []
        self.problems: list[str] = []
        self.context.route("**/*", self._only_local)
        self.page = self.context.new_page()
        self.page.set_default_timeout(30_000)
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda error: self.problems.append(str(error)))

    def _only_local(self, route: Any) -> None:
        if urlsplit(route.request.url).hostname in LOCAL_HOSTS:
            route.continue_()
        else:
            self.blocked.append(route.request.url)
            route.abort()

    def _console(self, message: Any) -> None:
        if message.type == "error":
            self.problems.append(message.text)

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def offline(browser: Any) -> Iterator[OfflinePage]:
    page = OfflinePage(browser)
    yield page
    page.close()


def test_swagger_ui_authorizes_with_an_api_key_and_runs_a_protected_route(
    offline: OfflinePage, live_server: LiveServer, accounts: dict[str, Account]
) -> None:
    page, key = offline.page, accounts["client"].api_key
    page.goto(f"{live_server.url}/docs")
    authorize = page.locator("button.authorize").first
    authorize.wait_for(state="visible")

    authorize.click()
    api_key_form = page.locator(".auth-container").filter(has_text="X-API-KEY")
    api_key_form.locator("input").fill(key)
    api_key_form.locator("button.authorize").click()
    api_key_form.locator("h6", has_text="Authorized").wait_for()  # the key is applied
    api_key_form.locator("button.btn-done").click()

    page.locator('.opblock-tag[data-tag="users"]').click()  # tags start closed
    operation = page.locator(".opblock.opblock-get").filter(has=page.locator(f'[data-path="{PROTECTED}"]'))
    operation.locator(".opblock-summary").click()
    opened = operation.and_(page.locator(".is-open"))
    with page.expect_response(lambda response: response.url.endswith(PROTECTED)) as answered:
        opened.locator("button.execute").click()
    response = answered.value
    assert response.request.headers.get("x-api-key") == key
    assert response.status == 200
    assert response.json()["username"] == accounts["client"].username
    shown = opened.locator(".live-responses-table tbody .response-col_status").first
    shown.wait_for()
    assert shown.inner_text().strip() == "200"  # what the page shows its user
    assert offline.blocked == []
    assert offline.problems == []


def test_redoc_renders_the_schema(offline: OfflinePage, live_server: LiveServer) -> None:
    page = offline.page
    page.goto(f"{live_server.url}/redoc")
    page.get_by_role("heading", name="Prediction Provider").first.wait_for()
    page.get_by_role("heading", name="Predict one row").first.wait_for()
    assert page.locator(".api-content").count() == 1
    assert offline.blocked == []
    assert [problem for problem in offline.problems if not problem.startswith(REDOC_LOGO_REFUSED)] == []
