"""A circuit breaker with resilience4j's semantics and names (design §3.7): a count window of the
last ``window_size`` verdicts, judged once it holds ``min_calls``; open for
``open_s * open_backoff ** (n - 1)`` seconds (n = consecutive opens, capped at ``max_open_s``);
half open with exactly ``half_open_calls`` probes. Pure: no I/O, the clock is injected.

Why not pybreaker & co.: they count consecutive failures only (no rate window, slow calls, minimum
volume or probe count), see design §0 item 6.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"
STATES = (CLOSED, OPEN, HALF_OPEN)
MODES = ("none", "force_open", "force_closed")


@dataclass(frozen=True, slots=True)
class BreakerConfig:
    window_size: int = 100
    min_calls: int = 20
    failure_rate: float = 0.5  # open at a window failure rate >= this (0-1)
    slow_call_ms: float = 0.0  # a call over this is slow; 0: no slow-call judging
    slow_call_rate: float = 0.8  # open at a window slow rate >= this (0-1)
    open_s: float = 30.0
    open_backoff: float = 2.0
    max_open_s: float = 300.0
    half_open_calls: int = 3

    def __post_init__(self) -> None:
        if self.window_size < 1 or self.min_calls < 1 or self.half_open_calls < 1:
            raise ValueError("window_size, min_calls and half_open_calls must be at least 1")
        if self.min_calls > self.window_size:
            raise ValueError("min_calls cannot exceed window_size")
        if not (0 < self.failure_rate <= 1 and 0 < self.slow_call_rate <= 1):
            raise ValueError("failure_rate and slow_call_rate must be in (0, 1]")
        if self.slow_call_ms < 0 or self.open_s <= 0 or self.open_backoff < 1:
            raise ValueError("slow_call_ms must be >= 0, open_s > 0 and open_backoff >= 1")
        if self.max_open_s < self.open_s:
            raise ValueError("max_open_s cannot be below open_s")

    def open_duration_s(self, opens: int) -> float:
        """How long the ``opens``-th consecutive open lasts."""
        return min(self.open_s * self.open_backoff ** max(opens - 1, 0), self.max_open_s)


class CircuitBreaker:
    """One (model, version)'s breaker in one process; thread-safe.

    A caller asks ``acquire()``; if True it calls the model and then reports exactly one of
    ``record(ok, duration_s)`` or ``release()`` (a call that ended without a verdict, e.g. a client
    validation error). In half-open a probe fails if it errs or is slow; the first failed probe
    opens the breaker again, and once all ``half_open_calls`` probes succeeded it closes, with an
    empty window and the backoff reset. ``force("force_open" | "force_closed")`` pins the breaker
    (Hystrix's controls) without recording anything; ``force("none")`` and ``reset()`` return it to
    closed with an empty window. ``on_transition(from, to)`` runs after each state change, outside
    the breaker's lock.
    """

    def __init__(
        self,
        config: BreakerConfig,
        clock: Callable[[], float] = time.monotonic,
        on_transition: Callable[[str, str], None] | None = None,
    ) -> None:
        self.config = config
        self._clock = clock
        self._on_transition = on_transition
        self._lock = threading.Lock()
        self._state = CLOSED
        self._mode = "none"
        self._window: deque[tuple[bool, bool]] = deque()  # (failed, slow), oldest first
        self._failures = 0
        self._slow = 0
        self._opens = 0  # consecutive opens, n in the backoff
        self._open_until = 0.0
        self._probes_issued = 0
        self._probes_passed = 0

    # --- reading -------------------------------------------------------------------------------

    @property
    def state(self) -> str:
        """``closed``, ``open`` or ``half_open`` (an open breaker whose time is up reads half_open)."""
        with self._lock:
            moved = self._tick()
            state = self._state
        self._announce(moved)
        return state

    @property
    def mode(self) -> str:
        return self._mode

    @property
    def opens(self) -> int:
        return self._opens

    def retry_after_s(self) -> float:
        """Seconds until the next probe when open (``open_s`` when forced open), else 0."""
        with self._lock:
            moved = self._tick()
            if self._mode == "force_open":
                left = self.config.open_s
            elif self._state == OPEN:
                left = max(self._open_until - self._clock(), 0.0)
            else:
                left = 0.0
        self._announce(moved)
        return left

    def snapshot(self) -> dict[str, object]:
        """What ``GET /models/{name}/resilience`` shows of this breaker."""
        with self._lock:
            moved = self._tick()
            total = len(self._window)
            view: dict[str, object] = {
                "state": self._state,
                "mode": self._mode,
                "calls": total,
                "failure_rate": self._failures / total if total else 0.0,
                "slow_call_rate": self._slow / total if total else 0.0,
                "consecutive_opens": self._opens,
                "half_open_probes": self._probes_issued if self._state == HALF_OPEN else 0,
            }
        self._announce(moved)
        view["retry_after_s"] = self.retry_after_s()
        return view

    # --- calls ---------------------------------------------------------------------------------

    def acquire(self) -> bool:
        """True: this call may reach the model (closed, or one of the half-open probes)."""
        with self._lock:
            moved = self._tick()
            if self._mode != "none":
                allowed = self._mode == "force_closed"
            elif self._state == CLOSED:
                allowed = True
            elif self._state == HALF_OPEN and self._probes_issued < self.config.half_open_calls:
                self._probes_issued += 1
                allowed = True
            else:
                allowed = False
        self._announce(moved)
        return allowed

    def record(self, ok: bool, duration_s: float) -> None:
        """The verdict of an acquired call: ``ok=False`` for an error, timeout or rejection."""
        slow = 0 < self.config.slow_call_ms < duration_s * 1000.0
        with self._lock:
            moved = self._tick()
            if self._mode != "none" or self._state == OPEN:
                pass  # forced, or a late verdict of a call let through before the breaker opened
            elif self._state == CLOSED:
                self._push(not ok, slow)
                if self._tripped():
                    moved += self._open()
            elif self._probes_passed < self._probes_issued:  # half open: one of our probes
                if not ok or slow:
                    moved += self._open()
                else:
                    self._probes_passed += 1
                    if self._probes_passed >= self.config.half_open_calls:
                        moved += self._close()
        self._announce(moved)

    def release(self) -> None:
        """An acquired call ended without a verdict: a half-open probe's permit is given back."""
        with self._lock:
            if self._state == HALF_OPEN and self._probes_issued > self._probes_passed:
                self._probes_issued -= 1

    # --- controls ------------------------------------------------------------------------------

    def force(self, mode: str) -> None:
        """``force_open``, ``force_closed`` or ``none``; setting the current mode again is a no-op."""
        if mode not in MODES:
            raise ValueError(f"unknown breaker mode {mode!r}")
        with self._lock:
            if mode == self._mode:
                return
            self._mode = mode
            target = OPEN if mode == "force_open" else CLOSED
            moved = self._move(target)
            self._clear()
            self._opens = 0
        self._announce(moved)

    def reset(self) -> None:
        """Closed, not forced, with an empty window and the backoff reset."""
        with self._lock:
            self._mode = "none"
            moved = self._move(CLOSED)
            self._clear()
            self._opens = 0
        self._announce(moved)

    # --- inside the lock -----------------------------------------------------------------------

    def _push(self, failed: bool, slow: bool) -> None:
        if len(self._window) == self.config.window_size:
            old_failed, old_slow = self._window.popleft()
            self._failures -= old_failed
            self._slow -= old_slow
        self._window.append((failed, slow))
        self._failures += failed
        self._slow += slow

    def _tripped(self) -> bool:
        total = len(self._window)
        if total < self.config.min_calls:
            return False
        if self._failures / total >= self.config.failure_rate:
            return True
        return self.config.slow_call_ms > 0 and self._slow / total >= self.config.slow_call_rate

    def _tick(self) -> list[tuple[str, str]]:
        if self._mode == "none" and self._state == OPEN and self._clock() >= self._open_until:
            self._probes_issued = self._probes_passed = 0
            return self._move(HALF_OPEN)
        return []

    def _open(self) -> list[tuple[str, str]]:
        self._opens += 1
        self._open_until = self._clock() + self.config.open_duration_s(self._opens)
        self._clear()
        return self._move(OPEN)

    def _close(self) -> list[tuple[str, str]]:
        self._opens = 0
        self._clear()
        return self._move(CLOSED)

    def _clear(self) -> None:
        self._window.clear()
        self._failures = self._slow = 0
        self._probes_issued = self._probes_passed = 0

    def _move(self, to: str) -> list[tuple[str, str]]:
        if to == self._state:
            return []
        moved = [(self._state, to)]
        self._state = to
        return moved

    def _announce(self, moved: list[tuple[str, str]]) -> None:
        if self._on_transition is not None:
            for from_state, to_state in moved:
                self._on_transition(from_state, to_state)
