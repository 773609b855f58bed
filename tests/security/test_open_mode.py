"""``PP_REQUIRE_AUTH=false``: predictions open to anonymous guests, and nothing else opens with them.

A dedicated server runs with ``require_auth=False`` on the suite's database.
Anonymous predictions must work (as ``guest``); a wrong credential must still
be refused rather than quietly downgraded to guest; and the account and admin
routes stay closed.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from prediction_provider.config import Settings
from prediction_provider.observability.audit import query_audit
from tests.conftest import MODEL, Account, LiveServer
from tests.security.support import assert_unauthorized, error_of, users_unchanged


@pytest.fixture(scope="module")
def open_server(settings: Settings, accounts: dict[str, Account]) -> Iterator[LiveServer]:
    with LiveServer(settings.model_copy(update={"require_auth": False})) as server:
        yield server


@pytest.fixture
def guest(open_server: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=open_server.url, timeout=60) as http:
        yield http


def test_anonymous_prediction_is_served_as_guest(
    guest: httpx.Client, open_server: LiveServer, feature_rows: list[dict[str, float]]
) -> None:
    with users_unchanged(open_server.services.db):
        response = guest.post(
            "/predict",
            json={"model": MODEL, "features": feature_rows[0]},
            headers={"X-Request-ID": "open-mode-guest-0001"},
        )
    assert response.status_code == 200, response.text
    assert response.json()["model"]["name"] == MODEL
    open_server.services.audit.flush()
    entries, _ = query_audit(open_server.services.db, path="/predict", limit=500)
    (entry,) = [e for e in entries if e["request_id"] == "open-mode-guest-0001"]
    assert (entry["role"], entry["user_id"], entry["username"]) == ("guest", None, None)


@pytest.mark.parametrize(
    "headers",
    [
        {"X-API-KEY": "pp_not-a-real-key"},
        {"X-API-KEY": "x"},
        {"Authorization": "Bearer not-a-token"},
        {"Authorization": "Basic dGVzdC1jbGllbnQ6Y2xpZW50LXBhc3N3b3JkLTEyMw=="},
    ],
    ids=["unknown-key", "short-key", "garbage-token", "basic-scheme"],
)
def test_wrong_credentials_are_refused_not_downgraded_to_guest(
    guest: httpx.Client,
    open_server: LiveServer,
    feature_rows: list[dict[str, float]],
    headers: dict[str, str],
) -> None:
    with users_unchanged(open_server.services.db):
        response = guest.post("/predict", json={"model": MODEL, "features": feature_rows[0]}, headers=headers)
    assert_unauthorized(response)


ADMIN_CALLS: list[tuple[str, str, dict[str, Any] | None]] = [
    ("GET", "/api/v1/admin/users", None),
    (
        "POST",
        "/api/v1/admin/users",
        {"username": "sec-open-mode", "email": "o@example.com", "password": "o" * 12},
    ),
    ("PUT", "/api/v1/admin/users/{client_id}", {"role": "admin"}),
    ("DELETE", "/api/v1/admin/users/{client_id}", None),
    ("POST", "/api/v1/admin/users/{client}/deactivate", None),
    ("GET", "/api/v1/admin/usage/{client}", None),
    ("GET", "/api/v1/admin/audit", None),
    ("GET", "/api/v1/admin/logs", None),
    ("GET", "/api/v1/admin/stats", None),
    ("GET", "/api/v1/admin/system/health", None),
]


@pytest.mark.parametrize(("method", "path", "body"), ADMIN_CALLS, ids=[f"{m} {p}" for m, p, _ in ADMIN_CALLS])
def test_anonymous_admin_routes_are_still_refused(
    guest: httpx.Client,
    open_server: LiveServer,
    accounts: dict[str, Account],
    method: str,
    path: str,
    body: dict[str, Any] | None,
) -> None:
    client = accounts["client"]
    with users_unchanged(open_server.services.db):
        response = guest.request(
            method, path.format(client_id=client.user_id, client=client.username), json=body
        )
    error_of(response, 403, "forbidden")


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/api/v1/users/profile", None),
        ("PUT", "/api/v1/users/profile", {"full_name": "guest"}),
        ("POST", "/api/v1/users/password", {"current_password": "x", "new_password": "guest-password-1"}),
        ("POST", "/api/v1/auth/regenerate-key", None),
    ],
)
def test_anonymous_account_routes_are_still_refused(
    guest: httpx.Client, open_server: LiveServer, method: str, path: str, body: dict[str, Any] | None
) -> None:
    with users_unchanged(open_server.services.db):
        response = guest.request(method, path, json=body)
    assert_unauthorized(response)


@pytest.mark.parametrize("action", ["load", "unload"])
def test_anonymous_guest_cannot_manage_models(
    guest: httpx.Client, open_server: LiveServer, action: str
) -> None:
    cached = len(open_server.services.cache)
    response = guest.post(f"/v2/repository/models/{MODEL}/{action}")
    assert response.status_code == 403, response.text
    assert set(response.json()) == {"error"}
    assert len(open_server.services.cache) == cached
