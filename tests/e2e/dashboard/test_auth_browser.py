"""Signing in and out in a real browser, each role's navigation, CSRF, the keyboard, and the admin page."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from prediction_provider.dashboard.nav import PAGES, visible_pages
from prediction_provider.dashboard.session import COOKIE
from prediction_provider.dashboard.views.login import FAILED
from tests.conftest import Account, LiveServer, live_settings
from tests.e2e.dashboard.conftest import Dash

pytestmark = pytest.mark.browser
ADMIN = "/dashboard/admin"
# A 401/403 page is an answer the browser reports on the console; these tests expect them.
REFUSED = ["status of 401", "status of 403", "status of 429"]


def fresh_account(server: LiveServer, role: str) -> Account:
    accounts = server.services.accounts
    name = f"browser-{role}-{uuid.uuid4().hex[:8]}"
    made = accounts.create_user(name, f"{name}@example.com", f"{name}-pw", role, active=True)
    return Account(name, f"{name}-pw", accounts.regenerate_api_key(made["id"])["api_key"], made["id"])


def fail_sign_in(dash: Dash, username: str) -> Any:
    dash.page.goto("/dashboard/login")
    dash.page.fill("#username", username)
    dash.page.fill("#password", "certainly-wrong")
    with dash.page.expect_response(
        lambda r: r.url.endswith("/dashboard/login") and r.request.method == "POST"
    ) as answer:
        dash.page.click("form:has(#password) button[type=submit]")
    dash.page.wait_for_load_state()
    return answer.value


def test_sign_in_and_sign_out(dash: Dash, accounts: dict[str, Account]) -> None:
    dash.sign_in(accounts["admin"], next_path=ADMIN)
    assert dash.page.url.endswith(ADMIN)
    assert dash.page.text_content(".who") == f"{accounts['admin'].username} (admin)"
    dash.sign_out()
    assert "/dashboard/login" in dash.page.url
    dash.expected_console.extend(REFUSED)
    dash.page.goto(ADMIN)
    assert "/dashboard/login?next=" in dash.page.url  # the old cookie is gone


def test_a_wrong_password_shows_the_generic_error(dash: Dash, accounts: dict[str, Account]) -> None:
    dash.expected_console.extend(REFUSED)
    answer = fail_sign_in(dash, accounts["client"].username)
    assert answer.status == 401
    assert dash.page.text_content("[data-error=login]") == FAILED
    unknown = fail_sign_in(dash, f"nobody-{uuid.uuid4().hex[:6]}")
    assert unknown.status == 401
    assert dash.page.text_content("[data-error=login]") == FAILED


@pytest.fixture(scope="module")
def strict_server(settings: Any, accounts: dict[str, Account]) -> Iterator[LiveServer]:
    strict = live_settings(settings, grpc_enabled=False, warm_models=[], login_lockout="3/minute")
    with LiveServer(strict) as server:
        yield server


def test_the_fourth_failed_sign_in_is_throttled(
    browser: Any, strict_server: LiveServer, accounts: dict[str, Account]
) -> None:
    dash = Dash(browser, strict_server.url)
    dash.expected_console.extend(REFUSED)
    try:
        for _ in range(3):
            assert fail_sign_in(dash, accounts["provider"].username).status == 401
        throttled = fail_sign_in(dash, accounts["provider"].username)
        assert throttled.status == 429
        assert int(throttled.headers["retry-after"]) >= 1
        assert "Too many failed sign-ins" in (dash.page.text_content("[data-error=login]") or "")
        dash.shot("login-throttled")
        assert dash.axe_serious() == []
    finally:
        dash.close()
    dash.check()


@pytest.mark.parametrize("role", ["admin", "operator", "provider", "client", "evaluator"])
def test_each_roles_navigation_and_a_forbidden_page(
    dash: Dash, accounts: dict[str, Account], role: str
) -> None:
    dash.expected_console.extend(REFUSED)
    dash.sign_in(accounts[role], next_path=ADMIN)
    links = dash.page.eval_on_selector_all(
        "nav[aria-label=Pages] a", "links => links.map(a => a.getAttribute('href'))"
    )
    assert links == [page.path for page in visible_pages(role)]
    answer = dash.page.goto(ADMIN)
    assert answer is not None
    if role in ("admin", "operator"):
        assert answer.status == 200
        assert dash.page.get_attribute("nav[aria-label=Pages] a[aria-current=page]", "href") == ADMIN
    hidden = [page.path for page in PAGES if page not in visible_pages(role)]
    assert (hidden == []) == (role == "admin")
    if hidden:
        refused = dash.page.goto(hidden[0])
        assert refused is not None
        assert refused.status == 403
        assert dash.page.get_attribute("[data-error-code]", "data-error-code") == "page_forbidden"
        assert dash.page.is_visible("text=Back to the dashboard")
        dash.shot(f"forbidden-{role}")
        assert dash.axe_serious() == []


def test_a_form_with_an_altered_csrf_token_is_refused(dash: Dash, accounts: dict[str, Account]) -> None:
    dash.expected_console.extend(REFUSED)
    dash.sign_in(accounts["admin"], next_path=ADMIN)
    dash.page.evaluate("document.querySelector('.signout input[name=csrf_token]').value = 'forged'")
    with dash.page.expect_response(lambda r: r.url.endswith("/dashboard/logout")) as answer:
        dash.page.click(".signout button[type=submit]")
    dash.page.wait_for_load_state()
    assert answer.value.status == 403
    assert dash.page.get_attribute("[data-error-code]", "data-error-code") == "csrf_refused"
    # Still signed in: the refused form changed nothing.
    assert dash.page.goto(ADMIN).status == 200  # type: ignore[union-attr]


def test_the_keyboard_reaches_the_navigation_and_focus_stays_visible(
    dash: Dash, accounts: dict[str, Account]
) -> None:
    dash.sign_in(accounts["operator"], next_path=f"{ADMIN}?section=audit")
    target = None
    for _ in range(30):
        dash.page.keyboard.press("Tab")
        focused = dash.page.evaluate(
            """() => { const el = document.activeElement;
                const style = getComputedStyle(el);
                return {href: el.getAttribute('href'), inNav: !!el.closest('nav[aria-label=Pages]'),
                        outline: style.outlineStyle, width: style.outlineWidth}; }"""
        )
        if focused["inNav"]:
            assert focused["outline"] != "none"
            assert focused["width"] != "0px"
            if focused["href"] == ADMIN:
                target = focused
                break
    assert target is not None, "Tab never reached the Admin link of the navigation"
    with dash.page.expect_navigation():
        dash.page.keyboard.press("Enter")
    assert dash.page.url.endswith(ADMIN)


def test_the_session_cookie_is_out_of_reach_of_scripts(dash: Dash, accounts: dict[str, Account]) -> None:
    dash.sign_in(accounts["operator"], next_path=ADMIN)
    assert COOKIE not in dash.page.evaluate("document.cookie")
    (cookie,) = [c for c in dash.context.cookies() if c["name"] == COOKIE]
    assert (cookie["httpOnly"], cookie["secure"], cookie["sameSite"], cookie["path"]) == (
        True, True, "Strict", "/"
    )  # fmt: skip


@pytest.mark.parametrize(
    ("role", "section"),
    [("admin", "users"), ("admin", "audit"), ("admin", "sessions"), ("operator", "audit")],
)
def test_admin_page_sections_are_accessible(
    dash: Dash, accounts: dict[str, Account], role: str, section: str
) -> None:
    dash.sign_in(accounts[role], next_path=f"{ADMIN}?section={section}")
    assert dash.page.is_visible(f"#admin-{section}")
    tabs = dash.page.eval_on_selector_all("nav.admin-tabs a", "links => links.map(a => a.textContent)")
    assert tabs == (["Users", "Audit log", "Dashboard sessions"] if role == "admin" else ["Audit log"])
    assert dash.page.locator(f"table[data-table={section}] tbody tr").count() >= 1
    dash.shot(f"admin-{section}-{role}")
    assert dash.axe_serious() == []
    assert dash.no_horizontal_overflow()


def test_the_admin_filters_the_audit_log_with_the_form(dash: Dash, accounts: dict[str, Account]) -> None:
    dash.sign_in(accounts["admin"], next_path=f"{ADMIN}?section=audit")
    dash.page.fill("#audit-user", accounts["admin"].username)
    dash.page.fill("#audit-path", "/dashboard/admin")
    with dash.page.expect_navigation():
        dash.page.click("text=Filter the log")
    assert re.search(r"[?&]user=test-admin", dash.page.url)
    users = set(
        dash.page.eval_on_selector_all(
            "tr[data-audit] td:nth-child(2)", "cells => cells.map(c => c.textContent)"
        )
    )
    assert users == {accounts["admin"].username}


def test_the_admin_revokes_a_session_and_its_next_page_is_sign_in(
    dash: Dash, browser: Any, dashboard_server: LiveServer, accounts: dict[str, Account]
) -> None:
    other = fresh_account(dashboard_server, "operator")
    victim = Dash(browser, dashboard_server.url)
    try:
        victim.sign_in(other, next_path=ADMIN)
        assert victim.page.url.endswith(ADMIN)
        dash.sign_in(accounts["admin"], next_path=f"{ADMIN}?section=sessions")
        row = dash.page.locator(f"tr[data-user='{other.username}']")
        assert row.count() == 1
        with dash.page.expect_navigation():
            row.locator("button", has_text="Revoke").click()  # the confirm dialog is accepted
        assert dash.page.url.endswith(f"{ADMIN}?section=sessions")
        assert dash.page.locator(f"tr[data-user='{other.username}']").count() == 0
        victim.expected_console.extend(REFUSED)
        victim.page.goto(f"{ADMIN}?section=audit")
        assert "/dashboard/login?next=" in victim.page.url
        assert victim.page.is_visible("#username")
    finally:
        victim.close()
    victim.check()
