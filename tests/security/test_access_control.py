"""Privilege escalation through the account and admin routes, with real lower-role credentials.

Horizontal: a non-admin editing, (de)activating or reading the usage of another
user. Vertical: a user raising its own role or reviving itself. Then credentials
that must have stopped working: a deactivated user's key and token, and a key
that was regenerated away. Every refusal is checked for its status and error
code, and the users table is compared column by column before and after.

There are no prediction-job routes yet (no ``/api/v1/predictions/{id}`` or the
like), so the classic IDOR on another user's job cannot be tried here; add it
when such routes exist.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from prediction_provider.db.session import Database
from tests.conftest import MODEL, Account, LiveServer
from tests.security.support import (
    assert_unauthorized,
    bearer,
    error_of,
    login,
    new_account,
    row_of,
    users_unchanged,
)

# (role, credential): every non-admin role, and the client with a bearer token as well as a key.
ATTACKERS = [
    ("client", "api_key"),
    ("client", "jwt"),
    ("provider", "api_key"),
    ("evaluator", "api_key"),
    ("operator", "api_key"),
]


def credentials_of(live_server: LiveServer, account: Account, via: str) -> dict[str, str]:
    if via == "api_key":
        return account.headers
    with httpx.Client(base_url=live_server.url, timeout=60) as http:
        return bearer(login(http, account.username, account.password))


@pytest.fixture(params=ATTACKERS, ids=[f"{role}-{via}" for role, via in ATTACKERS])
def attacker(
    request: pytest.FixtureRequest, live_server: LiveServer, accounts: dict[str, Account]
) -> Iterator[tuple[Account, httpx.Client]]:
    role, via = request.param
    account = accounts[role]
    headers = credentials_of(live_server, account, via)
    with httpx.Client(base_url=live_server.url, headers=headers, timeout=60) as http:
        yield account, http


@pytest.fixture(scope="module")
def dormant(live_server: LiveServer, accounts: dict[str, Account]) -> Account:
    """An inactive user: activating it is what an attacker would want."""
    with httpx.Client(base_url=live_server.url, headers=accounts["admin"].headers, timeout=60) as admin:
        account = new_account(admin, "sec-dormant", with_key=False)
        assert admin.post(f"/api/v1/admin/users/{account.username}/deactivate").status_code == 200
    return account


def peer_of(attacker: Account, accounts: dict[str, Account]) -> Account:
    """Another non-admin account than the attacker's."""
    return (
        accounts["evaluator"] if attacker.username != accounts["evaluator"].username else accounts["client"]
    )


@pytest.mark.parametrize("victim", ["admin", "peer"])
@pytest.mark.parametrize(
    "body",
    [{"role": "evaluator"}, {"is_active": False}, {"email": "attacker@evil.example"}, {"full_name": "pwned"}],
    ids=["demote", "deactivate", "steal-email", "rename"],
)
def test_non_admin_cannot_edit_another_user(
    attacker: tuple[Account, httpx.Client],
    accounts: dict[str, Account],
    db: Database,
    victim: str,
    body: dict[str, Any],
) -> None:
    account, http = attacker
    target = accounts["admin"] if victim == "admin" else peer_of(account, accounts)
    with users_unchanged(db):
        response = http.put(f"/api/v1/admin/users/{target.user_id}", json=body)
    error_of(response, 403, "forbidden")


@pytest.mark.parametrize("victim", ["admin", "peer"])
def test_non_admin_cannot_delete_another_user(
    attacker: tuple[Account, httpx.Client], accounts: dict[str, Account], db: Database, victim: str
) -> None:
    account, http = attacker
    target = accounts["admin"] if victim == "admin" else peer_of(account, accounts)
    with users_unchanged(db):
        response = http.delete(f"/api/v1/admin/users/{target.user_id}")
    error_of(response, 403, "forbidden")


def test_non_admin_cannot_activate_another_user(
    attacker: tuple[Account, httpx.Client], dormant: Account, db: Database
) -> None:
    _, http = attacker
    with users_unchanged(db):
        response = http.post(f"/api/v1/admin/users/{dormant.username}/activate")
    error_of(response, 403, "forbidden")
    assert row_of(db, dormant.user_id)["is_active"] is False


