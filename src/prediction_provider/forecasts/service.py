"""Forecasts by symbol: ``EURUSD, hourly, the next 6 bars``, answered from market data.

``ForecastService.forecast`` finds the symbol's forecast model in the registry
(its ``champion`` unless the request names a model), reads the point-in-time
features of the last bar at or before ``as_of`` from the feeder the model was
trained on, runs every asked horizon and records the answer. The same call
serves ``POST /predict {symbol}``, ``/predict/batch {requests}`` and symbol
jobs, so all of them answer, fail and are recorded alike.

Times: bars are identified by their close time and read only once closed by the
clock, as the features are everywhere else (``features.point_in_time``,
``PP_BAR_LABEL``). ``data_as_of`` is the close time of the last bar the features
read; the forecast of step ``h`` is of the close of the bar closing at
``data_as_of + h * interval`` (its ``target_time``), relative to the close of
the ``data_as_of`` bar.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import numpy as np

from prediction_provider.errors import (
    FeederUnavailable,
    InvalidInput,
    PredictionProviderError,
    UnknownSymbol,
)
from prediction_provider.features.feeders.base import normalise_symbol
from prediction_provider.features.point_in_time import FeatureSnapshot, PointInTimeFeatures
from prediction_provider.forecasts.answers import ANSWER_CACHE_SIZE, ForecastAnswers
from prediction_provider.forecasts.model import ForecastModel
from prediction_provider.forecasts.records import Forecast, PredictionRecorder, Requester
from prediction_provider.serving.cache import CachedModel, ModelCache
from prediction_provider.serving.registry import ModelRegistry
from prediction_provider.trading.records import feature_hash

FORECAST_TAG = ("pp.kind", "forecast")
# A symbol nobody serves re-reads the registry at most this often (new models appear within it).
CATALOG_REFRESH_S = 5.0


@dataclass(frozen=True, slots=True)
class ForecastRequest:
    symbol: str
    interval: str | None = None
    horizons: tuple[int, ...] | None = None  # None: every horizon the model was trained for
    up_to: int | None = None  # "the next n bars": the trained horizons up to n (n must be one)
    as_of: datetime | None = None  # None: the latest bar the feeder has
    model: str | None = None  # None: the champion of <symbol>-<interval>-forecast


class MarketFeatures(Protocol):
    """Point-in-time features per symbol, interval and feeder spec (``features.market_sources``)."""

    def for_symbol(self, symbol: str, interval: str, source: str | None) -> PointInTimeFeatures: ...

    def loaded(self, symbol: str, interval: str, source: str | None) -> bool: ...


@dataclass(frozen=True, slots=True)
class CatalogEntry:
    symbol: str
    interval: str
    model_name: str


class ForecastCatalog:
    """Which forecast models the registry holds: symbol -> interval -> registered name."""

    def __init__(self, registry: ModelRegistry, clock: Callable[[], float] = time.monotonic) -> None:
        self._registry = registry
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: dict[str, dict[str, CatalogEntry]] = {}
        self._read_at: float | None = None

    def refresh(self) -> None:
        entries: dict[str, dict[str, CatalogEntry]] = {}
        for name, tags in self._registry.tagged_models(*FORECAST_TAG).items():
            symbol, interval = tags.get("symbol"), tags.get("interval")
            if symbol and interval:
                entries.setdefault(symbol.upper(), {})[interval] = CatalogEntry(
                    symbol.upper(), interval, name
                )
        with self._lock:
            self._entries, self._read_at = entries, self._clock()

    def symbols(self) -> list[str]:
        return sorted(self._entries)

    def model_name(self, symbol: str, interval: str | None) -> str | None:
        served = self._entries.get(symbol) or {}
        if interval is None:
            return next(iter(served.values())).model_name if len(served) == 1 else None
        entry = served.get(interval)
        return None if entry is None else entry.model_name

    def intervals(self, symbol: str) -> dict[str, CatalogEntry]:
        """The symbol's models by interval; re-reads the registry for a symbol it does not know."""
        found = self._entries.get(symbol)
        if found is None and (self._read_at is None or self._clock() - self._read_at >= CATALOG_REFRESH_S):
            self.refresh()
            found = self._entries.get(symbol)
        return found or {}


