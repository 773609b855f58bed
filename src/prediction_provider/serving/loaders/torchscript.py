"""TorchScript modules (``torch.jit.save``), available with the ``torch`` extra.

TorchScript archives hold code, so they are read only from trusted roots. The
module takes a float32 ``(n, features)`` tensor and returns class scores
``(n, k)`` or values ``(n,)``; set ``"output": "logits"`` in the sidecar metadata
when the scores still need a softmax.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from prediction_provider.serving.loaders.base import FloatMatrix, LoadedModel, ModelLoader, ModelSource
from prediction_provider.serving.signature import ModelSignature


class TorchScriptModel(LoadedModel):
    framework = "torchscript"

    def __init__(self, module: Any, signature: ModelSignature, logits: bool) -> None:
        super().__init__(signature)
        self._module = module
        self._logits = logits

    def predict_scores(self, matrix: FloatMatrix) -> npt.NDArray[Any]:
        import torch

        with torch.inference_mode():
            output = self._module(torch.from_numpy(matrix.astype(np.float32)))
            if self._logits:
                output = torch.softmax(output, dim=1)
        return np.asarray(output.detach().cpu().numpy(), dtype=np.float64)


class TorchScriptLoader(ModelLoader):
    name = "torchscript"
    suffixes = (".pt", ".pth", ".torchscript")
    priority = 40

    def requires_trust(self, source: ModelSource) -> bool:
        return True

    def load(self, source: ModelSource) -> LoadedModel:
        import torch

        if source.threads:
            torch.set_num_threads(source.threads)
        module = torch.jit.load(str(source.path), map_location="cpu")
        module.eval()
        names = source.feature_names()
        if not names:
            raise ValueError("TorchScript models need feature_names in their .meta.json sidecar")
        labels = source.metadata.get("class_labels")
        classes = tuple(str(label) for label in labels) if labels else None
        logits = source.metadata.get("output") == "logits"
        return TorchScriptModel(module, ModelSignature.from_names(names, classes), logits)
