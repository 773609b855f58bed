"""The shadow runner: bounded per experiment and overall, drops beyond its queue, times calls out,
records every job once per primary row, never lets a shadow's failure out, and keeps the rolling
paired figures. Slow calls are fakes that wait on an ``asyncio.Event`` the test sets."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, cast

import numpy as np
import pytest

from prediction_provider.modelops.metrics import OpsMetrics
from prediction_provider.modelops.records import ExperimentRecorder, ShadowRows
from prediction_provider.modelops.shadow import WINDOW, ShadowPairing, ShadowRunner, ShadowSpec
from prediction_provider.serving.loaders.base import ModelOutput

AT = datetime(2026, 11, 20, 13, tzinfo=UTC)
TARGET = "models:/eurusd-direction/2"


class CollectedShadows:
    """Stands in for the recorder's writer: what the runner recorded, in order."""

    def __init__(self) -> None:
        self.rows: list[ShadowRows] = []
        self.arrived = threading.Event()

    def record_shadow(self, rows: ShadowRows) -> None:
        self.rows.append(rows)
        self.arrived.set()

    def by_request(self) -> dict[str, ShadowRows]:
        return {rows.request_id: rows for rows in self.rows}


def make_runner(global_max_inflight: int = 8) -> tuple[ShadowRunner, CollectedShadows, OpsMetrics]:
    collected, metrics = CollectedShadows(), OpsMetrics()
    runner = ShadowRunner(cast(ExperimentRecorder, collected), metrics, global_max_inflight)
    return runner, collected, metrics


def pairing(request_id: str, labels: list[str] | None = None, probabilities: Any = None) -> ShadowPairing:
    return ShadowPairing(
        request_id=request_id,
        variant="control",
        unit_hash="u" * 32,
        classes=("down", "up"),
        created_at=AT,
        primary_labels=labels if labels is not None else ["up"],
        primary_probabilities=None if probabilities is None else np.asarray(probabilities, dtype=float),
    )


def answering(labels: list[str], probabilities: Any = None) -> Callable[[], Awaitable[ModelOutput]]:
    async def call() -> ModelOutput:
        return ModelOutput(list(labels), None if probabilities is None else np.asarray(probabilities, float))

    return call


class Gate:
    """Fake slow calls: each waits until the test opens the gate; ``started`` counts the callers."""

    def __init__(self) -> None:
        self.open = asyncio.Event()
        self.started: list[str] = []
        self.cancelled: list[str] = []

    def call(self, name: str, labels: list[str] | None = None) -> Callable[[], Awaitable[ModelOutput]]:
        async def call() -> ModelOutput:
            self.started.append(name)
            try:
                await self.open.wait()
            except asyncio.CancelledError:
                self.cancelled.append(name)
                raise
            return ModelOutput(labels or ["up"])

        return call


async def settle() -> None:
    """Let started tasks run up to their first wait (no time passes for any assert)."""
    for _ in range(5):
        await asyncio.sleep(0)


async def test_a_shadow_answer_is_recorded_once_per_primary_row_with_the_primary_request() -> None:
    runner, collected, metrics = make_runner()
    probabilities = [[0.2, 0.8], [0.6, 0.4], [0.1, 0.9]]
    runner.submit(
        "exp", ShadowSpec(TARGET), answering(["up", "down", "up"], probabilities),
        pairing("r1", ["up", "down", "up"], probabilities),
    )  # fmt: skip
    await runner.drain()

    (rows,) = collected.rows
    assert (rows.request_id, rows.rows, rows.status, rows.shadow_of) == ("r1", 3, "ok", "shadow")
    assert rows.created_at == AT
    assert rows.variant == "control"
    assert rows.target == TARGET
    assert list(rows.predictions) == ["up", "down", "up"]
    assert metrics.value("shadow_requests", ("exp", TARGET, "ok")) == 1


async def test_calls_beyond_max_inflight_wait_and_beyond_the_queue_are_dropped() -> None:
    runner, collected, metrics = make_runner()
    gate = Gate()
    spec = ShadowSpec(TARGET, max_inflight=2, queue=1, timeout_ms=60_000)
    for index in range(4):
        runner.submit("exp", spec, gate.call(f"job{index}"), pairing(f"r{index}"))
    await settle()

    assert gate.started == ["job0", "job1"]  # two run, one waits, the fourth is dropped at once
    assert runner.inflight("exp") == 2
    assert runner.waiting("exp") == 1
    assert metrics.value("shadow_queue_depth", ("exp",)) == 1
    assert [(rows.request_id, rows.status) for rows in collected.rows] == [("r3", "dropped")]
    assert metrics.value("shadow_requests", ("exp", TARGET, "dropped")) == 1

    gate.open.set()
    await runner.drain()
    assert gate.started == ["job0", "job1", "job2"]
    statuses = {request: rows.status for request, rows in collected.by_request().items()}
    assert statuses == {"r0": "ok", "r1": "ok", "r2": "ok", "r3": "dropped"}
    assert metrics.value("shadow_requests", ("exp", TARGET, "ok")) == 3
    assert metrics.value("shadow_queue_depth", ("exp",)) == 0
    assert runner.inflight() == 0


