"""Request and response bodies of forecasts by symbol (``/predict``, ``/predict/batch``, jobs)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from prediction_provider.forecasts.service import ForecastRequest

MAX_HORIZONS = 64
MAX_FORECAST_REQUESTS = 256

# Letters, digits and the punctuation real tickers use (BRK.B, EURUSD=X, ^GSPC, BTC-USD, EUR/USD).
SymbolField = Annotated[
    str,
    Field(
        min_length=1,
        max_length=20,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._\-=^/]{0,19}$|^\^[A-Za-z0-9._\-=]{1,19}$",
        description="The instrument, e.g. EURUSD or GOOG.",
        examples=["EURUSD"],
    ),
]
IntervalField = Annotated[
    str | None,
    Field(
        default=None,
        pattern=r"^[0-9]{1,4}(m|h|d|w|min|mo)$",
        description="Bar interval, e.g. 1h or 1d (default: the one the symbol's model was trained at).",
    ),
]
Horizons = Annotated[
    list[Annotated[int, Field(ge=1, le=10_000)]] | None,
    Field(default=None, min_length=1, max_length=MAX_HORIZONS, description="Steps of the interval."),
]
ModelOverride = Annotated[
    str | None,
    Field(
        default=None,
        min_length=1,
        max_length=512,
        description="A forecast model reference; default: the champion of <symbol>-<interval>-forecast.",
    ),
]


class ForecastFields(BaseModel):
    """What a forecast is asked with, on every route that asks for one."""

    model_config = ConfigDict(extra="forbid")

    symbol: SymbolField
    interval: IntervalField = None
    horizons: Horizons = None
    prediction_horizon: Annotated[
        int | None,
        Field(default=None, ge=1, le=10_000, description="Every trained horizon up to this many steps."),
    ] = None
    model: ModelOverride = None

    @model_validator(mode="after")
    def _one_horizon_form(self) -> ForecastFields:
        if self.horizons is not None and self.prediction_horizon is not None:
            raise ValueError("give horizons or prediction_horizon, not both")
        return self

    def forecast_request(self, as_of: datetime | None) -> ForecastRequest:
        return ForecastRequest(
            symbol=self.symbol,
            interval=self.interval,
            horizons=None if self.horizons is None else tuple(self.horizons),
            up_to=self.prediction_horizon,
            as_of=as_of,
            model=self.model,
        )


class ForecastPredictRequest(ForecastFields):
    """``POST /predict`` without ``features``: the server reads the bars and computes them."""

    timestamp: AwareDatetime | None = Field(
        default=None, description="Forecast as of this time (default: the latest bar). Also: as_of."
    )
    as_of: AwareDatetime | None = None
    horizon: Annotated[int | None, Field(default=None, ge=1, le=10_000, description="One step.")] = None

    @model_validator(mode="after")
    def _one_time(self) -> ForecastPredictRequest:
        if self.timestamp is not None and self.as_of is not None:
            raise ValueError("give timestamp or as_of, not both")
        if self.horizon is not None and (self.horizons is not None or self.prediction_horizon is not None):
            raise ValueError("give one of horizon, horizons or prediction_horizon")
        return self

    def request(self) -> ForecastRequest:
        if self.horizon is not None:
            self.horizons = [self.horizon]
        return self.forecast_request(self.as_of or self.timestamp)


class ForecastBatchRequest(BaseModel):
    """``POST /predict/batch`` with ``requests``: one forecast per request, in order."""

    model_config = ConfigDict(extra="forbid")

    requests: list[ForecastPredictRequest] = Field(min_length=1, max_length=MAX_FORECAST_REQUESTS)


class ForecastJobCreate(ForecastFields):
    """``POST /api/v1/predictions`` by symbol: a forecast job."""

    as_of: AwareDatetime | None = Field(default=None, description="Default: the latest bar the feeder has.")


class ModelOfForecast(BaseModel):
    name: str
    version: str | None


class ForecastStepPublic(BaseModel):
    step: int = Field(description="Bars of the interval after data_as_of.")
    target_time: datetime = Field(description="Open time of the bar whose close is forecast.")
    direction: str
    probabilities: dict[str, float]
    expected_return: float = Field(description="Median log return from data_as_of's close to target's.")
    interval_80: list[float] = Field(description="10 % and 90 % quantiles of that log return.")


class ForecastPublic(BaseModel):
    forecast_id: str
    symbol: str
    interval: str
    as_of: datetime
    data_as_of: datetime = Field(description="Open time of the last bar the features read.")
    model: ModelOfForecast
    feature_hash: str
    forecasts: list[ForecastStepPublic]
    latency_ms: float | None = None


class ForecastBatchPublic(BaseModel):
    results: list[ForecastPublic]
    count: int
    latency_ms: float


def forecast_payload(forecast: Any) -> dict[str, Any]:
    """A ``Forecast``'s JSON answer on the synchronous routes."""
    payload: dict[str, Any] = forecast.as_dict()
    payload["latency_ms"] = round(forecast.latency_ms, 3)
    return payload
