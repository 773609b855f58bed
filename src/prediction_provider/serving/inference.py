"""Transport-independent inference: every protocol adapter calls ``PredictionService``."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal

import anyio.to_thread
import numpy as np
import numpy.typing as npt

from prediction_provider.errors import ExplanationUnsupported, PredictionFailed
from prediction_provider.serving.affinity import release_current_thread
from prediction_provider.serving.cache import CachedModel, ModelCache
from prediction_provider.serving.explanations import Explanation, explain, unsupported
from prediction_provider.serving.features_input import matrix_from_columns, matrix_from_records
from prediction_provider.serving.loaders.base import FloatMatrix, ModelOutput

Confidence = Literal["high", "medium", "low"]


@dataclass(frozen=True, slots=True)
class BatchResult:
    model: CachedModel
    predictions: list[Any]
    probabilities: npt.NDArray[np.float64] | None
    started: float

    @property
    def classes(self) -> tuple[str, ...] | None:
        return self.model.model.signature.classes

    @property
    def latency_ms(self) -> float:
        return (time.perf_counter() - self.started) * 1000.0


@dataclass(frozen=True, slots=True)
class ConfidenceBands:
    high: float
    medium: float

    def classify(self, probability: float) -> Confidence:
        if probability >= self.high:
            return "high"
        if probability >= self.medium:
            return "medium"
        return "low"


class PredictionService:
    """Validates features against the model's signature and runs the model.

    A failure while predicting is reported to the caller only: the cached
    model is shared and stateless at predict time, so nothing is evicted.
    """

    def __init__(
        self,
        cache: ModelCache,
        max_batch_rows: int,
        bands: ConfidenceBands,
        parallelism: int = 1,
        parallel_min_rows: int = 512,
    ) -> None:
        self.cache = cache
        self.max_batch_rows = max_batch_rows
        self.bands = bands
        self.parallelism = parallelism
        self.parallel_min_rows = max(2, parallel_min_rows)
        # The calling thread predicts the first part itself; these threads take the others.
        self._split_pool = (
            # Pinned workers (PP_PIN_WORKERS) let these threads out: their job is the other CPUs.
            ThreadPoolExecutor(
                parallelism - 1, thread_name_prefix="predict-split", initializer=release_current_thread
            )
            if parallelism > 1
            else None
        )

    def predict_records(
        self,
        cached: CachedModel,
        records: Sequence[Mapping[str, Any]],
        prefix: str,
        started: float,
    ) -> BatchResult:
        signature = cached.model.signature
        matrix = matrix_from_records(records, signature, prefix, self.max_batch_rows)
        return self._run(cached, matrix, started)

    async def predict_record(
        self, cached: CachedModel, features: Mapping[str, Any], started: float
    ) -> BatchResult:
        """One row: validated on the event loop (cheap), predicted off it."""
        matrix = matrix_from_records([features], cached.model.signature, "features", 1)
        output = await self.predict_matrix(cached, matrix)
        return BatchResult(cached, output.predictions, output.probabilities, started)

    def predict_columns(
        self, cached: CachedModel, columns: Mapping[str, Any], prefix: str, started: float
    ) -> BatchResult:
        matrix = matrix_from_columns(columns, cached.model.signature, prefix, self.max_batch_rows)
        return self._run(cached, matrix, started)

    def explain_rows(
        self,
        cached: CachedModel,
        rows: Sequence[Mapping[str, Any]] | Mapping[str, Any],
        prefix: str,
        started: float,
    ) -> tuple[BatchResult, list[Explanation]]:
        """Predict and explain records or columns; blocking. Never through the batcher: the
        contributions cost several model calls, and they are asked for rarely."""
        if cached.model.explanation_method is None:
            raise unsupported(cached.model)  # before any work
        signature = cached.model.signature
        if isinstance(rows, Mapping):
            matrix = matrix_from_columns(rows, signature, prefix, self.max_batch_rows)
        else:
            matrix = matrix_from_records(rows, signature, prefix, self.max_batch_rows)
        output = self.run_matrix(cached, matrix)
        try:
            explanations = explain(cached.model, cached.resolved.label, matrix, output.predictions)
        except ExplanationUnsupported:
            raise
        except Exception as exc:
            raise PredictionFailed(
                f"{cached.loader} model failed to explain: {type(exc).__name__}: {exc}",
                {"model": cached.resolved.uri},
            ) from exc
        return BatchResult(cached, output.predictions, output.probabilities, started), explanations

    def _run(self, cached: CachedModel, matrix: FloatMatrix, started: float) -> BatchResult:
        output = self.run_matrix(cached, matrix)
        return BatchResult(cached, output.predictions, output.probabilities, started)

    def run_matrix(self, cached: CachedModel, matrix: FloatMatrix) -> ModelOutput:
        """Run the model on a validated matrix; blocking. Large matrices are split by rows across
        ``parallelism`` threads: the frameworks let the GIL go while they predict, and one call on
        one thread would leave the other cores idle while a large request waits."""
        try:
            if self._split_pool is None or len(matrix) < self.parallel_min_rows:
                return cached.model.predict(matrix)
            return self._predict_split(cached, matrix)
        except Exception as exc:
            raise PredictionFailed(
                f"{cached.loader} model failed to predict: {type(exc).__name__}: {exc}",
                {"model": cached.resolved.uri},
            ) from exc

    async def predict_matrix(self, cached: CachedModel, matrix: FloatMatrix) -> ModelOutput:
        """Run the model off the event loop: single rows through the model's batcher, if it has one."""
        if cached.batcher is None or len(matrix) != 1:
            return await anyio.to_thread.run_sync(self.run_matrix, cached, matrix)
        try:
            return await cached.batcher.submit(matrix)
        except Exception as exc:
            raise PredictionFailed(
                f"{cached.loader} model failed to predict: {type(exc).__name__}: {exc}",
                {"model": cached.resolved.uri},
            ) from exc

    def _predict_split(self, cached: CachedModel, matrix: FloatMatrix) -> ModelOutput:
        assert self._split_pool is not None
        parts = np.array_split(matrix, self.parallelism)  # row blocks of a C-ordered matrix: no copies
        others = [self._split_pool.submit(cached.model.predict, part) for part in parts[1:]]
        outputs = [cached.model.predict(parts[0]), *(future.result() for future in others)]
        probabilities = [output.probabilities for output in outputs]
        return ModelOutput(
            [prediction for output in outputs for prediction in output.predictions],
            None if any(p is None for p in probabilities) else np.concatenate(probabilities),  # type: ignore[arg-type]
        )

    def close(self) -> None:
        if self._split_pool is not None:
            self._split_pool.shutdown(wait=True)
