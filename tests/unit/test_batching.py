"""Adaptive batching with a real (small, deterministic) model implementation."""

from __future__ import annotations

import asyncio
import threading

import numpy as np

from prediction_provider.serving.batching import AdaptiveBatcher, BatchingDefaults, BatchPolicy
from prediction_provider.serving.loaders.base import FloatMatrix, LoadedModel
from prediction_provider.serving.signature import ModelSignature

POISON = -999.0


class SoftmaxModel(LoadedModel):
    """A linear softmax classifier that records its call sizes and rejects POISON rows."""

    framework = "test-softmax"

    def __init__(self, gate: threading.Event | None = None) -> None:
        super().__init__(ModelSignature.from_names(["a", "b"], ["down", "up"]))
        self.weights = np.array([[1.0, -1.0], [-0.5, 0.5]])
        self.call_sizes: list[int] = []
        self.gate = gate
        self.entered = threading.Event()

    def predict_scores(self, matrix: FloatMatrix) -> np.ndarray:
        self.entered.set()
        if self.gate is not None:
            self.gate.wait()
        self.call_sizes.append(len(matrix))
        if (matrix == POISON).any():
            raise ValueError("poisoned row")
        logits = matrix @ self.weights
        exp = np.exp(logits - logits.max(axis=1, keepdims=True))
        return exp / exp.sum(axis=1, keepdims=True)


def rows(count: int) -> list[FloatMatrix]:
    return [np.array([[i * 0.1, 1 - i * 0.05]]) for i in range(count)]


async def test_concurrent_rows_merge_and_come_back_in_order() -> None:
    gate = threading.Event()
    model = SoftmaxModel(gate)
    batcher = AdaptiveBatcher(model.predict, BatchPolicy(max_batch_size=64, max_latency_s=0.0), "m")
    inputs = rows(32)
    futures = [batcher.submit(row) for row in inputs]  # queued while the first call is held
    gate.set()
    outputs = await asyncio.gather(*futures)
    assert sum(model.call_sizes) == 32
    assert len(model.call_sizes) < 32
    assert max(model.call_sizes) > 1
    for row, output in zip(inputs, outputs, strict=True):
        alone = model.predict(row)
        assert output.predictions == alone.predictions
        np.testing.assert_allclose(output.probabilities, alone.probabilities)
    batcher.close()


async def test_a_bad_row_fails_only_its_own_request() -> None:
    gate = threading.Event()
    model = SoftmaxModel(gate)
    batcher = AdaptiveBatcher(model.predict, BatchPolicy(max_batch_size=64, max_latency_s=0.0), "m")
    inputs = rows(6)
    inputs[3] = np.array([[POISON, 0.0]])
    futures = [batcher.submit(row) for row in inputs]
    gate.set()
    results = await asyncio.gather(*futures, return_exceptions=True)
    assert isinstance(results[3], ValueError)
    assert all(not isinstance(r, BaseException) for i, r in enumerate(results) if i != 3)
    batcher.close()


async def test_a_lone_request_does_not_wait_for_a_fuller_batch() -> None:
    model = SoftmaxModel()
    batcher = AdaptiveBatcher(model.predict, BatchPolicy(max_batch_size=64, max_latency_s=600.0), "m")
    output = await asyncio.wait_for(batcher.submit(rows(1)[0]), timeout=60)
    assert output.predictions in (["down"], ["up"])
    assert model.call_sizes == [1]
    batcher.close()


async def test_under_load_a_batch_waits_only_for_as_many_rows_as_the_last_one() -> None:
    # Four clients, each sending its next row once answered: waiting for a 64-row batch would
    # hold every request for the whole max latency (here ten minutes, so the wait_for fails).
    gate = threading.Event()
    model = SoftmaxModel(gate)
    batcher = AdaptiveBatcher(model.predict, BatchPolicy(max_batch_size=64, max_latency_s=600.0), "m")
    first = batcher.submit(rows(1)[0])  # runs alone, held at the gate
    assert await asyncio.to_thread(model.entered.wait, 60)
    queued = [batcher.submit(row) for row in rows(4)]
    gate.set()
    await asyncio.wait_for(asyncio.gather(first, *queued), timeout=60)
    assert model.call_sizes == [1, 4]
    for _ in range(2):  # the clients come back together, twice
        await asyncio.wait_for(asyncio.gather(*(batcher.submit(row) for row in rows(4))), timeout=60)
    assert model.call_sizes == [1, 4, 4, 4]
    batcher.close()


async def test_the_event_loop_runs_while_the_model_computes() -> None:
    gate = threading.Event()
    batcher = AdaptiveBatcher(SoftmaxModel(gate).predict, BatchPolicy(), "m")
    pending = batcher.submit(rows(1)[0])
    for _ in range(3):
        await asyncio.sleep(0)  # a blocked loop would never get here to open the gate
    assert not pending.done()
    gate.set()
    await asyncio.wait_for(pending, timeout=60)
    batcher.close()


async def test_a_cancelled_request_does_not_break_the_batcher() -> None:
    gate = threading.Event()
    model = SoftmaxModel(gate)
    batcher = AdaptiveBatcher(model.predict, BatchPolicy(max_latency_s=0.0), "m")
    first, second = batcher.submit(rows(1)[0]), batcher.submit(rows(2)[1])
    first.cancel()
    gate.set()
    assert (await second).predictions
    third = await batcher.submit(rows(3)[2])
    assert third.predictions
    batcher.close()


def test_policy_defaults_and_model_overrides() -> None:
    auto = BatchingDefaults(mode="auto", policy=BatchPolicy(32, 0.004))
    assert auto.policy_for(batchable=True, metadata={}) == BatchPolicy(32, 0.004)
    assert auto.policy_for(batchable=False, metadata={}) is None
    assert auto.policy_for(False, {"batching": True, "max_batch_size": 8, "max_batch_latency_ms": 1}) == (
        BatchPolicy(8, 0.001)
    )
    assert auto.policy_for(True, {"batching": False}) is None
    assert BatchingDefaults(mode="off").policy_for(True, {}) is None
    assert BatchingDefaults(mode="on").policy_for(False, {}) is not None
