"""The dashboard's sign-in, session cookie, CSRF defences, role navigation and admin page, over HTTP.

Everything here is what a browser would do, sent by hand with httpx against the real server:
the cookie's flags, the answers a stranger's page would get, and the sign-outs that account
changes force.
"""

from __future__ import annotations

import importlib
import re
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from fastapi.routing import APIRoute

from prediction_provider.api.middleware import API_CSP, DASHBOARD_CSP
from prediction_provider.dashboard.nav import PAGES, landing, visible_pages
from prediction_provider.dashboard.routes import view_modules
from prediction_provider.dashboard.session import COOKIE, LOGIN_COOKIE
from prediction_provider.dashboard.views.login import FAILED
from tests.conftest import Account, LiveServer, live_settings
from tests.dashboard_client import DashboardClient, login_form, sign_in

NAV = re.compile(r'<nav aria-label="Pages">(.*?)</nav>', re.S)
HREF = re.compile(r'href="([^"]+)"')
LOGIN_ERROR = re.compile(r'data-error="login">([^<]*)<')
ERROR_CODE = re.compile(r'data-error-code="([^"]+)"')
PATH_PARAM = re.compile(r"\{[^}]+\}")
ROLES = ("admin", "operator", "provider", "client", "evaluator")


def error_code(page: httpx.Response) -> str | None:
    found = ERROR_CODE.search(page.text)
    return found.group(1) if found else None


def to_sign_in(answer: httpx.Response) -> bool:
    return answer.status_code == 303 and answer.headers["location"].startswith("/dashboard/login")


@pytest.fixture
def anon(live_server: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live_server.url, timeout=60, follow_redirects=False) as http:
        yield http


@pytest.fixture
def fresh_user(live_server: LiveServer) -> Callable[..., Account]:
    """A new account of its own (tests that deactivate or re-key must not touch the shared ones)."""

    def make(role: str = "client") -> Account:
        accounts = live_server.services.accounts
        name = f"dash-{role}-{uuid.uuid4().hex[:8]}"
        password = f"{name}-password"
        made = accounts.create_user(name, f"{name}@example.com", password, role, active=True)
        key = accounts.regenerate_api_key(made["id"])["api_key"]
        return Account(name, password, key, made["id"])

    return make


def dashboard_routes(prefix: str, with_params: bool = False) -> list[str]:
    """The dashboard's GET routes under ``prefix`` (from the view modules the app mounts); with
    ``with_params``, path parameters filled in with ``1``."""
    routes = [
        route for name in view_modules()
        for route in importlib.import_module(f"prediction_provider.dashboard.views.{name}").router.routes
    ]  # fmt: skip
    return [
        PATH_PARAM.sub("1", r.path) for r in routes
        if isinstance(r, APIRoute) and r.path.startswith(prefix) and "GET" in r.methods
        and (with_params or "{" not in r.path)
    ]  # fmt: skip


# -- sign-in -----------------------------------------------------------------------------------


@pytest.mark.parametrize("role", ROLES)
def test_password_sign_in_lands_on_the_roles_first_page_with_a_strict_cookie(
    anon: httpx.Client, accounts: dict[str, Account], role: str
) -> None:
    account = accounts[role]
    answer = sign_in(anon, username=account.username, password=account.password)
    assert answer.status_code == 303
    assert answer.headers["location"] == landing(role)
    (header,) = [h for h in answer.headers.get_list("set-cookie") if h.startswith(COOKIE + "=")]
    flags = {part.strip().lower() for part in header.split(";")[1:]}
    assert {"secure", "httponly", "samesite=strict", "path=/"} <= flags
    assert not any(flag.startswith("domain") for flag in flags)
    # The pre-session cookie of the form is dropped at sign-in.
    assert any(h.startswith(LOGIN_COOKIE + '=""') for h in answer.headers.get_list("set-cookie"))


