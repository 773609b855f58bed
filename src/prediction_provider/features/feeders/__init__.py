"""Bar feeders: plugins that yield OHLCV bars for a symbol and interval.

Every feeder answers ``bars(symbol, interval, start=None, end=None)`` with
float64 ``open, high, low, close, volume`` columns on a UTC ``DatetimeIndex``
named ``time`` (bar open times), oldest first, checked for duplicates,
impossible prices and, when ``max_gap`` is set, gaps. Built-ins: ``backtesting``
(the embedded sample bars, the default), ``csv``, ``parquet``, ``database`` (the
``time_series_data`` table, optionally caching another feeder) and ``yfinance``
(an optional extra). ``feeder_from_settings`` picks one by ``PP_FEEDER``.
"""

from prediction_provider.features.feeders.base import BarFeeder, MemoryFeeder
from prediction_provider.features.feeders.files import ColumnMap
from prediction_provider.features.feeders.frames import Gap, find_gaps
from prediction_provider.features.feeders.intervals import Interval
from prediction_provider.features.feeders.registry import (
    FEEDER_GROUP,
    feeder_from_settings,
    feeder_plugins,
    load_feeder,
)
from prediction_provider.features.feeders.resample import resample_bars

__all__ = [
    "FEEDER_GROUP",
    "BarFeeder",
    "ColumnMap",
    "Gap",
    "Interval",
    "MemoryFeeder",
    "feeder_from_settings",
    "feeder_plugins",
    "find_gaps",
    "load_feeder",
    "resample_bars",
]
