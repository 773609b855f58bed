"""Which body is which: the seed project's job request, a trading decision, features, the legacy
``/predict``; and the seed's words mapped to ours (intervals, pairs, prediction types)."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from prediction_provider.api.decision_schemas import DecisionBody
from prediction_provider.api.routes.jobs import asks_by_symbol
from prediction_provider.api.routes.predict import asks_by_symbol as predict_asks_by_symbol
from prediction_provider.api.seed_jobs import horizon_for_type, type_of
from prediction_provider.api.seed_schemas import (
    SEED_MARKERS,
    LegacyPredict,
    SeedPredictionCreate,
    asks_legacy_predict,
    asks_seed_job,
    normalise_interval,
)

DECISION_BODIES: list[dict[str, Any]] = [
    {"symbol": "EURUSD"},
    {"symbol": "EURUSD", "timestamp": "2018-01-10T12:00:00Z", "strategy_override": "universal"},
    {"symbol": "EURUSD", "risk_check": False, "explain": True, "account": "paper-1"},
]
SEED_BODIES: list[dict[str, Any]] = [
    {"symbol": "AAPL", "prediction_type": "short_term"},
    {"symbol": "AAPL", "prediction_type": "short_term", "prediction_horizon": 6},
    {"ticker": "AAPL", "model_name": "default", "prediction_horizon": 1},
    {"symbol": "GOOGL", "interval": "1d", "predictor_plugin": "default_predictor"},
    {"symbol": "MSFT", "feeder_plugin": "default_feeder", "pipeline_plugin": "default_pipeline"},
    {"symbol": "EURUSD", "baseline_datetime": "2018-01-10T12:00:00"},
]


def test_no_decision_field_marks_a_seed_body() -> None:
    assert not SEED_MARKERS & set(DecisionBody.model_fields)
    assert {
        "ticker",
        "prediction_type",
        "prediction_horizon",
        "interval",
        "baseline_datetime",
    } <= SEED_MARKERS
    assert {"predictor_plugin", "feeder_plugin", "pipeline_plugin", "model_name"} <= SEED_MARKERS


@pytest.mark.parametrize("body", DECISION_BODIES)
def test_decision_bodies_stay_decisions(body: dict[str, Any]) -> None:
    assert not asks_seed_job(body)
    DecisionBody.model_validate(body)


@pytest.mark.parametrize("body", SEED_BODIES)
def test_seed_bodies_are_jobs_by_symbol_on_both_routes(body: dict[str, Any]) -> None:
    assert asks_seed_job(body)
    assert asks_by_symbol(body)
    SeedPredictionCreate.model_validate(body)


@pytest.mark.parametrize(
    "body",
    [
        {"model": "eurusd-direction", "features": {"ret_1": 0.1}},
        {"model": "eurusd-direction", "features_list": [{"ret_1": 0.1}]},
        {"symbol": "EURUSD", "features": {"ret_1": 0.1}},
    ],
)
def test_feature_bodies_are_neither_seed_jobs_nor_legacy(body: dict[str, Any]) -> None:
    assert not asks_by_symbol(body)
    assert not asks_legacy_predict(body)
    assert not predict_asks_by_symbol(body)


def test_legacy_body_is_recognised_by_its_instrument() -> None:
    legacy = {"instrument": "EUR_USD", "timeframe": "H1", "parameters": {"n_steps": 60, "plugin": "x"}}
    assert asks_legacy_predict(legacy)
    assert not predict_asks_by_symbol(legacy)
    assert not asks_legacy_predict({"symbol": "EURUSD"})
    seed = LegacyPredict.model_validate(legacy).as_seed()
    assert (seed.instrument, seed.interval, seed.predictor_plugin) == ("EURUSD", "1h", "x")


@pytest.mark.parametrize(
    ("sent", "interval"),
    [("H1", "1h"), ("h4", "4h"), ("D1", "1d"), ("D", "1d"), ("1D", "1d"), ("15m", "15m"), ("MN1", "1mo")],
)
def test_timeframes_and_intervals_read_as_ours(sent: str, interval: str) -> None:
    assert normalise_interval(sent) == interval


@pytest.mark.parametrize("sent", ["hourly", "1 h", "<b>", ""])
def test_anything_else_is_not_an_interval(sent: str) -> None:
    with pytest.raises(ValidationError):
        SeedPredictionCreate.model_validate({"symbol": "EURUSD", "interval": sent})


@pytest.mark.parametrize(
    "body",
    [
        {"symbol": "EURUSD", "ticker": "GOOG"},
        {"symbol": "EURUSD", "horizons": [1], "prediction_horizon": 3},
        {"symbol": "EURUSD", "model": "a", "model_name": "b"},
        {"symbol": "EURUSD", "prediction_type": "invalid_type"},
        {"symbol": "EURUSD", "unexpected": 1},
        {"interval": "1d"},
    ],
)
def test_contradictory_or_unknown_fields_are_refused(body: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        SeedPredictionCreate.model_validate(body)


def test_forex_pairs_and_default_model_names_read_as_ours() -> None:
    body = SeedPredictionCreate.model_validate(
        {"symbol": "eur_usd", "ticker": "EURUSD", "model_name": "default"}
    )
    assert body.instrument == "EURUSD"
    assert body.model_reference is None  # the seed's "default": the champion
    named = SeedPredictionCreate.model_validate({"ticker": "GOOG", "model_name": "goog-1d-forecast"})
    assert named.model_reference == "goog-1d-forecast"


@pytest.mark.parametrize(
    ("trained", "short", "medium", "long"),
    [((1, 3, 6, 12, 24), 1, 6, 24), ((1, 5, 10), 1, 5, 10), ((4,), 4, 4, 4), ((2, 8), 2, 8, 8)],
)
def test_prediction_types_are_the_shortest_middle_and_longest_trained_horizon(
    trained: tuple[int, ...], short: int, medium: int, long: int
) -> None:
    chosen = [horizon_for_type(kind, trained) for kind in ("short_term", "medium_term", "long_term")]
    assert chosen == [short, medium, long]


def test_a_request_by_horizon_reports_the_type_it_amounts_to() -> None:
    trained = (1, 3, 6, 12, 24)
    assert type_of(None, None, trained) == "long_term"
    assert type_of(24, None, trained) == "long_term"
    assert type_of(1, None, trained) == "short_term"
    assert type_of(6, None, trained) == "medium_term"
    assert type_of(None, (1, 12), trained) == "medium_term"
