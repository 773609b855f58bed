"""The seed project's prediction API, as its clients send and read it, over our symbol jobs.

A client written for the seed project (harveybc/prediction_provider) posts
``{symbol | ticker, interval, prediction_type, prediction_horizon,
baseline_datetime, *_plugin, model_name}`` to ``/api/v1/predictions/`` or
``/api/v1/predict`` and polls ``GET /api/v1/predictions/{id}``; an older one
posts ``{instrument, timeframe, prediction_id?, parameters?}`` to ``/predict``
and polls ``GET /status/{id}``. Both are forecast jobs by symbol underneath
(job kind ``forecast``); this module holds their request and response shapes
and the pure mappings between the two vocabularies. What needs the services
(the trained horizons, the submit) is in :mod:`prediction_provider.api.seed_jobs`.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from prediction_provider.api.decision_schemas import DecisionBody, UTCTimestamp
from prediction_provider.api.forecast_schemas import Horizons, ModelOverride, SymbolField
from prediction_provider.api.job_schemas import PredictionPublic
from prediction_provider.db.models import PredictionJob

PredictionType = Literal["short_term", "medium_term", "long_term"]
PREDICTION_TYPES: tuple[str, ...] = ("short_term", "medium_term", "long_term")

# The names the seed's clients send when they mean "whatever the server uses".
DEFAULT_PLUGINS = {
    "predictor_plugin": "default_predictor",
    "feeder_plugin": "default_feeder",
    "pipeline_plugin": "default_pipeline",
}
# model_name values the seed's clients and tests send for "the default model": the champion here.
DEFAULT_MODEL_NAMES = frozenset({"default", "default_model", "default_predictor"})

PluginName = Annotated[str | None, Field(default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
# The seed's interval names ("1d", "1h") are ours; MetaTrader-style timeframes ("H1", "D1") are
# what its legacy /predict took as "timeframe", and are accepted on both.
TIMEFRAMES = {
    "M1": "1m", "M5": "5m", "M15": "15m", "M30": "30m", "H1": "1h", "H4": "4h",
    "D": "1d", "D1": "1d", "W": "1w", "W1": "1w", "MN": "1mo", "MN1": "1mo",
}  # fmt: skip
INTERVAL = re.compile(r"^[0-9]{1,4}(m|h|d|w|min|mo)$")
# "EUR_USD" and "EUR/USD" (the seed's forex spelling) are the pair our feeders call EURUSD.
FOREX_PAIR = re.compile(r"^([A-Za-z]{3})[_/]([A-Za-z]{3})$")


def normalise_interval(value: str | None) -> str | None:
    """``H1`` -> ``1h``, ``1D`` -> ``1d``; ``ValueError`` for anything that is not an interval."""
    if value is None:
        return None
    text = value.strip()
    mapped = TIMEFRAMES.get(text.upper())
    if mapped is not None:
        return mapped
    lowered = text.lower()
    if not INTERVAL.match(lowered):
        raise ValueError("an interval such as 1h or 1d (or a timeframe such as H1 or D1)")
    return lowered


def normalise_seed_symbol(value: str) -> str:
    match = FOREX_PAIR.match(value.strip())
    return (match.group(1) + match.group(2) if match else value.strip()).upper()


class SeedPredictionCreate(BaseModel):
    """A job by symbol in the seed's words, or in ours (``horizons``, ``as_of``, ``model``): one
    body, so both are answered alike. Which horizons it asks for: ``horizons``, else
    ``prediction_horizon`` (every trained horizon up to it, which must be one), else
    ``prediction_type`` (short_term: the model's shortest horizon; medium_term: its middle one;
    long_term: its longest, i.e. all of them), else every trained horizon."""

    model_config = ConfigDict(extra="forbid")

    symbol: SymbolField | None = None
    ticker: SymbolField | None = Field(default=None, description="The seed's other name for symbol.")
    interval: str | None = Field(
        default=None,
        max_length=8,
        description="Default: 1d when the symbol is forecast daily, else its model's interval.",
    )
    prediction_type: PredictionType | None = None
    prediction_horizon: int | None = Field(default=None, ge=1, le=10_000)
    horizons: Horizons = None
    baseline_datetime: UTCTimestamp | None = Field(
        default=None, description="Forecast as of this time (naive = UTC); default the latest bar."
    )
    as_of: UTCTimestamp | None = None
    model_name: str | None = Field(default=None, min_length=1, max_length=512)
    model: ModelOverride = None
    predictor_plugin: PluginName = None
    feeder_plugin: PluginName = None
    pipeline_plugin: PluginName = None

    _interval = field_validator("interval")(normalise_interval)

    @model_validator(mode="after")
    def _consistent(self) -> SeedPredictionCreate:
        if self.symbol is None and self.ticker is None:
            raise ValueError("give symbol (or ticker)")
        if (
            self.symbol
            and self.ticker
            and normalise_seed_symbol(self.symbol) != normalise_seed_symbol(self.ticker)
        ):
            raise ValueError("symbol and ticker name different instruments")
        if self.horizons is not None and self.prediction_horizon is not None:
            raise ValueError("give horizons or prediction_horizon, not both")
        if self.as_of and self.baseline_datetime and self.as_of != self.baseline_datetime:
            raise ValueError("as_of and baseline_datetime differ")
        named = self.model_name not in DEFAULT_MODEL_NAMES
        if self.model and self.model_name and named and self.model != self.model_name:
            raise ValueError("model and model_name differ")
        return self

    @property
    def instrument(self) -> str:
        return normalise_seed_symbol(self.symbol or self.ticker or "")

    @property
    def model_reference(self) -> str | None:
        """``model``, else ``model_name`` unless it is one of the seed's names for the default."""
        if self.model:
            return self.model
        if self.model_name and self.model_name not in DEFAULT_MODEL_NAMES:
            return self.model_name
        return None

    @property
    def time(self) -> datetime | None:
        return self.as_of or self.baseline_datetime


