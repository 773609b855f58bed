"""Fixtures shared by the end-to-end tests: trading decisions, and the headless browser."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from prediction_provider.trading.decisions import DecisionService
from prediction_provider.trading.specialists import STRATEGIES
from tests.conftest import Account, LiveServer
from tests.integration.database_fixtures import services_required

DECIDE = "/api/v1/predict"
CHROMIUM = "/usr/bin/chromium"


# Per module, not per session: the sync API runs an event loop in this thread while a browser is
# open, and the suite's async tests (pytest-asyncio) cannot start theirs until it is closed.
@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    missing = None
    if shutil.which(CHROMIUM) is None:
        missing = f"{CHROMIUM} is missing: apt-get install -y chromium (scripts/test.sh does)"
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing = "playwright is not installed: pip install -e '.[test]'"
    if missing is not None:
        if services_required():
            pytest.fail(missing)
        pytest.skip(missing)
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield launched
        launched.close()


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