def test_api_key_sign_in_gives_a_session(live_server: LiveServer, accounts: dict[str, Account]) -> None:
    with DashboardClient(live_server.url, api_key=accounts["operator"].api_key) as browser:
        page = browser.get("/dashboard/admin")
        assert page.status_code == 200
        assert 'data-role="operator"' in page.text
        assert accounts["operator"].api_key not in page.text


def test_a_failed_sign_in_reads_the_same_for_unknown_users_and_wrong_passwords(
    anon: httpx.Client, accounts: dict[str, Account]
) -> None:
    wrong = sign_in(anon, username=accounts["client"].username, password="not-the-password")
    unknown = sign_in(anon, username=f"nobody-{uuid.uuid4().hex[:6]}", password="not-the-password")
    answers = [wrong, unknown]
    for answer in answers:
        assert answer.status_code == 401
        assert COOKIE not in answer.headers.get("set-cookie", "")
    messages = [found.group(1) for found in (LOGIN_ERROR.search(a.text) for a in answers) if found]
    assert messages == [FAILED, FAILED]


def test_an_inactive_account_fails_like_a_wrong_password(
    anon: httpx.Client, live_server: LiveServer, fresh_user: Callable[..., Account]
) -> None:
    account = fresh_user()
    live_server.services.accounts.set_active(account.username, False)
    answer = sign_in(anon, username=account.username, password=account.password)
    assert answer.status_code == 401
    found = LOGIN_ERROR.search(answer.text)
    assert found is not None
    assert found.group(1) == FAILED
    by_key = sign_in(anon, api_key=account.api_key)
    assert by_key.status_code == 401


def test_sign_in_without_the_forms_cookie_is_refused(
    anon: httpx.Client, accounts: dict[str, Account]
) -> None:
    """Login CSRF: a stranger's page cannot sign a visitor in to the stranger's account."""
    token, _ = login_form(anon)
    account = accounts["client"]
    answer = anon.post(
        "/dashboard/login",
        data={"csrf_token": token, "username": account.username, "password": account.password},
    )
    assert answer.status_code == 403
    assert error_code(answer) == "csrf_refused"
    assert COOKIE not in answer.headers.get("set-cookie", "")


@pytest.mark.parametrize(
    "target",
    ["https://evil.example", "//evil.example/dashboard", "/\\evil.example", "/dashboard/login?next=x",
     "/api/v1/users/profile", "https:/dashboard", "/dashboardx/admin",
     "/dashboard/../api/v1/users/profile", "/dashboard/%2e%2e/docs"],
)  # fmt: skip
def test_next_never_leaves_the_dashboard(
    anon: httpx.Client, accounts: dict[str, Account], target: str
) -> None:
    account = accounts["admin"]
    answer = sign_in(anon, username=account.username, password=account.password, next=target)
    assert answer.status_code == 303
    assert answer.headers["location"] == landing("admin")


def test_next_returns_to_the_page_first_asked_for(anon: httpx.Client, accounts: dict[str, Account]) -> None:
    asked = anon.get("/dashboard/admin?section=audit")
    assert asked.status_code == 303
    assert asked.headers["location"] == "/dashboard/login?next=" + quote(
        "/dashboard/admin?section=audit", safe=""
    )
    account = accounts["admin"]
    answer = sign_in(
        anon, username=account.username, password=account.password, next="/dashboard/admin?section=audit"
    )
    assert answer.headers["location"] == "/dashboard/admin?section=audit"


# -- throttling --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def strict_server(settings: Any, accounts: dict[str, Account]) -> Iterator[LiveServer]:
    """Its own server: three failed sign-ins a minute per username, as in production."""
    strict = live_settings(settings, grpc_enabled=False, warm_models=[], login_lockout="3/minute")
    with LiveServer(strict) as server:
        yield server


