"""Tiny real models in the formats a provider may upload (and in the ones it may not)."""

from __future__ import annotations

import io
import json
import pickle
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np

FEATURES = ("alpha", "beta", "gamma")


@dataclass(frozen=True)
class TinyData:
    x: np.ndarray[Any, Any]
    classes: np.ndarray[Any, Any]
    values: np.ndarray[Any, Any]


@cache
def tiny_data() -> TinyData:
    rng = np.random.default_rng(11)
    x = rng.normal(size=(300, len(FEATURES)))
    values = 2.0 * x[:, 0] - x[:, 1] + 0.1 * rng.normal(size=len(x))
    return TinyData(x=x, classes=(values > 0).astype(np.int64), values=values)


def probe_row(seed: int = 3) -> dict[str, float]:
    row = np.random.default_rng(seed).normal(size=len(FEATURES))
    return {name: float(value) for name, value in zip(FEATURES, row, strict=True)}


def as_matrix(row: dict[str, float]) -> np.ndarray[Any, Any]:
    return np.array([[row[name] for name in FEATURES]], dtype=np.float64)


@cache
def lightgbm_booster() -> Any:
    """A binary classifier that names its features."""
    import lightgbm

    data = tiny_data()
    train = lightgbm.Dataset(data.x, data.classes, feature_name=list(FEATURES))
    params = {"objective": "binary", "num_leaves": 7, "min_data_in_leaf": 10, "verbose": -1, "seed": 1}
    return lightgbm.train(params, train, num_boost_round=15)


def lightgbm_text() -> bytes:
    return str(lightgbm_booster().model_to_string()).encode()


@cache
def xgboost_booster() -> Any:
    """A regressor trained on a bare array: the file names no features."""
    import xgboost

    data = tiny_data()
    params = {"objective": "reg:squarederror", "max_depth": 3, "eta": 0.3, "seed": 1, "nthread": 1}
    return xgboost.train(params, xgboost.DMatrix(data.x, label=data.values), num_boost_round=20)


def xgboost_json() -> bytes:
    return bytes(xgboost_booster().save_raw(raw_format="json"))


@cache
def sklearn_classifier() -> Any:
    from sklearn.linear_model import LogisticRegression

    data = tiny_data()
    return LogisticRegression().fit(data.x, data.classes)


@cache
def onnx_model_bytes() -> bytes:
    """The logistic regression as an ONNX graph: one float input [None, 3], no feature names."""
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType

    model = sklearn_classifier()
    graph = to_onnx(
        model,
        initial_types=[("input", FloatTensorType([None, len(FEATURES)]))],
        options={id(model): {"zipmap": False}},
        target_opset={"": 17, "ai.onnx.ml": 3},
    )
    return bytes(graph.SerializeToString())


def onnx_probabilities(row: dict[str, float]) -> np.ndarray[Any, Any]:
    import onnxruntime

    session = onnxruntime.InferenceSession(onnx_model_bytes(), providers=["CPUExecutionProvider"])
    (probabilities,) = session.run(["probabilities"], {"input": as_matrix(row).astype(np.float32)})
    return np.asarray(probabilities)[0]


def pickled_sklearn() -> bytes:
    return pickle.dumps(sklearn_classifier())


def joblib_dump(compress: int | str = 0) -> bytes:
    import joblib

    buffer = io.BytesIO()
    joblib.dump(sklearn_classifier(), buffer, compress=compress)
    return buffer.getvalue()


def feature_list() -> str:
    return json.dumps(list(FEATURES))
