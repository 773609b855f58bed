"""Build the trading services the API shares: decisions and the accounts they are checked against."""

from __future__ import annotations

import logging
from datetime import datetime

import pandas as pd

from prediction_provider.config import Settings
from prediction_provider.db.session import Database
from prediction_provider.errors import PredictionProviderError
from prediction_provider.features.market_sources import MarketSources
from prediction_provider.features.point_in_time import PointInTimeFeatures
from prediction_provider.trading.accounts import TradingAccountService
from prediction_provider.trading.decisions import DecisionService
from prediction_provider.trading.market import FeatureSource, Snapshot
from prediction_provider.trading.records import DecisionRecorder
from prediction_provider.trading.specialists import DecisionModels

log = logging.getLogger(__name__)


class ManifestMarkets:
    """Each symbol's features from the feeder spec and interval its decision manifest names.

    A symbol trained by ``prediction-provider train --source csv:...`` is read from
    that file; one trained from the sample bars (no source) from ``PP_FEEDER``.
    """

    def __init__(self, models: DecisionModels, sources: MarketSources) -> None:
        self.models = models
        self.sources = sources

    def features_of(self, symbol: str) -> PointInTimeFeatures:
        interval, source = self.models.market_of(symbol)
        return self.sources.for_symbol(symbol, interval, source)

    def snapshot(self, symbol: str, as_of: datetime | None) -> Snapshot:
        return self.features_of(symbol).snapshot(symbol, as_of)

    def bars(self, symbol: str, as_of: datetime, lookback: int) -> pd.DataFrame:
        return self.features_of(symbol).bars(symbol, as_of, lookback)


def feature_source(
    settings: Settings, models: DecisionModels | None = None, sources: MarketSources | None = None
) -> FeatureSource:
    """The point-in-time features decisions read: with ``models``, each symbol from its manifest's
    source (``ManifestMarkets``); without, every symbol over ``PP_FEEDER`` (the sample bars by default)."""
    if models is None:
        from prediction_provider.features.feeders import feeder_from_settings

        return PointInTimeFeatures(feeder_from_settings(settings))
    return ManifestMarkets(models, sources or MarketSources(settings))


def build_trading(
    settings: Settings, db: Database, sources: MarketSources | None = None
) -> tuple[DecisionService, TradingAccountService]:
    """Load the decision models under the data dir and warm each symbol's data (blocking); decisions are
    recorded in ``db`` (close the service to write the last ones). ``sources`` is the market data the
    other services share (a new ``MarketSources`` when None)."""
    accounts = TradingAccountService(db, cache_seconds=settings.account_cache_seconds)
    models = DecisionModels.load(settings.data_dir)
    decisions = DecisionService(
        models,
        feature_source(settings, models, sources),
        accounts,
        settings,
        recorder=DecisionRecorder(db),
        clock=None if sources is None else sources.clock,
    )
    for symbol in decisions.models.symbols():
        try:
            # Reads the symbol's bars once, so that no request waits for the feeder.
            snapshot = decisions.market.snapshot(symbol, None)
            decisions.market_view(symbol, decisions.models.for_symbol(symbol), snapshot)
        except (PredictionProviderError, OSError, ValueError, KeyError) as exc:
            log.error("decisions on %s are unavailable: %s", symbol, exc)
    log.info("trading decisions for %s", ", ".join(decisions.models.symbols()) or "no symbol")
    return decisions, accounts
