"""The embedded default: the real bars shipped by ``backtesting`` (EURUSD hourly, GOOG daily)."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Self

import pandas as pd

from prediction_provider.features.feeders.base import BarFeeder, normalise_symbol, unknown_symbol
from prediction_provider.features.feeders.frames import normalise_bars, select_range
from prediction_provider.features.feeders.intervals import Interval
from prediction_provider.features.market_data import SAMPLE_SERIES, load_sample_bars

if TYPE_CHECKING:
    from prediction_provider.config import Settings


class SampleFeeder(BarFeeder):
    """``PP_FEEDER=backtesting``. Each series is read once and kept: it never changes."""

    name = "backtesting"

    def __init__(self, *, max_gap: pd.Timedelta | str | None = None) -> None:
        super().__init__(max_gap=max_gap)
        self._lock = threading.Lock()
        self._loaded: dict[str, pd.DataFrame] = {}

    @classmethod
    def from_settings(cls, settings: Settings) -> Self:
        return cls(max_gap=settings.feeder_max_gap)

    def native_interval(self, symbol: str) -> str:
        series = SAMPLE_SERIES.get(normalise_symbol(symbol))
        if series is None:
            raise unknown_symbol(symbol, self.symbols())
        return series.interval

    def read(
        self, symbol: str, interval: Interval, start: pd.Timestamp | None, end: pd.Timestamp | None
    ) -> pd.DataFrame:
        self.native_interval(symbol)
        with self._lock:
            bars = self._loaded.get(symbol)
            if bars is None:
                bars = self._loaded[symbol] = normalise_bars(load_sample_bars(symbol), symbol)
        return select_range(bars, start, end)

    def symbols(self) -> tuple[str, ...]:
        return tuple(sorted(SAMPLE_SERIES))