def test_non_admin_cannot_deactivate_another_user(
    attacker: tuple[Account, httpx.Client], accounts: dict[str, Account], db: Database
) -> None:
    account, http = attacker
    with users_unchanged(db):
        response = http.post(f"/api/v1/admin/users/{peer_of(account, accounts).username}/deactivate")
    error_of(response, 403, "forbidden")


@pytest.mark.parametrize("role", ["client", "provider", "evaluator"])
def test_roles_without_usage_permission_cannot_read_another_users_usage(
    live_server: LiveServer, accounts: dict[str, Account], db: Database, role: str
) -> None:
    headers = accounts[role].headers
    with httpx.Client(base_url=live_server.url, headers=headers, timeout=60) as http, users_unchanged(db):
        response = http.get(f"/api/v1/admin/usage/{accounts['admin'].username}")
    error_of(response, 403, "forbidden")


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"role": "admin"}, 403, "role_change_forbidden"),  # refused as the seed project's clients expect
        ({"is_active": True}, 422, "validation_error"),
        ({"full_name": "Harmless", "role": "admin"}, 403, "role_change_forbidden"),
        ({"is_admin": True}, 422, "validation_error"),
    ],
    ids=["role", "is_active", "role-beside-a-legal-field", "unknown-flag"],
)
def test_profile_update_cannot_raise_role_or_revive(
    client: httpx.Client,
    accounts: dict[str, Account],
    db: Database,
    body: dict[str, Any],
    status: int,
    code: str,
) -> None:
    with users_unchanged(db):
        response = client.put("/api/v1/users/profile", json=body)
    error_of(response, status, code)
    assert row_of(db, accounts["client"].user_id)["role"] == "client"


@pytest.mark.parametrize("body", [{"role": "admin"}, {"is_active": True}, {"role": "operator"}])
def test_client_cannot_edit_itself_through_the_admin_routes(
    client: httpx.Client, accounts: dict[str, Account], db: Database, body: dict[str, Any]
) -> None:
    with users_unchanged(db):
        response = client.put(f"/api/v1/admin/users/{accounts['client'].user_id}", json=body)
    error_of(response, 403, "forbidden")


def test_client_cannot_create_an_admin_account(client: httpx.Client, db: Database) -> None:
    body = {"username": "sec-sneaky-admin", "email": "sneaky@example.com", "password": "sneaky-password-1"}
    with users_unchanged(db):
        response = client.post("/api/v1/admin/users", json={**body, "role": "admin", "is_active": True})
    error_of(response, 403, "forbidden")


@pytest.fixture(scope="module")
def deactivated(live_server: LiveServer, accounts: dict[str, Account]) -> tuple[Account, str]:
    """A user that had a key and a token, then was deactivated by an admin."""
    with httpx.Client(base_url=live_server.url, headers=accounts["admin"].headers, timeout=60) as admin:
        account = new_account(admin, "sec-deactivated")
        token = login(admin, account.username, account.password)
        with httpx.Client(base_url=live_server.url, headers=account.headers, timeout=60) as own:
            assert own.get("/api/v1/users/profile").status_code == 200
        assert admin.post(f"/api/v1/admin/users/{account.username}/deactivate").json()["is_active"] is False
    return account, token


DEACTIVATED_CALLS = [
    ("GET", "/api/v1/users/profile", None),
    ("PUT", "/api/v1/users/profile", {"full_name": "back from the dead"}),
    ("POST", "/api/v1/auth/regenerate-key", None),
    ("POST", "/predict", {"model": MODEL, "features": {}}),
    ("POST", "/api/v1/admin/users/{username}/activate", None),
    ("POST", "/api/v1/predict/entry", {"datetime": "05.02.2018 10:00:00.000", "tp": 5, "sl": 5}),
    ("POST", "/api/v1/predict/exit", {"datetime": "05.02.2018 10:00:00.000", "direction": "buy"}),
    ("POST", "/api/v1/predict", {"symbol": "EURUSD"}),
    ("POST", "/api/v1/accounts", {"name": "sec-deactivated-account", "equity": 1}),
]


