"""403 answers name the permission the route requires and the role that lacks it."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import MODEL, Account, LiveServer

# (role, method, path, body, the permissions the route requires)
REFUSALS = [
    ("operator", "GET", "/api/v1/accounts", None, ["manage_trading_accounts"]),
    (
        "evaluator",
        "POST",
        "/api/v1/accounts",
        {"name": "perm-evaluator", "equity": 1},
        ["manage_trading_accounts"],
    ),
    ("client", "GET", "/api/v1/admin/users", None, ["manage_users"]),
    (
        "client",
        "POST",
        "/api/v1/accounts",
        {"name": "perm-for-another", "equity": 1, "owner": "test-admin"},
        ["manage_users"],
    ),
    ("evaluator", "POST", "/predict", {"model": MODEL, "features": {}}, ["predict"]),
    ("client", "GET", "/api/v1/admin/logs", None, ["read_logs"]),
    ("evaluator", "GET", "/api/v1/decisions", None, ["predict", "read_all_jobs"]),
]


@pytest.mark.parametrize(
    ("role", "method", "path", "body", "required"), REFUSALS, ids=[f"{r[0]} {r[1]} {r[2]}" for r in REFUSALS]
)
def test_a_refusal_names_the_missing_permission(
    live_server: LiveServer,
    accounts: dict[str, Account],
    role: str,
    method: str,
    path: str,
    body: dict[str, object] | None,
    required: list[str],
) -> None:
    with httpx.Client(base_url=live_server.url, headers=accounts[role].headers, timeout=60) as http:
        response = http.request(method, path, json=body)
    assert response.status_code == 403, response.text
    error = response.json()["error"]
    assert error["code"] == "forbidden"
    assert error["details"] == {"required_permissions": required, "role": role}
    assert all(f"`{name}`" in error["message"] for name in required)
    assert f"the {role} role lacks" in error["message"]
    assert "may not predict" not in error["message"]


@pytest.mark.parametrize("role", ["client", "provider"])
def test_roles_that_trade_manage_their_trading_accounts(
    live_server: LiveServer, accounts: dict[str, Account], role: str
) -> None:
    with httpx.Client(base_url=live_server.url, headers=accounts[role].headers, timeout=60) as http:
        assert http.get("/api/v1/accounts").status_code == 200
