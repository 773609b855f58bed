"""The real OHLCV bars shipped by the ``backtesting`` package: the embedded default data.

``EURUSD`` holds hourly bars (2017-2018) and ``GOOG`` daily bars (2004-2013).
Columns are normalised to lower case and the index to timezone-aware UTC.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

OHLCV_COLUMNS = ("open", "high", "low", "close", "volume")


@dataclass(frozen=True, slots=True)
class SampleSeries:
    symbol: str
    interval: str
    attribute: str


SAMPLE_SERIES = {
    "EURUSD": SampleSeries("EURUSD", "1h", "EURUSD"),
    "GOOG": SampleSeries("GOOG", "1d", "GOOG"),
}


def load_sample_bars(symbol: str) -> pd.DataFrame:
    """Bars for ``symbol`` (EURUSD or GOOG), oldest first, UTC index named ``time``."""
    series = SAMPLE_SERIES.get(symbol.upper())
    if series is None:
        raise KeyError(f"no sample bars for {symbol!r}; available: {sorted(SAMPLE_SERIES)}")
    import backtesting.test

    raw: pd.DataFrame = getattr(backtesting.test, series.attribute)
    bars = raw.rename(columns=str.lower).loc[:, list(OHLCV_COLUMNS)].astype("float64")
    index = pd.DatetimeIndex(bars.index)
    bars.index = index.tz_localize("UTC") if index.tz is None else index.tz_convert("UTC")
    bars.index.name = "time"
    bars = bars.sort_index()
    if bars.index.has_duplicates:
        raise ValueError(f"sample bars for {symbol} contain duplicate timestamps")
    return bars
