"""The circuit breaker's every transition, on a fake clock (resilience4j semantics, design §3.7)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from prediction_provider.modelops.breaker import CLOSED, HALF_OPEN, OPEN, BreakerConfig, CircuitBreaker


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def make(**changes: float) -> tuple[CircuitBreaker, FakeClock, list[tuple[str, str]]]:
    fields: dict[str, float] = {
        "window_size": 10,
        "min_calls": 4,
        "failure_rate": 0.5,
        "open_s": 10,
        "open_backoff": 2,
        "max_open_s": 35,
        "half_open_calls": 2,
    }
    fields.update(changes)
    clock, moves = FakeClock(), []
    breaker = CircuitBreaker(
        BreakerConfig(**fields),  # type: ignore[arg-type]
        clock,
        lambda a, b: moves.append((a, b)),
    )
    return breaker, clock, moves


def calls(breaker: CircuitBreaker, *verdicts: bool, duration_s: float = 0.001) -> None:
    for ok in verdicts:
        assert breaker.acquire()
        breaker.record(ok, duration_s)


def opened(breaker: CircuitBreaker) -> None:
    calls(breaker, False, False, False, False)
    assert breaker.state == OPEN


def test_below_min_calls_even_all_failures_keep_it_closed() -> None:
    breaker, _, moves = make()
    calls(breaker, False, False, False)
    assert breaker.state == CLOSED
    assert breaker.acquire()
    assert moves == []


def test_it_opens_once_the_window_holds_min_calls_at_the_failure_rate() -> None:
    breaker, _, moves = make()
    calls(breaker, True, False, True, False)  # 2 of 4 = 0.5 >= 0.5
    assert breaker.state == OPEN
    assert not breaker.acquire()
    assert moves == [(CLOSED, OPEN)]


def test_a_rate_below_the_threshold_keeps_it_closed() -> None:
    breaker, _, _ = make(failure_rate=0.6)
    calls(breaker, True, False, True, False, True, True)  # 2 of 6
    assert breaker.state == CLOSED


def test_the_count_window_forgets_verdicts_older_than_window_size() -> None:
    breaker, _, _ = make(window_size=4, min_calls=4, failure_rate=0.75)
    calls(breaker, False, False, True, True)  # 2 of 4: closed
    calls(breaker, True, True)  # the two failures slid out: 0 of 4
    calls(breaker, False)  # 1 of 4
    assert breaker.state == CLOSED
    assert breaker.snapshot()["failure_rate"] == 0.25


def test_slow_calls_open_it_at_the_slow_call_rate() -> None:
    breaker, _, _ = make(slow_call_ms=50, slow_call_rate=0.75)
    calls(breaker, True, True, True, duration_s=0.051)
    calls(breaker, True, duration_s=0.049)
    assert breaker.state == OPEN  # 3 of 4 slow, none failed


def test_with_slow_call_ms_zero_no_call_is_slow() -> None:
    breaker, _, _ = make(slow_call_ms=0, slow_call_rate=0.1)
    calls(breaker, True, True, True, True, True, duration_s=60.0)
    assert breaker.state == CLOSED


def test_open_counts_down_then_turns_half_open_at_open_s() -> None:
    breaker, clock, moves = make()
    opened(breaker)
    assert breaker.retry_after_s() == 10
    clock.advance(9.5)
    assert breaker.state == OPEN
    assert breaker.retry_after_s() == pytest.approx(0.5)
    assert not breaker.acquire()
    clock.advance(0.5)
    assert breaker.state == HALF_OPEN
    assert breaker.retry_after_s() == 0
    assert moves == [(CLOSED, OPEN), (OPEN, HALF_OPEN)]


def test_half_open_lets_exactly_half_open_calls_probes_through() -> None:
    breaker, clock, _ = make(half_open_calls=3)
    opened(breaker)
    clock.advance(10)
    assert [breaker.acquire() for _ in range(5)] == [True, True, True, False, False]


def test_all_probes_succeeding_close_it_with_an_empty_window_and_no_backoff() -> None:
    breaker, clock, moves = make()
    opened(breaker)
    clock.advance(10)
    calls(breaker, True)
    assert breaker.state == HALF_OPEN
    calls(breaker, True)
    assert breaker.state == CLOSED
    assert breaker.snapshot()["calls"] == 0
    assert breaker.opens == 0
    opened(breaker)
    assert breaker.retry_after_s() == 10  # the first open again, not the second
    assert moves[-2:] == [(HALF_OPEN, CLOSED), (CLOSED, OPEN)]


def test_a_failed_probe_opens_it_again_for_longer_up_to_max_open_s() -> None:
    breaker, clock, moves = make()
    opened(breaker)
    durations = []
    for _ in range(4):
        clock.advance(breaker.retry_after_s())
        assert breaker.acquire()
        breaker.record(False, 0.001)
        assert breaker.state == OPEN
        durations.append(breaker.retry_after_s())
    assert durations == [20, 35, 35, 35]  # 10 * 2, 10 * 4 capped at 35, ...
    assert moves[:4] == [(CLOSED, OPEN), (OPEN, HALF_OPEN), (HALF_OPEN, OPEN), (OPEN, HALF_OPEN)]


def test_a_slow_probe_counts_as_a_failed_probe() -> None:
    breaker, clock, _ = make(slow_call_ms=100)
    opened(breaker)
    clock.advance(10)
    assert breaker.acquire()
    breaker.record(True, 0.2)
    assert breaker.state == OPEN


def test_a_released_probe_gives_its_permit_back() -> None:
    breaker, clock, _ = make(half_open_calls=1)
    opened(breaker)
    clock.advance(10)
    assert breaker.acquire()
    assert not breaker.acquire()
    breaker.release()  # e.g. the caller's features were invalid: no verdict
    assert breaker.state == HALF_OPEN
    assert breaker.acquire()
    breaker.record(True, 0.001)
    assert breaker.state == CLOSED


def test_release_in_closed_changes_nothing() -> None:
    breaker, _, _ = make()
    assert breaker.acquire()
    breaker.release()
    assert breaker.snapshot()["calls"] == 0
    assert breaker.state == CLOSED


def test_a_late_verdict_while_open_is_ignored() -> None:
    breaker, _, _ = make()
    assert breaker.acquire()  # let through while closed, answers after the breaker opened
    opened(breaker)
    breaker.record(True, 0.001)
    assert breaker.state == OPEN
    assert breaker.retry_after_s() == 10


def test_force_open_refuses_every_call_and_records_nothing() -> None:
    breaker, clock, moves = make()
    breaker.force("force_open")
    assert breaker.state == OPEN
    assert not breaker.acquire()
    clock.advance(3600)
    assert breaker.state == OPEN  # never half open on its own
    assert breaker.retry_after_s() == 10
    assert breaker.mode == "force_open"
    breaker.force("none")
    assert breaker.state == CLOSED
    assert moves == [(CLOSED, OPEN), (OPEN, CLOSED)]


def test_force_closed_calls_the_model_and_never_opens() -> None:
    breaker, _, moves = make()
    opened(breaker)
    breaker.force("force_closed")
    assert breaker.state == CLOSED
    calls(breaker, *([False] * 20))
    assert breaker.state == CLOSED
    assert breaker.snapshot()["calls"] == 0
    breaker.force("force_closed")  # again: no change, no transition
    assert moves == [(CLOSED, OPEN), (OPEN, CLOSED)]


def test_reset_closes_lifts_a_force_and_forgets_the_window_and_backoff() -> None:
    breaker, clock, _ = make()
    opened(breaker)
    clock.advance(10)
    calls(breaker, False)  # second open
    breaker.force("force_open")
    breaker.reset()
    assert (breaker.state, breaker.mode, breaker.opens) == (CLOSED, "none", 0)
    calls(breaker, True, True, True)
    assert breaker.snapshot()["calls"] == 3
    calls(breaker, False, False, False)  # 3 of 6
    assert breaker.state == OPEN
    assert breaker.retry_after_s() == 10  # a first open again


def test_unknown_force_mode_is_refused() -> None:
    breaker, _, _ = make()
    with pytest.raises(ValueError, match="unknown breaker mode"):
        breaker.force("half_open")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"min_calls": 11}, "min_calls cannot exceed window_size"),
        ({"failure_rate": 0}, "failure_rate"),
        ({"slow_call_rate": 1.5}, "slow_call_rate"),
        ({"open_backoff": 0.5}, "open_backoff"),
        ({"max_open_s": 5}, "max_open_s"),
        ({"half_open_calls": 0}, "half_open_calls"),
    ],
)
def test_inconsistent_configs_are_refused(changes: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make(**changes)


OPERATIONS = st.lists(
    st.one_of(
        st.tuples(st.just("call"), st.booleans(), st.floats(0, 0.2)),
        st.tuples(st.just("acquire"), st.booleans(), st.just(0.0)),
        st.tuples(st.just("wait"), st.booleans(), st.floats(0, 40)),
    ),
    max_size=200,
)


@settings(max_examples=300, deadline=None)
@given(OPERATIONS)
def test_invariants_hold_over_any_sequence_of_calls_and_waits(
    operations: list[tuple[str, bool, float]],
) -> None:
    """Whatever happens: a breaker never opens on fewer than min_calls verdicts since it last
    closed; an open breaker admits nothing; no half-open period admits more than half_open_calls
    probes; each open lasts open_s * backoff^(n-1) capped at max_open_s."""
    breaker, clock, moves = make(slow_call_ms=100, slow_call_rate=0.9)
    config = breaker.config
    verdicts_since_closed = admitted_in_half_open = seen = 0

    def follow() -> None:
        nonlocal verdicts_since_closed, admitted_in_half_open, seen
        for from_state, to_state in moves[seen:]:
            if from_state == CLOSED and to_state == OPEN:
                assert verdicts_since_closed >= config.min_calls
            if to_state == CLOSED:
                verdicts_since_closed = 0
            if to_state == HALF_OPEN:
                admitted_in_half_open = 0
        seen = len(moves)

    for kind, ok, amount in operations:
        if kind == "wait":
            clock.advance(amount)
            continue
        state = breaker.state
        follow()
        allowed = breaker.acquire()
        if state == OPEN:
            assert not allowed
        if state == HALF_OPEN and allowed:
            admitted_in_half_open += 1
            assert admitted_in_half_open <= config.half_open_calls
        if not allowed:
            continue
        if kind == "acquire":
            breaker.release()
            admitted_in_half_open -= state == HALF_OPEN
            continue
        if state == CLOSED:
            verdicts_since_closed += 1
        breaker.record(ok, amount)
        opened_now = any(to_state == OPEN for _, to_state in moves[seen:])
        follow()
        if opened_now:
            expected = min(config.open_s * config.open_backoff ** (breaker.opens - 1), config.max_open_s)
            assert breaker.retry_after_s() == pytest.approx(expected)
