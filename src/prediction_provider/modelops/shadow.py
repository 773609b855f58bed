"""Shadow calls: the same validated rows sent to another target once the primary answer exists,
recorded beside the primary's and never shown to the client.

What a caller may rely on:

- ``submit`` never blocks and never raises; the client's answer is already made when it runs, and
  nothing a shadow does (slowness, errors, timeouts) reaches it;
- per experiment at most ``spec.max_inflight`` calls run at once and at most ``spec.queue`` wait;
  over all experiments at most ``global_max_inflight`` run (``PP_SHADOW_MAX_INFLIGHT``). A job
  beyond that is dropped: recorded with status ``dropped``, counted, never run;
- a call has ``spec.timeout_ms`` to answer (status ``timeout``); any exception is status ``error``;
- every job writes one ``shadow_records`` row per primary row, with the primary's request id and
  row index, so a pair is a join on ``(request_id, row)``;
- per experiment a rolling paired figure over the last ``WINDOW`` rows: the share of equal labels
  (``pp_shadow_agreement_ratio``) and the mean total variation distance of the probabilities
  (``pp_shadow_mean_tv``).

A timed-out call is cancelled where it awaits; a model call running in a worker thread finishes
there unobserved, so the caps bound awaited calls, not threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import numpy.typing as npt

from prediction_provider.modelops.metrics import OpsMetrics
from prediction_provider.modelops.records import ExperimentRecorder, ShadowRows
from prediction_provider.serving.loaders.base import ModelOutput

log = logging.getLogger(__name__)

WINDOW = 1000  # paired rows in the rolling agreement / mean TV figures

ShadowCall = Callable[[], Awaitable[ModelOutput]]


@dataclass(frozen=True, slots=True)
class ShadowSpec:
    """How one experiment shadows: the frozen target and its caps. ``classes`` is the target's
    probability column order when it differs from the primary's (else the primary's is assumed)."""

    target: str
    timeout_ms: int = 250
    max_inflight: int = 4
    queue: int = 256
    percent: float = 100.0
    sample_by: str = "unit"  # unit | request
    shadow_of: str = "shadow"  # shadow | control (compare_with_control)
    classes: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class ShadowPairing:
    """The primary answer a shadow is paired with: its request, variant, unit and rows."""

    request_id: str
    variant: str | None
    unit_hash: str | None
    classes: tuple[str, ...] | None
    created_at: datetime
    primary_labels: Sequence[Any]  # one per row: the number of rows the shadow must answer
    primary_probabilities: npt.NDArray[np.float64] | None = None


@dataclass(slots=True)
class _Job:
    experiment: str
    spec: ShadowSpec
    call: ShadowCall
    pairing: ShadowPairing


@dataclass(slots=True)
class _PairWindow:
    """The last ``WINDOW`` paired rows' agreement and TV, with running sums."""

    agreements: deque[float] = field(default_factory=lambda: deque(maxlen=WINDOW))
    distances: deque[float] = field(default_factory=lambda: deque(maxlen=WINDOW))
    agreement_sum: float = 0.0
    distance_sum: float = 0.0

    def add(self, agreement: float | None, distance: float | None) -> None:
        if agreement is not None:
            if len(self.agreements) == WINDOW:
                self.agreement_sum -= self.agreements[0]
            self.agreements.append(agreement)
            self.agreement_sum += agreement
        if distance is not None:
            if len(self.distances) == WINDOW:
                self.distance_sum -= self.distances[0]
            self.distances.append(distance)
            self.distance_sum += distance

    def agreement(self) -> float | None:
        return self.agreement_sum / len(self.agreements) if self.agreements else None

    def mean_tv(self) -> float | None:
        return self.distance_sum / len(self.distances) if self.distances else None


@dataclass(slots=True)
class _Lane:
    """One experiment's shadow traffic: calls running, jobs waiting, its paired figures."""

    inflight: int = 0
    waiting: deque[_Job] = field(default_factory=deque)
    pairs: _PairWindow = field(default_factory=_PairWindow)


def _label(value: Any) -> str:
    item = getattr(value, "item", None)
    return str(item() if callable(item) else value)


def paired_figures(
    pairing: ShadowPairing, spec: ShadowSpec, output: ModelOutput
) -> list[tuple[float | None, float | None]]:
    """Per row: (1.0 if the labels agree else 0.0, ½·Σ|p - q|); None where it does not apply
    (regressions have no labels to agree on, answers without probabilities no distance)."""
    primary_p = pairing.primary_probabilities
    shadow_p = output.probabilities
    if (
        shadow_p is not None
        and spec.classes is not None
        and pairing.classes is not None
        and spec.classes != pairing.classes
        and set(spec.classes) == set(pairing.classes)
    ):
        order = [spec.classes.index(name) for name in pairing.classes]
        shadow_p = np.asarray(shadow_p)[:, order]
    comparable_p = (
        primary_p is not None and shadow_p is not None and np.shape(primary_p) == np.shape(shadow_p)
    )
    distances: npt.NDArray[np.float64] | None = None
    if comparable_p:
        distances = 0.5 * np.abs(np.asarray(primary_p, float) - np.asarray(shadow_p, float)).sum(axis=1)
    figures: list[tuple[float | None, float | None]] = []
    for row, primary_label in enumerate(pairing.primary_labels):
        agreement = None
        if pairing.classes is not None:
            agreement = 1.0 if _label(primary_label) == _label(output.predictions[row]) else 0.0
        figures.append((agreement, None if distances is None else float(distances[row])))
    return figures


