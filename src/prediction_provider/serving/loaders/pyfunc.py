"""Any MLflow model through its ``python_function`` flavor, the fallback of last resort."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from prediction_provider.serving.loaders.base import FloatMatrix, LoadedModel, ModelLoader, ModelSource
from prediction_provider.serving.signature import ModelSignature


class PyfuncModel(LoadedModel):
    framework = "pyfunc"

    def __init__(self, model: Any, signature: ModelSignature) -> None:
        super().__init__(signature)
        self._model = model
        self._columns = list(signature.feature_names)

    def predict_native(self, matrix: FloatMatrix) -> Any:
        import pandas as pd

        return self._model.predict(pd.DataFrame(matrix, columns=self._columns))

    def predict_scores(self, matrix: FloatMatrix) -> npt.NDArray[Any]:
        output = self.predict_native(matrix)
        values = np.asarray(output.to_numpy() if hasattr(output, "to_numpy") else output)
        if self.signature.classes:
            return values.astype(np.float64).reshape(len(matrix), len(self.signature.classes))
        return values.reshape(len(matrix))


class PyfuncLoader(ModelLoader):
    name = "pyfunc"
    flavors = ("python_function",)
    priority = 90

    def requires_trust(self, source: ModelSource) -> bool:
        # pyfunc models are cloudpickled Python objects: loading them runs their code.
        return True

    def load(self, source: ModelSource) -> LoadedModel:
        import mlflow.pyfunc

        names = source.feature_names()
        if not names:
            raise ValueError("pyfunc models need a column-based signature or feature_names metadata")
        model = mlflow.pyfunc.load_model(str(source.path))
        labels = source.metadata.get("class_labels")
        classes = tuple(str(label) for label in labels) if labels else None
        return PyfuncModel(model, ModelSignature.from_names(names, classes))
