"""The loader interface every framework implements, and what a loaded model offers.

A loader turns a ``ModelSource`` (a model file, or an MLflow model directory
with its ``MLmodel`` file) into a ``LoadedModel``. Third-party packages add a
loader by subclassing ``ModelLoader`` and registering the class under the
``prediction_provider.loaders`` entry-point group.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from prediction_provider.serving.signature import ModelSignature

FloatMatrix = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class ModelOutput:
    """Predictions for a batch: one label or value per row, probabilities for classifiers."""

    predictions: list[Any]
    probabilities: npt.NDArray[np.float64] | None = None


@dataclass(frozen=True, slots=True)
class MLmodelInfo:
    """The parts of an MLflow ``MLmodel`` file the loaders need."""

    flavors: dict[str, dict[str, Any]]
    input_names: list[str] | None = None
    input_types: list[str] | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ModelSource:
    """Where a model lives on local disk, and what is known about it before loading."""

    path: Path
    mlmodel: MLmodelInfo | None = None
    sidecar: dict[str, Any] = field(default_factory=dict)
    threads: int = 1

    @property
    def is_mlflow_model(self) -> bool:
        return self.mlmodel is not None

    @property
    def metadata(self) -> dict[str, Any]:
        """Sidecar metadata (``<file>.meta.json``) or the MLmodel ``metadata`` block."""
        merged: dict[str, Any] = {}
        if self.mlmodel is not None:
            merged.update(self.mlmodel.metadata)
        merged.update(self.sidecar)
        return merged

    def flavor(self, name: str) -> dict[str, Any]:
        if self.mlmodel is None:
            return {}
        return self.mlmodel.flavors.get(name, {})

    def data_file(self, flavor: str, default: str) -> Path:
        """The file a flavor stores its model in, resolved inside the model directory."""
        if self.mlmodel is None:
            return self.path
        conf = self.flavor(flavor)
        relative = next((str(conf[k]) for k in ("data", "pickled_model", "model_path") if k in conf), default)
        candidate = (self.path / relative).resolve()
        if not candidate.is_relative_to(self.path.resolve()):
            raise ValueError(f"flavor {flavor} points outside its model directory: {relative}")
        return candidate

    def feature_names(self, native: list[str] | None = None) -> list[str] | None:
        """Feature names from metadata, the MLflow signature, or the model itself, in that order."""
        names = self.metadata.get("feature_names")
        if names:
            return [str(n) for n in names]
        if self.mlmodel is not None and self.mlmodel.input_names:
            return list(self.mlmodel.input_names)
        return native

    def class_labels(self, count: int) -> tuple[str, ...]:
        """Class labels in model-output order; ``0..count-1`` when nothing names them."""
        labels = self.metadata.get("class_labels")
        if labels:
            if len(labels) != count:
                raise ValueError(
                    f"class_labels has {len(labels)} entries but the model predicts {count} classes"
                )
            return tuple(str(label) for label in labels)
        return tuple(str(i) for i in range(count))


def read_sidecar(path: Path) -> dict[str, Any]:
    """Metadata beside a bare model file: ``model.onnx`` → ``model.onnx.meta.json``."""
    sidecar = path.with_name(path.name + ".meta.json")
    if not sidecar.is_file():
        return {}
    loaded = json.loads(sidecar.read_text(encoding="utf-8"))
    if not isinstance(loaded, dict):
        raise ValueError(f"{sidecar} must hold a JSON object")
    return loaded


class LoadedModel(ABC):
    """A model in memory, ready to predict on float64 matrices in signature order.

    Subclasses override ``predict_scores``; ``predict`` turns scores into labels.
    Implementations must be safe to call from several threads at once.
    """

    framework: ClassVar[str] = "unknown"
    batchable: bool = False
    """Tree models gain from merged calls: per-call overhead dominates a single row."""
    explanation_method: str | None = None
    """How ``contributions`` attributes a score to features; None when the model cannot."""

    def __init__(self, signature: ModelSignature) -> None:
        self.signature = signature
        self.metadata: dict[str, Any] = {}
        self._classes = np.array(signature.classes, dtype=object) if signature.classes else None

    @abstractmethod
    def predict_scores(self, matrix: FloatMatrix) -> npt.NDArray[Any]:
        """Class probabilities ``(n, k)`` for classifiers, values ``(n,)`` for regressors."""

    def predict(self, matrix: FloatMatrix) -> ModelOutput:
        scores = np.asarray(self.predict_scores(matrix))
        if self._classes is None:
            return ModelOutput(predictions=scores.reshape(len(matrix)).tolist())
        probabilities = scores.astype(np.float64, copy=False)
        labels = self._classes[np.argmax(probabilities, axis=1)]
        return ModelOutput(predictions=labels.tolist(), probabilities=probabilities)

    def predict_native(self, matrix: FloatMatrix) -> Any:
        """What the framework's own MLflow pyfunc flavor returns, for the MLflow scoring protocol."""
        return self.predict_scores(matrix)

    def contributions(self, matrix: FloatMatrix) -> npt.NDArray[np.float64]:
        """Override point, with ``explanation_method``: ``(rows, outputs, features + 1)``, each
        feature's share of each output's raw score, the expected value last (sums are the score)."""
        raise NotImplementedError(f"{self.framework} models do not explain their predictions")

    def unload(self) -> None:  # noqa: B027 - optional override, not abstract
        """Release native resources; the default relies on garbage collection."""


class ModelLoader(ABC):
    """Turns a ``ModelSource`` into a ``LoadedModel`` for one framework.

    Override points: ``flavors`` and ``suffixes`` say what the loader reads;
    ``requires_trust`` says whether loading may run code from the file
    (pickle, cloudpickle), in which case only trusted roots are accepted.
    """

    name: ClassVar[str]
    flavors: ClassVar[tuple[str, ...]] = ()
    suffixes: ClassVar[tuple[str, ...]] = ()
    priority: ClassVar[int] = 50

    def accepts(self, source: ModelSource) -> bool:
        if source.mlmodel is not None:
            return any(flavor in source.mlmodel.flavors for flavor in self.flavors)
        return source.path.suffix.lower() in self.suffixes

    def requires_trust(self, source: ModelSource) -> bool:
        return False

    @abstractmethod
    def load(self, source: ModelSource) -> LoadedModel:
        """Load the model; raise any exception and the cache reports it as a load failure."""


def as_probability_matrix(scores: npt.NDArray[Any], classes: int) -> npt.NDArray[np.float64]:
    """Binary models often return P(class 1) only; expand them to ``(n, 2)``."""
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim == 1 and classes == 2:
        return np.column_stack((1.0 - scores, scores))
    return scores.reshape(len(scores), classes)