class ShadowRunner:
    """Runs shadow calls on one event loop under per-experiment and global caps."""

    def __init__(self, recorder: ExperimentRecorder, metrics: OpsMetrics, global_max_inflight: int) -> None:
        self.recorder = recorder
        self.metrics = metrics
        self.global_max_inflight = global_max_inflight
        self._lanes: dict[str, _Lane] = {}
        self._inflight = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._own_thread: threading.Thread | None = None
        self._closed = False

    # -- submitting ------------------------------------------------------------------------------

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """The loop shadow calls run on (the server's); ``submit`` also attaches the loop it runs on."""
        self._loop = loop

    def submit(self, experiment: str, spec: ShadowSpec, call: ShadowCall, pairing: ShadowPairing) -> None:
        """Start, queue or drop one shadow job; on the event loop, after the primary answered."""
        job = _Job(experiment, spec, call, pairing)
        try:
            try:
                running = asyncio.get_running_loop()
            except RuntimeError:
                self._hand_over(job)
                return
            if self._loop is None or self._loop.is_closed():
                self._loop = running
            if running is self._loop:
                self._admit(job)
            else:
                self._hand_over(job)
        except Exception:  # a shadow must never hurt the request that triggered it
            log.exception("shadow %s: could not submit a job", experiment)

    def submit_threadsafe(
        self, experiment: str, spec: ShadowSpec, call: ShadowCall, pairing: ShadowPairing
    ) -> None:
        """``submit`` from a worker thread (async jobs): handed to the runner's loop."""
        try:
            self._hand_over(_Job(experiment, spec, call, pairing))
        except Exception:
            log.exception("shadow %s: could not submit a job", experiment)

    def _hand_over(self, job: _Job) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            loop = self._start_own_loop()
        try:
            loop.call_soon_threadsafe(self._admit, job)
        except RuntimeError:  # the loop closed meanwhile
            self._record_dropped(job)

    def _start_own_loop(self) -> asyncio.AbstractEventLoop:
        """No server loop (a Celery worker): run shadows on a loop of our own in a daemon thread."""
        loop = asyncio.new_event_loop()
        self._own_thread = threading.Thread(target=loop.run_forever, name="shadow-runner", daemon=True)
        self._own_thread.start()
        self._loop = loop
        return loop

    # -- admission (on the loop) -----------------------------------------------------------------

    def _admit(self, job: _Job) -> None:
        if self._closed:
            self._record_dropped(job)
            return
        lane = self._lanes.setdefault(job.experiment, _Lane())
        if self._has_room(lane, job.spec):
            self._start(lane, job)
        elif len(lane.waiting) < job.spec.queue:
            lane.waiting.append(job)
            self._report_depth(job.experiment, lane)
        else:
            self._record_dropped(job)

    def _has_room(self, lane: _Lane, spec: ShadowSpec) -> bool:
        return lane.inflight < spec.max_inflight and self._inflight < self.global_max_inflight

    def _start(self, lane: _Lane, job: _Job) -> None:
        lane.inflight += 1
        self._inflight += 1
        task = asyncio.get_running_loop().create_task(self._run(lane, job))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _release(self, lane: _Lane, experiment: str) -> None:
        lane.inflight -= 1
        self._inflight -= 1
        if not self._closed:
            self._pump(experiment)

    def _pump(self, first: str | None = None) -> None:
        """Start waiting jobs while there is room: ``first``'s queue (the slot it freed) first."""
        lanes = sorted(self._lanes.items(), key=lambda item: item[0] != first)
        for name, candidate in lanes:
            while candidate.waiting and self._has_room(candidate, candidate.waiting[0].spec):
                self._start(candidate, candidate.waiting.popleft())
                self._report_depth(name, candidate)
            if self._inflight >= self.global_max_inflight:
                return

    # -- running ---------------------------------------------------------------------------------

    async def _run(self, lane: _Lane, job: _Job) -> None:
        started = time.perf_counter()
        output: ModelOutput | None = None
        try:
            async with asyncio.timeout(job.spec.timeout_ms / 1000):
                output = await job.call()
            status = "ok" if len(output.predictions) == len(job.pairing.primary_labels) else "error"
            if status == "error":
                log.warning(
                    "shadow %s: %s answered %d rows for %d",
                    job.experiment, job.spec.target, len(output.predictions),
                    len(job.pairing.primary_labels),
                )  # fmt: skip
        except TimeoutError:
            status = "timeout"
        except asyncio.CancelledError:  # closing: nothing more is recorded
            self._release(lane, job.experiment)
            raise
        except Exception:
            status = "error"
            log.debug("shadow %s: %s failed", job.experiment, job.spec.target, exc_info=True)
        latency_ms = (time.perf_counter() - started) * 1000.0
        self._release(lane, job.experiment)
        try:
            self._finish(lane, job, status, latency_ms, output if status == "ok" else None)
        except Exception:
            log.exception("shadow %s: could not record a result", job.experiment)

    def _finish(
        self, lane: _Lane, job: _Job, status: str, latency_ms: float, output: ModelOutput | None
    ) -> None:
        pairing = job.pairing
        self.recorder.record_shadow(
            ShadowRows(
                experiment=job.experiment, variant=pairing.variant, shadow_of=job.spec.shadow_of,
                target=job.spec.target, request_id=pairing.request_id, rows=len(pairing.primary_labels),
                unit_hash=pairing.unit_hash, created_at=pairing.created_at, status=status,
                latency_ms=latency_ms, classes=job.spec.classes or pairing.classes,
                predictions=output.predictions if output is not None else (),
                probabilities=output.probabilities if output is not None else None,
            )
        )  # fmt: skip
        self.metrics.inc("shadow_requests", (job.experiment, job.spec.target, status))
        if output is not None and job.spec.shadow_of == "shadow":
            for agreement, distance in paired_figures(pairing, job.spec, output):
                lane.pairs.add(agreement, distance)
            agreement_ratio, mean_tv = lane.pairs.agreement(), lane.pairs.mean_tv()
            if agreement_ratio is not None:
                self.metrics.set("shadow_agreement_ratio", (job.experiment,), agreement_ratio)
            if mean_tv is not None:
                self.metrics.set("shadow_mean_tv", (job.experiment,), mean_tv)

    def _record_dropped(self, job: _Job) -> None:
        pairing = job.pairing
        try:
            self.recorder.record_shadow(
                ShadowRows(
                    experiment=job.experiment, variant=pairing.variant, shadow_of=job.spec.shadow_of,
                    target=job.spec.target, request_id=pairing.request_id,
                    rows=len(pairing.primary_labels), unit_hash=pairing.unit_hash,
                    created_at=pairing.created_at, status="dropped", latency_ms=None,
                )
            )  # fmt: skip
            self.metrics.inc("shadow_requests", (job.experiment, job.spec.target, "dropped"))
        except Exception:
            log.exception("shadow %s: could not record a dropped job", job.experiment)

    def _report_depth(self, experiment: str, lane: _Lane) -> None:
        self.metrics.set("shadow_queue_depth", (experiment,), float(len(lane.waiting)))

    # -- reading and stopping --------------------------------------------------------------------

    def paired(self, experiment: str) -> tuple[float | None, float | None]:
        """The rolling (agreement, mean TV) of an experiment's shadow; None before any pair."""
        lane = self._lanes.get(experiment)
        if lane is None:
            return None, None
        return lane.pairs.agreement(), lane.pairs.mean_tv()

    def inflight(self, experiment: str | None = None) -> int:
        if experiment is None:
            return self._inflight
        lane = self._lanes.get(experiment)
        return 0 if lane is None else lane.inflight

    def waiting(self, experiment: str) -> int:
        lane = self._lanes.get(experiment)
        return 0 if lane is None else len(lane.waiting)

    def forget(self, experiment: str) -> None:
        """A retired experiment: its figures and gauges go (queued jobs still run)."""
        lane = self._lanes.get(experiment)
        if lane is not None and not lane.waiting and lane.inflight == 0:
            del self._lanes[experiment]
        for name in ("shadow_queue_depth", "shadow_agreement_ratio", "shadow_mean_tv"):
            self.metrics.drop(name, (experiment,))

    async def drain(self) -> None:
        """Wait until every queued and running shadow job is done (tests, shutdown)."""
        loop = self._loop
        if loop is not None and loop.is_running() and loop is not asyncio.get_running_loop():
            future: Future[None] = asyncio.run_coroutine_threadsafe(self._drain_here(), loop)
            await asyncio.wrap_future(future)
            return
        await self._drain_here()

    async def _drain_here(self) -> None:
        await asyncio.sleep(0)  # jobs handed over with call_soon_threadsafe are admitted first
        while self._tasks or any(lane.waiting for lane in self._lanes.values()):
            if not self._tasks:
                self._pump()
                if not self._tasks:  # nothing can start (closed): what waits is dropped on close
                    return
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def close(self) -> None:
        """Stop: waiting jobs are recorded as dropped, running calls cancelled, later ones dropped."""
        if self._closed:
            return
        self._closed = True
        loop = self._loop
        on_loop = False
        with contextlib.suppress(RuntimeError):
            on_loop = loop is not None and asyncio.get_running_loop() is loop
        if loop is not None and not loop.is_closed():
            if on_loop:
                self._stop_work()
            else:
                with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                    loop.call_soon_threadsafe(self._stop_work)
        if self._own_thread is not None and loop is not None:
            loop.call_soon_threadsafe(loop.stop)
            self._own_thread.join(timeout=5)
            if not loop.is_running():
                loop.close()

    def _stop_work(self) -> None:
        for lane in self._lanes.values():
            while lane.waiting:
                self._record_dropped(lane.waiting.popleft())
        for task in list(self._tasks):
            task.cancel()