# Fields that mark a body at /api/v1/predict as the seed's job request rather than a trading
# decision: every field of the seed's body that a decision body does not have. Derived, so a
# field a decision body gains later is never misread as the seed's.
SEED_MARKERS = frozenset(SeedPredictionCreate.model_fields) - frozenset(DecisionBody.model_fields)


def asks_seed_job(data: Any) -> bool:
    """A body at ``/api/v1/predict`` that is the seed project's prediction request."""
    return isinstance(data, dict) and any(name in data for name in SEED_MARKERS)


class LegacyParameters(BaseModel):
    """The seed's legacy ``parameters``: ``plugin`` names the predictor; ``n_steps`` (its
    predictor's input window) has no meaning here, the model's window is fixed by its pipeline."""

    model_config = ConfigDict(extra="allow")

    plugin: PluginName = None
    prediction_horizon: int | None = Field(default=None, ge=1, le=10_000)
    prediction_type: PredictionType | None = None
    n_steps: int | None = Field(default=None, ge=1, le=1_000_000)


class LegacyPredict(BaseModel):
    """``POST /predict {instrument, timeframe, prediction_id?, parameters?}`` (the seed's oldest)."""

    model_config = ConfigDict(extra="forbid")

    instrument: SymbolField
    timeframe: str | None = Field(default=None, max_length=8, description="H1, D1, ... or 1h, 1d, ...")
    prediction_id: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,99}$",
        description="The client's own id for this prediction: echoed, and GET /status/{it} finds it.",
    )
    parameters: LegacyParameters = Field(default_factory=LegacyParameters)

    _timeframe = field_validator("timeframe")(normalise_interval)

    def as_seed(self) -> SeedPredictionCreate:
        return SeedPredictionCreate(
            symbol=self.instrument,
            interval=self.timeframe,
            prediction_horizon=self.parameters.prediction_horizon,
            prediction_type=self.parameters.prediction_type,
            predictor_plugin=self.parameters.plugin,
        )


def asks_legacy_predict(data: Any) -> bool:
    """A body at ``/predict`` in the seed's legacy shape: it names an ``instrument``."""
    return isinstance(data, dict) and "instrument" in data and "features" not in data


# -- answers ---------------------------------------------------------------------------------------


class SeedFields(BaseModel):
    """The seed's ``PredictionResponse`` fields, for a job by symbol."""

    prediction_id: str = Field(description="The job id, or the client's own id given at POST /predict.")
    task_id: str
    symbol: str
    ticker: str
    interval: str
    prediction_type: PredictionType
    predictor_plugin: str
    feeder_plugin: str
    pipeline_plugin: str
    model_name: str | None
    output: dict[str, Any] | None = Field(description="The forecast, once completed.")


class SeedPredictionAccepted(SeedFields):
    """201 to a job by symbol: the seed's ``PredictionResponse``, plus ``created`` and ``links``."""

    id: str
    status: str
    result: dict[str, Any] = Field(description="{request: ...}; the forecast joins it once completed.")
    error: dict[str, Any] | None = None
    created: bool = Field(description="False when an Idempotency-Key matched an earlier submit.")
    links: dict[str, str]