async def test_a_zero_queue_drops_whatever_cannot_start_at_once() -> None:
    runner, collected, _ = make_runner()
    gate = Gate()
    spec = ShadowSpec(TARGET, max_inflight=1, queue=0, timeout_ms=60_000)
    runner.submit("exp", spec, gate.call("first"), pairing("r0"))
    runner.submit("exp", spec, gate.call("second"), pairing("r1"))
    await settle()
    assert gate.started == ["first"]
    assert [(rows.request_id, rows.status) for rows in collected.rows] == [("r1", "dropped")]
    gate.open.set()
    await runner.drain()


async def test_the_global_cap_bounds_calls_over_all_experiments_and_frees_slots_to_others() -> None:
    runner, collected, _ = make_runner(global_max_inflight=2)
    first, second = Gate(), Gate()
    spec = ShadowSpec(TARGET, max_inflight=2, queue=10, timeout_ms=60_000)
    runner.submit("a", spec, first.call("a0"), pairing("a0"))
    runner.submit("a", spec, first.call("a1"), pairing("a1"))
    runner.submit("b", spec, second.call("b0"), pairing("b0"))
    await settle()
    assert first.started == ["a0", "a1"]
    assert second.started == []
    assert runner.inflight() == 2
    assert runner.waiting("b") == 1

    first.open.set()  # a's calls end: the freed slots go to b's waiting job
    await settle()
    await settle()
    assert second.started == ["b0"]
    second.open.set()
    await runner.drain()
    assert {rows.status for rows in collected.rows} == {"ok"}
    assert len(collected.rows) == 3


async def test_a_call_past_its_deadline_is_cancelled_and_recorded_as_timeout() -> None:
    runner, collected, metrics = make_runner()
    gate = Gate()  # never opened
    runner.submit("exp", ShadowSpec(TARGET, timeout_ms=5), gate.call("slow"), pairing("r1", ["up", "down"]))
    await runner.drain()

    (rows,) = collected.rows
    assert (rows.status, rows.rows, list(rows.predictions)) == ("timeout", 2, [])
    assert gate.cancelled == ["slow"]
    assert metrics.value("shadow_requests", ("exp", TARGET, "timeout")) == 1
    assert runner.inflight() == 0


async def test_shadow_failures_are_recorded_as_errors_and_never_raised() -> None:
    runner, collected, metrics = make_runner()

    async def failing() -> ModelOutput:
        raise RuntimeError("model exploded")

    def not_even_a_coroutine() -> Awaitable[ModelOutput]:
        raise ValueError("bad target")

    runner.submit("exp", ShadowSpec(TARGET), failing, pairing("r1"))
    runner.submit("exp", ShadowSpec(TARGET), not_even_a_coroutine, pairing("r2"))
    runner.submit("exp", ShadowSpec(TARGET), answering(["up", "up"]), pairing("r3", ["up"]))  # 2 rows for 1
    await runner.drain()

    assert {request: rows.status for request, rows in collected.by_request().items()} == {
        "r1": "error", "r2": "error", "r3": "error",
    }  # fmt: skip
    assert metrics.value("shadow_requests", ("exp", TARGET, "error")) == 3
    assert runner.inflight() == 0


async def test_a_recorder_that_fails_does_not_reach_the_caller() -> None:
    class BrokenRecorder:
        def record_shadow(self, rows: ShadowRows) -> None:
            raise RuntimeError("disk full")

    runner = ShadowRunner(cast(ExperimentRecorder, BrokenRecorder()), OpsMetrics(), 1)
    gate = Gate()
    spec = ShadowSpec(TARGET, max_inflight=1, queue=0, timeout_ms=60_000)
    runner.submit("exp", spec, gate.call("a"), pairing("r0"))
    runner.submit("exp", spec, gate.call("b"), pairing("r1"))  # dropped: its record fails too
    gate.open.set()
    await runner.drain()
    assert runner.inflight() == 0


