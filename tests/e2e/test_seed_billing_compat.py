"""The seed's billing API over the native marketplace, end to end on a manual-clock server: its
routes, field names and JSON numbers; a price change closes the old price; spend and earnings
after a completed request are the exact split; 402 over max_cost, 429 at the open-request cap;
admin-only routes; ``administrator`` accepted as a role."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal

import httpx
import pytest

from prediction_provider.config import Settings
from prediction_provider.ledger.money import split
from tests.conftest import Account, LiveServer, live_settings
from tests.market_helpers import deposit, own

MODEL = "eurusd-1h-forecast"
# Ahead of the wall clock: the suite's system-clock servers share the database, and their sweepers
# must never expire this module's leases, holds or deadlines.
START = datetime(2031, 3, 3, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def seed_server(settings: Settings, accounts: dict[str, Account]) -> Iterator[LiveServer]:
    changed = live_settings(
        settings, clock="manual", clock_start=START, grpc_enabled=False, job_poll_seconds=0.05
    )
    with LiveServer(changed) as server:
        yield server


def fresh(server: LiveServer, role: str) -> Account:
    """A new active account: its spend and billing start at zero, whatever ran before."""
    accounts = server.services.accounts
    name = f"seed-{role}-{uuid.uuid4().hex[:8]}"
    password = "seed-password-123"
    user = accounts.create_user(name, f"{name}@example.com", password, role, active=True)
    key = accounts.regenerate_api_key(user["id"])["api_key"]
    return Account(user["username"], password, key, user["id"])


def wait_done(http: httpx.Client, request_id: str, headers: dict[str, str]) -> dict:
    for _ in range(400):
        body = http.get(f"/api/v1/market/requests/{request_id}", headers=headers).json()
        if body["status"] in {"completed", "failed"}:
            return body
    raise AssertionError(body)


PRICING_FIELDS = {"id", "provider_id", "model_name", "price_per_request", "currency", "is_active"}


@pytest.fixture(scope="module")
def priced(seed_server: LiveServer, accounts: dict[str, Account]) -> dict:
    own(seed_server, MODEL, accounts["provider"])
    with httpx.Client(base_url=seed_server.url, timeout=30) as http:
        response = http.post(
            "/api/v1/provider/pricing",
            json={"model_name": MODEL, "price_per_request": 0.004, "currency": "USD"},
            headers=accounts["provider"].headers,
        )
    assert response.status_code == 201, response.text
    return response.json()


def test_pricing_set_list_and_a_change_closes_the_old_price(
    seed_server: LiveServer, accounts: dict[str, Account], priced: dict
) -> None:
    provider, admin, client = accounts["provider"], accounts["admin"], accounts["client"]
    assert set(priced) >= PRICING_FIELDS
    assert priced["price_per_request"] == 0.004
    assert isinstance(priced["price_per_request"], float)
    assert priced["is_active"] is True
    assert priced["model_name"] == MODEL
    assert priced["provider_id"] == provider.user_id
    assert priced["currency"] == "USD"
    with httpx.Client(base_url=seed_server.url, timeout=30) as http:
        changed = http.post(
            "/api/v1/provider/pricing", json={"model_name": MODEL, "price_per_request": "0.0025"},
            headers=provider.headers,
        )  # fmt: skip
        assert changed.status_code == 201, changed.text
        new = changed.json()
        assert new["id"] != priced["id"]
        assert new["offer_id"] == priced["offer_id"]
        assert new["price_per_request"] == 0.0025
        assert new["is_active"] is True
        mine = http.get("/api/v1/provider/pricing", headers=provider.headers)
        assert mine.status_code == 200
        rows = {row["id"]: row for row in mine.json()}
        assert rows[priced["id"]]["is_active"] is False
        assert rows[new["id"]]["is_active"] is True
        assert all(set(row) >= PRICING_FIELDS for row in rows.values())
        everyone = http.get("/api/v1/admin/pricing", headers=admin.headers)
        assert everyone.status_code == 200
        assert new["id"] in {row["id"] for row in everyone.json()}
        assert http.get("/api/v1/admin/pricing", headers=client.headers).status_code == 403
        by_client = http.post(
            "/api/v1/provider/pricing",
            json={"model_name": MODEL, "price_per_request": 1},
            headers=client.headers,
        )
        assert by_client.status_code == 403
        stranger = http.post(
            "/api/v1/provider/pricing", json={"model_name": "nobody-owns-this", "price_per_request": 1},
            headers=provider.headers,
        )  # fmt: skip
        assert stranger.status_code == 404
        assert "error" in stranger.json()
        bad = http.post(
            "/api/v1/provider/pricing", json={"model_name": MODEL, "price_per_request": 0.0000001},
            headers=provider.headers,
        )  # fmt: skip
        assert bad.status_code == 422


def test_a_completed_request_shows_in_spend_earnings_and_billing_exactly(
    seed_server: LiveServer, accounts: dict[str, Account], priced: dict, settings: Settings
) -> None:
    provider, admin = accounts["provider"], accounts["admin"]
    client = fresh(seed_server, "client")
    deposit(seed_server, client, "1.00")
    with httpx.Client(base_url=seed_server.url, timeout=30) as http:
        current = [
            row for row in http.get("/api/v1/provider/pricing", headers=provider.headers).json()
            if row["offer_id"] == priced["offer_id"] and row["is_active"]
        ]  # fmt: skip
        price = int(Decimal(str(current[0]["price_per_request"])) * 1_000_000)
        legs = split(price, settings.platform_fee_bps, 0)
        earned_before = http.get("/api/v1/provider/earnings?days=7", headers=provider.headers).json()
        summary_before = http.get("/api/v1/admin/billing/summary?days=7", headers=admin.headers).json()
        made = http.post(
            "/api/v1/client/predict",
            json={"model_name": MODEL, "symbol": "EURUSD", "horizon": 1, "max_cost": 0.01,
                  "priority": "normal", "notification_webhook": None},
            headers=client.headers,
        )  # fmt: skip
        assert made.status_code == 201, made.text
        body = made.json()
        assert body["request_id"] == body["id"]
        assert body["model_name"] == MODEL
        assert body["max_cost"] == 0.01
        assert body["cost"] == number(price)
        assert body["priority"] == "normal"
        assert wait_done(http, body["request_id"], client.headers)["status"] == "completed"

        spend = http.get("/api/v1/client/spend?days=7", headers=client.headers)
        assert spend.status_code == 200
        assert spend.json() == {
            "client_id": client.user_id, "period_days": 7, "total_spend": number(price),
            "total_requests": 1, "currency": "USD",
        }  # fmt: skip
        billing = http.get("/api/v1/client/billing?limit=10", headers=client.headers)
        assert billing.status_code == 200
        assert len(billing.json()) == 1
        row = billing.json()[0]
        assert {"id", "request_id", "model_name", "amount", "currency", "status", "created_at"} <= set(row)
        assert row["request_id"] == body["request_id"]
        assert row["amount"] == number(price)
        assert row["status"] == "completed"
        assert row["model_name"] == MODEL

        earned = http.get("/api/v1/provider/earnings?days=7", headers=provider.headers)
        assert earned.status_code == 200
        after = earned.json()
        assert {
            "provider_id",
            "period_days",
            "total_earnings",
            "total_requests",
            "currency",
            "by_model",
        } <= set(after)
        assert micros(after["total_earnings"]) - micros(earned_before["total_earnings"]) == legs.provider
        assert after["total_requests"] - earned_before["total_requests"] == 1
        assert MODEL in {entry["model_name"] for entry in after["by_model"]}

        summary = http.get("/api/v1/admin/billing/summary?days=7", headers=admin.headers)
        assert summary.status_code == 200
        totals = summary.json()
        assert {"total_revenue", "total_transactions", "unique_clients", "unique_providers", "period_days",
                "currency"} <= set(totals)  # fmt: skip
        assert micros(totals["total_revenue"]) - micros(summary_before["total_revenue"]) == price
        assert totals["total_transactions"] - summary_before["total_transactions"] == 1
        assert totals["unique_clients"] >= 1
        assert totals["unique_providers"] >= 1
        assert totals["period_days"] == 7
        everyone = http.get("/api/v1/admin/billing?limit=50", headers=admin.headers)
        assert everyone.status_code == 200
        assert body["request_id"] in {r["request_id"] for r in everyone.json()}
        for path in ("/api/v1/admin/billing", "/api/v1/admin/billing/summary"):
            assert http.get(path, headers=client.headers).status_code == 403
        assert http.get("/api/v1/provider/earnings", headers=client.headers).status_code == 403
        assert http.get("/api/v1/client/spend", headers=accounts["evaluator"].headers).status_code == 403


def test_over_max_cost_is_402_and_the_sixth_open_request_is_429(
    seed_server: LiveServer, accounts: dict[str, Account], priced: dict, settings: Settings
) -> None:
    provider = accounts["provider"]
    client = fresh(seed_server, "client")
    deposit(seed_server, client, "10.00")
    with httpx.Client(base_url=seed_server.url, timeout=30) as http:
        over = http.post(
            "/api/v1/client/predict",
            json={"model_name": MODEL, "symbol": "EURUSD", "horizon": 1, "max_cost": 0.000001},
            headers=client.headers,
        )
        assert over.status_code == 402
        assert over.json()["error"]["code"] == "max_cost_exceeded"
        evaluated = http.post(
            "/api/v1/market/offers",
            json={"model": MODEL, "target": "direction", "symbols": ["EURUSD"], "interval": "1h",
                  "horizons": [2], "price": "0.5", "execution": "evaluators", "evaluator_fee": "0.1"},
            headers=provider.headers,
        )  # fmt: skip
        assert evaluated.status_code == 201, evaluated.text
        offer_id = evaluated.json()["offer_id"]
        for _ in range(settings.max_open_requests):
            made = http.post(
                "/api/v1/client/predict", json={"model_name": MODEL, "offer_id": offer_id, "max_cost": 0.5},
                headers=client.headers,
            )  # fmt: skip
            assert made.status_code == 201, made.text
            assert made.json()["status"] == "queued"
        sixth = http.post(
            "/api/v1/client/predict", json={"model_name": MODEL, "offer_id": offer_id, "max_cost": 0.5},
            headers=client.headers,
        )  # fmt: skip
        assert sixth.status_code == 429, sixth.text
        spend = http.get("/api/v1/client/spend", headers=client.headers).json()
        assert spend["total_spend"] == 0.0
        assert spend["total_requests"] == 0


def test_administrator_is_accepted_as_a_role(seed_server: LiveServer, accounts: dict[str, Account]) -> None:
    name = f"seed-admin-{uuid.uuid4().hex[:8]}"
    with httpx.Client(base_url=seed_server.url, timeout=30) as http:
        made = http.post(
            "/api/v1/admin/users",
            json={"username": name, "email": f"{name}@example.com", "password": "seed-password-123",
                  "role": "administrator", "is_active": True},
            headers=accounts["admin"].headers,
        )  # fmt: skip
        assert made.status_code == 201, made.text
        assert made.json()["role"] == "admin"
        listed = http.get("/api/v1/admin/users?role=administrator", headers=accounts["admin"].headers)
        assert listed.status_code == 200, listed.text
    direct = seed_server.services.accounts.create_user(
        f"{name}-2", f"{name}-2@example.com", "seed-password-123", "administrator", active=True
    )
    assert direct["role"] == "admin"


def number(micro_units: int) -> float:
    return float(Decimal(micro_units) / Decimal(1_000_000))


def micros(value: float) -> int:
    return int(Decimal(str(value)) * 1_000_000)


def test_operators_read_the_billing_summary_but_no_ones_rows(
    seed_server: LiveServer, accounts: dict[str, Account]
) -> None:
    operator = accounts["operator"]
    with httpx.Client(base_url=seed_server.url, timeout=30) as http:
        summary = http.get("/api/v1/admin/billing/summary", params={"days": 7}, headers=operator.headers)
        assert summary.status_code == 200, summary.text
        assert set(summary.json()) >= {"total_revenue", "total_transactions", "unique_clients", "period_days"}
        rows = http.get("/api/v1/admin/billing", headers=operator.headers)
        assert rows.status_code == 403
