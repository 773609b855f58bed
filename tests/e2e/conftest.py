"""Fixtures shared by the end-to-end tests of trading decisions."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from prediction_provider.trading.decisions import DecisionService
from prediction_provider.trading.specialists import STRATEGIES
from tests.conftest import Account, LiveServer

DECIDE = "/api/v1/predict"


@pytest.fixture(scope="module")
def decisions(live_server: LiveServer) -> DecisionService:
    service: DecisionService = live_server.services.decisions
    return service


@dataclass(frozen=True, slots=True)
class TradeRequest:
    body: dict[str, Any]
    action: str  # what the server decided for body: BUY or SELL


@pytest.fixture(scope="module")
def trade_request(live_server: LiveServer, accounts: dict[str, Account]) -> TradeRequest:
    """A request whose decision is BUY or SELL with a size, for the risk checks to bite on."""
    with httpx.Client(base_url=live_server.url, headers=accounts["client"].headers, timeout=60) as http:
        for timestamp in (None, "2018-01-10T12:00:00Z", "2017-11-01T09:00:00Z", "2017-06-15T15:00:00Z"):
            for strategy in STRATEGIES:
                body = {"symbol": "EURUSD", "strategy_override": strategy, "timestamp": timestamp}
                answer = http.post(DECIDE, json=body).json()
                if answer["action"] != "HOLD" and answer["recommended_quantity"] > 0:
                    return TradeRequest(body, answer["action"])
    pytest.fail("no EURUSD decision other than HOLD at any of the tried times and strategies")
