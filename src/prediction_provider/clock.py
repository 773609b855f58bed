"""The one clock: deadlines, leases, quote expiry, sweeps and ``data_as_of`` all read it, never
``datetime.now()``. ``PP_CLOCK=manual`` hands it to tests (``POST /api/v1/admin/clock``), so every
time-based rule is checked deterministically, without sleeping."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Protocol

from prediction_provider.db.base import utcnow


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


def make_clock(kind: str, start: datetime | None = None) -> SystemClock | ManualClock:
    return ManualClock(start) if kind == "manual" else SystemClock()
