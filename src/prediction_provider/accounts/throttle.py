"""Rate limits and caps: requests per caller, failed logins per username and per address,
and each user's in-flight predictions.

Where they are kept: Redis when ``PP_REDIS_URL`` is set (many machines); else, when given a
directory, an LMDB file the worker processes of one machine share (``serve --workers N``);
else this process's memory. The rules are ``limits``' whichever holds them.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from limits import RateLimitItem, parse, storage
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter, RateLimiter, SlidingWindowCounterRateLimiter

from prediction_provider.accounts.in_flight import InFlightSlots, MemoryInFlight, RedisInFlight
from prediction_provider.accounts.machine_limits import MachineInFlight, MachineStorage, MachineStore
from prediction_provider.errors import AuthenticationFailed, RateLimited

IN_FLIGHT_TTL_SECONDS = 300
SWEEP_INTERVAL_SECONDS = 1.0


class SweepingMemoryStorage(MemoryStorage):
    """``limits``' memory storage, sweeping expired keys inline once a second.

    The parent starts a new ``threading.Timer`` thread whenever the last one has
    finished, which under load is every 10 ms: starting a thread took about 7 % of
    the event loop's time at 1,700 requests/s. Expiry stays exact without the sweep
    (counters are checked against their expiry when read, and moving windows
    compare timestamps); the sweep only frees memory, so once a second is enough.
    """

    STORAGE_SCHEME = ["memory"]

    def __init__(self, uri: str | None = None, wrap_exceptions: bool = False, **options: str) -> None:
        super().__init__(uri, wrap_exceptions=wrap_exceptions, **options)
        self._next_sweep = time.monotonic() + SWEEP_INTERVAL_SECONDS

    def _MemoryStorage__schedule_expiry(self) -> None:
        now = time.monotonic()
        if now >= self._next_sweep:
            self._next_sweep = now + SWEEP_INTERVAL_SECONDS
            self._MemoryStorage__expire_events()  # type: ignore[attr-defined]


class Throttle:
    def __init__(
        self,
        redis_url: str | None,
        request_limit: str,
        login_lockout: str,
        login_failure_limit: str,
        max_in_flight: int,
        shared_dir: Path | None = None,
    ) -> None:
        self._redis: Any = None
        self._store: MachineStore | None = None
        self._slots: InFlightSlots
        if redis_url:
            import redis

            self._storage: Any = storage.storage_from_string(redis_url)
            self._redis = redis.Redis.from_url(redis_url)
            self._slots = RedisInFlight(self._redis, IN_FLIGHT_TTL_SECONDS)
        elif shared_dir is not None:
            self._store = MachineStore(shared_dir)
            self._storage = MachineStorage(self._store)
            self._slots = MachineInFlight(self._store, IN_FLIGHT_TTL_SECONDS)
        else:
            self._storage = SweepingMemoryStorage()
            self._slots = MemoryInFlight()
        # Logins: an exact moving window (few events). Requests: a sliding-window counter, O(1) per
        # hit; the moving window keeps one timestamp per request and cost ~50 µs a call under load.
        self._login_limiter = MovingWindowRateLimiter(self._storage)
        self._request_limiter = SlidingWindowCounterRateLimiter(self._storage)
        self.request_limit: RateLimitItem = parse(request_limit)
        self.login_lockout: RateLimitItem = parse(login_lockout)
        self.login_failure_limit: RateLimitItem = parse(login_failure_limit)
        self.max_in_flight = max_in_flight

    @staticmethod
    def _retry_after(reset_time: float) -> int:
        return max(1, math.ceil(reset_time - time.time()))

    @classmethod
    def _hit(cls, limiter: RateLimiter, limit: RateLimitItem, *identifiers: str) -> None:
        if not limiter.hit(limit, *identifiers):
            reset = limiter.get_window_stats(limit, *identifiers).reset_time
            raise RateLimited(
                f"rate limit of {limit} exceeded", cls._retry_after(reset), {"limit": str(limit)}
            )

    @contextmanager
    def login_attempt(self, username: str, address: str) -> Iterator[None]:
        """Guard one password check: the block is the check, and AuthenticationFailed out of it
        counts a failure against the username and the address. Refused (429, with a retry time)
        while either has spent its failures, even with the right password; a right password
        counts nothing. Checks under way count as failures until they end, so parallel guesses
        cannot all slip through before the first failure is counted."""
        user = ("login-user", username.lower())
        with (
            self._checking(self.login_lockout, user, "too many failed logins for this username"),
            self._checking(self.login_failure_limit, ("login-address", address), "too many failed logins"),
        ):
            try:
                yield
            except AuthenticationFailed:
                # Counted before the slots are given back: a check that starts later sees this
                # failure either as a slot still held or in the window.
                self._login_limiter.hit(self.login_lockout, *user)
                self._login_limiter.hit(self.login_failure_limit, "login-address", address)
                raise

    @contextmanager
    def _checking(self, limit: RateLimitItem, who: tuple[str, str], refusal: str) -> Iterator[None]:
        """One password check of ``who``, admitted while failures + checks under way <= the limit."""
        key = ":".join(who)
        slot = self._slots.acquire(key, limit.amount)
        if slot is None:
            raise RateLimited(f"{refusal} ({limit})", 1, {"limit": str(limit)})
        try:
            reset_time, remaining = self._login_limiter.get_window_stats(limit, *who)
            if slot.held > remaining:
                retry_after = self._retry_after(reset_time) if remaining <= 0 else 1
                raise RateLimited(f"{refusal} ({limit})", retry_after, {"limit": str(limit)})
            yield
        finally:
            self._slots.release(key, slot.token)

    def request(self, caller: str) -> None:
        """``caller`` is a user (``user:<id>``) or, for anonymous calls, an address (``ip:<addr>``)."""
        self._hit(self._request_limiter, self.request_limit, "request", caller)

    @contextmanager
    def in_flight(self, user: str) -> Iterator[None]:
        """Hold one of the user's ``max_in_flight`` prediction slots, or refuse with 429."""
        slot = self._slots.acquire(user, self.max_in_flight)
        if slot is None:
            raise RateLimited(
                f"at most {self.max_in_flight} predictions in flight per user",
                1,
                {"max_in_flight": self.max_in_flight},
            )
        try:
            yield
        finally:
            self._slots.release(user, slot.token)

    def redis_ok(self) -> bool:
        try:
            return bool(self._redis is not None and self._redis.ping())
        except Exception:  # noqa: BLE001 - any failure means "down"
            return False

    def reset(self) -> None:
        self._storage.reset()
