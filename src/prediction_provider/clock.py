"""The one clock: deadlines, leases, quote expiry, sweeps and ``data_as_of`` all read it, never
``datetime.now()``. ``PP_CLOCK=manual`` hands it to tests (``POST /api/v1/admin/clock``), so every
time-based rule is checked deterministically, without sleeping."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Protocol

from prediction_provider.db.base import utcnow

if TYPE_CHECKING:
    from prediction_provider.config import Settings


class Clock(Protocol):
    @property
    def manual(self) -> bool: ...

    def now(self) -> datetime: ...


class SystemClock:
    manual = False

    def now(self) -> datetime:
        return utcnow()


class ManualClock:
    """A clock that moves only when told. It never goes back: a lease or a deadline that has passed
    stays passed, as with a real clock."""

    manual = True

    def __init__(self, start: datetime | None = None) -> None:
        self._now = (start or utcnow()).astimezone(UTC)
        self._lock = threading.Lock()

    def now(self) -> datetime:
        return self._now

    def set(self, when: datetime) -> datetime:
        if when.tzinfo is None:
            raise ValueError("naive datetime: give the clock a timezone-aware UTC time")
        with self._lock:
            if when < self._now:
                raise ValueError(f"the clock never goes back: it reads {self._now.isoformat()}")
            self._now = when.astimezone(UTC)
            return self._now

    def advance(self, seconds: float) -> datetime:
        if seconds < 0:
            raise ValueError("the clock never goes back")
        return self.set(self._now + timedelta(seconds=seconds))


class ReplayClock:
    """The market replay's clock: ``start`` plus the wall time elapsed since it was made, times
    ``speed`` (market seconds per wall second). Bars closing after ``now()`` are not released yet,
    so a replay started in the past of recorded bars plays them as a live market. It reads a
    monotonic wall clock, so it never goes back (a system clock step does not move it).

    Each process starts its own replay when it makes the clock: processes that must agree on the
    market time (several API workers) should share a manual clock instead."""

    manual = False

    def __init__(
        self, start: datetime, speed: float = 60.0, wall: Callable[[], float] = time.monotonic
    ) -> None:
        if start.tzinfo is None:
            raise ValueError("naive datetime: give the replay a timezone-aware UTC start")
        if not speed > 0:
            raise ValueError("the replay speed must be > 0 market seconds per wall second")
        self.start = start.astimezone(UTC)
        self.speed = float(speed)
        self._wall = wall
        self._wall_at_start = wall()
        self._last = self.start
        self._lock = threading.Lock()

    def now(self) -> datetime:
        elapsed = max(0.0, self._wall() - self._wall_at_start)
        when = self.start + timedelta(seconds=elapsed * self.speed)
        # Monotone even if the wall function is not (a test's fake, a coarse clock read out of order).
        with self._lock:
            if when < self._last:
                return self._last
            self._last = when
            return when


def make_clock(kind: str, start: datetime | None = None) -> SystemClock | ManualClock:
    return ManualClock(start) if kind == "manual" else SystemClock()


def clock_from_settings(settings: Settings) -> SystemClock | ManualClock | ReplayClock:
    """The one clock of a process: ``PP_MARKET_CLOCK`` (replay or manual) when set, else ``PP_CLOCK``.

    A replay without ``PP_MARKET_CLOCK_START`` starts 30 days before the last sample EURUSD bar
    closes, so there is history behind it and bars ahead of it to release."""
    if settings.market_clock == "replay":
        start = settings.market_clock_start
        if start is None:
            from prediction_provider.demo.replay import sample_replay_start

            start = sample_replay_start(settings.bar_label)
        return ReplayClock(start, settings.market_clock_speed)
    if settings.market_clock == "manual":
        return ManualClock(settings.market_clock_start or settings.clock_start)
    return make_clock(settings.clock, settings.clock_start)