async def test_paired_figures_follow_the_last_window_of_rows() -> None:
    runner, _, metrics = make_runner()
    primary_p = [[0.2, 0.8], [0.7, 0.3], [0.4, 0.6], [0.9, 0.1]]
    shadow_p = [[0.2, 0.8], [0.4, 0.6], [0.4, 0.6], [0.5, 0.5]]  # TV per row: 0, 0.3, 0, 0.4
    labels = ["up", "down", "up", "down"]
    runner.submit(
        "exp", ShadowSpec(TARGET), answering(["up", "up", "up", "down"], shadow_p),
        pairing("r1", labels, primary_p),
    )  # fmt: skip
    await runner.drain()
    assert metrics.value("shadow_agreement_ratio", ("exp",)) == pytest.approx(0.75)
    assert metrics.value("shadow_mean_tv", ("exp",)) == pytest.approx(0.7 / 4)

    # A full window of agreeing, identical answers pushes the earlier rows out.
    same = [[0.5, 0.5]] * WINDOW
    runner.submit(
        "exp", ShadowSpec(TARGET), answering(["up"] * WINDOW, same), pairing("r2", ["up"] * WINDOW, same)
    )
    await runner.drain()
    assert metrics.value("shadow_agreement_ratio", ("exp",)) == pytest.approx(1.0)
    assert metrics.value("shadow_mean_tv", ("exp",)) == pytest.approx(0.0)
    assert runner.paired("exp") == (pytest.approx(1.0), pytest.approx(0.0))


async def test_a_shadow_whose_classes_come_in_another_order_is_compared_class_by_class() -> None:
    runner, collected, metrics = make_runner()
    spec = ShadowSpec(TARGET, classes=("up", "down"))
    runner.submit("exp", spec, answering(["up"], [[0.8, 0.2]]), pairing("r1", ["up"], [[0.2, 0.8]]))
    await runner.drain()
    assert metrics.value("shadow_mean_tv", ("exp",)) == pytest.approx(0.0)
    assert collected.rows[0].classes == ("up", "down")  # recorded with its own column order


async def test_control_comparisons_are_recorded_but_left_out_of_the_shadow_figures() -> None:
    runner, collected, metrics = make_runner()
    spec = ShadowSpec("models:/eurusd-direction/1", shadow_of="control")
    runner.submit("exp", spec, answering(["down"], [[0.9, 0.1]]), pairing("r1", ["up"], [[0.1, 0.9]]))
    await runner.drain()
    assert collected.rows[0].shadow_of == "control"
    assert collected.rows[0].status == "ok"
    assert runner.paired("exp") == (None, None)
    assert metrics.value("shadow_agreement_ratio", ("exp",)) == 0.0  # never set


async def test_jobs_from_a_worker_thread_run_on_the_attached_loop() -> None:
    runner, collected, _ = make_runner()
    runner.attach(asyncio.get_running_loop())
    thread = threading.Thread(
        target=runner.submit_threadsafe, args=("exp", ShadowSpec(TARGET), answering(["up"]), pairing("job-1"))
    )
    thread.start()
    await asyncio.to_thread(thread.join)
    await runner.drain()
    assert [(rows.request_id, rows.status) for rows in collected.rows] == [("job-1", "ok")]


def test_without_any_event_loop_the_runner_runs_shadows_on_its_own() -> None:
    runner, collected, _ = make_runner()
    runner.submit("exp", ShadowSpec(TARGET), answering(["up"]), pairing("celery-1"))  # no loop here
    assert collected.arrived.wait(timeout=30)
    assert [(rows.request_id, rows.status) for rows in collected.rows] == [("celery-1", "ok")]
    runner.close()


async def test_close_drops_waiting_jobs_cancels_running_ones_and_refuses_new_ones() -> None:
    runner, collected, _ = make_runner()
    gate = Gate()
    spec = ShadowSpec(TARGET, max_inflight=1, queue=5, timeout_ms=60_000)
    runner.submit("exp", spec, gate.call("running"), pairing("r0"))
    runner.submit("exp", spec, gate.call("waiting"), pairing("r1"))
    await settle()
    runner.close()
    runner.submit("exp", spec, gate.call("late"), pairing("r2"))
    await runner.drain()

    assert gate.started == ["running"]
    assert gate.cancelled == ["running"]
    assert {request: rows.status for request, rows in collected.by_request().items()} == {
        "r1": "dropped", "r2": "dropped",
    }  # fmt: skip
