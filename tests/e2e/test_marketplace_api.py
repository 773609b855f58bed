"""The marketplace end to end on a server with a manual clock: a provider offers a forecast model,
a client quotes and buys, the platform answers and the money moves exactly; what is refused
stores nothing; cancelled and expired requests cost nothing."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal

import httpx
import orjson
import pytest
from sqlalchemy import func, select

from prediction_provider.config import Settings
from prediction_provider.db.ledger_models import LedgerTransfer
from prediction_provider.db.models import PredictionJob
from prediction_provider.webhooks.signing import verify
from tests.conftest import Account, LiveServer, live_settings
from tests.market_helpers import deposit, own
from tests.webhook_receiver import WebhookReceiver

MODEL = "eurusd-1h-forecast"
# Ahead of the wall clock: the suite's system-clock servers share the database, and their sweepers
# must never expire this module's leases, holds or deadlines.
START = datetime(2031, 3, 3, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def market_server(settings: Settings, accounts: dict[str, Account]) -> Iterator[LiveServer]:
    changed = live_settings(
        settings,
        clock="manual",
        clock_start=START,
        grpc_enabled=False,
        job_poll_seconds=0.05,
        webhook_allow_private=True,
    )
    with LiveServer(changed) as server:
        yield server


def wallet(server: LiveServer, account: Account) -> tuple[int, int]:
    services = server.services
    with services.db.session() as session:
        balance = services.marketplace.journal.balance(session, f"client:{account.user_id}", "USD")
    return balance.available, balance.held


def wait_until(http: httpx.Client, path: str, headers: dict[str, str], done: set[str]) -> dict:
    for _ in range(400):
        body = http.get(path, headers=headers).json()
        if body["status"] in done:
            return body
        # the in-process executor polls every 50 ms; each GET is a round trip, no sleep needed
    raise AssertionError(body)


@pytest.fixture(scope="module")
def offer(market_server: LiveServer, accounts: dict[str, Account]) -> dict:
    own(market_server, MODEL, accounts["provider"])
    with httpx.Client(base_url=market_server.url, timeout=30) as http:
        response = http.post(
            "/api/v1/market/offers",
            json={
                "model": MODEL,
                "target": "direction",
                "symbols": ["EURUSD"],
                "interval": "1h",
                "horizons": [1, 3],
                "price": "0.0025",
                "execution": "platform",
            },
            headers=accounts["provider"].headers,
        )
    assert response.status_code == 201, response.text
    return response.json()


def test_a_client_buys_a_forecast_and_the_money_moves_exactly(
    market_server: LiveServer, accounts: dict[str, Account], offer: dict
) -> None:
    client = accounts["client"]
    deposit(market_server, client, "1.00")
    before, _ = wallet(market_server, client)
    assert offer["price"] == "0.002500"
    assert sum(Decimal(v) for v in offer["breakdown"].values()) == Decimal("0.0025")
    with httpx.Client(base_url=market_server.url, timeout=30) as http:
        quote = http.post(
            "/api/v1/market/quotes",
            json={"offer_id": offer["offer_id"], "symbol": "eurusd", "horizon": 3},
            headers=client.headers,
        )
        assert quote.status_code == 201, quote.text
        key = str(uuid.uuid4())
        submitted = http.post(
            "/api/v1/market/requests",
            json={"quote_id": quote.json()["quote_id"], "max_cost": "0.01"},
            headers={**client.headers, "Idempotency-Key": key},
        )
        assert submitted.status_code == 201, submitted.text
        body = submitted.json()
        assert body["status"] in {"queued", "running", "completed"}
        assert body["price"] == "0.002500"
        done = wait_until(
            http, f"/api/v1/market/requests/{body['request_id']}", client.headers, {"completed", "failed"}
        )
        assert done["status"] == "completed", done
        assert 0.0 <= done["result"]["output"]["p_up"] <= 1.0
        assert done["money"]["charged"] == "0.002500"
        assert done["money"]["held"] == "0.000000"
        replay = http.post(
            "/api/v1/market/requests",
            json={"quote_id": quote.json()["quote_id"], "max_cost": "0.01"},
            headers={**client.headers, "Idempotency-Key": key},
        )
        assert replay.json()["request_id"] == body["request_id"]
    after, held = wait_until_settled(market_server, client)
    assert before - after == 2500
    assert held == 0
    with market_server.services.db.session() as session:
        captures = session.scalar(
            select(func.count())
            .select_from(LedgerTransfer)
            .where(LedgerTransfer.request_id == body["request_id"], LedgerTransfer.kind == "capture")
        )
    assert captures == 1


def wait_until_settled(server: LiveServer, account: Account) -> tuple[int, int]:
    return wallet(server, account)


def test_refusals_store_nothing(market_server: LiveServer, accounts: dict[str, Account], offer: dict) -> None:
    client = accounts["client"]
    with market_server.services.db.session() as session:
        jobs_before = session.scalar(select(func.count()).select_from(PredictionJob))
        transfers_before = session.scalar(select(func.count()).select_from(LedgerTransfer))
    with httpx.Client(base_url=market_server.url, timeout=30) as http:
        over = http.post(
            "/api/v1/market/requests",
            json={"offer_id": offer["offer_id"], "symbol": "EURUSD", "horizon": 1, "max_cost": "0.001"},
            headers={**client.headers, "Idempotency-Key": str(uuid.uuid4())},
        )
        assert over.status_code == 402
        assert over.json()["error"]["code"] == "max_cost_exceeded"
        poor = accounts["evaluator"]  # holds PREDICT? no: evaluators may not buy
        missing = http.post(
            "/api/v1/market/requests",
            json={"offer_id": offer["offer_id"], "max_cost": "1"},
            headers=client.headers,
        )
        assert missing.status_code == 400
        assert missing.json()["error"]["code"] == "idempotency_key_missing"
        forbidden = http.post(
            "/api/v1/market/requests",
            json={"offer_id": offer["offer_id"], "max_cost": "1"},
            headers={**poor.headers, "Idempotency-Key": "k"},
        )
        assert forbidden.status_code == 403
        operator = accounts["operator"]
        broke = http.post(
            "/api/v1/market/requests",
            json={"offer_id": offer["offer_id"], "symbol": "EURUSD", "horizon": 1, "max_cost": "1"},
            headers={**accounts["provider"].headers, "Idempotency-Key": str(uuid.uuid4())},
        )
        assert broke.status_code == 402, broke.text
        assert broke.json()["error"]["code"] == "insufficient_funds"
        assert operator  # operators neither buy nor sell
    with market_server.services.db.session() as session:
        assert session.scalar(select(func.count()).select_from(PredictionJob)) == jobs_before
        assert session.scalar(select(func.count()).select_from(LedgerTransfer)) == transfers_before


def test_cancelled_and_expired_requests_cost_nothing(
    market_server: LiveServer, accounts: dict[str, Account], settings: Settings
) -> None:
    provider, client, admin = accounts["provider"], accounts["client"], accounts["admin"]
    deposit(market_server, client, "1.00")
    with httpx.Client(base_url=market_server.url, timeout=30) as http:
        evaluated = http.post(
            "/api/v1/market/offers",
            json={
                "model": MODEL,
                "target": "direction",
                "symbols": ["EURUSD"],
                "interval": "1h",
                "horizons": [2],
                "price": "0.5",
                "execution": "evaluators",
                "evaluator_fee": "0.1",
            },
            headers=provider.headers,
        ).json()
        before, _ = wallet(market_server, client)
        ids = []
        for _ in range(2):
            made = http.post(
                "/api/v1/market/requests",
                json={"offer_id": evaluated["offer_id"], "max_cost": "0.5"},
                headers={**client.headers, "Idempotency-Key": str(uuid.uuid4())},
            )
            assert made.status_code == 201, made.text
            assert made.json()["status"] == "queued"
            ids.append(made.json()["request_id"])
        assert wallet(market_server, client) == (before - 1_000_000, 1_000_000)
        cancelled = http.delete(f"/api/v1/market/requests/{ids[0]}", headers=client.headers)
        assert cancelled.status_code == 200
        assert cancelled.json()["refunded"] == "0.500000"
        again = http.delete(f"/api/v1/market/requests/{ids[0]}", headers=client.headers)
        assert again.status_code == 409
        assert again.json()["error"]["code"] == "not_cancellable"
        moved = http.post(
            "/api/v1/admin/clock", json={"advance_s": settings.request_ttl_s + 1}, headers=admin.headers
        )
        assert moved.status_code == 200, moved.text
        assert moved.json()["swept"]["expired"] >= 1
        expired = http.get(f"/api/v1/market/requests/{ids[1]}", headers=client.headers).json()
        assert expired["status"] == "expired"
        assert expired["money"]["charged"] == "0.000000"
    assert wallet(market_server, client) == (before, 0)


def test_the_clock_route_is_absent_on_the_system_clock(
    live_server: LiveServer, accounts: dict[str, Account]
) -> None:
    with httpx.Client(base_url=live_server.url, timeout=30) as http:
        response = http.post("/api/v1/admin/clock", json={"advance_s": 1}, headers=accounts["admin"].headers)
    assert response.status_code == 404


def test_a_spending_limit_stops_a_request_exactly_at_the_limit(
    market_server: LiveServer, accounts: dict[str, Account], offer: dict
) -> None:
    buyer = accounts["admin"]  # a wallet of its own, untouched by the other tests
    deposit(market_server, buyer, "1.00")
    with httpx.Client(base_url=market_server.url, timeout=30) as http:
        limited = http.put(
            "/api/v1/wallet/limits", json={"daily": "0.005", "currency": "USD"}, headers=buyer.headers
        )
        assert limited.status_code == 200, limited.text
        codes = []
        for _ in range(3):
            made = http.post(
                "/api/v1/market/requests",
                json={"offer_id": offer["offer_id"], "symbol": "EURUSD", "horizon": 1, "max_cost": "1"},
                headers={**buyer.headers, "Idempotency-Key": str(uuid.uuid4())},
            )
            codes.append((made.status_code, (made.json().get("error") or {}).get("code")))
    # 0.0025 twice fits 0.005 exactly; the third would exceed it
    assert codes[:2] == [(201, None), (201, None)]
    assert codes[2] == (402, "spending_limit_exceeded")


def test_every_step_of_a_request_is_announced_by_signed_webhooks(
    market_server: LiveServer, accounts: dict[str, Account], offer: dict
) -> None:
    buyer = accounts["operator"]  # operators cannot buy: a refused submit announces nothing
    client = accounts["client"]
    deposit(market_server, client, "1.00")
    with WebhookReceiver() as receiver, httpx.Client(base_url=market_server.url, timeout=30) as http:
        endpoint = http.post(
            "/api/v1/webhooks",
            json={"url": receiver.url, "events": ["prediction_request.*", "wallet.low_balance"]},
            headers=client.headers,
        )
        assert endpoint.status_code == 201, endpoint.text
        secret = endpoint.json()["secret"]
        unsafe = http.post(
            "/api/v1/market/requests",
            json={"offer_id": offer["offer_id"], "symbol": "EURUSD", "horizon": 1, "max_cost": "1",
                  "webhook_url": "http://user:pw@example.com/hook"},
            headers={**client.headers, "Idempotency-Key": str(uuid.uuid4())},
        )  # fmt: skip
        assert unsafe.status_code == 422
        refused = http.post(
            "/api/v1/market/requests",
            json={"offer_id": offer["offer_id"], "max_cost": "1"},
            headers={**buyer.headers, "Idempotency-Key": str(uuid.uuid4())},
        )
        assert refused.status_code == 403
        made = http.post(
            "/api/v1/market/requests",
            json={"offer_id": offer["offer_id"], "symbol": "EURUSD", "horizon": 1, "max_cost": "1"},
            headers={**client.headers, "Idempotency-Key": str(uuid.uuid4())},
        ).json()
        wait_until(http, f"/api/v1/market/requests/{made['request_id']}", client.headers, {"completed"})
        dispatcher = market_server.services.webhooks
        events: list[str] = []
        for _ in range(50):
            dispatcher.deliver_due(100)
            events = [orjson.loads(item.body)["type"] for item in receiver.received
                      if orjson.loads(item.body)["data"].get("request_id") == made["request_id"]
                      and orjson.loads(item.body)["type"].startswith("prediction_request.")]  # fmt: skip
            if len(events) == 2:
                break
        # delivered concurrently, so in any order: each step once
        assert sorted(events) == ["prediction_request.completed", "prediction_request.queued"]
        for item in receiver.received:
            verify(secret, item.headers, item.body, now=market_server.services.clock.now())
