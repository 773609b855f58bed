"""The one shape every feeder returns, and the checks that hold it: float64 ``open, high, low, close,
volume`` columns on a UTC ``DatetimeIndex`` named ``time`` (bar open times), oldest first, no
duplicates. Prices must be positive and finite (the features take logarithms) and ``high >= low``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import pandas as pd

from prediction_provider.errors import InvalidInput, InvalidMarketData
from prediction_provider.features.feeders.intervals import Interval
from prediction_provider.features.market_data import OHLCV_COLUMNS

PRICE_COLUMNS = ("open", "high", "low", "close")
_SHOWN = 10  # offending rows or gaps listed in an error's details


def empty_bars() -> pd.DataFrame:
    index = pd.DatetimeIndex([], tz="UTC", name="time").as_unit("ns")
    return pd.DataFrame({name: pd.Series(dtype="float64") for name in OHLCV_COLUMNS}, index=index)


def utc_timestamp(value: datetime | pd.Timestamp | str | None, field: str) -> pd.Timestamp | None:
    """``value`` as a UTC timestamp; a naive time is refused rather than guessed."""
    if value is None:
        return None
    try:
        stamp = pd.Timestamp(value)
    except (ValueError, TypeError) as exc:
        raise InvalidInput(
            f"{field} is not a time: {value!r}", [{"field": field, "error": str(exc)}]
        ) from exc
    if stamp.tzinfo is None:
        raise InvalidInput(
            f"{field} has no timezone: {value!r}",
            [{"field": field, "error": "give a timezone-aware time, e.g. 2017-03-22T08:00:00Z"}],
        )
    return stamp.tz_convert("UTC")


def normalise_bars(frame: pd.DataFrame, symbol: str) -> pd.DataFrame:
    """``frame`` (OHLC and optionally volume columns, tz-aware index) in the feeder shape.

    A missing volume column becomes zeros (the volume z-score is then 0).
    Rows are sorted by time; duplicate times are an error, not silently merged.
    """
    missing = [name for name in PRICE_COLUMNS if name not in frame.columns]
    if missing:
        raise InvalidMarketData(
            f"{symbol} bars lack columns {missing}", {"symbol": symbol, "missing": missing}
        )
    if not isinstance(frame.index, pd.DatetimeIndex) or frame.index.tz is None:
        raise InvalidMarketData(
            f"{symbol} bars need a timezone-aware DatetimeIndex",
            {"symbol": symbol, "index": str(frame.index.dtype)},
        )
    bars = frame.loc[:, [name for name in OHLCV_COLUMNS if name in frame.columns]]
    try:
        bars = bars.astype("float64")
    except (ValueError, TypeError) as exc:
        raise InvalidMarketData(f"{symbol} bars hold non-numeric prices: {exc}", {"symbol": symbol}) from exc
    if "volume" not in bars.columns:
        bars = bars.assign(volume=0.0)
    bars.index = pd.DatetimeIndex(bars.index).tz_convert("UTC").as_unit("ns").rename("time")
    if not bars.index.is_monotonic_increasing:
        bars = bars.sort_index(kind="stable")
    _refuse_duplicates(bars, symbol)
    _refuse_impossible_prices(bars, symbol)
    return bars


def _refuse_duplicates(bars: pd.DataFrame, symbol: str) -> None:
    duplicated = bars.index.duplicated()
    if duplicated.any():
        times = sorted({stamp.isoformat() for stamp in bars.index[duplicated]})
        raise InvalidMarketData(
            f"{symbol} bars repeat {len(times)} timestamp(s), first {times[0]}",
            {"symbol": symbol, "duplicates": times[:_SHOWN]},
        )


def _refuse_impossible_prices(bars: pd.DataFrame, symbol: str) -> None:
    prices = bars.loc[:, list(PRICE_COLUMNS)].to_numpy()
    volume = bars["volume"].to_numpy()
    bad = ~np.isfinite(prices).all(axis=1) | (prices <= 0).any(axis=1)
    bad |= bars["high"].to_numpy() < bars["low"].to_numpy()
    bad |= ~np.isfinite(volume) | (volume < 0)
    if bad.any():
        times = [stamp.isoformat() for stamp in bars.index[bad][:_SHOWN]]
        raise InvalidMarketData(
            f"{symbol} has {int(bad.sum())} bar(s) with missing, non-positive or inconsistent values "
            f"(high below low, negative volume), first at {times[0]}",
            {"symbol": symbol, "rows": times},
        )


def select_range(bars: pd.DataFrame, start: pd.Timestamp | None, end: pd.Timestamp | None) -> pd.DataFrame:
    """Bars with ``start <= time <= end`` (either bound may be open)."""
    if start is None and end is None:
        return bars
    # Compared as nanoseconds: the index may be in coarser units than a bound (pandas 3 reads
    # microseconds), and a nanosecond bound must not be rounded into a bar it excludes.
    times = pd.DatetimeIndex(bars.index).as_unit("ns").asi8
    first = 0 if start is None else int(np.searchsorted(times, start.as_unit("ns").value, side="left"))
    last = len(times) if end is None else int(np.searchsorted(times, end.as_unit("ns").value, side="right"))
    return bars.iloc[first:last]


@dataclass(frozen=True, slots=True)
class Gap:
    """Two consecutive bars further apart than allowed: ``after`` is the last bar before the hole."""

    after: pd.Timestamp
    before: pd.Timestamp

    @property
    def length(self) -> pd.Timedelta:
        return self.before - self.after

    def as_dict(self) -> dict[str, str]:
        return {
            "after": self.after.isoformat(),
            "before": self.before.isoformat(),
            "length": str(self.length),
        }


def find_gaps(index: pd.DatetimeIndex, max_gap: pd.Timedelta) -> list[Gap]:
    """Every pair of consecutive bar times more than ``max_gap`` apart.

    Markets close: FX bars pause for about 48 hours every weekend, daily equity
    bars skip weekends and holidays (up to 4 days, a week after a market shutdown).
    ``max_gap`` is the longest pause that is still normal for the series.
    """
    if len(index) < 2:
        return []
    steps = np.diff(index.as_unit("ns").asi8)
    holes = np.flatnonzero(steps > max_gap.as_unit("ns").value)
    return [Gap(index[i], index[i + 1]) for i in holes]


def check_gaps(bars: pd.DataFrame, symbol: str, interval: Interval, max_gap: pd.Timedelta | None) -> None:
    if max_gap is None:
        return
    gaps = find_gaps(pd.DatetimeIndex(bars.index), max_gap)
    if gaps:
        raise InvalidMarketData(
            f"{symbol} {interval} bars have {len(gaps)} gap(s) longer than {max_gap}, "
            f"the first after {gaps[0].after.isoformat()} ({gaps[0].length})",
            {
                "symbol": symbol,
                "interval": str(interval),
                "max_gap": str(max_gap),
                "gaps": [gap.as_dict() for gap in gaps[:_SHOWN]],
            },
        )


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|min|h|d|w)\s*$", re.IGNORECASE)


def parse_duration(text: str | pd.Timedelta | None) -> pd.Timedelta | None:
    """``"72h"``, ``"4d"`` or ``"90min"`` as a Timedelta (``None`` passes through)."""
    if text is None or isinstance(text, pd.Timedelta):
        return text
    match = _DURATION.match(text)
    if match is None:
        raise InvalidInput(
            f"unknown duration {text!r}", [{"field": "max_gap", "error": "use e.g. 90min, 72h or 4d"}]
        )
    unit = {"s": "s", "m": "min", "min": "min", "h": "h", "d": "D", "w": "W"}[match.group(2).lower()]
    return pd.Timedelta(float(match.group(1)), unit=unit)
