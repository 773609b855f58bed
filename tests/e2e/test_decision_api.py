"""``POST /api/v1/predict`` over real HTTP: regime, specialists, sizing, risk checks and explanations."""

from __future__ import annotations

import math
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest

from prediction_provider.features.market_data import load_sample_bars
from prediction_provider.features.pipeline import FEATURE_NAMES, WARMUP_BARS
from prediction_provider.trading.decisions import DecisionService
from prediction_provider.trading.specialists import STRATEGIES
from tests.conftest import Account, LiveServer
from tests.e2e.conftest import TradeRequest
from tests.security.support import error_of

PATH = "/api/v1/predict"
RESPONSE_KEYS = {
    "decision_id", "symbol", "action", "confidence", "recommended_quantity", "regime_probabilities",
    "strategy_weights", "risk_validation", "metadata",
}  # fmt: skip
CHECKS = {"position_limit", "concentration", "leverage", "daily_loss_limit"}


@pytest.fixture(scope="module")
def eurusd() -> pd.DataFrame:
    return load_sample_bars("EURUSD")


@pytest.fixture
def trading_account(client: httpx.Client) -> str:
    name = f"acct-{uuid.uuid4().hex[:12]}"
    created = client.post("/api/v1/accounts", json={"name": name, "equity": "100000"})
    assert created.status_code == 201, created.text
    return name


def decide(client: httpx.Client, body: dict[str, Any]) -> httpx.Response:
    return client.post(PATH, json=body)