def test_the_fourth_failure_in_a_minute_is_refused_with_the_wait(
    strict_server: LiveServer, accounts: dict[str, Account]
) -> None:
    account = accounts["evaluator"]
    with httpx.Client(base_url=strict_server.url, timeout=60, follow_redirects=False) as http:
        for _ in range(3):
            assert sign_in(http, username=account.username, password="wrong-password").status_code == 401
        refused = sign_in(http, username=account.username, password="wrong-password")
        assert refused.status_code == 429
        assert int(refused.headers["retry-after"]) >= 1
        assert "Too many failed sign-ins" in refused.text
        # Locked out even with the right password, until the window passes.
        right = sign_in(http, username=account.username, password=account.password)
        assert right.status_code == 429
        assert COOKIE not in right.headers.get("set-cookie", "")


# -- CSRF and the cookie's reach -----------------------------------------------------------------


def test_sign_out_needs_the_csrf_token_and_ends_the_session(
    live_server: LiveServer, accounts: dict[str, Account]
) -> None:
    with DashboardClient(live_server.url, username=accounts["client"].username,
                         password=accounts["client"].password) as browser:  # fmt: skip
        refused = browser.post("/dashboard/logout", {})
        assert refused.status_code == 403
        assert error_code(refused) == "csrf_refused"
        wrong = browser.post("/dashboard/logout", {"csrf_token": "0" * 64})
        assert wrong.status_code == 403
        token = browser.csrf("/dashboard/admin")
        done = browser.post("/dashboard/logout", {"csrf_token": token})
        assert done.status_code == 303
        assert done.headers["location"] == "/dashboard/login"
        assert to_sign_in(browser.get("/dashboard/admin"))


@pytest.mark.parametrize(
    "headers",
    [{"Origin": "https://evil.example"}, {"Sec-Fetch-Site": "cross-site"}, {"Sec-Fetch-Site": "same-site"},
     {"Origin": "null", "Sec-Fetch-Site": "cross-site"}],
)  # fmt: skip
def test_a_post_from_another_site_is_refused_even_with_the_token(
    live_server: LiveServer, accounts: dict[str, Account], headers: dict[str, str]
) -> None:
    with DashboardClient(live_server.url, username=accounts["client"].username,
                         password=accounts["client"].password) as browser:  # fmt: skip
        token = browser.csrf("/dashboard/admin")
        refused = browser.post("/dashboard/logout", {"csrf_token": token}, headers=headers)
        assert refused.status_code == 403
        assert error_code(refused) == "csrf_refused"
        # The session still stands: the refused request changed nothing.
        assert browser.get("/dashboard/admin").status_code == 403
        same = browser.post(
            "/dashboard/logout", {"csrf_token": token},
            headers={"Origin": live_server.url, "Sec-Fetch-Site": "same-origin"},
        )  # fmt: skip
        assert same.status_code == 303


def test_the_token_works_as_a_header_too(live_server: LiveServer, accounts: dict[str, Account]) -> None:
    with DashboardClient(live_server.url, api_key=accounts["client"].api_key) as browser:
        token = browser.csrf("/dashboard/admin")
        assert browser.post("/dashboard/logout", headers={"X-CSRF-Token": token}).status_code == 303


def test_the_api_never_reads_the_session_cookie(
    live_server: LiveServer, anon: httpx.Client, accounts: dict[str, Account]
) -> None:
    with DashboardClient(live_server.url, api_key=accounts["admin"].api_key) as browser:
        for path in ("/api/v1/users/profile", "/api/v1/admin/users"):
            answer = anon.get(path, headers=browser.cookie)
            assert answer.status_code == 401, path
            assert answer.headers["content-type"].startswith("application/json")


