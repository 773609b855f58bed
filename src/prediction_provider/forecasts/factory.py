"""Build the forecast service a process shares: catalog, market data, recorder; warm what it serves."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

from prediction_provider.db.session import Database
from prediction_provider.errors import PredictionProviderError
from prediction_provider.features.market_sources import MarketSources
from prediction_provider.forecasts.answers import ANSWER_CACHE_SIZE
from prediction_provider.forecasts.records import PredictionRecorder
from prediction_provider.forecasts.service import ForecastCatalog, ForecastRequest, ForecastService
from prediction_provider.serving.cache import ModelCache
from prediction_provider.serving.registry import ModelRegistry

log = logging.getLogger(__name__)


def build_forecasts(
    registry: ModelRegistry,
    cache: ModelCache,
    db: Database,
    market: MarketSources,
    *,
    warm: bool,
    answer_cache: int = ANSWER_CACHE_SIZE,
    clock: Callable[[], datetime] | None = None,
    record: bool = True,
) -> ForecastService:
    """The forecast service; with ``warm``, every served symbol's model and bars are loaded now
    (blocking), so that no request waits for them. A symbol that fails to warm is logged and left
    to fail on its own requests, as decisions do. ``clock`` is the one clock (default: the market's,
    so an ``as_of`` past the market replay's time is refused as in the future). Without ``record``
    (``PP_RECORD_FORECASTS=false``) no ``prediction_records`` row is written, so nothing is scored."""
    catalog = ForecastCatalog(registry)
    service = ForecastService(
        cache,
        catalog,
        market,
        PredictionRecorder(db) if record else None,
        clock=clock or market.clock,
        answer_cache=answer_cache,
    )
    try:
        catalog.refresh()
    except PredictionProviderError as exc:
        log.error("forecast models unavailable until the registry answers: %s", exc)
        return service
    if warm:
        for symbol in catalog.symbols():
            for interval in catalog.intervals(symbol):
                try:
                    service.check(ForecastRequest(symbol, interval))
                except (PredictionProviderError, OSError, ValueError, KeyError) as exc:
                    log.error("forecasts of %s %s are unavailable: %s", symbol, interval, exc)
    log.info("forecasts for %s", ", ".join(catalog.symbols()) or "no symbol")
    return service
