"""The MLflow scoring protocol (``mlflow models serve``): request formats in, pyfunc output out.

Requests carry ``dataframe_split``, ``dataframe_records``, ``instances`` or
``inputs`` (with optional ``params``) as JSON, or a CSV table. Answers are
what the model's own pyfunc flavor returns, serialised as MLflow does, so a
client of ``mlflow models serve`` sees the same ``{"predictions": ...}``.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any

import numpy as np

from prediction_provider.errors import InvalidFeatures
from prediction_provider.serving.features_input import matrix_from_columns, matrix_from_records
from prediction_provider.serving.loaders.base import FloatMatrix
from prediction_provider.serving.signature import ModelSignature

REQUEST_FORMATS = ("dataframe_split", "dataframe_records", "instances", "inputs")


def _bad(message: str) -> InvalidFeatures:
    return InvalidFeatures(message, {"errors": [{"field": "body", "error": message}]})


def matrix_from_json(payload: Any, signature: ModelSignature, max_rows: int) -> FloatMatrix:
    if not isinstance(payload, Mapping):
        raise _bad("the request must be a JSON object with one of " + ", ".join(REQUEST_FORMATS))
    present = [key for key in REQUEST_FORMATS if key in payload]
    unknown = set(payload) - {*REQUEST_FORMATS, "params"}
    if len(present) != 1 or unknown:
        raise _bad(f"expected exactly one of {', '.join(REQUEST_FORMATS)} (and optional params)")
    params = payload.get("params", {})
    if not isinstance(params, Mapping):
        raise _bad("params must be an object")
    (key,) = present
    data = payload[key]
    if key == "dataframe_split":
        return _from_split(data, signature, max_rows)
    if key == "dataframe_records":
        if not isinstance(data, list):
            raise _bad("dataframe_records must be a list of objects")
        return matrix_from_records(data, signature, key, max_rows)
    return _from_tensor_style(data, signature, key, max_rows)


def _from_split(data: Any, signature: ModelSignature, max_rows: int) -> FloatMatrix:
    if not isinstance(data, Mapping) or not isinstance(data.get("data"), list):
        raise _bad("dataframe_split needs columns and data")
    columns = data.get("columns")
    rows = data["data"]
    if columns is None:
        columns = list(signature.feature_names)
    if not isinstance(columns, list) or not all(
        isinstance(row, list) and len(row) == len(columns) for row in rows
    ):
        raise _bad("every dataframe_split row must have one value per column")
    records = [dict(zip(columns, row, strict=True)) for row in rows]
    return matrix_from_records(records, signature, "dataframe_split.data", max_rows)


def _from_tensor_style(data: Any, signature: ModelSignature, key: str, max_rows: int) -> FloatMatrix:
    """``instances``/``inputs``: rows as objects or lists (signature order), or columns."""
    if isinstance(data, Mapping):
        return matrix_from_columns(data, signature, key, max_rows)
    if not isinstance(data, list):
        raise _bad(f"{key} must be a list of rows or an object of columns")
    if data and all(isinstance(row, list) for row in data):
        names = signature.feature_names
        if not all(len(row) == len(names) for row in data):
            raise _bad(f"each row of {key} needs {len(names)} values in the order {', '.join(names)}")
        data = [dict(zip(names, row, strict=True)) for row in data]
    return matrix_from_records(data, signature, key, max_rows)


def matrix_from_csv(body: bytes, signature: ModelSignature, max_rows: int) -> FloatMatrix:
    import pandas as pd

    try:
        frame = pd.read_csv(io.BytesIO(body))
    except (ValueError, pd.errors.ParserError) as exc:
        raise _bad(f"unreadable CSV: {exc}") from exc
    columns = {str(name): frame[name].tolist() for name in frame.columns}
    return matrix_from_columns(columns, signature, "csv", max_rows)


def predictions_payload(raw: Any) -> dict[str, Any]:
    """``{"predictions": ...}`` shaped as MLflow's scoring server shapes pyfunc output."""
    import pandas as pd

    if isinstance(raw, pd.DataFrame):
        return {"predictions": raw.to_dict(orient="records")}
    if isinstance(raw, pd.Series):
        return {"predictions": raw.tolist()}
    if isinstance(raw, Mapping):
        return {"predictions": {str(k): np.asarray(v).tolist() for k, v in raw.items()}}
    return {"predictions": np.asarray(raw).tolist()}