def test_dashboard_pages_carry_their_csp_and_the_api_keeps_its_own(
    live_server: LiveServer, anon: httpx.Client, accounts: dict[str, Account]
) -> None:
    assert anon.get("/dashboard/login").headers["content-security-policy"] == DASHBOARD_CSP
    with DashboardClient(live_server.url, api_key=accounts["admin"].api_key) as browser:
        page = browser.get("/dashboard/admin")
        assert page.headers["content-security-policy"] == DASHBOARD_CSP
        assert page.headers["x-frame-options"] == "DENY"
        assert "no-store" in page.headers.get("cache-control", "")
    api = anon.get("/api/v1/users/profile", headers=accounts["admin"].headers)
    assert api.status_code == 200
    assert api.headers["content-security-policy"] == API_CSP


def test_without_a_session_pages_redirect_and_data_answers_json(
    live_server: LiveServer, anon: httpx.Client
) -> None:
    page = anon.get("/dashboard/admin?section=users")
    assert page.status_code == 303
    assert page.headers["location"] == "/dashboard/login?next=" + quote(
        "/dashboard/admin?section=users", safe=""
    )
    htmx = anon.get("/dashboard/admin", headers={"HX-Request": "true"})
    assert htmx.status_code == 401
    assert htmx.headers["hx-redirect"].startswith("/dashboard/login?next=")
    json_routes = dashboard_routes("/dashboard/data", True) + dashboard_routes("/dashboard/stream", True)
    if not json_routes:
        pytest.skip("no /dashboard/data or /dashboard/stream route is mounted yet")
    for path in json_routes:
        answer = anon.get(path)
        assert answer.status_code == 401, path
        assert answer.json()["error"]["code"] in ("sign_in_required", "unauthorized"), path


# -- roles ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("role", ROLES)
def test_each_roles_navigation_lists_exactly_its_pages_and_others_answer_403(
    live_server: LiveServer, accounts: dict[str, Account], role: str
) -> None:
    mounted = set(dashboard_routes("/dashboard"))
    with DashboardClient(live_server.url, api_key=accounts[role].api_key) as browser:
        page = browser.get("/dashboard/admin")
        assert page.status_code in (200, 403)
        nav = NAV.search(page.text)
        assert nav is not None
        assert HREF.findall(nav.group(1)) == [p.path for p in visible_pages(role)]
        for hidden in (p for p in PAGES if p not in visible_pages(role) and p.path in mounted):
            refused = browser.get(hidden.path)
            assert refused.status_code == 403, hidden.path
            assert error_code(refused) == "page_forbidden", hidden.path
            assert refused.headers["content-security-policy"] == DASHBOARD_CSP


def test_a_client_on_the_admin_page_gets_the_403_page(
    live_server: LiveServer, accounts: dict[str, Account]
) -> None:
    with DashboardClient(live_server.url, api_key=accounts["client"].api_key) as browser:
        refused = browser.get("/dashboard/admin")
        assert refused.status_code == 403
        assert error_code(refused) == "page_forbidden"
        assert 'id="admin-users"' not in refused.text


# -- sessions ended by account changes ---------------------------------------------------------


def test_deactivating_the_user_ends_its_dashboard_session(
    live_server: LiveServer, accounts: dict[str, Account], fresh_user: Callable[..., Account]
) -> None:
    account = fresh_user("provider")
    with DashboardClient(live_server.url, username=account.username, password=account.password) as browser:
        assert browser.get("/dashboard/admin").status_code == 403  # signed in, not allowed there
        done = httpx.post(
            f"{live_server.url}/api/v1/admin/users/{account.username}/deactivate",
            headers=accounts["admin"].headers, timeout=60,
        )  # fmt: skip
        assert done.status_code == 200
        assert to_sign_in(browser.get("/dashboard/admin"))


def test_regenerating_the_api_key_ends_the_dashboard_session(
    live_server: LiveServer, fresh_user: Callable[..., Account]
) -> None:
    account = fresh_user("operator")
    with DashboardClient(live_server.url, username=account.username, password=account.password) as browser:
        assert browser.get("/dashboard/admin").status_code == 200
        done = httpx.post(
            f"{live_server.url}/api/v1/auth/regenerate-key", headers=account.headers, timeout=60
        )
        assert done.status_code == 200
        assert to_sign_in(browser.get("/dashboard/admin"))


