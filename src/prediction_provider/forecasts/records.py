"""The record of every forecast served: one ``prediction_records`` row per forecast step.

Recording costs the request a deque append (``BatchWriter.record``); the row is
built and inserted by the writer's thread. A forecast and its request id are
the primary key, so a batch stored twice after a dropped connection is refused
the second time instead of counted twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from prediction_provider.db.batch_writer import BatchWriter
from prediction_provider.db.models import PredictionJob, PredictionRecord
from prediction_provider.db.session import Database


@dataclass(frozen=True, slots=True)
class ForecastStep:
    step: int
    target_time: datetime
    direction: str
    probabilities: dict[str, float]
    expected_return: float
    interval_80: tuple[float, float]

    def as_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "target_time": self.target_time.isoformat(),
            "direction": self.direction,
            "probabilities": self.probabilities,
            "expected_return": self.expected_return,
            "interval_80": list(self.interval_80),
        }


@dataclass(frozen=True, slots=True)
class Forecast:
    """One answered forecast: what was asked about, what the model saw and what it said."""

    forecast_id: str
    symbol: str
    interval: str
    as_of: datetime  # the time asked about (now when none was given)
    data_as_of: datetime  # open time of the last bar the features read
    model_name: str
    model_version: str | None
    feature_hash: str
    steps: tuple[ForecastStep, ...]
    created_at: datetime
    latency_ms: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "forecast_id": self.forecast_id,
            "symbol": self.symbol,
            "interval": self.interval,
            "as_of": self.as_of.isoformat(),
            "data_as_of": self.data_as_of.isoformat(),
            "model": {"name": self.model_name, "version": self.model_version},
            "feature_hash": self.feature_hash,
            "forecasts": [step.as_dict() for step in self.steps],
        }


@dataclass(frozen=True, slots=True)
class Requester:
    user_id: int | None
    username: str | None
    channel: str  # predict | batch | job
    job_id: str | None = None


@dataclass(frozen=True, slots=True)
class RecordedForecast:
    forecast: Forecast
    requester: Requester


def record_rows(recorded: RecordedForecast) -> list[dict[str, Any]]:
    forecast, requester = recorded.forecast, recorded.requester
    return [
        {
            "request_id": forecast.forecast_id,
            "row": row,
            "created_at": forecast.created_at,
            "channel": requester.channel,
            "job_id": requester.job_id,
            "user_id": requester.user_id,
            "username": requester.username,
            "model_name": forecast.model_name,
            "model_version": forecast.model_version,
            "role": "primary",
            "served_by": "primary",
            "symbol": forecast.symbol,
            "interval": forecast.interval,
            "as_of": forecast.as_of,
            "data_as_of": forecast.data_as_of,
            "horizon": step.step,
            "target_time": step.target_time,
            "feature_hash": forecast.feature_hash,
            "label": step.direction,
            "probabilities": step.probabilities,
            "value": step.expected_return,
            "answer": step.as_dict(),
            "latency_ms": forecast.latency_ms,
            "status": "ok",
        }
        for row, step in enumerate(forecast.steps)
    ]


class PredictionRecorder(BatchWriter[RecordedForecast]):
    """Writes ``prediction_records`` rows in batches from a thread of its own; a forecast of n steps
    is one queued item and n rows, built on the writer's thread."""

    def __init__(self, db: Database, flush_interval_s: float = 0.2) -> None:
        super().__init__(
            db, PredictionRecord, None, to_rows=record_rows, name="prediction-recorder",
            flush_interval_s=flush_interval_s,
        )  # fmt: skip

    def record_forecast(self, forecast: Forecast, requester: Requester) -> None:
        self.record(RecordedForecast(forecast, requester))


def evaluator_answer_row(
    job: PredictionJob, output: dict[str, Any], evaluator_id: int | None, now: datetime
) -> dict[str, Any]:
    """The ``prediction_records`` row of an evaluator's accepted result: the same market context as
    a platform answer (symbol, interval, data as-of, horizon, target time), so both are scored alike."""
    asked = job.input or {}
    probabilities = None
    label = None
    if "p_up" in output:
        p_up = float(output["p_up"])
        probabilities = {"down": 1.0 - p_up, "up": p_up}
        label = "up" if p_up > 0.5 else "down" if p_up < 0.5 else "flat"
    value = output.get("expected_return")
    if value is None and isinstance(output.get("q"), dict):
        levels = {float(level): float(v) for level, v in output["q"].items()}
        value = levels.get(0.5)
    return {
        "request_id": job.id, "row": 0, "created_at": now, "channel": "market", "job_id": job.id,
        "user_id": job.owner_id, "username": job.owner_username, "model_name": job.model_name or "",
        "model_version": job.model_version, "role": "primary", "served_by": f"evaluator:{evaluator_id}",
        "symbol": asked.get("symbol"), "interval": (job.parameters or {}).get("interval"),
        "as_of": job.data_as_of, "data_as_of": job.data_as_of, "horizon": asked.get("horizon"),
        "target_time": job.target_time, "feature_hash": job.input_hash or "", "label": label,
        "probabilities": probabilities, "value": None if value is None else float(value), "answer": output,
        "latency_ms": 0.0, "status": "ok",
    }  # fmt: skip
