"""Per-feature contributions of a prediction, in the shape trading decisions already answer.

A loaded model that can explain itself returns ``contributions(matrix)``: an array
``(rows, outputs, features + 1)`` whose last column is the expected value (the base) and
whose row sums are the model's raw score of each output: LightGBM's and XGBoost's margin
(TreeSHAP in the framework itself), a scikit-learn forest's probability (shap's TreeSHAP).
Here each row is reduced to the predicted class: ``base_value + sum(contributions)`` is that
class's raw score.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from prediction_provider.errors import ExplanationUnsupported
from prediction_provider.serving.loaders.base import LoadedModel

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class Explanation:
    model: str
    predicted_class: str | None
    base_value: float
    contributions: dict[str, float]
    method: str

    def as_dict(self) -> dict[str, Any]:
        """The JSON shape of ``/api/v1/predict``'s ``explanation``."""
        return {
            "model": self.model,
            "class": self.predicted_class,
            "base_value": self.base_value,
            "contributions": self.contributions,
            "method": self.method,
        }


def unsupported(model: LoadedModel, why: str = "") -> ExplanationUnsupported:
    reason = why or f"{model.framework} models do not expose their trees"
    return ExplanationUnsupported(
        f"this model cannot explain its predictions ({reason}); explain works for LightGBM, "
        "XGBoost and scikit-learn tree models",
        [{"field": "explain", "error": reason}],
    )


def explain(model: LoadedModel, label: str, matrix: FloatArray, predictions: list[Any]) -> list[Explanation]:
    """One explanation per row of ``matrix``, for the class (or value) predicted for it."""
    method = model.explanation_method
    if method is None:
        raise unsupported(model)
    try:
        raw = np.asarray(model.contributions(matrix), dtype=np.float64)
    except NotImplementedError as exc:
        raise unsupported(model, str(exc)) from exc
    names = model.signature.feature_names
    classes = model.signature.classes
    explanations = []
    for row, prediction in zip(raw, predictions, strict=True):
        predicted, block = _block_of(row, prediction, classes)
        contributions = {name: float(value) for name, value in zip(names, block[:-1], strict=True)}
        explanations.append(Explanation(label, predicted, float(block[-1]), contributions, method))
    return explanations


def _block_of(
    row: FloatArray, prediction: Any, classes: tuple[str, ...] | None
) -> tuple[str | None, FloatArray]:
    """The predicted class's contributions. A binary model with one output scores the second
    class; the first class's score is its negation (``P(first) = sigmoid(-margin)``)."""
    if not classes:
        return None, row[0]
    index = classes.index(str(prediction))
    if len(row) == len(classes):
        return classes[index], row[index]
    if len(row) == 1 and len(classes) == 2:
        return classes[index], row[0] if index == 1 else -row[0]
    raise ValueError(f"{len(row)} contribution outputs for {len(classes)} classes")