def test_decision_has_exactly_the_documented_shape(client: httpx.Client) -> None:
    response = client.post(PATH, json={"symbol": "EURUSD"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == RESPONSE_KEYS
    assert body["symbol"] == "EURUSD"
    assert body["action"] in ("BUY", "SELL", "HOLD")
    assert 1 / 3 <= body["confidence"] <= 1
    assert set(body["regime_probabilities"]) == {"bull", "bear", "sideways", "entropy"}
    regime = body["regime_probabilities"]
    assert regime["bull"] + regime["bear"] + regime["sideways"] == pytest.approx(1.0)
    assert 0 <= regime["entropy"] <= 1
    assert body["strategy_weights"] == {
        "bull_specialist": regime["bull"],
        "bear_specialist": regime["bear"],
        "sideways_specialist": regime["sideways"],
    }
    assert set(body["risk_validation"]) == {"approved", "warnings", "checks"}
    assert set(body["risk_validation"]["checks"]) == CHECKS
    assert set(body["metadata"]) == {"model_version", "latency_ms", "timestamp", "data_as_of", "feature_hash"}
    assert body["metadata"]["latency_ms"] > 0
    assert datetime.fromisoformat(body["metadata"]["timestamp"]).tzinfo is not None
    assert len(body["decision_id"]) == 32


def test_every_decision_has_its_own_id(client: httpx.Client) -> None:
    ids = {client.post(PATH, json={"symbol": "EURUSD"}).json()["decision_id"] for _ in range(3)}
    assert len(ids) == 3


def test_without_a_timestamp_the_latest_bar_decides(client: httpx.Client, eurusd: pd.DataFrame) -> None:
    body = client.post(PATH, json={"symbol": "eurusd"}).json()
    assert body["symbol"] == "EURUSD"
    assert datetime.fromisoformat(body["metadata"]["data_as_of"]) == eurusd.index[-1].to_pydatetime()


@pytest.mark.parametrize(
    "asked",
    [
        "2017-06-15T15:00:00Z",
        "2017-06-15T15:59:59.999+00:00",
        "2017-06-15T17:59:00+02:00",
        "2017-06-15T15:30:00",
    ],
)
def test_the_last_bar_at_or_before_the_timestamp_decides(
    client: httpx.Client, eurusd: pd.DataFrame, asked: str
) -> None:
    body = client.post(PATH, json={"symbol": "EURUSD", "timestamp": asked}).json()
    data_as_of = datetime.fromisoformat(body["metadata"]["data_as_of"])
    assert data_as_of == datetime(2017, 6, 15, 15, tzinfo=UTC)
    assert pd.Timestamp(data_as_of) in eurusd.index


def test_the_decision_is_the_specialists_call_on_point_in_time_features(
    client: httpx.Client, decisions: DecisionService, eurusd: pd.DataFrame
) -> None:
    asked = datetime(2017, 9, 1, 12, tzinfo=UTC)
    body = client.post(PATH, json={"symbol": "EURUSD", "timestamp": asked.isoformat()}).json()
    models = decisions.models.for_symbol("EURUSD")
    weights = body["strategy_weights"]
    chosen = max(weights, key=lambda name: weights[name])
    model = models.strategies.get(chosen) or models.strategies["universal"]
    assert body["metadata"]["model_version"] == model.identity
    # Features recomputed here from the bars at or before the time alone.
    from prediction_provider.features.pipeline import compute_features

    history = eurusd.loc[:asked]
    features = compute_features(history).iloc[-1]
    probabilities = model.probabilities(np.asarray([[features[name] for name in FEATURE_NAMES]]))
    best = int(probabilities.argmax())
    assert body["action"] == {"up": "BUY", "down": "SELL", "flat": "HOLD"}[model.classes[best]]
    assert body["confidence"] == pytest.approx(probabilities[best], abs=1e-9)
    regime = models.regime.posterior(history.iloc[-decisions.lookback :])
    assert body["regime_probabilities"]["bull"] == pytest.approx(regime.bull, abs=1e-9)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_strategy_override_picks_the_model(
    client: httpx.Client, decisions: DecisionService, strategy: str
) -> None:
    body = client.post(PATH, json={"symbol": "GOOG", "strategy_override": strategy}).json()
    models = decisions.models.for_symbol("GOOG")
    expected = models.strategies.get(strategy) or models.strategies["universal"]
    assert body["metadata"]["model_version"] == expected.identity
    if strategy not in models.strategies:
        assert any("fell back to the universal model" in w for w in body["risk_validation"]["warnings"])


def test_unknown_strategy_answers_400_with_the_known_ones(client: httpx.Client) -> None:
    error = error_of(
        client.post(PATH, json={"symbol": "GOOG", "strategy_override": "momentum"}), 400, "unknown_strategy"
    )
    assert error["details"]["known"] == list(STRATEGIES)


def test_unknown_symbol_answers_404(client: httpx.Client) -> None:
    error = error_of(client.post(PATH, json={"symbol": "BTC-USD"}), 404, "unknown_symbol")
    assert set(error["details"]["available"]) >= {"EURUSD", "GOOG"}


@pytest.mark.parametrize(
    "body",
    [
        {"symbol": ""},
        {"symbol": "A" * 21},
        {"symbol": "EUR USD"},
        {"symbol": "EUR$"},
        {"symbol": "ÉUR"},
        {"symbol": 42},
        {},
        {"symbol": "EURUSD", "unexpected": 1},
        {"symbol": "EURUSD", "timestamp": "yesterday"},
        {"symbol": "EURUSD", "timestamp": "9999-12-31T23:59:59-23:59"},
        {"symbol": "EURUSD", "risk_check": "perhaps"},
        {"symbol": "EURUSD", "account": "../etc"},
    ],
    ids=lambda body: str(body)[:40],
)
def test_invalid_requests_answer_422_naming_the_field(client: httpx.Client, body: dict[str, Any]) -> None:
    error = error_of(client.post(PATH, json=body), 422, "validation_error")
    assert error["details"]
    assert all("field" in detail for detail in error["details"])


def test_symbols_may_hold_dots_slashes_and_dashes(client: httpx.Client) -> None:
    error = error_of(client.post(PATH, json={"symbol": "brk.b/usd-x_1"}), 404, "unknown_symbol")
    assert "BRK.B/USD-X_1" in error["message"]


def test_a_time_before_enough_history_answers_422(client: httpx.Client, eurusd: pd.DataFrame) -> None:
    early = eurusd.index[WARMUP_BARS - 1].isoformat()
    error_of(client.post(PATH, json={"symbol": "EURUSD", "timestamp": early}), 422, "insufficient_history")
    error_of(
        client.post(PATH, json={"symbol": "EURUSD", "timestamp": "1990-01-01T00:00:00Z"}),
        422,
        "insufficient_history",
    )


def test_explain_returns_contributions_that_add_up_to_the_models_score(
    client: httpx.Client, decisions: DecisionService
) -> None:
    asked = "2018-01-10T12:00:00Z"
    body = client.post(PATH, json={"symbol": "EURUSD", "timestamp": asked, "explain": True}).json()
    explanation = body["explanation"]
    assert list(explanation["contributions"]) == list(FEATURE_NAMES)
    model = next(
        m for m in decisions.models.for_symbol("EURUSD").strategies.values()
        if m.identity == body["metadata"]["model_version"]
    )  # fmt: skip
    assert explanation["model"] == model.name
    snapshot = decisions.market.snapshot("EURUSD", datetime.fromisoformat(asked.replace("Z", "+00:00")))
    raw = np.asarray(model.booster.predict(model.row(snapshot.values), raw_score=True)).reshape(-1)
    class_index = model.classes.index(explanation["class"])
    total = explanation["base_value"] + sum(explanation["contributions"].values())
    assert total == pytest.approx(raw[class_index], abs=1e-6)
    assert {"up": "BUY", "down": "SELL", "flat": "HOLD"}[explanation["class"]] == body["action"]


def test_no_explanation_unless_asked(client: httpx.Client) -> None:
    assert "explanation" not in client.post(PATH, json={"symbol": "EURUSD"}).json()


def test_regime_views_are_cached_per_bar(client: httpx.Client, decisions: DecisionService) -> None:
    body = {"symbol": "GOOG", "timestamp": "2012-05-01T00:00:00Z"}
    first = client.post(PATH, json=body).json()
    cached = len(decisions.views)
    second = client.post(PATH, json={**body, "timestamp": "2012-05-01T18:00:00Z"}).json()
    assert len(decisions.views) == cached
    assert second["regime_probabilities"] == first["regime_probabilities"]
    assert second["metadata"]["data_as_of"] == first["metadata"]["data_as_of"]


def test_without_an_account_the_paper_account_sizes_and_checks(
    client: httpx.Client, trade_request: TradeRequest, decisions: DecisionService
) -> None:
    body = decide(client, trade_request.body).json()
    assert body["action"] == trade_request.action
    assert body["risk_validation"]["approved"] is True
    position = body["risk_validation"]["checks"]["position_limit"]
    price = float(
        decisions.market.bars("EURUSD", datetime.fromisoformat(body["metadata"]["data_as_of"]), 1)[
            "close"
        ].iloc[-1]
    )
    assert position["value"] == pytest.approx(body["recommended_quantity"] * price / 100_000, abs=1e-6)
    assert body["recommended_quantity"] == math.floor(body["recommended_quantity"])  # lot step 1


def test_risk_check_false_skips_the_checks(client: httpx.Client, trade_request: TradeRequest) -> None:
    body = decide(client, {**trade_request.body, "risk_check": False}).json()
    assert body["risk_validation"]["approved"] is True
    assert body["risk_validation"]["checks"] == {}
    assert any("risk checks skipped" in w for w in body["risk_validation"]["warnings"])


def test_decision_against_an_account_reads_its_positions(
    client: httpx.Client, trade_request: TradeRequest, trading_account: str
) -> None:
    held = "5000" if trade_request.action == "BUY" else "-5000"
    client.put(
        f"/api/v1/accounts/{trading_account}/positions/EURUSD",
        json={"quantity": held, "average_price": "1.1", "market_price": "1.1", "sector": "fx"},
    ).raise_for_status()
    flat = decide(client, trade_request.body).json()
    body = decide(client, {**trade_request.body, "account": trading_account}).json()
    assert body["risk_validation"]["approved"] is True
    with_position = body["risk_validation"]["checks"]["position_limit"]["value"]
    assert with_position > flat["risk_validation"]["checks"]["position_limit"]["value"]


def test_a_trade_over_the_position_limit_answers_403_with_the_reasons(
    client: httpx.Client, trade_request: TradeRequest, trading_account: str
) -> None:
    held = "30000" if trade_request.action == "BUY" else "-30000"
    client.put(
        f"/api/v1/accounts/{trading_account}/positions/EURUSD",
        json={"quantity": held, "average_price": "1.2", "market_price": "1.2", "sector": "fx"},
    ).raise_for_status()
    response = decide(client, {**trade_request.body, "account": trading_account})
    error = error_of(response, 403, "risk_rejected")
    codes = {reason["code"] for reason in error["details"]["reasons"]}
    assert "position_limit_exceeded" in codes
    assert "position_limit_exceeded" in response.headers["X-Risk-Warnings"]
    position = next(r for r in error["details"]["reasons"] if r["check"] == "position_limit")
    assert position["allowed_quantity"] == 0  # already over the limit: nothing more may be added
    assert error["details"]["allowed_quantity"] == 0
    decision = error["details"]["decision"]
    assert set(decision) == RESPONSE_KEYS
    assert decision["risk_validation"]["approved"] is False


def test_a_trade_after_the_days_loss_limit_answers_403(
    client: httpx.Client, trade_request: TradeRequest, trading_account: str
) -> None:
    client.put(f"/api/v1/accounts/{trading_account}", json={"equity": "97500"}).raise_for_status()
    response = decide(client, {**trade_request.body, "account": trading_account})
    error = error_of(response, 403, "risk_rejected")
    assert [reason["code"] for reason in error["details"]["reasons"]] == ["daily_loss_limit_reached"]
    assert "daily_loss_limit_reached" in response.headers["X-Risk-Warnings"]


def test_someone_elses_account_is_not_found(
    live_server: LiveServer, accounts: dict[str, Account], trading_account: str
) -> None:
    with httpx.Client(base_url=live_server.url, headers=accounts["provider"].headers, timeout=60) as other:
        response = other.post(PATH, json={"symbol": "EURUSD", "account": trading_account})
    error_of(response, 404, "account_not_found")


@pytest.mark.parametrize("role", ["evaluator", "operator"])
def test_roles_without_predict_permission_are_refused(
    live_server: LiveServer, accounts: dict[str, Account], role: str
) -> None:
    with httpx.Client(base_url=live_server.url, headers=accounts[role].headers, timeout=60) as http:
        error_of(http.post(PATH, json={"symbol": "EURUSD"}), 403, "forbidden")


def test_anonymous_callers_are_refused(anonymous: httpx.Client) -> None:
    error_of(anonymous.post(PATH, json={"symbol": "EURUSD"}), 401, "unauthorized")


def test_malformed_json_answers_400(client: httpx.Client) -> None:
    response = client.post(PATH, content=b'{"symbol": ', headers={"Content-Type": "application/json"})
    error_of(response, 400, "malformed_json")
