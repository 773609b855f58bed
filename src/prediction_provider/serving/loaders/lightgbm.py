"""LightGBM boosters saved as native text models (``model.lgb``/``.txt``)."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from prediction_provider.serving.loaders.base import (
    FloatMatrix,
    LoadedModel,
    ModelLoader,
    ModelSource,
    as_probability_matrix,
)
from prediction_provider.serving.signature import ModelSignature

CLASSIFICATION_OBJECTIVES = ("binary", "multiclass", "multiclassova", "softmax", "ova", "ovr")


def _objective(model_file: Path) -> str:
    """The objective from the text model's header, read without parsing the trees."""
    with model_file.open(encoding="utf-8") as handle:
        for line in handle:
            if line.startswith("objective="):
                return line.split("=", 1)[1].split()[0].strip()
            if line.startswith("Tree="):
                break
    return "regression"


class LightGBMModel(LoadedModel):
    framework = "lightgbm"
    batchable = True
    explanation_method = "lightgbm pred_contrib (TreeSHAP), raw score of the class"

    def __init__(self, booster: Any, signature: ModelSignature, threads: int) -> None:
        super().__init__(signature)
        self._booster = booster
        self._params: dict[str, Any] = {"num_threads": threads} if threads else {}

    def predict_native(self, matrix: FloatMatrix) -> Any:
        return self._booster.predict(matrix, **self._params)

    def predict_scores(self, matrix: FloatMatrix) -> npt.NDArray[Any]:
        scores = self._booster.predict(matrix, **self._params)
        if self.signature.classes:
            return as_probability_matrix(scores, len(self.signature.classes))
        return np.asarray(scores)

    def contributions(self, matrix: FloatMatrix) -> npt.NDArray[np.float64]:
        # One block of features + 1 per class (one block for binary and regression models).
        raw = np.asarray(self._booster.predict(matrix, pred_contrib=True, **self._params), dtype=np.float64)
        return raw.reshape(len(matrix), -1, len(self.signature.features) + 1)


class LightGBMLoader(ModelLoader):
    name = "lightgbm"
    flavors = ("lightgbm",)
    suffixes = (".lgb", ".txt")
    priority = 10

    def requires_trust(self, source: ModelSource) -> bool:
        # MLflow pickles LightGBM's scikit-learn wrappers; boosters are plain text.
        return source.data_file("lightgbm", "model.lgb").suffix == ".pkl"

    def load(self, source: ModelSource) -> LoadedModel:
        import lightgbm

        model_file = source.data_file("lightgbm", "model.lgb")
        if model_file.suffix == ".pkl":
            with model_file.open("rb") as handle:
                wrapper = pickle.load(handle)  # noqa: S301 - trusted root checked by the caller
            booster = wrapper.booster_
        else:
            booster = lightgbm.Booster(model_file=str(model_file))
        objective = (
            _objective(model_file)
            if model_file.suffix != ".pkl"
            else booster.params.get("objective", "regression")
        )
        is_classifier = objective.startswith(CLASSIFICATION_OBJECTIVES)
        classes = None
        if is_classifier:
            count = max(2, booster.num_model_per_iteration())
            classes = source.class_labels(count)
        names = source.feature_names(list(booster.feature_name()))
        signature = ModelSignature.from_names(names or [], classes)
        return LightGBMModel(booster, signature, source.threads)
