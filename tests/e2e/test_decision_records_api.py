"""``/api/v1/decisions`` over real HTTP: every answered decision can be read back, refused ones too,
by its maker and by admins and operators only; and the server writes what is queued when it stops."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from datetime import datetime
from decimal import Decimal
from typing import Any

import httpx
import numpy as np
import pytest
from sqlalchemy import select

from prediction_provider.config import Settings
from prediction_provider.db.models import TradingDecision
from prediction_provider.db.session import Database
from prediction_provider.features.pipeline import FEATURE_NAMES
from prediction_provider.trading.decisions import DecisionService
from tests.conftest import Account, LiveServer
from tests.e2e.conftest import TradeRequest
from tests.security.support import error_of

DECIDE = "/api/v1/predict"
DECISIONS = "/api/v1/decisions"


def written(decisions: DecisionService) -> None:
    """Wait until every decision answered so far is in the database."""
    assert decisions.recorder is not None
    decisions.recorder.flush()


@pytest.fixture
def other(live_server: LiveServer, accounts: dict[str, Account]) -> Iterator[httpx.Client]:
    """Another account that may predict."""
    with httpx.Client(base_url=live_server.url, headers=accounts["provider"].headers, timeout=60) as http:
        yield http


def as_role(live_server: LiveServer, account: Account) -> httpx.Client:
    return httpx.Client(base_url=live_server.url, headers=account.headers, timeout=60)


def test_an_answered_decision_reads_back_as_it_was_answered(
    client: httpx.Client, decisions: DecisionService, accounts: dict[str, Account]
) -> None:
    answer = client.post(DECIDE, json={"symbol": "EURUSD", "timestamp": "2017-09-01T12:00:00Z"}).json()
    written(decisions)
    response = client.get(f"{DECISIONS}/{answer['decision_id']}")
    assert response.status_code == 200, response.text
    record = response.json()
    metadata = answer["metadata"]
    assert record["decision_id"] == answer["decision_id"]
    assert (record["username"], record["user_id"]) == ("test-client", accounts["client"].user_id)
    assert (record["symbol"], record["action"], record["account"]) == ("EURUSD", answer["action"], None)
    assert record["confidence"] == answer["confidence"]
    assert Decimal(record["recommended_quantity"]) == Decimal(str(answer["recommended_quantity"]))
    assert record["regime_probabilities"] == answer["regime_probabilities"]
    assert record["strategy_weights"] == answer["strategy_weights"]
    assert record["risk_checks"] == answer["risk_validation"]["checks"]
    assert record["risk_warnings"] == answer["risk_validation"]["warnings"]
    assert (record["approved"], record["reason_codes"]) == (True, [])
    assert f"{record['model_name']}:{record['model_version']}" == metadata["model_version"]
    assert record["feature_hash"] == metadata["feature_hash"]
    assert datetime.fromisoformat(record["data_as_of"]) == datetime.fromisoformat(metadata["data_as_of"])
    assert datetime.fromisoformat(record["created_at"]) == datetime.fromisoformat(metadata["timestamp"])


def test_the_feature_hash_is_that_of_the_point_in_time_features(
    client: httpx.Client, decisions: DecisionService
) -> None:
    answer = client.post(DECIDE, json={"symbol": "EURUSD", "timestamp": "2017-09-01T12:00:00Z"}).json()
    snapshot = decisions.market.snapshot("EURUSD", datetime.fromisoformat(answer["metadata"]["data_as_of"]))
    row = np.asarray([snapshot.values[name] for name in FEATURE_NAMES], dtype="<f8")
    assert answer["metadata"]["feature_hash"] == hashlib.sha256(row.tobytes()).hexdigest()
    again = client.post(DECIDE, json={"symbol": "EURUSD", "timestamp": "2017-09-01T12:00:00Z"}).json()
    assert again["metadata"]["feature_hash"] == answer["metadata"]["feature_hash"]
    later = client.post(DECIDE, json={"symbol": "EURUSD", "timestamp": "2017-09-04T12:00:00Z"}).json()
    assert later["metadata"]["feature_hash"] != answer["metadata"]["feature_hash"]


def test_a_decision_refused_by_the_risk_checks_is_recorded(
    client: httpx.Client, decisions: DecisionService, trade_request: TradeRequest
) -> None:
    name = f"acct-{uuid.uuid4().hex[:12]}"
    client.post("/api/v1/accounts", json={"name": name, "equity": "100000"}).raise_for_status()
    client.put(f"/api/v1/accounts/{name}", json={"equity": "97500"}).raise_for_status()
    refused = client.post(DECIDE, json={**trade_request.body, "account": name})
    answer = error_of(refused, 403, "risk_rejected")["details"]["decision"]
    written(decisions)
    record = client.get(f"{DECISIONS}/{answer['decision_id']}").json()
    assert (record["approved"], record["account"]) == (False, name)
    assert record["reason_codes"] == ["daily_loss_limit_reached"]
    assert record["feature_hash"] == answer["metadata"]["feature_hash"]


def test_the_list_holds_only_your_own_decisions_newest_first(
    client: httpx.Client, other: httpx.Client, decisions: DecisionService
) -> None:
    mine = [client.post(DECIDE, json={"symbol": s}).json()["decision_id"] for s in ("EURUSD", "GOOG")]
    theirs = other.post(DECIDE, json={"symbol": "EURUSD"}).json()["decision_id"]
    written(decisions)
    page = client.get(DECISIONS, params={"limit": 500}).json()
    ids = [item["decision_id"] for item in page["items"]]
    assert {item["username"] for item in page["items"]} == {"test-client"}
    assert theirs not in ids
    assert ids.index(mine[1]) < ids.index(mine[0])
    created = [item["created_at"] for item in page["items"]]
    assert created == sorted(created, reverse=True)
    only_goog = client.get(DECISIONS, params={"symbol": "goog"}).json()
    assert mine[1] in [item["decision_id"] for item in only_goog["items"]]
    assert {item["symbol"] for item in only_goog["items"]} == {"GOOG"}
    first, second = (client.get(DECISIONS, params={"limit": 1, "offset": n}).json() for n in (0, 1))
    assert first["total"] == second["total"] >= 2
    assert (first["limit"], second["offset"]) == (1, 1)
    assert first["items"][0]["decision_id"] != second["items"][0]["decision_id"]


def test_another_callers_decision_is_not_found(
    client: httpx.Client, other: httpx.Client, decisions: DecisionService
) -> None:
    decision_id = client.post(DECIDE, json={"symbol": "EURUSD"}).json()["decision_id"]
    written(decisions)
    error = error_of(other.get(f"{DECISIONS}/{decision_id}"), 404, "decision_not_found")
    assert error["details"] == {"decision_id": decision_id}
    assert decision_id not in [item["decision_id"] for item in other.get(DECISIONS).json()["items"]]
    unknown = client.get(f"{DECISIONS}/{uuid.uuid4().hex}")
    error_of(unknown, 404, "decision_not_found")


@pytest.mark.parametrize("role", ["operator", "admin"])
def test_operators_and_admins_read_everyones_decisions(
    live_server: LiveServer,
    client: httpx.Client,
    accounts: dict[str, Account],
    decisions: DecisionService,
    role: str,
) -> None:
    decision_id = client.post(DECIDE, json={"symbol": "EURUSD"}).json()["decision_id"]
    written(decisions)
    with as_role(live_server, accounts[role]) as http:
        assert http.get(f"{DECISIONS}/{decision_id}").json()["username"] == "test-client"
        page = http.get(DECISIONS, params={"username": "test-client", "limit": 500}).json()
    assert decision_id in [item["decision_id"] for item in page["items"]]


def test_roles_that_may_neither_predict_nor_see_all_are_refused(
    live_server: LiveServer, accounts: dict[str, Account]
) -> None:
    with as_role(live_server, accounts["evaluator"]) as http:
        error_of(http.get(DECISIONS), 403, "forbidden")
        error_of(http.get(f"{DECISIONS}/{uuid.uuid4().hex}"), 403, "forbidden")


def test_anonymous_callers_are_refused(anonymous: httpx.Client) -> None:
    error_of(anonymous.get(DECISIONS), 401, "unauthorized")
    error_of(anonymous.get(f"{DECISIONS}/{uuid.uuid4().hex}"), 401, "unauthorized")


@pytest.mark.parametrize(
    "params", [{"limit": 0}, {"limit": 501}, {"offset": -1}, {"symbol": "not a symbol"}, {"username": "X"}]
)
def test_invalid_queries_answer_422(client: httpx.Client, params: dict[str, Any]) -> None:
    error_of(client.get(DECISIONS, params=params), 422, "validation_error")


def test_a_stopping_server_writes_the_decisions_it_answered(
    settings: Settings, accounts: dict[str, Account]
) -> None:
    with LiveServer(settings) as server, as_role(server, accounts["client"]) as http:
        answered = [http.post(DECIDE, json={"symbol": "EURUSD"}).json()["decision_id"] for _ in range(20)]
    db = Database(settings.database)
    try:
        with db.session() as session:
            found = session.scalars(
                select(TradingDecision.decision_id).where(TradingDecision.decision_id.in_(answered))
            ).all()
    finally:
        db.dispose()
    assert sorted(found) == sorted(answered)
