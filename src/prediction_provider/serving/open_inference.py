"""Transport-independent Open Inference Protocol (v2) handlers.

REST (``api/routes/v2.py``) and gRPC (``api/grpc``) translate their wire
formats to ``Tensor`` lists and call these; neither holds inference logic.
A model takes either one 2-D tensor ``[rows, features]`` in signature order,
or one tensor per feature named after it (shape ``[rows]`` or ``[rows, 1]``).
It answers ``label`` (BYTES) and ``probabilities`` (FP64 ``[rows, classes]``)
for classifiers, ``prediction`` (FP64) for regressors.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from prediction_provider import __version__
from prediction_provider.errors import InvalidFeatures, InvalidTensor
from prediction_provider.serving.cache import CachedModel
from prediction_provider.serving.loaders.base import FloatMatrix, ModelOutput
from prediction_provider.serving.references import ALIAS_PATTERN, NAME_PATTERN, is_version_number
from prediction_provider.serving.tensors import NUMERIC_DATATYPES, Tensor, labels_tensor

SERVER_NAME = "prediction-provider"
EXTENSIONS = ("binary_tensor_data", "model_repository")
LABEL_OUTPUT = "label"
PROBABILITIES_OUTPUT = "probabilities"
PREDICTION_OUTPUT = "prediction"


def server_metadata() -> dict[str, Any]:
    return {"name": SERVER_NAME, "version": __version__, "extensions": list(EXTENSIONS)}


def model_reference(name: str, version: str | None) -> str:
    """``/v2/models/{name}/versions/{version}``: a number pins a version, ``latest`` is the newest
    one (as in ``models:/<name>/latest``), any other word names an alias."""
    if not NAME_PATTERN.match(name):
        raise InvalidTensor(f"invalid model name {name!r}")
    if not version:
        return name
    if is_version_number(version) or version.lower() == "latest":
        return f"models:/{name}/{version}"
    if ALIAS_PATTERN.match(version):
        return f"models:/{name}@{version}"
    raise InvalidTensor(f"invalid model version {version!r}")


def output_names(cached: CachedModel) -> list[str]:
    if cached.model.signature.classes:
        return [LABEL_OUTPUT, PROBABILITIES_OUTPUT]
    return [PREDICTION_OUTPUT]


def model_metadata(cached: CachedModel, versions: Sequence[str]) -> dict[str, Any]:
    signature = cached.model.signature
    classes = signature.classes
    outputs: list[dict[str, Any]] = (
        [
            {"name": LABEL_OUTPUT, "datatype": "BYTES", "shape": [-1]},
            {"name": PROBABILITIES_OUTPUT, "datatype": "FP64", "shape": [-1, len(classes)]},
        ]
        if classes
        else [{"name": PREDICTION_OUTPUT, "datatype": "FP64", "shape": [-1]}]
    )
    return {
        "name": cached.resolved.name,
        "versions": list(versions) or ([cached.resolved.version] if cached.resolved.version else []),
        "platform": cached.model.framework,
        "inputs": [{"name": f.name, "datatype": "FP64", "shape": [-1, 1]} for f in signature.features],
        "outputs": outputs,
        "parameters": {"classes": list(classes) if classes else None, "version": cached.resolved.version},
    }


def matrix_from_tensors(cached: CachedModel, inputs: Sequence[Tensor], max_rows: int) -> FloatMatrix:
    """The float64 matrix in signature order, from one 2-D tensor or one tensor per feature."""
    names = cached.model.signature.feature_names
    if not inputs:
        raise InvalidTensor("the request has no inputs")
    for tensor in inputs:
        if tensor.datatype not in NUMERIC_DATATYPES:
            raise InvalidTensor(f"input {tensor.name!r}: {tensor.datatype} is not numeric")
    if len(inputs) == 1 and inputs[0].array.ndim == 2 and inputs[0].name not in names:
        matrix = inputs[0].array
        if matrix.shape[1] != len(names):
            raise InvalidTensor(
                f"input {inputs[0].name!r} has {matrix.shape[1]} columns; the model takes {len(names)}: "
                f"{', '.join(names)}"
            )
    else:
        matrix = _stack_feature_tensors(inputs, names)
    if matrix.shape[0] > max_rows:
        raise InvalidTensor(f"{matrix.shape[0]} rows exceed the limit of {max_rows}")
    if matrix.shape[0] == 0:
        raise InvalidTensor("the inputs hold no rows")
    matrix = np.ascontiguousarray(matrix, dtype=np.float64)
    bad = ~np.isfinite(matrix)
    if bad.any():
        rows, cols = np.nonzero(bad)
        errors = [
            {"field": f"{names[c]}[{r}]", "error": "must be finite"}
            for r, c in zip(rows[:100], cols[:100], strict=True)
        ]
        raise InvalidFeatures("inputs must be finite numbers", {"errors": errors})
    return matrix


def _stack_feature_tensors(inputs: Sequence[Tensor], names: tuple[str, ...]) -> FloatMatrix:
    by_name = {tensor.name: tensor for tensor in inputs}
    missing = [name for name in names if name not in by_name]
    extra = [name for name in by_name if name not in names]
    if missing or extra:
        errors = [{"field": n, "error": "missing"} for n in missing]
        errors += [{"field": n, "error": "not a feature of this model"} for n in extra]
        raise InvalidFeatures("inputs do not match the model's features", {"errors": errors})
    columns = []
    for name in names:
        array = by_name[name].array
        if array.ndim == 2 and array.shape[1] == 1:
            array = array[:, 0]
        if array.ndim != 1:
            raise InvalidTensor(
                f"input {name!r} must have shape [rows] or [rows, 1], got {list(array.shape)}"
            )
        columns.append(array)
    if len({len(c) for c in columns}) != 1:
        raise InvalidTensor("feature inputs have different numbers of rows")
    return np.column_stack(columns)


def output_tensors(cached: CachedModel, output: ModelOutput, requested: Sequence[str] | None) -> list[Tensor]:
    available = output_names(cached)
    wanted = list(requested) if requested else available
    unknown = [name for name in wanted if name not in available]
    if unknown:
        raise InvalidTensor(f"unknown outputs {unknown}; the model has {available}")
    tensors = []
    for name in wanted:
        if name == LABEL_OUTPUT:
            tensors.append(labels_tensor(name, output.predictions))
        elif name == PROBABILITIES_OUTPUT:
            assert output.probabilities is not None
            tensors.append(Tensor(name, "FP64", np.asarray(output.probabilities, dtype=np.float64)))
        else:
            tensors.append(Tensor(name, "FP64", np.asarray(output.predictions, dtype=np.float64)))
    return tensors


def repository_index(
    loaded: Sequence[CachedModel],
    models: Sequence[dict[str, Any]],
    only_ready: bool,
    unloaded: frozenset[str] = frozenset(),
) -> list[dict[str, str]]:
    """Every registered version with its state: READY when it is in the cache, UNAVAILABLE
    otherwise, with the reason ``unloaded`` for a name unloaded through the repository API."""
    ready = {(entry.resolved.name, entry.resolved.version) for entry in loaded}
    index = []
    for model in models:
        for version in model["versions"]:
            is_unloaded = model["name"] in unloaded
            is_ready = not is_unloaded and (model["name"], version["version"]) in ready
            if is_ready or not only_ready:
                entry = {"name": model["name"], "version": version["version"]}
                entry["state"] = "READY" if is_ready else "UNAVAILABLE"
                if is_unloaded:
                    entry["reason"] = "unloaded"
                index.append(entry)
    return index


def served_parameters(served: Any) -> dict[str, Any]:
    """OIP v2 response ``parameters`` naming the experiment variant or fallback that answered
    (``model_name``/``model_version`` already name the answering model)."""
    parameters: dict[str, Any] = {}
    route = served.route
    if route.experiment is not None and not route.experiment.pure_shadow:
        parameters["pp_experiment"] = route.experiment.name
        parameters["pp_variant"] = route.variant
    if served.served_by != "primary":
        parameters["pp_served_by"] = "fallback"
        parameters["pp_fallback_reason"] = served.fallback_reason
    if served.members_used is not None:
        parameters["pp_members_used"] = served.members_used
    return parameters