# -- the admin page ------------------------------------------------------------------------------


def admin(live_server: LiveServer, accounts: dict[str, Account]) -> DashboardClient:
    return DashboardClient(
        live_server.url, username=accounts["admin"].username, password=accounts["admin"].password
    )


def test_the_admin_sees_three_sections_and_the_operator_only_the_audit_log(
    live_server: LiveServer, accounts: dict[str, Account]
) -> None:
    with admin(live_server, accounts) as browser:
        users = browser.get("/dashboard/admin")
        assert users.status_code == 200
        assert 'id="admin-users"' in users.text
        for section in ("users", "audit", "sessions"):
            assert f'href="/dashboard/admin?section={section}"' in users.text
        assert 'id="admin-audit"' in browser.get("/dashboard/admin?section=audit").text
        assert 'id="admin-sessions"' in browser.get("/dashboard/admin?section=sessions").text
    with DashboardClient(live_server.url, api_key=accounts["operator"].api_key) as browser:
        page = browser.get("/dashboard/admin")
        assert page.status_code == 200
        assert 'id="admin-audit"' in page.text
        assert "section=users" not in page.text
        assert "section=sessions" not in page.text
        for section in ("users", "sessions"):
            refused = browser.get(f"/dashboard/admin?section={section}")
            assert refused.status_code == 403
            assert error_code(refused) == "forbidden"
        token = browser.csrf("/dashboard/admin")
        post = browser.post(
            f"/dashboard/admin/users/{accounts['client'].username}/deactivate", {"csrf_token": token}
        )
        assert post.status_code == 403
        assert error_code(post) == "forbidden"
        assert live_server.services.accounts.get(accounts["client"].username)["is_active"] is True
        revoke = browser.post("/dashboard/admin/sessions/1/revoke", {"csrf_token": token})
        assert revoke.status_code == 403


def test_paging_is_by_offset_and_bounded(live_server: LiveServer, accounts: dict[str, Account]) -> None:
    with admin(live_server, accounts) as browser:
        assert browser.get("/dashboard/admin?section=users&page=2").status_code == 422
        assert browser.get("/dashboard/admin?section=users&offset=-1").status_code == 422
        assert browser.get("/dashboard/admin?section=audit&status=abc").status_code == 422
        assert browser.get("/dashboard/admin?section=audit&since=yesterday").status_code == 422
        assert browser.get("/dashboard/admin?section=nope").status_code == 422
        assert browser.get("/dashboard/admin?section=users&offset=100000").status_code == 200


def test_the_admin_finds_deactivates_and_activates_a_user(
    live_server: LiveServer, accounts: dict[str, Account], fresh_user: Callable[..., Account]
) -> None:
    target = fresh_user("client")
    with (
        admin(live_server, accounts) as browser,
        DashboardClient(live_server.url, api_key=target.api_key) as victim,
    ):
        found = browser.get(f"/dashboard/admin?section=users&q={target.username}&active=true&role=client")
        assert found.status_code == 200
        assert f'data-user="{target.username}"' in found.text
        assert "1 match" in found.text
        none = browser.get(f"/dashboard/admin?section=users&q={target.username}&role=admin")
        assert f'data-user="{target.username}"' not in none.text
        token = browser.csrf("/dashboard/admin")
        back = f"/dashboard/admin?section=users&q={target.username}"
        off = browser.post(
            f"/dashboard/admin/users/{target.username}/deactivate", {"csrf_token": token, "back": back}
        )
        assert off.status_code == 303
        assert off.headers["location"] == back
        assert live_server.services.accounts.get(target.username)["is_active"] is False
        assert to_sign_in(victim.get("/dashboard/models"))  # its session ended with it
        listed = browser.get(f"/dashboard/admin?section=users&q={target.username}&active=false")
        assert f'action="/dashboard/admin/users/{target.username}/activate"' in listed.text
        on = browser.post(
            f"/dashboard/admin/users/{target.username}/activate",
            {"csrf_token": token, "back": "https://evil.example"},
        )
        assert on.status_code == 303
        assert on.headers["location"] == "/dashboard/admin"
        assert live_server.services.accounts.get(target.username)["is_active"] is True
        # No CSRF token, no change.
        assert browser.post(f"/dashboard/admin/users/{target.username}/deactivate", {}).status_code == 403
        assert live_server.services.accounts.get(target.username)["is_active"] is True
        missing = browser.post("/dashboard/admin/users/no-such-user-xyz/deactivate", {"csrf_token": token})
        assert missing.status_code == 404
        myself = browser.post(
            f"/dashboard/admin/users/{accounts['admin'].username}/deactivate", {"csrf_token": token}
        )
        assert myself.status_code == 422
        assert live_server.services.accounts.get(accounts["admin"].username)["is_active"] is True


