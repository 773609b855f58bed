"""XGBoost boosters saved as JSON or UBJSON (never the legacy pickle)."""

from __future__ import annotations

import json
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


class XGBoostModel(LoadedModel):
    framework = "xgboost"
    batchable = True
    explanation_method = "xgboost pred_contribs (TreeSHAP), raw margin of the class"

    def __init__(self, booster: Any, signature: ModelSignature) -> None:
        super().__init__(signature)
        self._booster = booster

    def predict_native(self, matrix: FloatMatrix) -> Any:
        return self._booster.inplace_predict(matrix, validate_features=False)

    def predict_scores(self, matrix: FloatMatrix) -> npt.NDArray[Any]:
        # inplace_predict skips DMatrix construction and validates nothing by name,
        # which is why the caller has already ordered columns by the signature.
        scores = self._booster.inplace_predict(matrix, validate_features=False)
        if self.signature.classes:
            return as_probability_matrix(scores, len(self.signature.classes))
        return np.asarray(scores)

    def contributions(self, matrix: FloatMatrix) -> npt.NDArray[np.float64]:
        import xgboost

        # Contributions need a DMatrix (inplace_predict has no pred_contribs); strict_shape gives
        # (rows, groups, features + 1) for every objective. XGBoost computes them in float32.
        raw = self._booster.predict(
            xgboost.DMatrix(matrix), pred_contribs=True, strict_shape=True, validate_features=False
        )
        return np.asarray(raw, dtype=np.float64)


class XGBoostLoader(ModelLoader):
    name = "xgboost"
    flavors = ("xgboost",)
    suffixes = (".ubj", ".json", ".xgb")
    priority = 10

    def load(self, source: ModelSource) -> LoadedModel:
        import xgboost

        flavor = source.flavor("xgboost")
        default = f"model.{flavor.get('model_format', 'xgb')}"
        model_file = source.data_file("xgboost", default)
        booster = xgboost.Booster()
        booster.load_model(str(model_file))
        if source.threads:
            booster.set_param({"nthread": source.threads})
        config = json.loads(booster.save_config())
        learner = config["learner"]
        objective = str(learner["objective"]["name"])
        classes = None
        if objective.startswith(("multi:", "binary:")):
            count = max(2, int(learner["learner_model_param"].get("num_class", "0") or 0))
            classes = source.class_labels(count)
            if objective in ("multi:softmax", "binary:hinge"):
                raise ValueError(
                    f"objective {objective} yields labels, not probabilities; "
                    "train with multi:softprob or binary:logistic"
                )
        names = source.feature_names(list(booster.feature_names or []))
        if not names:
            count = int(learner["learner_model_param"]["num_feature"])
            names = [f"f{i}" for i in range(count)]
        signature = ModelSignature.from_names(names, classes)
        return XGBoostModel(booster, signature)
