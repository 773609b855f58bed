"""The weekly horizon a signal looks over, from the bars (the oracle) or from the calendar (the models).

A trade opened at an entry bar is judged over the bars that follow it up to
and including the first bar that closes the trading week:

- a Friday bar at or after 20:00 UTC, or
- a Monday bar after a gap, meaning no bar in the 24 hours before it: the week
  ended without a late Friday bar (a holiday, or data that stops early on
  Fridays). A Monday bar that follows Sunday-evening bars is no such bar.

When the data ends before any such bar, the horizon is every bar left, and
``bars_remaining`` is reported as at least ``prediction_horizon`` (30 by default):
the true end of the week lies beyond the data, and clients size positions by
``bars_remaining`` x confidence, which must not collapse to zero there.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from prediction_provider.signals.bars import IntArray, PriceBars

NS_PER_MINUTE = 60_000_000_000
MINUTES_PER_DAY = 24 * 60
NS_PER_DAY = NS_PER_MINUTE * MINUTES_PER_DAY
MONDAY, FRIDAY, SATURDAY = 0, 4, 5
WEEK_CLOSE_MINUTE = 20 * 60
# The epoch, 1970-01-01, was a Thursday.
EPOCH_WEEKDAY = 3
# Minutes from Monday 00:00 to Friday 20:00.
MINUTES_TO_WEEK_CLOSE = FRIDAY * MINUTES_PER_DAY + WEEK_CLOSE_MINUTE


def weekday_and_minute(times: IntArray) -> tuple[IntArray, IntArray]:
    """Weekday (Monday 0) and minute of the day of each UTC time; floor division keeps pre-1970 right."""
    days = times // NS_PER_DAY
    weekday = (days + EPOCH_WEEKDAY) % 7
    minute = (times - days * NS_PER_DAY) // NS_PER_MINUTE
    return weekday.astype(np.int64), minute.astype(np.int64)


def week_closing_bars(times: IntArray) -> IntArray:
    """Indices, ascending, of the bars that close a trading week (see the module docstring)."""
    weekday, minute = weekday_and_minute(times)
    late_friday = (weekday == FRIDAY) & (minute >= WEEK_CLOSE_MINUTE)
    after_gap = np.zeros(len(times), dtype=bool)
    after_gap[1:] = np.diff(times) > NS_PER_DAY
    return np.flatnonzero(late_friday | ((weekday == MONDAY) & after_gap)).astype(np.int64)


@dataclass(frozen=True, slots=True)
class Horizon:
    """Bars ``entry + 1`` to ``last`` (inclusive) are scanned; ``last == entry`` when none follows."""

    entry: int
    last: int
    bars_remaining: int
    runs_out: bool


@dataclass(frozen=True, slots=True, eq=False)
class WeeklyHorizon:
    closing_bars: IntArray
    bar_count: int
    minimum_when_data_ends: int

    @classmethod
    def of(cls, bars: PriceBars, prediction_horizon: int) -> WeeklyHorizon:
        return cls(week_closing_bars(bars.times), len(bars), prediction_horizon)

    def span(self, entry: int) -> Horizon:
        position = int(np.searchsorted(self.closing_bars, entry, side="right"))
        if position < len(self.closing_bars):
            last = int(self.closing_bars[position])
            return Horizon(entry, last, last - entry, runs_out=False)
        last = self.bar_count - 1
        return Horizon(entry, last, max(last - entry, self.minimum_when_data_ends), runs_out=True)


def calendar_bars_remaining(times: IntArray, spacing_ns: int) -> IntArray:
    """The models' horizon: bars of ``spacing_ns`` from each time to the next Friday 20:00, at least 1.

    Read from the calendar, not from later bars, so the model-based predictors
    never look past their entry bar. Saturday and Sunday count towards the
    coming week, as the Sunday-evening bars of FX data do; a Friday bar at or
    after 20:00 gets 1, the next bar (which closes the week, as for the oracle).
    """
    weekday, minute = weekday_and_minute(times)
    into_week = weekday * MINUTES_PER_DAY + minute
    into_week = np.where(weekday >= SATURDAY, into_week - 7 * MINUTES_PER_DAY, into_week)
    spacing_minutes = max(spacing_ns / NS_PER_MINUTE, 1.0)
    bars = np.ceil((MINUTES_TO_WEEK_CLOSE - into_week) / spacing_minutes)
    return np.maximum(bars, 1).astype(np.int64)