def wait_for(check: Callable[[], bool], seconds: float = 10) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.1)
    return check()


def test_the_audit_log_filters_by_user_path_status_and_time(
    live_server: LiveServer, accounts: dict[str, Account], fresh_user: Callable[..., Account]
) -> None:
    someone = fresh_user("provider")
    with DashboardClient(live_server.url, api_key=someone.api_key) as browser:
        assert browser.get("/dashboard/admin?section=audit").status_code == 403
    with DashboardClient(live_server.url, api_key=accounts["operator"].api_key) as operator:
        base = f"/dashboard/admin?section=audit&user={someone.username}"

        def rows(query: str) -> int:
            return operator.get(base + query).text.count('data-audit="')

        assert wait_for(lambda: rows("&path=/dashboard/admin&status=403") >= 1)
        assert rows("&status=500") == 0
        assert rows("&path=/api/") == 0
        assert rows("&since=2000-01-01T00:00") >= 1
        assert rows("&until=2000-01-01T00:00") == 0
        assert rows("&since=2999-01-01T00:00:00") == 0
        page = operator.get(base)
        assert "/api/v1/admin/audit?user=" in page.text  # the API request behind the table


def test_the_admin_revokes_another_session_and_it_must_sign_in_again(
    live_server: LiveServer, accounts: dict[str, Account], fresh_user: Callable[..., Account]
) -> None:
    other = fresh_user("evaluator")
    with (
        admin(live_server, accounts) as browser,
        DashboardClient(live_server.url, username=other.username, password=other.password) as victim,
    ):
        assert victim.get("/dashboard/admin").status_code == 403
        (row,) = live_server.services.web_sessions.active(limit=50, offset=0, user_id=other.user_id)[0]
        page = browser.get("/dashboard/admin?section=sessions")
        assert f'data-session="{row["id"]}"' in page.text
        assert "this session" in page.text  # the admin's own row has no revoke button
        token = browser.csrf("/dashboard/admin")
        done = browser.post(f"/dashboard/admin/sessions/{row['id']}/revoke", {"csrf_token": token})
        assert done.status_code == 303
        assert done.headers["location"] == "/dashboard/admin?section=sessions"
        assert to_sign_in(victim.get("/dashboard/admin"))
        assert f'data-session="{row["id"]}"' not in browser.get("/dashboard/admin?section=sessions").text
        assert browser.get("/dashboard/admin").status_code == 200  # the admin's own session is untouched


def test_a_form_posted_after_the_session_ended_asks_to_sign_in_without_a_post_only_next(
    live_server: LiveServer, accounts: dict[str, Account]
) -> None:
    with DashboardClient(live_server.url, api_key=accounts["client"].api_key) as browser:
        token = browser.csrf("/dashboard/admin")
        assert browser.post("/dashboard/logout", {"csrf_token": token}).status_code == 303
        late = browser.post("/dashboard/logout", {"csrf_token": token})
        assert late.status_code == 303
        assert late.headers["location"] == "/dashboard/login"
