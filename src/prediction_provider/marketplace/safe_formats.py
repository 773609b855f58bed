"""Model files a provider may upload, read without ever unpickling them.

Three formats are accepted: an ONNX graph (protobuf), a LightGBM text model and an XGBoost JSON
model. Each is recognised from its bytes first (the declared format and the file name prove
nothing): a pickle, a joblib dump, a zip archive (skops, torch, npz) or a compressed stream is
refused as such, and a file that does not look like the format it claims is refused too. Only
then does the framework's own parser read it, one that cannot run code: LightGBM parses text,
XGBoost parses JSON, ONNX parses protobuf (and a graph pointing at external data files, which
could name any file on the server, is refused).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from prediction_provider.errors import InvalidModelFile, UnsafeModelFormat

UPLOAD_FORMATS = ("onnx", "lightgbm", "xgboost_json")
MAX_FEATURES = 10_000
MAX_FEATURE_NAME = 128

# Leading bytes of what must never be loaded from an upload, and what each is.
UNSAFE_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\x80", "pickle"),  # protocols 2 to 5 start with PROTO
    (b"PK\x03\x04", "zip archive"),  # skops, torch, numpy .npz, sklearn-onnx zips
    (b"PK\x05\x06", "zip archive"),
    (b"\x1f\x8b", "gzip stream"),  # joblib compress=gzip
    (b"BZh", "bzip2 stream"),
    (b"\xfd7zXZ\x00", "xz stream"),
    (b"\x5d\x00\x00", "lzma stream"),
    (b"\x78\x01", "zlib stream"),  # joblib's default compression
    (b"\x78\x5e", "zlib stream"),
    (b"\x78\x9c", "zlib stream"),
    (b"\x78\xda", "zlib stream"),
    (b"\x93NUMPY", "numpy array"),  # object arrays hold pickles
)
LIGHTGBM_TEXT_START = b"tree\n"  # what Booster.save_model / model_to_string write first
ONNX_FIRST_BYTE = 0x08  # field 1 (ir_version), varint: every serialized ModelProto starts so


@dataclass(frozen=True, slots=True)
class ParsedModel:
    """A safe upload as its framework read it: ``model`` is what the MLflow flavor saves."""

    format: str
    framework: str
    model: Any
    width: int
    native_features: list[str] | None
    metadata_classes: list[str] | None = None


def detected_kind(content: bytes) -> str:
    """What the bytes are, as far as their first bytes tell: a name from ``UNSAFE_MAGIC``, or
    ``lightgbm text``, ``json``, ``protobuf`` or ``unknown``."""
    for magic, kind in UNSAFE_MAGIC:
        if content.startswith(magic):
            return kind
    if content.startswith(LIGHTGBM_TEXT_START):
        return "lightgbm text"
    if content.lstrip()[:1] == b"{":
        return "json"
    if content[:1] == bytes([ONNX_FIRST_BYTE]):
        return "protobuf"
    return "unknown"


EXPECTED_KIND = {"onnx": "protobuf", "lightgbm": "lightgbm text", "xgboost_json": "json"}
FORMAT_LABEL = {
    "onnx": "an ONNX model",
    "lightgbm": "a LightGBM text model",
    "xgboost_json": "an XGBoost JSON model",
}


def refuse_unsafe(declared: str, content: bytes) -> None:
    """``UnsafeModelFormat`` unless ``declared`` is an accepted format and ``content`` looks like it."""
    if declared not in UPLOAD_FORMATS:
        raise UnsafeModelFormat(
            f"format {declared!r} is not accepted: upload ONNX, LightGBM text or XGBoost JSON",
            {"format": declared, "accepted": list(UPLOAD_FORMATS)},
        )
    kind = detected_kind(content)
    if kind != EXPECTED_KIND[declared]:
        what = "" if kind == "unknown" else f" (the file is a {kind})"
        raise UnsafeModelFormat(
            f"the file is not {FORMAT_LABEL[declared]}{what}; pickles, joblib dumps and archives are "
            "never loaded: export ONNX, LightGBM text or XGBoost JSON",
            {"format": declared, "detected": kind, "accepted": list(UPLOAD_FORMATS)},
        )


def parse_model_file(declared: str, content: bytes) -> ParsedModel:
    """Refuse what is unsafe, then parse ``content`` with its framework's own (code-free) parser.
    ``UnsafeModelFormat`` or ``InvalidModelFile`` (both 422) when it cannot be served."""
    refuse_unsafe(declared, content)
    try:
        if declared == "lightgbm":
            return _parse_lightgbm(content)
        if declared == "xgboost_json":
            return _parse_xgboost(content)
        return _parse_onnx(content)
    except (UnsafeModelFormat, InvalidModelFile):
        raise
    except Exception as exc:
        raise InvalidModelFile(
            f"{FORMAT_LABEL[declared]} that cannot be read: {type(exc).__name__}: {exc}",
            {"format": declared},
        ) from exc


def _parse_lightgbm(content: bytes) -> ParsedModel:
    import lightgbm

    booster = lightgbm.Booster(model_str=content.decode("utf-8"))
    names = [str(name) for name in booster.feature_name()]
    return ParsedModel("lightgbm", "lightgbm", booster, booster.num_feature(), names or None)


def _parse_xgboost(content: bytes) -> ParsedModel:
    import xgboost

    document = json.loads(content)
    if not isinstance(document, dict) or "learner" not in document:
        raise InvalidModelFile(
            "the JSON is not an XGBoost model (no 'learner'): save it with Booster.save_model('m.json')",
            {"format": "xgboost_json"},
        )
    booster = xgboost.Booster()
    booster.load_model(bytearray(content))
    names = [str(name) for name in booster.feature_names] if booster.feature_names else None
    return ParsedModel("xgboost_json", "xgboost", booster, booster.num_features(), names)


def _parse_onnx(content: bytes) -> ParsedModel:
    import onnx
    import onnxruntime

    model = onnx.load_model_from_string(content)
    external = [tensor.name for tensor in _tensors(model.graph) if _is_external(tensor)]
    if external:
        raise UnsafeModelFormat(
            "ONNX graphs with external data are refused: a tensor's data may not live in other files",
            {"format": "onnx", "detected": "external data", "tensors": external[:10]},
        )
    onnx.checker.check_model(model)
    session = onnxruntime.InferenceSession(content, providers=["CPUExecutionProvider"])
    inputs = session.get_inputs()
    meta = {entry.key: entry.value for entry in model.metadata_props}
    classes = _json_list(meta.get("class_labels"))
    if len(inputs) == 1:
        shape = inputs[0].shape
        width = shape[-1] if len(shape) > 1 else 1
        if not isinstance(width, int):
            raise InvalidModelFile(
                "the ONNX input's feature dimension is not fixed: export it as [None, n_features]",
                {"format": "onnx", "input": inputs[0].name, "shape": [str(d) for d in shape]},
            )
        names = _json_list(meta.get("feature_names"))
    else:
        width, names = len(inputs), [i.name for i in inputs]
    return ParsedModel("onnx", "onnx", model, int(width), names, classes)


def _tensors(graph: Any) -> Iterator[Any]:
    """Every tensor of a graph and its subgraphs: initializers and tensor-valued attributes."""
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield sparse.values
        yield sparse.indices
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.HasField("t"):
                yield attribute.t
            yield from attribute.tensors
            if attribute.HasField("g"):
                yield from _tensors(attribute.g)
            for subgraph in attribute.graphs:
                yield from _tensors(subgraph)


def _is_external(tensor: Any) -> bool:
    import onnx

    return bool(tensor.data_location == onnx.TensorProto.EXTERNAL or len(tensor.external_data) > 0)


def _json_list(text: str | None) -> list[str] | None:
    if not text:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return [str(item) for item in value] if isinstance(value, list) and value else None


def check_feature_names(names: list[str], width: int) -> list[str]:
    """``names`` as the model's signature: unique, non-empty, as many as the model reads."""
    problems = []
    if len(names) != width:
        problems.append({"field": "features", "error": f"the model reads {width} features, not {len(names)}"})
    if len(set(names)) != len(names):
        problems.append({"field": "features", "error": "feature names must be unique"})
    if any(not name or len(name) > MAX_FEATURE_NAME for name in names):
        problems.append({"field": "features", "error": f"names of 1 to {MAX_FEATURE_NAME} characters"})
    if problems:
        raise InvalidModelFile("the feature names do not fit the model", problems)
    return names
