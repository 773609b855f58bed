"""Finding a forecast's outcome in the bars: the bar its features ended with, the bar closing at
its target time, and the point-in-time context the baselines need.

Bars are identified by their close time here (``PointInTimeFeatures.closed_bars`` gives them so,
and only once they have closed by the server's clock), so nothing is resolved before its outcome
exists. A closed market (a weekend, a holiday) resolves on the first bar closing after the target
time; none within ``max_delay`` makes the score void.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
import pandas as pd

BASE_RATE_BARS = 250


@dataclass(frozen=True, slots=True)
class ClosedBars:
    """One symbol's closed bars: close times (int64 ns, UTC) and closes, oldest first."""

    times: np.ndarray
    closes: np.ndarray

    @classmethod
    def from_frame(cls, frame: pd.DataFrame) -> ClosedBars:
        index = pd.DatetimeIndex(frame.index)
        index = index.tz_localize("UTC") if index.tz is None else index.tz_convert("UTC")
        return cls(index.as_unit("ns").asi8.copy(), frame["close"].to_numpy(dtype=np.float64, copy=True))

    def position(self, when: datetime) -> int | None:
        """The index of the bar closing exactly at ``when``."""
        ns = _ns(when)
        at = int(np.searchsorted(self.times, ns, "left"))
        return at if at < len(self.times) and int(self.times[at]) == ns else None

    def first_at_or_after(self, when: datetime) -> int | None:
        at = int(np.searchsorted(self.times, _ns(when), "left"))
        return at if at < len(self.times) else None

    def time_of(self, position: int) -> datetime:
        moment: datetime = pd.Timestamp(int(self.times[position]), tz="UTC").to_pydatetime()
        return moment


@dataclass(frozen=True, slots=True)
class Resolution:
    """What the market did: the as-of and target bars (positions, close times, closes)."""

    status: str  # scored | void | pending
    as_of_position: int | None = None
    target_position: int | None = None
    as_of_close: float | None = None
    target_close: float | None = None
    resolved_time: datetime | None = None
    reason: str | None = None

    @property
    def simple_return(self) -> float:
        assert self.as_of_close is not None
        assert self.target_close is not None
        return self.target_close / self.as_of_close - 1.0

    @property
    def log_return(self) -> float:
        assert self.as_of_close is not None
        assert self.target_close is not None
        return math.log(self.target_close / self.as_of_close)


def resolve(
    bars: ClosedBars, as_of: datetime, target_time: datetime, now: datetime, max_delay: timedelta
) -> Resolution:
    """The outcome of a forecast made from the bar closing at ``as_of`` about ``target_time``."""
    start = bars.position(as_of)
    if start is None:
        return Resolution("void", reason="as_of_bar_missing")
    target = bars.first_at_or_after(target_time)
    if target is None or target <= start:
        if now >= target_time + max_delay:
            return Resolution("void", as_of_position=start, reason="no_bar_within_max_delay")
        return Resolution("pending", as_of_position=start)
    resolved = bars.time_of(target)
    if resolved > target_time + max_delay:
        return Resolution("void", as_of_position=start, reason="no_bar_within_max_delay")
    as_of_close, target_close = float(bars.closes[start]), float(bars.closes[target])
    if not (math.isfinite(as_of_close) and math.isfinite(target_close)) or as_of_close <= 0:
        return Resolution("void", as_of_position=start, reason="bad_price")
    return Resolution("scored", start, target, as_of_close, target_close, resolved)


def point_in_time_context(
    bars: ClosedBars, as_of_position: int, periods_per_year: float
) -> dict[str, object]:
    """The baselines' inputs, from bars at or before the as-of bar only: the up-frequency of the
    ``BASE_RATE_BARS`` bar-to-bar moves ending there (0.5 with no history) and whether the last rose."""
    start = max(0, as_of_position - BASE_RATE_BARS)
    closes = bars.closes[start : as_of_position + 1]
    moves = np.diff(closes)
    base_rate = float(np.mean(moves > 0)) if len(moves) else 0.5
    last_up = bool(len(moves) and moves[-1] > 0)
    return {"base_rate": base_rate, "last_up": last_up, "periods_per_year": periods_per_year}


def periods_per_year(interval_seconds: int) -> float:
    """Trading periods a year at an interval: 252 days, 24 h a day for intraday bars (FX)."""
    return 252.0 * 86400 / interval_seconds


def _ns(when: datetime) -> int:
    return int(pd.Timestamp(when).tz_convert("UTC").value)
