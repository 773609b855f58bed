"""OHLC bars as the signal predictors read them: strictly increasing UTC times and float64 prices.

Prices in a CSV are read as text and converted by NumPy, which rounds
correctly (pandas' own fast parser may land one ulp off the written decimal),
so a price is always the float64 nearest to the decimal written in the file.
The level comparisons in ``signals.levels`` rely on that.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

REQUIRED_COLUMNS = ("DATE_TIME", "OPEN", "HIGH", "LOW", "CLOSE")
PRICE_COLUMNS = ("OPEN", "HIGH", "LOW", "CLOSE")
DAY_FIRST_FORMAT = "%d.%m.%Y %H:%M:%S.%f"
DAY_FIRST_NO_FRACTION = "%d.%m.%Y %H:%M:%S"
TIME_FORMATS_TEXT = "DD.MM.YYYY HH:MM:SS.fff (day first) or ISO 8601"

FloatArray = np.ndarray[Any, np.dtype[np.float64]]
IntArray = np.ndarray[Any, np.dtype[np.int64]]


@dataclass(frozen=True, slots=True, eq=False)
class PriceBars:
    """Bars in time order; ``times`` are nanoseconds since the epoch, UTC."""

    times: IntArray
    open: FloatArray
    high: FloatArray
    low: FloatArray
    close: FloatArray

    def __post_init__(self) -> None:
        n = len(self.times)
        if n == 0:
            raise ValueError("no bars")
        if any(len(column) != n for column in (self.open, self.high, self.low, self.close)):
            raise ValueError("every price column needs one value per bar")
        steps = np.diff(self.times)
        if (steps <= 0).any():
            at = int(np.argmax(steps <= 0)) + 1
            raise ValueError(f"bar times must be strictly increasing; bar {at} is at {self.timestamp(at)}")
        for name in ("open", "high", "low", "close"):
            values: FloatArray = getattr(self, name)
            if not np.isfinite(values).all():
                at = int(np.argmax(~np.isfinite(values)))
                raise ValueError(f"{name.upper()} of the bar at {self.timestamp(at)} is not a finite number")

    def __len__(self) -> int:
        return len(self.times)

    def timestamp(self, index: int) -> pd.Timestamp:
        return pd.Timestamp(int(self.times[index]), unit="ns", tz="UTC")

    def nearest(self, when_ns: int) -> int:
        """The bar closest in time to ``when_ns``; of two equally close bars, the earlier."""
        right = int(np.searchsorted(self.times, when_ns, side="left"))
        if right == 0:
            return 0
        if right == len(self.times):
            return right - 1
        left = right - 1
        return left if when_ns - int(self.times[left]) <= int(self.times[right]) - when_ns else right

    def as_of(self, when_ns: int) -> int:
        """The last bar stamped at or before ``when_ns``; -1 when every bar is later."""
        return int(np.searchsorted(self.times, when_ns, side="right")) - 1

    def spacing_ns(self) -> int:
        """The usual distance between bars (the median step); one hour for a single bar."""
        if len(self.times) < 2:
            return 3_600_000_000_000
        return int(np.median(np.diff(self.times)))

    def tail(self, count: int) -> PriceBars:
        """The last ``count`` bars (all of them when there are fewer)."""
        if count >= len(self.times):
            return self
        if count < 1:
            raise ValueError("a tail needs at least one bar")
        return PriceBars(
            self.times[-count:],
            self.open[-count:],
            self.high[-count:],
            self.low[-count:],
            self.close[-count:],
        )

    def frame(self) -> pd.DataFrame:
        """The bars as ``features.pipeline`` reads them (lower-case columns, UTC index).

        There is no volume: the signal files carry none, and the signal models leave
        the volume feature out.
        """
        index = pd.DatetimeIndex(pd.to_datetime(self.times, unit="ns", utc=True), name="time")
        return pd.DataFrame(
            {"open": self.open, "high": self.high, "low": self.low, "close": self.close, "volume": 0.0},
            index=index,
        )

    @classmethod
    def from_frame(cls, bars: pd.DataFrame) -> PriceBars:
        """From lower-case ``open/high/low/close`` columns on a timezone-aware index, e.g. the sample bars."""
        index = pd.DatetimeIndex(bars.index)
        if index.tz is None:
            raise ValueError("bar times must be timezone-aware")
        times = index.tz_convert("UTC").as_unit("ns").asi8
        return cls(
            times=np.ascontiguousarray(times, dtype=np.int64),
            **{name: _prices(bars[name], name) for name in ("open", "high", "low", "close")},
        )


def _prices(column: pd.Series, name: str) -> FloatArray:
    try:
        if column.dtype == np.float64:
            return np.ascontiguousarray(column.to_numpy())
        return np.ascontiguousarray(column.astype(str).str.strip().to_numpy(dtype=np.str_).astype(np.float64))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name.upper()} holds a value that is not a number: {exc}") from exc


def parse_bar_times(values: pd.Series) -> pd.DatetimeIndex:
    """Day-first (``22.03.2017 08:00:00.000``, fraction optional) or ISO 8601; naive times are UTC."""
    text = values.astype(str).str.strip()
    for time_format in (DAY_FIRST_FORMAT, DAY_FIRST_NO_FRACTION, "ISO8601"):
        try:
            return pd.DatetimeIndex(pd.to_datetime(text, format=time_format, utc=True))
        except ValueError:
            continue
    raise ValueError(f"DATE_TIME must be {TIME_FORMATS_TEXT} in every row")


def read_bars_csv(path: Path) -> PriceBars:
    """Bars from a CSV with DATE_TIME, OPEN, HIGH, LOW, CLOSE in any order (other columns ignored).

    Column names are matched without regard to case or surrounding spaces. Rows
    are put in time order; two bars at the same time are an error.
    """
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    frame.columns = [str(column).strip().upper() for column in frame.columns]
    missing = [column for column in REQUIRED_COLUMNS if column not in frame.columns]
    if missing:
        raise ValueError(f"{path.name} lacks the columns {missing}; it has {list(frame.columns)}")
    times = parse_bar_times(frame["DATE_TIME"])
    order = np.argsort(times.asi8, kind="stable")
    sorted_times = times.as_unit("ns").asi8[order]
    duplicated = np.flatnonzero(np.diff(sorted_times) == 0)
    if len(duplicated):
        when = pd.Timestamp(int(sorted_times[duplicated[0]]), unit="ns", tz="UTC")
        raise ValueError(f"{path.name} has two bars at {when.isoformat()}")
    return PriceBars(
        times=np.ascontiguousarray(sorted_times, dtype=np.int64),
        **{name.lower(): _prices(frame[name], name)[order] for name in PRICE_COLUMNS},
    )


def write_bars_csv(bars: pd.DataFrame, path: Path) -> None:
    """Write bars in the oracle's format (day-first times, shortest round-trip prices), atomically."""
    index = pd.DatetimeIndex(bars.index).tz_convert("UTC")
    out = pd.DataFrame(
        {
            "DATE_TIME": index.strftime("%d.%m.%Y %H:%M:%S.%f").str[:-3],
            **{name: bars[name.lower()].to_numpy(dtype=np.float64) for name in PRICE_COLUMNS},
        }
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    out.to_csv(partial, index=False)
    os.replace(partial, path)
