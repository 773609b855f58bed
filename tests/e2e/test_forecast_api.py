"""Forecasts by symbol over HTTP: ``/predict {symbol}``, ``/predict/batch {requests}`` and symbol jobs,
their errors, and the record every forecast leaves."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from sqlalchemy import func, select

from prediction_provider.db.models import PredictionJob, PredictionRecord
from prediction_provider.features.market_data import load_sample_bars
from prediction_provider.forecasts.training import ForecastTraining, train_forecast_model
from tests.conftest import Account, LiveServer

EURUSD_HORIZONS = [1, 3, 6, 12, 24]


def recorded(live_server: LiveServer, forecast_id: str) -> list[PredictionRecord]:
    services = live_server.services
    services.forecasts.recorder.flush()
    with services.db.session() as session:
        rows = session.scalars(
            select(PredictionRecord)
            .where(PredictionRecord.request_id == forecast_id)
            .order_by(PredictionRecord.row)
        ).all()
    return list(rows)


def test_a_symbol_forecast_answers_every_trained_horizon(client: httpx.Client) -> None:
    answer = client.post("/predict", json={"symbol": "eurusd"})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["symbol"], body["interval"]) == ("EURUSD", "1h")
    assert body["model"]["name"] == "eurusd-1h-forecast"
    assert body["model"]["version"]
    data_as_of = datetime.fromisoformat(body["data_as_of"])
    assert data_as_of == load_sample_bars("EURUSD").index[-1].to_pydatetime()
    assert [step["step"] for step in body["forecasts"]] == EURUSD_HORIZONS
    for step in body["forecasts"]:
        assert datetime.fromisoformat(step["target_time"]) == data_as_of + timedelta(hours=step["step"])
        assert set(step["probabilities"]) == {"down", "flat", "up"}
        assert sum(step["probabilities"].values()) == pytest.approx(1.0, abs=1e-9)
        assert step["direction"] == max(step["probabilities"], key=step["probabilities"].get)
        low, high = step["interval_80"]
        assert low <= step["expected_return"] <= high


def test_a_forecast_as_of_a_time_reads_the_last_bar_at_or_before_it(client: httpx.Client) -> None:
    bars = load_sample_bars("GOOG")
    as_of = bars.index[-300] + timedelta(hours=5)  # between two daily bars
    answer = client.post("/predict", json={"symbol": "GOOG", "timestamp": as_of.isoformat(), "horizon": 5})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert datetime.fromisoformat(body["data_as_of"]) == bars.index[-300].to_pydatetime()
    assert datetime.fromisoformat(body["as_of"]) == as_of.to_pydatetime()
    (step,) = body["forecasts"]
    assert step["step"] == 5
    # Five business days after the bar: the labels count bars, and GOOG has none at weekends.
    target = datetime.fromisoformat(step["target_time"])
    assert np.busday_count(bars.index[-300].date(), target.date()) == 5


def test_prediction_horizon_asks_for_every_trained_horizon_up_to_it(client: httpx.Client) -> None:
    body = client.post("/predict", json={"symbol": "EURUSD", "prediction_horizon": 6}).json()
    assert [step["step"] for step in body["forecasts"]] == [1, 3, 6]


def test_a_batch_of_symbol_requests_answers_one_forecast_each_in_order(client: httpx.Client) -> None:
    requests = [
        {"symbol": "GOOG", "timestamp": "2012-06-01T00:00:00Z"},
        {"symbol": "EURUSD", "timestamp": "2018-01-10T12:00:00Z", "horizons": [24, 1]},
        {"symbol": "EURUSD"},
    ]
    answer = client.post("/predict/batch", json={"requests": requests})
    assert answer.status_code == 200, answer.text
    results = answer.json()["results"]
    assert [r["symbol"] for r in results] == ["GOOG", "EURUSD", "EURUSD"]
    assert results[1]["data_as_of"].startswith("2018-01-10T12:00:00")
    assert [s["step"] for s in results[1]["forecasts"]] == [1, 24]
    alone = client.post("/predict", json=requests[0]).json()
    assert alone["forecasts"] == results[0]["forecasts"]  # the same answer, batched or not


@pytest.mark.parametrize(
    ("body", "status", "code", "names"),
    [
        ({"symbol": "AAPL"}, 404, "unknown_symbol", ["EURUSD", "GOOG"]),
        ({"symbol": "EURUSD", "interval": "1d"}, 422, "invalid_input", ["1h"]),
        ({"symbol": "EURUSD", "horizons": [2]}, 422, "invalid_input", ["1, 3, 6, 12, 24"]),
        ({"symbol": "GOOG", "prediction_horizon": 7}, 422, "invalid_input", ["1, 5, 10"]),
        ({"symbol": "EURUSD", "timestamp": "2001-01-01T00:00:00Z"}, 422, "insufficient_history", ["2017-"]),
        ({"symbol": "EURUSD", "timestamp": "2999-01-01T00:00:00Z"}, 422, "invalid_input", ["future"]),
        ({"symbol": "<script>alert(1)</script>"}, 422, "validation_error", []),
        ({"symbol": "EURUSD", "timestamp": "2018-01-10T12:00:00"}, 422, "validation_error", []),
        ({"symbol": "EURUSD", "model": "goog-1d-forecast"}, 422, "invalid_input", ["GOOG"]),
        ({"symbol": "EURUSD", "model": "eurusd-direction"}, 422, "invalid_input", ["forecast model"]),
    ],
)
def test_a_forecast_that_cannot_be_answered_says_why(
    client: httpx.Client, body: dict[str, Any], status: int, code: str, names: list[str]
) -> None:
    answer = client.post("/predict", json=body)
    assert answer.status_code == status, answer.text
    error = answer.json()["error"]
    assert error["code"] == code
    for name in names:
        assert name in answer.text


def test_every_forecast_step_is_recorded_with_its_market_context(
    client: httpx.Client, live_server: LiveServer, accounts: dict[str, Account]
) -> None:
    body = client.post("/predict", json={"symbol": "EURUSD", "timestamp": "2018-01-10T12:30:00Z"}).json()
    rows = recorded(live_server, body["forecast_id"])
    assert [row.horizon for row in rows] == EURUSD_HORIZONS
    for row, step in zip(rows, body["forecasts"], strict=True):
        assert (row.symbol, row.interval, row.channel) == ("EURUSD", "1h", "predict")
        assert row.username == accounts["client"].username
        assert (row.model_name, row.model_version) == (body["model"]["name"], body["model"]["version"])
        assert row.feature_hash == body["feature_hash"]
        assert len(row.feature_hash) == 64
        assert row.as_of == datetime(2018, 1, 10, 12, 30, tzinfo=UTC)
        assert row.data_as_of == datetime(2018, 1, 10, 12, tzinfo=UTC)
        assert row.target_time == datetime.fromisoformat(step["target_time"])
        assert (row.label, row.value) == (step["direction"], step["expected_return"])
        assert row.answer["interval_80"] == step["interval_80"]


def wait_for(client: httpx.Client, job_id: str) -> dict[str, Any]:
    for _ in range(600):
        job: dict[str, Any] = client.get(f"/api/v1/predictions/{job_id}").json()
        if job["status"] in ("completed", "failed"):
            return job
        time.sleep(0.05)
    pytest.fail(f"job {job_id} did not finish")


def test_a_symbol_job_completes_with_the_forecast_and_its_record(
    client: httpx.Client, live_server: LiveServer
) -> None:
    created = client.post("/api/v1/predictions", json={"symbol": "GOOG", "horizons": [1, 10]})
    assert created.status_code == 201, created.text
    job = wait_for(client, created.json()["id"])
    assert job["status"] == "completed", job
    result = job["result"]
    assert result["symbol"] == "GOOG"
    assert [s["step"] for s in result["forecasts"]] == [1, 10]
    assert job["data_as_of"].startswith(result["data_as_of"][:19])
    rows = recorded(live_server, result["forecast_id"])
    assert [(row.channel, row.job_id, row.horizon) for row in rows] == [
        ("job", job["id"], 1),
        ("job", job["id"], 10),
    ]


def test_a_symbol_job_that_cannot_be_answered_is_refused_at_submit(
    client: httpx.Client, live_server: LiveServer
) -> None:
    before = job_count(live_server)
    refused = (
        {"symbol": "NOPE"},
        {"symbol": "GOOG", "horizons": [3]},
        {"symbol": "GOOG", "as_of": "1990-01-01T00:00:00Z"},
    )
    for body in refused:
        answer = client.post("/api/v1/predictions", json=body)
        assert answer.status_code in (404, 422), answer.text
    assert job_count(live_server) == before


def job_count(live_server: LiveServer) -> int:
    with live_server.services.db.session() as session:
        return int(session.scalar(select(func.count()).select_from(PredictionJob)) or 0)


@pytest.fixture(scope="module")
def ghost_symbol(live_server: LiveServer) -> str:
    """A forecast model trained from a CSV file that is gone by the time it is served."""
    settings = live_server.services.settings
    path = Path(settings.data_dir) / "ghost.csv"
    bars = load_sample_bars("EURUSD").iloc[-600:]
    bars.to_csv(path)
    training = ForecastTraining(n_estimators=5)
    train_forecast_model(settings, "GHOST", "1h", bars, source=f"csv:{path}", horizons=[1], config=training)
    path.unlink()
    live_server.services.forecasts.catalog.refresh()
    return "GHOST"


def test_a_feeder_that_fails_answers_503_with_its_reason_and_leaves_no_job(
    client: httpx.Client, live_server: LiveServer, ghost_symbol: str
) -> None:
    answer = client.post("/predict", json={"symbol": ghost_symbol})
    assert answer.status_code == 503, answer.text
    assert answer.json()["error"]["code"] == "feeder_unavailable"
    assert "ghost.csv" in answer.json()["error"]["message"]
    before = job_count(live_server)
    submitted = client.post("/api/v1/predictions", json={"symbol": ghost_symbol})
    assert submitted.status_code == 503, submitted.text
    assert job_count(live_server) == before
