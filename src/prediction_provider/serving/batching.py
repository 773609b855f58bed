"""Adaptive batching: concurrent single-row calls for one model become one model call.

Each batched model gets one inference thread. Requests hand their row to it
without blocking the event loop; while the model computes, new rows queue up
and form the next batch, so batches grow with load by themselves. Under load
(the last batch held more than one row) the thread also waits up to
``max_latency_s`` until as many rows as the last batch held are queued: with
N clients each waiting for its answer, the next batch is N rows, and waiting
for more than that would only add ``max_latency_s`` to every request. A lone
request at low load never waits.
Results go back to each request's event loop in request order. If a merged
call fails, every row is retried alone, so a row the model rejects fails only
its own request.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from prediction_provider.serving.loaders.base import FloatMatrix, ModelOutput

log = logging.getLogger(__name__)

IDLE_EXIT_SECONDS = 30.0


@dataclass(frozen=True, slots=True)
class BatchPolicy:
    max_batch_size: int = 64
    max_latency_s: float = 0.002


@dataclass(frozen=True, slots=True)
class BatchingDefaults:
    """Server-wide settings; a model's metadata may override each of them."""

    mode: str = "auto"  # auto: on for tree models; on; off
    policy: BatchPolicy = BatchPolicy()

    def policy_for(self, batchable: bool, metadata: dict[str, Any]) -> BatchPolicy | None:
        enabled = metadata.get("batching")
        if enabled is None:
            enabled = self.mode == "on" or (self.mode == "auto" and batchable)
        if not enabled:
            return None
        size = int(metadata.get("max_batch_size", self.policy.max_batch_size))
        latency_ms = float(metadata.get("max_batch_latency_ms", self.policy.max_latency_s * 1000))
        if size < 2:
            return None
        return BatchPolicy(max_batch_size=size, max_latency_s=max(0.0, latency_ms) / 1000)


@dataclass(slots=True)
class _Pending:
    row: FloatMatrix
    future: asyncio.Future[ModelOutput]
    loop: asyncio.AbstractEventLoop


@dataclass(slots=True)
class BatcherStats:
    batches: int = 0
    rows: int = 0
    largest: int = 0


class AdaptiveBatcher:
    def __init__(self, run: Callable[[FloatMatrix], ModelOutput], policy: BatchPolicy, name: str) -> None:
        self._run = run
        self.policy = policy
        self.name = name
        self.stats = BatcherStats()
        self._pending: deque[_Pending] = deque()
        self._ready = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._last_size = 0
        # Queued rows at which the thread wants waking: 1 while it idles, the batch it is
        # filling while it waits, never while the model runs (it looks at the queue next).
        # A wake-up per row would cost a GIL hand-off per request.
        self._wake_at = 1

    def submit(self, row: FloatMatrix) -> asyncio.Future[ModelOutput]:
        """Queue one row (shape ``(1, features)``); await the returned future for its output."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[ModelOutput] = loop.create_future()
        with self._ready:
            if self._closed:
                raise RuntimeError(f"the batcher of {self.name} is closed")
            self._pending.append(_Pending(row, future, loop))
            if self._thread is None:
                self._thread = threading.Thread(target=self._work, name=f"batcher:{self.name}", daemon=True)
                self._thread.start()
            if len(self._pending) >= self._wake_at:
                self._ready.notify()
        return future

    def close(self) -> None:
        """Finish what is queued, then let the thread end."""
        with self._ready:
            self._closed = True
            self._ready.notify()

    def _work(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            self._deliver(batch, self._outputs(batch))

    def _next_batch(self) -> list[_Pending] | None:
        with self._ready:
            self._wake_at = 1
            while not self._pending:
                if self._closed:
                    self._thread = None
                    return None
                notified = self._ready.wait(IDLE_EXIT_SECONDS)
                if not notified and not self._pending:  # idle: end; the next submit starts a thread
                    self._thread = None
                    return None
            limit = self.policy.max_batch_size
            wanted = min(limit, self._last_size)
            if wanted > 1 and len(self._pending) < wanted and self.policy.max_latency_s > 0:
                self._wake_at = wanted
                deadline = time.monotonic() + self.policy.max_latency_s
                while len(self._pending) < wanted and not self._closed:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    self._ready.wait(remaining)
            self._wake_at = sys.maxsize
            batch = [self._pending.popleft() for _ in range(min(limit, len(self._pending)))]
        self._last_size = len(batch)
        self.stats.batches += 1
        self.stats.rows += len(batch)
        self.stats.largest = max(self.stats.largest, len(batch))
        return batch

    def _outputs(self, batch: list[_Pending]) -> list[ModelOutput | BaseException]:
        if len(batch) == 1:
            return [self._call(batch[0].row)]
        merged = self._call(np.vstack([item.row for item in batch]))
        if isinstance(merged, BaseException):
            log.info("merged call of %d rows failed on %s; retrying rows alone", len(batch), self.name)
            return [self._call(item.row) for item in batch]
        probabilities = merged.probabilities
        return [
            ModelOutput(
                predictions=[merged.predictions[i]],
                probabilities=None if probabilities is None else probabilities[i : i + 1],
            )
            for i in range(len(batch))
        ]

    def _call(self, matrix: FloatMatrix) -> ModelOutput | BaseException:
        try:
            return self._run(matrix)
        except Exception as exc:  # noqa: BLE001 - handed to the request that sent the row
            return exc

    @staticmethod
    def _deliver(batch: list[_Pending], outputs: list[ModelOutput | BaseException]) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[_Pending, Any]]] = {}
        for item, output in zip(batch, outputs, strict=True):
            by_loop.setdefault(item.loop, []).append((item, output))
        for loop, results in by_loop.items():
            try:
                loop.call_soon_threadsafe(_resolve, results)
            except RuntimeError:  # the loop closed while the model ran; nobody is waiting
                log.debug("event loop closed before results were delivered")


def _resolve(results: list[tuple[_Pending, ModelOutput | BaseException]]) -> None:
    for item, output in results:
        if item.future.done():  # the request was cancelled, e.g. its client went away
            continue
        if isinstance(output, BaseException):
            item.future.set_exception(output)
        else:
            item.future.set_result(output)
