"""An uploaded reference: training rows as CSV or Parquet with the model's feature columns and an
optional ``label`` column, turned into a profile (calibrated on chunks of the same rows)."""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from prediction_provider.errors import InvalidInput
from prediction_provider.modelops.drift.reference import build_profile

LABEL_COLUMN = "label"
PARQUET_MAGIC = b"PAR1"


def read_rows(body: bytes, content_type: str | None) -> pd.DataFrame:
    """The upload as a frame; ``InvalidInput`` (422) when it is neither CSV nor Parquet."""
    if not body:
        raise InvalidInput("the upload is empty: send CSV or Parquet training rows")
    kind = (content_type or "").split(";")[0].strip().lower()
    try:
        if body[:4] == PARQUET_MAGIC or kind in ("application/vnd.apache.parquet", "application/x-parquet"):
            return pd.read_parquet(io.BytesIO(body))
        return pd.read_csv(io.BytesIO(body))
    except Exception as exc:
        raise InvalidInput(f"could not read the upload as CSV or Parquet: {exc}") from exc


def profile_from_rows(
    frame: pd.DataFrame,
    feature_names: Sequence[str],
    classes: Sequence[str] | None,
    probabilities: np.ndarray[Any, Any] | None,
    *,
    bins: int,
    window_rows: int,
) -> dict[str, Any]:
    """A reference of the uploaded rows; the model's answers on them, when given, profile its outputs."""
    missing = [name for name in feature_names if name not in frame.columns]
    if missing:
        raise InvalidInput(
            f"the upload lacks {len(missing)} of the model's feature columns",
            [{"field": name, "error": "missing column"} for name in missing],
        )
    try:
        matrix = frame.loc[:, list(feature_names)].apply(pd.to_numeric, errors="raise").to_numpy(np.float64)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"feature columns must be numeric: {exc}") from exc
    if len(matrix) < 10:
        raise InvalidInput(f"a reference needs at least 10 rows, the upload has {len(matrix)}")
    labels = frame[LABEL_COLUMN].tolist() if LABEL_COLUMN in frame.columns else None
    if labels is not None:
        labels = [str(label) for label in labels]
    return build_profile(
        feature_names,
        matrix,
        labels=labels,
        classes=classes,
        test_matrix=matrix,
        test_probabilities=probabilities,
        bins=bins,
        window_rows=window_rows,
        source="upload",
    )


def feature_matrix(frame: pd.DataFrame, feature_names: Sequence[str]) -> np.ndarray[Any, Any]:
    matrix: np.ndarray[Any, Any] = (
        frame.loc[:, list(feature_names)].apply(pd.to_numeric, errors="coerce").to_numpy(np.float64)
    )
    return matrix
