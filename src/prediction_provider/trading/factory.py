"""Build the trading services the API shares: decisions and the accounts they are checked against."""

from __future__ import annotations

import logging

from prediction_provider.config import Settings
from prediction_provider.db.session import Database
from prediction_provider.errors import PredictionProviderError
from prediction_provider.trading.accounts import TradingAccountService
from prediction_provider.trading.decisions import DecisionService
from prediction_provider.trading.market import FeatureSource
from prediction_provider.trading.records import DecisionRecorder
from prediction_provider.trading.specialists import DecisionModels

log = logging.getLogger(__name__)


def feature_source(settings: Settings) -> FeatureSource:
    """The point-in-time features over the feeder ``PP_FEEDER`` names (the sample bars by default)."""
    from prediction_provider.features.feeders import feeder_from_settings
    from prediction_provider.features.point_in_time import PointInTimeFeatures

    return PointInTimeFeatures(feeder_from_settings(settings))


def build_trading(settings: Settings, db: Database) -> tuple[DecisionService, TradingAccountService]:
    """Load the decision models under the data dir and warm each symbol's data (blocking); decisions are
    recorded in ``db`` (close the service to write the last ones)."""
    accounts = TradingAccountService(db, cache_seconds=settings.account_cache_seconds)
    decisions = DecisionService(
        DecisionModels.load(settings.data_dir),
        feature_source(settings),
        accounts,
        settings,
        recorder=DecisionRecorder(db),
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
