"""The resilience guard around one model call: breaker, bulkhead, deadline, chaos, and what each
outcome tells the breaker (design §3.7)."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from prediction_provider.clock import ManualClock
from prediction_provider.config import Settings
from prediction_provider.db.modelops_models import ChaosRule
from prediction_provider.errors import (
    InvalidFeatures,
    InvalidInput,
    ModelTimeout,
    ModelUnavailable,
    PredictionFailed,
)
from prediction_provider.modelops.chaos import Chaos
from prediction_provider.modelops.metrics import OpsMetrics
from prediction_provider.modelops.resilience import Resilience, ResilienceConfig, ResilienceUpdate

MODEL = "guarded-model"


class FakeClock:
    def __init__(self) -> None:
        self.now = 50.0

    def __call__(self) -> float:
        return self.now


class RowsSession:
    """Stands in for a session whose ``scalars(select(...))`` reads the given rows."""

    def __init__(self, *rows: Any) -> None:
        self.rows = rows

    def scalars(self, query: Any) -> list[Any]:
        entity = query.column_descriptions[0]["entity"]
        return [row for row in self.rows if isinstance(row, entity)]


def make(chaos: Chaos | None = None, **settings: Any) -> tuple[Resilience, OpsMetrics, FakeClock]:
    base = {"breaker_window_size": 10, "breaker_min_calls": 3, "breaker_open_s": 30.0}
    metrics, clock = OpsMetrics(), FakeClock()
    resilience = Resilience(None, Settings(**{**base, **settings}), metrics, chaos, clock)  # type: ignore[arg-type]
    return resilience, metrics, clock


async def answer() -> str:
    return "answer"


async def fail() -> str:
    raise PredictionFailed("the model raised")


async def test_a_passing_call_returns_the_models_answer_and_counts_as_a_success() -> None:
    resilience, _, _ = make()
    assert await resilience.call(MODEL, "1", answer) == "answer"
    assert resilience.breaker(MODEL, "1").snapshot()["calls"] == 1
    assert resilience.breaker(MODEL, "1").snapshot()["failure_rate"] == 0.0


async def test_model_errors_open_the_breaker_and_then_the_model_is_not_called() -> None:
    resilience, metrics, _ = make()
    for _ in range(3):
        with pytest.raises(PredictionFailed):
            await resilience.call(MODEL, "1", fail)
    assert resilience.breaker(MODEL, "1").state == "open"
    called = []

    async def tracked() -> str:
        called.append(1)
        return "answer"

    with pytest.raises(ModelUnavailable) as refused:
        await resilience.call(MODEL, "1", tracked)
    assert called == []
    assert refused.value.reason == "circuit_open"
    assert refused.value.retry_after_s == 30
    assert metrics.value("circuit_state", (MODEL, "1", "open")) == 1
    assert metrics.value("circuit_state", (MODEL, "1", "closed")) == 0
    assert metrics.value("circuit_transitions", (MODEL, "1", "open")) == 1
    # Breakers are per version: version 2 of the same model still answers.
    assert await resilience.call(MODEL, "2", answer) == "answer"


async def test_client_errors_reach_the_caller_but_never_open_the_breaker() -> None:
    resilience, _, _ = make()

    async def invalid() -> str:
        raise InvalidFeatures("bad features", [{"field": "x", "error": "missing"}])

    for _ in range(10):
        with pytest.raises(InvalidFeatures):
            await resilience.call(MODEL, "1", invalid)
    assert resilience.breaker(MODEL, "1").state == "closed"
    assert resilience.breaker(MODEL, "1").snapshot()["calls"] == 0


async def test_unexpected_exceptions_count_as_model_failures() -> None:
    resilience, _, _ = make()

    async def broken() -> str:
        raise ValueError("a bug in the model")

    for _ in range(3):
        with pytest.raises(ValueError, match="a bug"):
            await resilience.call(MODEL, "1", broken)
    assert resilience.breaker(MODEL, "1").state == "open"


async def test_a_full_bulkhead_rejects_without_calling_and_counts_a_failure() -> None:
    resilience, metrics, _ = make(model_max_inflight=1)
    release = asyncio.Event()

    async def slow() -> str:
        await release.wait()
        return "slow answer"

    first = asyncio.create_task(resilience.call(MODEL, "1", slow))
    await asyncio.sleep(0)  # let it take the one slot
    assert resilience.inflight(MODEL, "1") == 1
    assert metrics.value("model_inflight", (MODEL, "1")) == 1
    with pytest.raises(ModelUnavailable) as rejected:
        await resilience.call(MODEL, "1", answer)
    assert rejected.value.reason == "rejected"
    assert rejected.value.retry_after_s == 0
    release.set()
    assert await first == "slow answer"
    assert resilience.inflight(MODEL, "1") == 0
    snapshot = resilience.breaker(MODEL, "1").snapshot()
    assert (snapshot["calls"], snapshot["failure_rate"]) == (2, 0.5)


async def test_a_missed_deadline_answers_at_once_and_holds_the_slot_until_the_call_ends() -> None:
    resilience, _, _ = make(model_timeout_ms=10, model_max_inflight=1)
    release, ended = asyncio.Event(), asyncio.Event()

    async def stuck() -> str:
        await release.wait()
        ended.set()
        return "late answer"

    with pytest.raises(ModelTimeout) as late:
        await resilience.call(MODEL, "1", stuck)
    assert late.value.code == "model_timeout"
    assert resilience.breaker(MODEL, "1").snapshot()["failure_rate"] == 1.0
    # The model still runs: its slot stays taken, so the bulkhead bounds the pile-up.
    assert resilience.inflight(MODEL, "1") == 1
    with pytest.raises(ModelUnavailable):
        await resilience.call(MODEL, "1", answer)
    release.set()
    await ended.wait()
    await asyncio.sleep(0)  # the done callback
    assert resilience.inflight(MODEL, "1") == 0
    assert await resilience.call(MODEL, "1", answer) == "answer"


async def test_a_late_failure_after_the_deadline_is_not_counted_twice() -> None:
    resilience, _, _ = make(model_timeout_ms=10)
    release = asyncio.Event()

    async def late_failure() -> str:
        await release.wait()
        raise PredictionFailed("too late")

    with pytest.raises(ModelTimeout):
        await resilience.call(MODEL, "1", late_failure)
    release.set()
    for _ in range(3):
        await asyncio.sleep(0)
    assert resilience.breaker(MODEL, "1").snapshot()["calls"] == 1


async def test_a_cancelled_call_gives_no_verdict_and_frees_its_slot() -> None:
    resilience, _, _ = make(model_max_inflight=1)
    started = asyncio.Event()

    async def forever() -> str:
        started.set()
        await asyncio.Event().wait()
        return "never"

    task = asyncio.create_task(resilience.call(MODEL, "1", forever))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert resilience.breaker(MODEL, "1").snapshot()["calls"] == 0
    assert resilience.inflight(MODEL, "1") == 0


async def test_slow_calls_are_judged_on_the_guards_clock() -> None:
    resilience, _, clock = make(breaker_slow_call_ms=100, breaker_slow_call_rate=0.6)

    async def slow_answer() -> str:
        clock.now += 0.25
        return "answer"

    for _ in range(3):
        assert await resilience.call(MODEL, "1", slow_answer) == "answer"
    assert resilience.breaker(MODEL, "1").state == "open"


def chaos_with(fail_rate: float, delay_ms: int = 0) -> tuple[Chaos, list[float]]:
    clock = ManualClock(datetime(2030, 1, 1, tzinfo=UTC))
    slept: list[float] = []
    chaos = Chaos(None, clock, random.Random(7), slept.append, flush_interval_s=0)  # type: ignore[arg-type]
    rule = ChaosRule(
        model=MODEL,
        version="1",
        fail_rate=fail_rate,
        delay_ms=delay_ms,
        expires_at=clock.now() + timedelta(seconds=60),
    )
    chaos.reload(RowsSession(rule))  # type: ignore[arg-type]
    return chaos, slept


async def test_chaos_failures_reach_the_breaker_and_the_model_is_not_called() -> None:
    chaos, _ = chaos_with(fail_rate=1.0)
    resilience, _, _ = make(chaos)
    called = []

    async def tracked() -> str:
        called.append(1)
        return "answer"

    for _ in range(3):
        with pytest.raises(PredictionFailed, match="chaos"):
            await resilience.call(MODEL, "1", tracked)
    assert called == []
    assert resilience.breaker(MODEL, "1").state == "open"
    assert chaos._hits == {(MODEL, "1"): 3}
    with pytest.raises(ModelUnavailable):
        await resilience.call(MODEL, "1", tracked)
    assert chaos._hits == {(MODEL, "1"): 3}  # a refused call never reached the model
    assert await resilience.call(MODEL, "2", tracked) == "answer"  # other versions are untouched


async def test_chaos_delays_run_in_a_thread_before_the_model() -> None:
    chaos, slept = chaos_with(fail_rate=0.0, delay_ms=250)
    resilience, _, _ = make(chaos)
    assert await resilience.call(MODEL, "1", answer) == "answer"
    assert slept == [0.25]


def test_an_expired_chaos_rule_does_nothing() -> None:
    chaos, slept = chaos_with(fail_rate=1.0, delay_ms=5)
    assert chaos.rule(MODEL, "1") is not None
    chaos.clock.advance(60)  # type: ignore[attr-defined]
    assert chaos.rule(MODEL, "1") is None
    chaos.before_call(MODEL, "1")
    assert slept == []


def test_chaos_fails_about_fail_rate_of_the_calls() -> None:
    chaos, _ = chaos_with(fail_rate=0.3)
    failures = 0
    for _ in range(2000):
        try:
            chaos.before_call(MODEL, "1")
        except PredictionFailed:
            failures += 1
    assert 500 < failures < 700  # seeded: 30 % of 2000 within a wide band


def test_defaults_come_from_the_settings() -> None:
    resilience, _, _ = make(model_timeout_ms=40, model_max_inflight=8, breaker_failure_rate=0.25)
    config = resilience.config("any-model")
    assert (config.timeout_ms, config.max_inflight, config.fallback) == (40, 8, [])
    assert config.breaker.failure_rate == 0.25
    assert config.breaker.window_size == 10
    assert resilience.describe("any-model")["source"] == "defaults"


def test_a_stored_config_overlays_the_defaults_field_by_field() -> None:
    defaults = ResilienceConfig.defaults(Settings(breaker_open_s=30.0, breaker_min_calls=20))
    config = defaults.overlay({"timeout_ms": 50, "breaker": {"open_s": 5}})
    assert config.timeout_ms == 50
    assert config.breaker.open_s == 5
    assert config.breaker.min_calls == 20


@pytest.mark.parametrize(
    "fallback",
    [["models:/eurusd-direction/2"], ["models:/eurusd-direction@previous-champion", "prior"], ["prior"], []],
)
def test_fallback_targets_that_are_accepted(fallback: list[str]) -> None:
    config = ResilienceConfig.defaults(Settings()).overlay({"fallback": fallback})
    assert config.fallback == fallback


@pytest.mark.parametrize(
    ("fallback", "message"),
    [
        (["eurusd-direction"], "use models:/name/version"),
        (["models:/eurusd-direction"], "use models:/name/version"),
        (["models:/eurusd-direction/latest"], "use models:/name/version"),
        (["ensemble:blend"], "use models:/name/version"),
        (["prior", "models:/m/1"], "only be the last"),
        (["models:/m/1", "models:/m/1"], "listed twice"),
    ],
)
def test_fallback_targets_that_are_refused(fallback: list[str], message: str) -> None:
    resilience, _, _ = make()
    with pytest.raises(InvalidInput) as refused:
        resilience.put_config(None, MODEL, ResilienceUpdate(fallback=fallback), "ops")  # type: ignore[arg-type]
    assert message in str(refused.value.details)


def test_a_breaker_that_does_not_hold_over_the_defaults_is_refused() -> None:
    resilience, _, _ = make()  # window_size 10
    update = ResilienceUpdate.model_validate({"breaker": {"min_calls": 11}})
    with pytest.raises(InvalidInput) as refused:
        resilience.put_config(None, MODEL, update, "ops")  # type: ignore[arg-type]
    assert "min_calls cannot exceed window_size" in str(refused.value.details)
