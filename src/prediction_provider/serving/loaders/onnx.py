"""ONNX graphs run by onnxruntime: one 2-D input of all features, or one input per feature."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import numpy.typing as npt

from prediction_provider.serving.loaders.base import FloatMatrix, LoadedModel, ModelLoader, ModelSource
from prediction_provider.serving.signature import ModelSignature

ONNX_TYPES = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
}


class ONNXModel(LoadedModel):
    framework = "onnx"

    def __init__(
        self,
        session: Any,
        signature: ModelSignature,
        input_names: list[str],
        input_dtypes: list[Any],
        output_name: str,
    ) -> None:
        super().__init__(signature)
        self._session = session
        self._input_names = input_names
        self._input_dtypes = input_dtypes
        self._output_name = output_name

    def predict_native(self, matrix: FloatMatrix) -> Any:
        """Every graph output by name, as MLflow's ONNX flavor answers array inputs."""
        names = [output.name for output in self._session.get_outputs()]
        return dict(zip(names, self._session.run(names, self._feeds(matrix)), strict=True))

    def _feeds(self, matrix: FloatMatrix) -> dict[str, Any]:
        if len(self._input_names) == 1:
            return {self._input_names[0]: matrix.astype(self._input_dtypes[0], copy=False)}
        return {
            name: matrix[:, [i]].astype(dtype, copy=False)
            for i, (name, dtype) in enumerate(zip(self._input_names, self._input_dtypes, strict=True))
        }

    def predict_scores(self, matrix: FloatMatrix) -> npt.NDArray[Any]:
        (scores,) = self._session.run([self._output_name], self._feeds(matrix))
        scores = np.asarray(scores)
        if self.signature.classes:
            return scores.reshape(len(matrix), len(self.signature.classes))
        return scores.reshape(len(matrix))


def _has_tree_ensemble(model_file: Any) -> bool:
    import onnx

    graph = onnx.load(str(model_file), load_external_data=False).graph
    return any(node.op_type.startswith("TreeEnsemble") for node in graph.node)


class ONNXLoader(ModelLoader):
    name = "onnx"
    flavors = ("onnx",)
    suffixes = (".onnx",)
    priority = 10

    def load(self, source: ModelSource) -> LoadedModel:
        import onnxruntime

        model_file = source.data_file("onnx", "model.onnx")
        options = onnxruntime.SessionOptions()
        if source.threads:
            options.intra_op_num_threads = source.threads
            options.inter_op_num_threads = 1
        session = onnxruntime.InferenceSession(
            str(model_file), sess_options=options, providers=["CPUExecutionProvider"]
        )
        inputs = session.get_inputs()
        dtypes = [ONNX_TYPES.get(i.type, np.float32) for i in inputs]
        graph_meta = session.get_modelmeta().custom_metadata_map
        metadata = dict(source.metadata)
        for key in ("feature_names", "class_labels"):
            if key in graph_meta and key not in metadata:
                metadata[key] = json.loads(graph_meta[key])
        source = ModelSource(source.path, source.mlmodel, metadata, source.threads)
        if len(inputs) == 1:
            width = inputs[0].shape[-1] if len(inputs[0].shape) > 1 else 1
            native = [f"f{i}" for i in range(width)] if isinstance(width, int) else None
        else:
            native = [i.name for i in inputs]
        names = source.feature_names(native)
        if not names:
            raise ValueError("the ONNX graph does not say its feature names; add feature_names metadata")
        output_name, classes = self._scores_output(session, source)
        model = ONNXModel(
            session,
            ModelSignature.from_names(names, classes),
            [i.name for i in inputs],
            dtypes,
            output_name,
        )
        model.batchable = _has_tree_ensemble(model_file)
        return model

    @staticmethod
    def _scores_output(session: Any, source: ModelSource) -> tuple[str, tuple[str, ...] | None]:
        """Prefer a 2-D float output (class probabilities) over a label output."""
        outputs = session.get_outputs()
        for output in outputs:
            shape = output.shape
            if output.type in ("tensor(float)", "tensor(double)") and len(shape) == 2:
                width = shape[1]
                if isinstance(width, int) and width > 1:
                    return output.name, source.class_labels(width)
        first = outputs[0]
        if first.type not in ("tensor(float)", "tensor(double)"):
            raise ValueError(
                "the ONNX graph has no probability tensor; export classifiers with zipmap disabled"
            )
        return first.name, None
