"""Large calls split by rows across threads give exactly the answers of one call, on every framework."""

from __future__ import annotations

import threading
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from prediction_provider.config import Settings
from prediction_provider.serving.factory import build_model_serving
from prediction_provider.serving.loaders.base import FloatMatrix, ModelOutput
from tests.conftest import MODEL


class RecordingModel:
    """The real loaded model, noting which thread predicted how many rows."""

    def __init__(self, model: object) -> None:
        self.model = model
        self.calls: list[tuple[str, int]] = []

    def __getattr__(self, name: str) -> object:
        return getattr(self.model, name)

    def predict(self, matrix: FloatMatrix) -> ModelOutput:
        self.calls.append((threading.current_thread().name, len(matrix)))
        return self.model.predict(matrix)  # type: ignore[attr-defined, no-any-return]


@pytest.mark.parametrize("alias", ["lightgbm", "xgboost", "sklearn", "onnx"])
def test_a_split_call_answers_exactly_as_one_call(
    settings: Settings, eurusd_features: pd.DataFrame, alias: str
) -> None:
    split = build_model_serving(
        settings.model_copy(update={"predict_parallelism": 3, "parallel_min_rows": 64})
    )
    whole = build_model_serving(settings.model_copy(update={"predict_parallelism": 1}))
    try:
        cached = split.cache.get(f"models:/{MODEL}@{alias}")
        names = list(cached.model.signature.feature_names)
        matrix = np.ascontiguousarray(eurusd_features[names].to_numpy(dtype=np.float64)[-1000:])
        recording = RecordingModel(cached.model)
        split_output = split.predictions.run_matrix(replace(cached, model=recording), matrix)  # type: ignore[arg-type]
        whole_output = whole.predictions.run_matrix(whole.cache.get(f"models:/{MODEL}@{alias}"), matrix)
        small = split.predictions.run_matrix(replace(cached, model=recording), matrix[:63])  # type: ignore[arg-type]
    finally:
        for serving in (split, whole):
            serving.predictions.close()
            for entry in serving.cache.entries():
                entry.close()
    assert split_output.predictions == whole_output.predictions
    assert split_output.probabilities is not None
    assert whole_output.probabilities is not None
    np.testing.assert_array_equal(split_output.probabilities, whole_output.probabilities)
    assert len(small.predictions) == 63
    # Every row in three parts, two of them on the split threads; 63 rows (under 64) in one call.
    assert len(matrix) >= 3 * 64
    parts = [len(part) for part in np.array_split(matrix, 3)]
    assert sorted(count for _, count in recording.calls) == sorted([63, *parts])
    assert sum(name.startswith("predict-split") for name, _ in recording.calls) == 2
