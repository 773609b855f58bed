"""scikit-learn estimators stored with skops, joblib, pickle or cloudpickle.

Unpickling runs code from the file, and even skops files can crash the process
through crafted tree arrays, so this loader always requires the file to sit
under a trusted model root.
"""

from __future__ import annotations

import pickle
import threading
import warnings
from typing import Any

import numpy as np
import numpy.typing as npt

from prediction_provider.serving.loaders.base import FloatMatrix, LoadedModel, ModelLoader, ModelSource
from prediction_provider.serving.signature import ModelSignature


def _limit_jobs(estimator: Any, threads: int) -> None:
    """Pin every ``n_jobs`` in the estimator tree: a pool per call costs more than one row."""
    if not threads or not hasattr(estimator, "get_params"):
        return
    updates = {key: threads for key in estimator.get_params(deep=True) if key.endswith("n_jobs")}
    if updates:
        estimator.set_params(**updates)


def _is_tree_model(estimator: Any) -> bool:
    """Trees and tree ensembles, alone or as the last step of a pipeline."""
    final = estimator.steps[-1][1] if hasattr(estimator, "steps") else estimator
    return any(hasattr(final, attribute) for attribute in ("tree_", "estimators_", "_predictors"))


def _forget_feature_names(estimator: Any) -> None:
    """Drop ``feature_names_in_`` once its names are captured in the signature.

    Rows always arrive as a matrix in signature order, so the names add nothing
    but a warning on every call (and a DataFrame per call would cost more than
    a small model's prediction).
    """
    parts = [estimator]
    if hasattr(estimator, "get_params"):
        parts.extend(estimator.get_params(deep=True).values())
    for part in parts:
        if "feature_names_in_" in getattr(part, "__dict__", {}):
            del part.__dict__["feature_names_in_"]


class SklearnModel(LoadedModel):
    framework = "sklearn"

    def __init__(self, estimator: Any, signature: ModelSignature) -> None:
        super().__init__(signature)
        self._estimator = estimator
        self.batchable = _is_tree_model(estimator)
        if self.batchable and not hasattr(estimator, "steps"):
            score = "probability of the class" if signature.classes else "predicted value"
            self.explanation_method = f"shap TreeExplainer (TreeSHAP), {score}"
        self._explainer: Any = None
        self._explainer_lock = threading.Lock()

    def predict_native(self, matrix: FloatMatrix) -> Any:
        return self._estimator.predict(matrix)

    def predict_scores(self, matrix: FloatMatrix) -> npt.NDArray[Any]:
        if self.signature.classes:
            return np.asarray(self._estimator.predict_proba(matrix))
        return np.asarray(self._estimator.predict(matrix))

    def contributions(self, matrix: FloatMatrix) -> npt.NDArray[np.float64]:
        """shap's TreeSHAP on the estimator's own trees: exact, and for a forest the sums are
        ``predict_proba`` (a classifier) or ``predict`` (a regressor)."""
        explainer = self._tree_explainer()
        values = np.asarray(explainer.shap_values(matrix, check_additivity=False), dtype=np.float64)
        if values.ndim == 2:  # one output: (rows, features)
            values = values[:, :, None]
        rows, features, outputs = values.shape
        expected = np.broadcast_to(np.asarray(explainer.expected_value, dtype=np.float64), (outputs,))
        combined = np.empty((rows, outputs, features + 1), dtype=np.float64)
        combined[:, :, :features] = values.transpose(0, 2, 1)
        combined[:, :, features] = expected
        return combined

    def _tree_explainer(self) -> Any:
        """Built on the first explanation (it copies every tree), then shared by every thread."""
        with self._explainer_lock:
            if self._explainer is None:
                with warnings.catch_warnings():
                    # shap's import sets up plotting colour maps that matplotlib warns about.
                    warnings.simplefilter("ignore", (DeprecationWarning, PendingDeprecationWarning))
                    import shap
                try:
                    self._explainer = shap.TreeExplainer(self._estimator)
                except Exception as exc:  # shap refuses tree types it does not know
                    raise NotImplementedError(f"shap cannot explain this estimator: {exc}") from exc
            return self._explainer


class SklearnLoader(ModelLoader):
    name = "sklearn"
    flavors = ("sklearn",)
    suffixes = (".joblib", ".pkl", ".pickle", ".skops")
    priority = 30

    def requires_trust(self, source: ModelSource) -> bool:
        return True

    def load(self, source: ModelSource) -> LoadedModel:
        model_file = source.data_file("sklearn", "model.pkl")
        flavor = source.flavor("sklearn")
        if model_file.suffix == ".skops" or flavor.get("serialization_format") == "skops":
            import skops.io

            estimator = skops.io.load(model_file, trusted=flavor.get("skops_trusted_types") or [])
        elif model_file.suffix == ".joblib":
            import joblib

            estimator = joblib.load(model_file)
        else:
            with model_file.open("rb") as handle:
                estimator = pickle.load(handle)  # noqa: S301 - trusted root checked by the caller
        _limit_jobs(estimator, source.threads)
        native_names = getattr(estimator, "feature_names_in_", None)
        names = source.feature_names(list(native_names) if native_names is not None else None)
        if not names:
            count = int(getattr(estimator, "n_features_in_", 0))
            names = [f"f{i}" for i in range(count)]
        _forget_feature_names(estimator)
        classes = None
        if hasattr(estimator, "predict_proba") and hasattr(estimator, "classes_"):
            native = [str(c) for c in estimator.classes_]
            labels = source.metadata.get("class_labels")
            classes = source.class_labels(len(native)) if labels else tuple(native)
        return SklearnModel(estimator, ModelSignature.from_names(names, classes))