class ForecastService:
    def __init__(
        self,
        cache: ModelCache,
        catalog: ForecastCatalog,
        market: MarketFeatures,
        recorder: PredictionRecorder | None,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        answer_cache: int = ANSWER_CACHE_SIZE,
    ) -> None:
        self.cache = cache
        self.catalog = catalog
        self.market = market
        self.recorder = recorder
        self._clock = clock
        self.answers = ForecastAnswers(answer_cache)

    def model_reference(self, request: ForecastRequest) -> tuple[str, str, str]:
        """(symbol, interval, model reference) for ``request``; 404/422 when nothing serves it."""
        symbol = normalise_symbol(request.symbol)
        served = self.catalog.intervals(symbol)
        if not served:
            raise UnknownSymbol(
                f"no forecast model for {symbol}",
                {"symbol": symbol, "available": self.catalog.symbols()},
            )
        interval = request.interval or (next(iter(served)) if len(served) == 1 else sorted(served)[0])
        if interval not in served:
            raise InvalidInput(
                f"{symbol} is not forecast at interval {interval}",
                [{"field": "interval", "error": f"available: {', '.join(sorted(served))}"}],
            )
        return symbol, interval, request.model or served[interval].model_name

    def validate(self, request: ForecastRequest) -> tuple[str, str, CachedModel]:
        """Everything that can be checked before reading bars: a job is refused at submit with it."""
        symbol, interval, reference = self.model_reference(request)
        cached = self.cache.get(reference)
        model = cached.model
        if not isinstance(model, ForecastModel):
            raise InvalidInput(
                f"{cached.resolved.label} is not a forecast model",
                [
                    {
                        "field": "model",
                        "error": f"name a forecast model, e.g. {symbol.lower()}-{interval}-forecast",
                    }
                ],
            )
        manifest = model.manifest
        if manifest.symbol != symbol or manifest.interval != interval:
            raise InvalidInput(
                f"{cached.resolved.label} forecasts {manifest.symbol} {manifest.interval}, "
                f"not {symbol} {interval}",
                [{"field": "model", "error": f"forecasts {manifest.symbol} at {manifest.interval}"}],
            )
        if request.horizons is not None:
            unknown = sorted(set(request.horizons) - set(manifest.horizons))
            if unknown or not request.horizons:
                raise InvalidInput(
                    f"{cached.resolved.label} was not trained for horizon(s) {unknown or '[]'}",
                    [{"field": "horizons", "error": f"available: {list(manifest.horizons)}"}],
                )
        if request.up_to is not None and request.up_to not in manifest.horizons:
            raise InvalidInput(
                f"{cached.resolved.label} was not trained for a horizon of {request.up_to} bars",
                [{"field": "prediction_horizon", "error": f"available: {list(manifest.horizons)}"}],
            )
        if request.as_of is not None:
            as_of = request.as_of.astimezone(UTC)
            if as_of > self._clock():
                raise InvalidInput(
                    f"as_of {as_of.isoformat()} is in the future",
                    [{"field": "as_of", "error": "give a time at or before now"}],
                )
        return symbol, interval, cached

    def forecast(self, request: ForecastRequest, requester: Requester) -> Forecast:
        started = time.perf_counter()
        symbol, interval, cached = self.validate(request)
        model = cached.model
        assert isinstance(model, ForecastModel)
        manifest = model.manifest
        steps = steps_of(request, manifest.horizons)
        snapshot = self._snapshot(symbol, interval, manifest.source, request.as_of)
        row = np.fromiter((snapshot.values[name] for name in manifest.feature_names), np.float64)
        digest = feature_hash(row)
        forecast_steps = self.answers.steps(
            cached.resolved.uri, model, row, digest, snapshot.data_as_of, steps
        )
        forecast = Forecast(
            forecast_id=str(uuid.uuid4()),
            symbol=symbol,
            interval=interval,
            as_of=snapshot.as_of,
            data_as_of=snapshot.data_as_of,
            model_name=cached.resolved.name,
            model_version=cached.resolved.version,
            feature_hash=digest,
            steps=forecast_steps,
            created_at=self._clock(),
            latency_ms=(time.perf_counter() - started) * 1000,
        )
        if self.recorder is not None:
            self.recorder.record_forecast(forecast, requester)
        return forecast

    def check(self, request: ForecastRequest) -> tuple[str, str, CachedModel]:
        """``validate``, and read the features the request needs (raising what ``forecast`` would);
        records nothing. The symbol jobs' submit uses it."""
        symbol, interval, cached = self.validate(request)
        model = cached.model
        assert isinstance(model, ForecastModel)
        self._snapshot(symbol, interval, model.manifest.source, request.as_of)
        return symbol, interval, cached

    def data_as_of(self, request: ForecastRequest) -> datetime:
        """Close time of the last bar a forecast of ``request`` would read (the marketplace prices a
        request on it and counts its target time from it)."""
        symbol, interval, cached = self.validate(request)
        model = cached.model
        assert isinstance(model, ForecastModel)
        return self._snapshot(symbol, interval, model.manifest.source, request.as_of).data_as_of

    def is_warm(self, request: ForecastRequest) -> bool:
        """True when answering ``request`` reads neither the registry, a model file nor a feeder
        (the model is cached, the bars are loaded): it may then be answered on the event loop."""
        reference = request.model or self.catalog.model_name(request.symbol.upper(), request.interval)
        cached = None if reference is None else self.cache.peek(reference)
        if cached is None or not isinstance(cached.model, ForecastModel):
            return False
        manifest = cached.model.manifest
        return self.market.loaded(manifest.symbol, manifest.interval, manifest.source)

    def _snapshot(self, symbol: str, interval: str, source: str, as_of: datetime | None) -> FeatureSnapshot:
        """The point-in-time features; a feeder that fails is a 503 naming its reason."""
        try:
            return self.market.for_symbol(symbol, interval, source).snapshot(symbol, as_of)
        except UnknownSymbol as exc:
            raise FeederUnavailable(
                f"the {source} feeder has no {symbol} bars at {interval}: {exc.message}",
                {"source": source, "symbol": symbol, "interval": interval},
            ) from exc
        except PredictionProviderError:
            raise
        except (OSError, ValueError, KeyError, ConnectionError) as exc:
            raise FeederUnavailable(
                f"the {source} feeder failed: {type(exc).__name__}: {exc}", {"source": source}
            ) from exc

    def close(self) -> None:
        if self.recorder is not None:
            self.recorder.close()


def steps_of(request: ForecastRequest, trained: tuple[int, ...]) -> tuple[int, ...]:
    if request.horizons:
        return tuple(sorted(set(request.horizons)))
    if request.up_to is not None:
        return tuple(step for step in trained if step <= request.up_to)
    return trained


def forecast_request(payload: dict[str, Any]) -> ForecastRequest:
    """A ``ForecastRequest`` from its stored JSON form (``request_payload``), as a job keeps it."""
    as_of = payload.get("as_of")
    horizons = payload.get("horizons")
    return ForecastRequest(
        symbol=str(payload["symbol"]),
        interval=payload.get("interval"),
        horizons=None if horizons is None else tuple(int(h) for h in horizons),
        up_to=None if payload.get("up_to") is None else int(payload["up_to"]),
        as_of=None if as_of is None else datetime.fromisoformat(str(as_of)),
        model=payload.get("model"),
    )


def request_payload(request: ForecastRequest) -> dict[str, Any]:
    return {
        "symbol": request.symbol,
        "interval": request.interval,
        "horizons": None if request.horizons is None else list(request.horizons),
        "up_to": request.up_to,
        "as_of": None if request.as_of is None else request.as_of.astimezone(UTC).isoformat(),
        "model": request.model,
    }
