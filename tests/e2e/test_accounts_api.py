"""Accounts over HTTP: login, keys, profile, admin user management, the audit trail."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import MODEL, Account, LiveServer


@pytest.fixture
def admin(live_server: LiveServer, accounts: dict[str, Account]) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live_server.url, headers=accounts["admin"].headers, timeout=30) as http:
        yield http


def test_login_gives_a_bearer_token_that_works(anonymous: httpx.Client, accounts: dict[str, Account]) -> None:
    client = accounts["client"]
    token = anonymous.post(
        "/api/v1/auth/login", json={"username": client.username, "password": client.password}
    )
    assert token.status_code == 200
    headers = {"Authorization": f"Bearer {token.json()['access_token']}"}
    profile = anonymous.get("/api/v1/users/profile", headers=headers)
    assert profile.json()["username"] == client.username
    wrong = anonymous.post("/api/v1/auth/login", json={"username": client.username, "password": "nope"})
    assert wrong.status_code == 401
    assert wrong.json()["error"]["code"] == "unauthorized"
    assert "WWW-Authenticate" in wrong.headers


def test_user_lifecycle_from_creation_to_revocation(
    admin: httpx.Client, anonymous: httpx.Client, feature_rows: list[dict[str, float]]
) -> None:
    created = admin.post("/api/v1/admin/users", json={
        "username": "lifecycle", "email": "lifecycle@example.com", "password": "lifecycle-pass-1",
    })  # fmt: skip
    assert created.status_code == 201
    assert created.json()["is_active"] is False
    credentials = {"username": "lifecycle", "password": "lifecycle-pass-1"}
    assert anonymous.post("/api/v1/auth/api-key", json=credentials).status_code == 403
    assert admin.post("/api/v1/admin/users/lifecycle/activate").json()["is_active"] is True
    issued = anonymous.post("/api/v1/auth/api-key", json=credentials)
    assert issued.status_code == 201
    assert issued.json()["replaced"] is False
    rotated = anonymous.post("/api/v1/auth/api-key", json=credentials)
    assert rotated.status_code == 201
    assert rotated.json()["replaced"] is True
    predict = {"model": MODEL, "features": feature_rows[0]}
    assert (
        anonymous.post("/predict", json=predict, headers={"X-API-KEY": issued.json()["api_key"]}).status_code
        == 401
    )
    key = rotated.json()["api_key"]
    assert anonymous.post("/predict", json=predict, headers={"X-API-KEY": key}).status_code == 200
    regenerated = anonymous.post("/api/v1/auth/regenerate-key", headers={"X-API-KEY": key}).json()["api_key"]
    assert anonymous.post("/predict", json=predict, headers={"X-API-KEY": key}).status_code == 401
    assert anonymous.post("/predict", json=predict, headers={"X-API-KEY": regenerated}).status_code == 200
    user_id = created.json()["id"]
    assert admin.delete(f"/api/v1/admin/users/{user_id}").json()["is_active"] is False
    refused = anonymous.post("/predict", json=predict, headers={"X-API-KEY": regenerated})
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "account_inactive"


def test_profile_edits_cannot_touch_role_or_active_flag(client: httpx.Client) -> None:
    raised = client.put("/api/v1/users/profile", json={"role": "admin"})
    assert raised.status_code == 403
    assert raised.json()["error"]["code"] == "role_change_forbidden"
    revived = client.put("/api/v1/users/profile", json={"is_active": True})
    assert revived.status_code == 422
    renamed = client.put("/api/v1/users/profile", json={"full_name": "Test Client"})
    assert renamed.json()["full_name"] == "Test Client"
    assert renamed.json()["role"] == "client"


def test_password_change(anonymous: httpx.Client, admin: httpx.Client) -> None:
    new_user = {"username": "changer", "email": "changer@example.com", "password": "first-password-1"}
    admin.post("/api/v1/admin/users", json={**new_user, "is_active": True})
    token = anonymous.post("/api/v1/auth/login", json={"username": "changer", "password": "first-password-1"})
    headers = {"Authorization": f"Bearer {token.json()['access_token']}"}
    body = {"current_password": "first-password-1", "new_password": "second-password-2"}
    assert anonymous.post("/api/v1/users/password", json=body, headers=headers).status_code == 204
    login = {"username": "changer", "password": "second-password-2"}
    assert anonymous.post("/api/v1/auth/login", json=login).status_code == 200


def test_admin_lists_users_with_filters(admin: httpx.Client) -> None:
    page = admin.get("/api/v1/admin/users", params={"role": "operator", "active": True}).json()
    assert page["total"] >= 1
    assert all(u["role"] == "operator" and u["is_active"] for u in page["users"])
    paged = admin.get("/api/v1/admin/users", params={"limit": 2, "offset": 1}).json()
    assert (len(paged["users"]), paged["limit"], paged["offset"]) == (2, 2, 1)
    first = admin.get("/api/v1/admin/users", params={"limit": 3}).json()
    assert [u["id"] for u in first["users"][1:]] == [u["id"] for u in paged["users"]]
    assert first["total"] == paged["total"] >= 3
    assert "password_hash" not in paged["users"][0]
    assert "api_key_digest" not in paged["users"][0]


def test_roles_gate_the_admin_routes(
    client: httpx.Client, accounts: dict[str, Account], live_server: LiveServer
) -> None:
    assert client.get("/api/v1/admin/users").status_code == 403
    assert client.get("/api/v1/admin/audit").status_code == 403
    with httpx.Client(base_url=live_server.url, headers=accounts["operator"].headers) as operator:
        assert operator.get("/api/v1/admin/audit").status_code == 200
        assert operator.get("/api/v1/admin/stats").status_code == 200
        assert operator.post("/api/v1/admin/users", json={}).status_code == 403
    with httpx.Client(base_url=live_server.url, headers=accounts["evaluator"].headers) as evaluator:
        assert evaluator.post("/predict", json={"model": MODEL, "features": {}}).status_code == 403


def test_every_request_lands_in_the_audit_trail(
    client: httpx.Client, admin: httpx.Client, live_server: LiveServer, accounts: dict[str, Account]
) -> None:
    response = client.get("/models", headers={"X-Request-ID": "audit-check-0001"})
    assert response.headers["X-Request-ID"] == "audit-check-0001"
    live_server.services.audit.flush()
    entries = admin.get(
        "/api/v1/admin/audit", params={"user": accounts["client"].username, "path": "/models"}
    )
    matching = [e for e in entries.json()["entries"] if e["request_id"] == "audit-check-0001"]
    assert len(matching) == 1
    entry = matching[0]
    assert (entry["method"], entry["status"], entry["role"]) == ("GET", 200, "client")
    assert entry["client_address"] == "127.0.0.1"
    usage = admin.get(f"/api/v1/admin/usage/{accounts['client'].username}").json()
    assert usage["requests"] >= 1


def test_the_audit_trail_cannot_be_edited_or_deleted(admin: httpx.Client) -> None:
    for method in ("PUT", "DELETE", "PATCH"):
        response = admin.request(method, "/api/v1/admin/audit")
        assert response.status_code == 405
        assert response.json()["error"]["code"] == "method_not_allowed"


def test_security_headers_on_every_response(anonymous: httpx.Client) -> None:
    for response in (anonymous.get("/health"), anonymous.get("/no/such/path"), anonymous.get("/models")):
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["X-Frame-Options"] == "DENY"
        assert "default-src 'none'" in response.headers["Content-Security-Policy"]
        assert response.headers["X-Request-ID"]
    docs_policy = anonymous.get("/docs").headers["Content-Security-Policy"]
    assert "script-src 'self' 'unsafe-inline';" in docs_policy
    assert "https:" not in docs_policy  # the docs load nothing from outside the server


def test_no_cross_origin_access_by_default(anonymous: httpx.Client) -> None:
    preflight = anonymous.options(
        "/predict", headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}
    )
    assert "access-control-allow-origin" not in preflight.headers


def test_system_health_and_stats(admin: httpx.Client) -> None:
    health = admin.get("/api/v1/admin/system/health").json()
    assert health["database"] is True
    assert health["registry"] is True
    stats = admin.get("/api/v1/admin/stats").json()
    assert stats["users_by_role"]["admin"] >= 1