@pytest.mark.parametrize("via", ["api_key", "jwt"])
@pytest.mark.parametrize(
    ("method", "path", "body"), DEACTIVATED_CALLS, ids=[f"{m} {p}" for m, p, _ in DEACTIVATED_CALLS]
)
def test_deactivated_users_credentials_are_refused(
    live_server: LiveServer,
    deactivated: tuple[Account, str],
    db: Database,
    via: str,
    method: str,
    path: str,
    body: dict[str, Any] | None,
) -> None:
    account, token = deactivated
    headers = account.headers if via == "api_key" else bearer(token)
    with httpx.Client(base_url=live_server.url, headers=headers, timeout=60) as http, users_unchanged(db):
        response = http.request(method, path.format(username=account.username), json=body)
    error_of(response, 403, "account_inactive")


@pytest.mark.parametrize("route", ["/api/v1/auth/login", "/api/v1/auth/api-key"])
def test_deactivated_user_cannot_get_new_credentials(
    anonymous: httpx.Client, deactivated: tuple[Account, str], db: Database, route: str
) -> None:
    account, _ = deactivated
    with users_unchanged(db):
        response = anonymous.post(route, json={"username": account.username, "password": account.password})
    error_of(response, 403, "account_inactive")


def test_regenerated_away_key_is_refused(live_server: LiveServer, admin: httpx.Client, db: Database) -> None:
    account = new_account(admin, "sec-regenerated")
    with httpx.Client(base_url=live_server.url, headers=account.headers, timeout=60) as old:
        regenerated = old.post("/api/v1/auth/regenerate-key")
        assert regenerated.status_code == 200, regenerated.text
        new_key = regenerated.json()["api_key"]
        assert new_key != account.api_key
        with users_unchanged(db):
            refused = [
                old.get("/api/v1/users/profile"),
                old.put("/api/v1/users/profile", json={"full_name": "old key"}),
                # Regenerating again with the dead key would lock the owner out of the new one.
                old.post("/api/v1/auth/regenerate-key"),
                old.post("/predict", json={"model": MODEL, "features": {}}),
            ]
    for response in refused:
        assert_unauthorized(response)
    with httpx.Client(base_url=live_server.url, headers={"X-API-KEY": new_key}, timeout=60) as new:
        assert new.get("/api/v1/users/profile").json()["username"] == account.username


@pytest.mark.parametrize("via", ["api_key", "jwt"])
def test_demoted_admin_loses_admin_rights_at_once(
    live_server: LiveServer, admin: httpx.Client, accounts: dict[str, Account], db: Database, via: str
) -> None:
    """Credentials are cached for a moment; a role change must not wait for that to run out."""
    demoted = new_account(admin, "sec-demoted")
    assert admin.put(f"/api/v1/admin/users/{demoted.user_id}", json={"role": "admin"}).status_code == 200
    headers = credentials_of(live_server, demoted, via)
    victim = accounts["client"]
    with httpx.Client(base_url=live_server.url, headers=headers, timeout=60) as http:
        assert http.get("/api/v1/admin/users").status_code == 200  # an admin now, and so cached
        assert admin.put(f"/api/v1/admin/users/{demoted.user_id}", json={"role": "client"}).status_code == 200
        with users_unchanged(db):
            response = http.put(f"/api/v1/admin/users/{victim.user_id}", json={"role": "evaluator"})
    error_of(response, 403, "forbidden")


@pytest.mark.parametrize("role", ["client", "provider"])
def test_another_users_trading_decision_cannot_be_read(
    live_server: LiveServer, admin: httpx.Client, accounts: dict[str, Account], role: str
) -> None:
    """The IDOR on a recorded decision: not found, exactly like one that does not exist."""
    victim = new_account(admin, "sec-decider")
    with httpx.Client(base_url=live_server.url, headers=victim.headers, timeout=60) as own:
        decision_id = own.post("/api/v1/predict", json={"symbol": "EURUSD"}).json()["decision_id"]
    live_server.services.decisions.recorder.flush()
    assert admin.get(f"/api/v1/decisions/{decision_id}").status_code == 200
    with httpx.Client(base_url=live_server.url, headers=accounts[role].headers, timeout=60) as http:
        error_of(http.get(f"/api/v1/decisions/{decision_id}"), 404, "decision_not_found")
        listed = http.get("/api/v1/decisions", params={"username": victim.username, "limit": 500}).json()
    assert listed["items"] == []
