"""Common rounds and ``route: best`` over HTTP on a server with a manual clock: a provider opts an
offer in, an admin runs a round now, the platform answers the benchmark account's free questions
(no money moves), the same round again asks nothing new; a quote by ``route: best`` says why it
chose its offer."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import httpx
import pytest
from sqlalchemy import func, select

from prediction_provider.config import Settings
from prediction_provider.db.ledger_models import LedgerTransfer
from tests.conftest import Account, LiveServer, live_settings
from tests.market_helpers import own

MODEL = "eurusd-1h-forecast"
# Ahead of the wall clock: the suite's system-clock servers share the database, and their sweepers
# must never expire this module's leases, holds or deadlines.
START = datetime(2031, 3, 3, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def server(settings: Settings, accounts: dict[str, Account]) -> Iterator[LiveServer]:
    changed = live_settings(
        settings, clock="manual", clock_start=START, grpc_enabled=False, job_poll_seconds=0.05
    )
    with LiveServer(changed) as live:
        yield live


def transfers(server: LiveServer) -> int:
    with server.services.db.session() as session:
        return int(session.scalar(select(func.count()).select_from(LedgerTransfer)) or 0)


def test_an_opted_in_offer_answers_a_round_for_free_once(
    server: LiveServer, accounts: dict[str, Account]
) -> None:
    provider, admin, client = accounts["provider"], accounts["admin"], accounts["client"]
    own(server, MODEL, provider)
    with httpx.Client(base_url=server.url, timeout=30) as http:
        made = http.post(
            "/api/v1/market/offers",
            json={"model": MODEL, "target": "direction", "symbols": ["EURUSD"], "interval": "1h",
                  "horizons": [1, 3], "price": "0.0025"},
            headers=provider.headers,
        )  # fmt: skip
        assert made.status_code == 201, made.text
        offer = made.json()
        assert offer["benchmark_opt_in"] is False
        try:
            opted = http.patch(
                f"/api/v1/market/offers/{offer['offer_id']}", json={"benchmark_opt_in": True},
                headers=provider.headers,
            )  # fmt: skip
            assert opted.status_code == 200, opted.text
            assert opted.json()["benchmark_opt_in"] is True
            assert http.post("/api/v1/admin/scoring/rounds", headers=client.headers).status_code == 403

            before = transfers(server)
            ran = http.post("/api/v1/admin/scoring/rounds", headers=admin.headers)
            assert ran.status_code == 200, ran.text
            report = ran.json()
            assert report["created"] == 2
            assert report["skipped"] == []
            again = http.post("/api/v1/admin/scoring/rounds", headers=admin.headers).json()
            assert again["created"] == 0
            assert again["existing"] == 2

            for request_id in report["request_ids"]:
                for _ in range(400):  # the in-process executor polls every 50 ms
                    body = http.get(f"/api/v1/market/requests/{request_id}", headers=admin.headers).json()
                    if body["status"] in ("completed", "failed"):
                        break
                assert body["status"] == "completed", body
                assert body["round"] == report["round_id"]
                assert body["money"]["price"] == "0.000000"
                assert body["money"]["charged"] == "0.000000"
            assert transfers(server) == before

            quoted = http.post(
                "/api/v1/market/quotes",
                json={"symbol": "EURUSD", "horizon": 1, "target": "direction", "route": "best"},
                headers=client.headers,
            )
            assert quoted.status_code == 201, quoted.text
            assert quoted.json()["route"] == "best"
            assert "cheapest" in quoted.json()["route_reason"]
        finally:  # later modules share the database: leave no offer asked by their rounds
            http.patch(
                f"/api/v1/market/offers/{offer['offer_id']}", json={"benchmark_opt_in": False},
                headers=provider.headers,
            )  # fmt: skip