class SymbolPredictionPublic(PredictionPublic, SeedFields):
    """A job by symbol as ``GET /api/v1/predictions/{id}`` answers it: ours and the seed's fields."""


class LegacyAccepted(BaseModel):
    prediction_id: str
    status: str
    message: str


class LegacyStatus(BaseModel):
    """``GET /status/{id}``; ``prediction`` and ``uncertainty`` (per step) once completed."""

    prediction_id: str
    status: str
    result: dict[str, Any] | None
    prediction: list[float] | None = None
    uncertainty: list[float] | None = None
    error: dict[str, Any] | None = None


def seed_request(job: PredictionJob) -> dict[str, Any]:
    """The seed request a job by symbol was made with, as kept in its parameters; jobs made
    without one (our own body, older rows) get the same fields from their input."""
    kept = job.parameters.get("seed")
    if isinstance(kept, dict):
        return kept
    payload = job.input or {}
    symbol = str(payload.get("symbol", ""))
    return {
        "symbol": symbol,
        "ticker": symbol,
        "interval": payload.get("interval"),
        "prediction_type": "long_term" if not payload.get("horizons") and not payload.get("up_to") else None,
        "prediction_horizon": payload.get("up_to"),
        "horizons": payload.get("horizons"),
        "baseline_datetime": payload.get("as_of"),
        **DEFAULT_PLUGINS,
        "model_name": job.model_name,
    }


def seed_outcome(job: PredictionJob) -> tuple[list[float] | None, list[float] | None]:
    """The seed's ``prediction`` and ``uncertainty`` lists of a completed job: per forecast step,
    the expected log return and half the width of its 80 % interval."""
    forecasts = (job.result or {}).get("forecasts") if isinstance(job.result, dict) else None
    if not forecasts:
        return None, None
    prediction = [float(step["expected_return"]) for step in forecasts]
    uncertainty = [abs(float(high) - float(low)) / 2 for low, high in (s["interval_80"] for s in forecasts)]
    return prediction, uncertainty


def seed_view(job: PredictionJob) -> dict[str, Any]:
    """The seed's fields of a job by symbol (``SeedFields`` plus ``result``)."""
    request = seed_request(job)
    result: dict[str, Any] = {"request": {k: v for k, v in request.items() if k != "prediction_id"}}
    output = job.result if isinstance(job.result, dict) else None
    if output is not None:
        prediction, uncertainty = seed_outcome(job)
        result.update(output, prediction=prediction, uncertainty=uncertainty)
    symbol = str(request.get("symbol") or "")
    return {
        "prediction_id": str(request.get("prediction_id") or job.id),
        "task_id": job.id,
        "symbol": symbol,
        "ticker": str(request.get("ticker") or symbol),
        "interval": str(request.get("interval") or (job.input or {}).get("interval") or ""),
        "prediction_type": request.get("prediction_type") or "long_term",
        "predictor_plugin": request.get("predictor_plugin") or DEFAULT_PLUGINS["predictor_plugin"],
        "feeder_plugin": request.get("feeder_plugin") or DEFAULT_PLUGINS["feeder_plugin"],
        "pipeline_plugin": request.get("pipeline_plugin") or DEFAULT_PLUGINS["pipeline_plugin"],
        "model_name": job.model_name,
        "output": output,
        "result": result,
    }


def accepted(job: PredictionJob, created: bool) -> SeedPredictionAccepted:
    base = f"/api/v1/predictions/{job.id}"
    view = seed_view(job)
    return SeedPredictionAccepted(
        id=job.id,
        status=job.status,
        error=job.error,
        created=created,
        links={"self": base, "events": f"{base}/events"},
        **view,
    )


def public_of(job: PredictionJob) -> PredictionPublic:
    """Our fields of any job; a job by symbol gets the seed's fields too."""
    ours = PredictionPublic.of(job)
    if job.kind != "forecast":
        return ours
    return SymbolPredictionPublic(**{**ours.model_dump(), **seed_view(job)})


def legacy_status(job: PredictionJob, prediction_id: str) -> LegacyStatus:
    prediction, uncertainty = seed_outcome(job)
    return LegacyStatus(
        prediction_id=prediction_id,
        status=job.status,
        result=seed_view(job)["result"],
        prediction=prediction,
        uncertainty=uncertainty,
        error=job.error,
    )
