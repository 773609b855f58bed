"""Builds the scorer over the bars the served models read: a symbol's outcome comes from the
feeder spec its forecast model (or its decision models) was trained from, so a symbol trained
from a CSV is scored against that CSV, at the server's clock."""

from __future__ import annotations

import contextlib
from datetime import datetime
from typing import Any

import pandas as pd

from prediction_provider.clock import Clock
from prediction_provider.config import Settings
from prediction_provider.db.session import Database
from prediction_provider.features.market_sources import MarketSources
from prediction_provider.forecasts.model import ForecastModel
from prediction_provider.forecasts.service import ForecastService
from prediction_provider.outcomes.gauges import realized_gauges_refresher
from prediction_provider.outcomes.scoring import Scorer
from prediction_provider.outcomes.signal_outcomes import SignalJudge


class ScoredMarkets:
    """``bars_of`` and ``interval_of`` for the scorer, over the process's ``MarketSources``."""

    def __init__(
        self, market: MarketSources, forecasts: ForecastService | None, decisions: Any = None
    ) -> None:
        self.market = market
        self.forecasts = forecasts
        self.decisions = decisions

    def source_of(self, symbol: str, interval: str | None) -> str | None:
        if self.forecasts is not None and interval is not None:
            entry = self.forecasts.catalog.intervals(symbol.upper()).get(interval)
            if entry is not None:
                with contextlib.suppress(Exception):
                    cached = self.forecasts.cache.peek(entry.model_name)
                    if cached is not None and isinstance(cached.model, ForecastModel):
                        return str(cached.model.manifest.source) if cached.model.manifest.source else None
        if self.decisions is not None:
            with contextlib.suppress(Exception):
                trained_interval, source = self.decisions.models.market_of(symbol)
                if interval is None or trained_interval in (None, interval):
                    return None if source is None else str(source)
        return None

    def bars_of(self, symbol: str, interval: str | None, until: datetime) -> pd.DataFrame:
        features = self.market.for_symbol(symbol, interval, self.source_of(symbol, interval))
        return features.closed_bars(symbol, until)

    def interval_of(self, symbol: str) -> str:
        if self.decisions is not None:
            with contextlib.suppress(Exception):
                trained_interval, source = self.decisions.models.market_of(symbol)
                if trained_interval is not None:
                    return str(trained_interval)
                return self.market.for_symbol(symbol, None, source).interval_for(symbol)
        return self.market.for_symbol(symbol).interval_for(symbol)


def build_scorer(
    settings: Settings,
    db: Database,
    clock: Clock,
    market: MarketSources | None,
    forecasts: ForecastService | None,
    decisions: Any = None,
) -> Scorer | None:
    if market is None:
        return None
    markets = ScoredMarkets(market, forecasts, decisions)
    return Scorer(
        db, clock, settings, markets.bars_of, markets.interval_of, signal_judge=SignalJudge(settings),
        on_scored=realized_gauges_refresher(db, clock),  # the realized gauges follow every pass
    )  # fmt: skip
