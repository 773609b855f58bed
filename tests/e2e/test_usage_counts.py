"""``/admin/stats`` and ``/admin/usage/{username}`` count failures the same way, by name:
``server_errors`` (status 500 and above) and ``rejected`` (400 to 499), never one mixed "errors"."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import httpx

from tests.conftest import Account, LiveServer


def test_stats_and_usage_split_server_errors_from_rejected_requests(
    live_server: LiveServer, accounts: dict[str, Account]
) -> None:
    services = live_server.services
    username = f"usage-{uuid.uuid4().hex[:10]}"
    user = services.accounts.create_user(
        username, f"{username}@example.com", "a long password", "client", active=True
    )
    key = services.accounts.regenerate_api_key(user["id"])["api_key"]
    with (
        httpx.Client(base_url=live_server.url, headers=accounts["admin"].headers, timeout=60) as admin,
        httpx.Client(base_url=live_server.url, headers={"X-API-KEY": key}, timeout=60) as caller,
    ):
        services.audit.flush()
        before = admin.get("/api/v1/admin/stats").json()
        for _ in range(2):
            assert caller.get("/models").status_code == 200
        assert caller.get("/models/no-such-model/info").status_code == 404
        assert caller.get("/models", params={"limit": 0}).status_code == 422
        assert caller.get("/api/v1/admin/stats").status_code == 403
        # A 5xx cannot be caused honestly from outside: two are written as the middleware writes them.
        for status in (500, 503):
            services.audit.record(audit_row(user, "/predict", status))
        services.audit.flush()
        after = admin.get("/api/v1/admin/stats").json()
        usage = admin.get(f"/api/v1/admin/usage/{username}").json()

    assert "errors_24h" not in after
    assert "errors" not in usage
    assert after["server_errors_24h"] - before["server_errors_24h"] == 2
    assert after["rejected_24h"] - before["rejected_24h"] == 3
    # Our 7 requests, and the first stats call itself.
    assert after["requests_24h"] - before["requests_24h"] == 8
    assert (usage["requests"], usage["server_errors"], usage["rejected"]) == (7, 2, 3)
    models = usage["by_path"]["/models"]
    assert (models["requests"], models["server_errors"], models["rejected"]) == (3, 0, 1)
    predict = usage["by_path"]["/predict"]
    assert (predict["requests"], predict["server_errors"], predict["rejected"]) == (2, 2, 0)


def audit_row(user: dict[str, Any], path: str, status: int) -> dict[str, Any]:
    return {
        "at": datetime.now(UTC), "request_id": f"usage-{uuid.uuid4().hex}", "user_id": user["id"],
        "username": user["username"], "role": user["role"], "method": "POST", "path": path,
        "status": status, "latency_ms": 2.0, "client_address": "127.0.0.1",
    }  # fmt: skip
