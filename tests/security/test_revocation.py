"""Over HTTP, on the shared live server (credentials are cached there): a key that was rotated
away, by its owner's password or by an admin, and the keys and tokens of a user who was
deactivated, never work again, whichever route did it, even after a reactivation."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from tests.conftest import Account, LiveServer
from tests.security.support import assert_unauthorized, bearer, error_of, login, new_account

PROFILE = "/api/v1/users/profile"


def works(live_server: LiveServer, headers: dict[str, str]) -> bool:
    """Whether these credentials are accepted; a refusal must be the plain 401."""
    with httpx.Client(base_url=live_server.url, headers=headers, timeout=60) as http:
        response = http.get(PROFILE)
    if response.status_code == 200:
        return True
    assert_unauthorized(response)
    return False


def test_the_password_route_rotates_an_existing_key(live_server: LiveServer, admin: httpx.Client) -> None:
    account = new_account(admin, "sec-rotated")
    assert works(live_server, account.headers)  # and so remembered by the server
    credentials = {"username": account.username, "password": account.password}
    with httpx.Client(base_url=live_server.url, timeout=60) as anonymous:
        rotated = anonymous.post("/api/v1/auth/api-key", json=credentials)
    assert rotated.status_code == 201, rotated.text
    assert rotated.json()["replaced"] is True
    assert not works(live_server, account.headers)
    assert works(live_server, {"X-API-KEY": rotated.json()["api_key"]})


def test_an_admin_issues_a_key_without_the_password_and_the_audit_names_the_user(
    live_server: LiveServer, admin: httpx.Client, accounts: dict[str, Account]
) -> None:
    account = new_account(admin, "sec-issued")
    assert works(live_server, account.headers)
    issued = admin.post(f"/api/v1/admin/users/{account.username}/api-key")
    assert issued.status_code == 201, issued.text
    assert issued.json()["username"] == account.username
    assert issued.json()["replaced"] is True
    assert not works(live_server, account.headers)
    assert works(live_server, {"X-API-KEY": issued.json()["api_key"]})
    live_server.services.audit.flush()
    path = f"/api/v1/admin/users/{account.username}/api-key"
    entries = admin.get("/api/v1/admin/audit", params={"path": path}).json()["entries"]
    assert [(e["username"], e["method"], e["status"]) for e in entries] == [
        (accounts["admin"].username, "POST", 201)
    ]


@pytest.mark.parametrize("role", ["client", "operator", "provider"])
def test_only_user_managers_issue_keys_for_others(
    live_server: LiveServer, admin: httpx.Client, accounts: dict[str, Account], role: str
) -> None:
    victim = new_account(admin, "sec-not-issued")
    with httpx.Client(base_url=live_server.url, headers=accounts[role].headers, timeout=60) as http:
        refused = http.post(f"/api/v1/admin/users/{victim.username}/api-key")
    assert error_of(refused, 403, "forbidden")["details"]["required_permissions"] == ["manage_users"]
    assert works(live_server, victim.headers)


def test_issuing_a_key_for_an_unknown_user_answers_404(admin: httpx.Client) -> None:
    error_of(admin.post("/api/v1/admin/users/no-such-user-at-all/api-key"), 404, "user_not_found")


Deactivation = Callable[[httpx.Client, Account], httpx.Response]
DEACTIVATIONS: dict[str, Deactivation] = {
    "POST deactivate": lambda admin, a: admin.post(f"/api/v1/admin/users/{a.username}/deactivate"),
    "PUT is_active false": lambda admin, a: admin.put(
        f"/api/v1/admin/users/{a.user_id}", json={"is_active": False}
    ),
    "DELETE": lambda admin, a: admin.delete(f"/api/v1/admin/users/{a.user_id}"),
}


@pytest.mark.parametrize("deactivation", list(DEACTIVATIONS))
def test_a_reactivation_does_not_revive_the_key_or_token_from_before(
    live_server: LiveServer, admin: httpx.Client, deactivation: str
) -> None:
    account = new_account(admin, "sec-revived")
    with httpx.Client(base_url=live_server.url, timeout=60) as anonymous:
        token = bearer(login(anonymous, account.username, account.password))
    assert works(live_server, account.headers)
    assert works(live_server, token)
    response = DEACTIVATIONS[deactivation](admin, account)
    assert response.status_code == 200, response.text
    assert response.json()["is_active"] is False
    with httpx.Client(base_url=live_server.url, headers=account.headers, timeout=60) as http:
        error_of(http.get(PROFILE), 403, "account_inactive")
    reactivated = admin.post(f"/api/v1/admin/users/{account.username}/activate")
    assert reactivated.json()["is_active"] is True
    assert reactivated.json()["has_api_key"] is False
    assert not works(live_server, account.headers)
    assert not works(live_server, token)
    with httpx.Client(base_url=live_server.url, timeout=60) as anonymous:
        fresh = bearer(login(anonymous, account.username, account.password))
        new_key = anonymous.post(
            "/api/v1/auth/api-key", json={"username": account.username, "password": account.password}
        ).json()["api_key"]
    assert works(live_server, fresh)
    assert works(live_server, {"X-API-KEY": new_key})
