"""The Trading page over HTTP: decisions made through the API show with their action, and the
BUY/SELL/HOLD counts are the API's own for that user."""

from __future__ import annotations

import re
from collections import Counter

import httpx

from prediction_provider.trading.decisions import DecisionService
from tests.conftest import Account, LiveServer
from tests.dashboard_client import DashboardClient
from tests.e2e.conftest import DECIDE, TradeRequest
from tests.e2e.test_dashboard_jobs import second_client

TIMES = ("2017-09-01T12:00:00Z", "2017-10-02T12:00:00Z", "2018-01-10T12:00:00Z")


def decide(url: str, account: Account, bodies: list[dict[str, object]]) -> list[dict[str, object]]:
    with httpx.Client(base_url=url, headers=account.headers, timeout=60) as http:
        answers = [http.post(DECIDE, json=body) for body in bodies]
    assert all(a.status_code in (200, 403) for a in answers), [a.text for a in answers]
    return [a.json() if a.status_code == 200 else a.json()["error"]["details"]["decision"] for a in answers]


def api_counts(url: str, account: Account) -> Counter[str]:
    with httpx.Client(base_url=url, headers=account.headers, timeout=60) as http:
        page = http.get("/api/v1/decisions", params={"limit": 500}).json()
    assert page["total"] == len(page["items"])
    return Counter(item["action"] for item in page["items"])


def page_counts(html: str) -> dict[str, int]:
    found = re.findall(r'data-action-count="([A-Z]+)">[A-Z]+: <strong>(\d+)</strong>', html)
    return {action: int(count) for action, count in found}


def test_decisions_show_with_their_action_and_counts_equal_the_apis(
    live_server: LiveServer,
    accounts: dict[str, Account],
    decisions: DecisionService,
    trade_request: TradeRequest,
) -> None:
    trader = second_client(live_server.services, "trader")
    bodies = [trade_request.body] + [{"symbol": "EURUSD", "timestamp": t} for t in TIMES]
    answers = decide(live_server.url, trader, bodies)
    assert decisions.recorder is not None
    decisions.recorder.flush()
    account = f"acct-{trader.user_id}"
    with httpx.Client(base_url=live_server.url, headers=trader.headers, timeout=60) as http:
        assert http.post("/api/v1/accounts", json={"name": account, "equity": "10000"}).status_code == 201
        position = {"quantity": "2000", "average_price": "1.1", "market_price": "1.2", "sector": "fx"}
        assert http.put(f"/api/v1/accounts/{account}/positions/EURUSD", json=position).status_code == 200
    with DashboardClient(live_server.url, username=trader.username, password=trader.password) as dash:
        page = dash.get("/dashboard/trading")
        assert page.status_code == 200, page.text
        shown = dict(re.findall(r'data-decision-id="([0-9a-f]+)" data-action="([A-Z]+)"', page.text))
        for answer in answers:
            assert shown[str(answer["decision_id"])] == answer["action"]
        assert shown[str(answers[0]["decision_id"])] == trade_request.action
        expected = api_counts(live_server.url, trader)
        assert page_counts(page.text) == {a: expected.get(a, 0) for a in ("BUY", "SELL", "HOLD")}
        assert sum(page_counts(page.text).values()) == len(answers)
        assert 'data-chart="' in page.text
        assert "EURUSD close" in page.text  # the price chart
        # 2000 x 1.2 = 2400 of 10000 equity: leverage 24 %, against the account service's own figures.
        assert f'data-account="{account}"' in page.text
        assert re.search(r'<meter id="gauge-1-3"[^>]* value="0\.24"', page.text), page.text
        snapshot = dash.get(f"/dashboard/trading/decisions/{answers[0]['decision_id']}")
        assert snapshot.status_code == 200
        assert "Point-in-time features" in snapshot.text
        assert "rsi_14" in snapshot.text
        assert dash.get("/dashboard/trading", params={"symbol": "bad symbol!"}).status_code == 422
    client = accounts["client"]
    with DashboardClient(live_server.url, username=client.username, password=client.password) as other:
        theirs = other.get("/dashboard/trading").text
        assert str(answers[0]["decision_id"]) not in theirs
        assert other.get(f"/dashboard/trading/decisions/{answers[0]['decision_id']}").status_code == 404
    operator = accounts["operator"]
    with DashboardClient(live_server.url, username=operator.username, password=operator.password) as dash:
        page = dash.get("/dashboard/trading", params={"username": trader.username})
        assert page.status_code == 200
        assert str(answers[0]["decision_id"]) in page.text
        assert page_counts(page.text) == {a: expected.get(a, 0) for a in ("BUY", "SELL", "HOLD")}
        assert "this role sees none" in page.text  # the API refuses operators the account list
