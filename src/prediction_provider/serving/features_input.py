"""Turning request features into a float64 matrix in signature order, or naming what is wrong.

The happy path stays in C-speed builtins and numpy (one ``map(type, ...)`` pass
and one ``np.array`` call), because a 1024-row batch must cost far less than
the model call itself. Only when something is wrong does the slow path walk
every value to name each offending field.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from itertools import chain
from operator import itemgetter
from typing import Any

import numpy as np

from prediction_provider.errors import BatchTooLarge, InvalidFeatures
from prediction_provider.serving.loaders.base import FloatMatrix
from prediction_provider.serving.signature import ModelSignature

NUMERIC_TYPES = frozenset((int, float))
MAX_REPORTED_ERRORS = 100


def _value_error(value: Any) -> str | None:
    if type(value) not in NUMERIC_TYPES:
        return f"must be a number, got {type(value).__name__ if value is not None else 'null'}"
    try:
        if not math.isfinite(float(value)):
            return "must be finite, got NaN or infinity"
    except OverflowError:
        return "must be finite, got a number out of range"
    return None


class _Errors:
    def __init__(self) -> None:
        self.items: list[dict[str, str]] = []
        self.truncated = False

    def add(self, field: str, error: str) -> None:
        if len(self.items) < MAX_REPORTED_ERRORS:
            self.items.append({"field": field, "error": error})
        else:
            self.truncated = True

    def raise_if_any(self, message: str) -> None:
        if self.items:
            details: dict[str, Any] = {"errors": self.items}
            if self.truncated:
                details["truncated"] = True
            raise InvalidFeatures(message, details)


def _check_keys(keys: Any, expected: frozenset[str], prefix: str, errors: _Errors) -> bool:
    if keys == expected:
        return True
    present = set(keys)
    for name in sorted(expected - present):
        errors.add(f"{prefix}.{name}", "missing")
    for name in sorted(present - expected, key=str):
        errors.add(f"{prefix}.{name}", "not a feature of this model")
    return False


def _to_matrix(rows: Sequence[Sequence[Any]], width: int) -> FloatMatrix | None:
    """The matrix if every value is a finite int/float, else None (caller explains why)."""
    values = chain.from_iterable(rows)
    if set(map(type, values)) - NUMERIC_TYPES:
        return None
    try:
        flat = np.fromiter(chain.from_iterable(rows), dtype=np.float64, count=len(rows) * width)
    except (OverflowError, ValueError):
        return None
    if not np.isfinite(flat).all():
        return None
    return flat.reshape(len(rows), width)


def _fast_rows(records: Sequence[Any], names: tuple[str, ...]) -> list[Sequence[Any]] | None:
    """Each record's values in signature order, or None if any record has other keys.

    Equal lengths plus every name present means exactly the expected keys, so
    two C-level passes replace a key-set comparison per row.
    """
    if set(map(len, records)) != {len(names)}:
        return None
    try:
        if len(names) == 1:
            (name,) = names
            return [(record[name],) for record in records]
        return list(map(itemgetter(*names), records))
    except (KeyError, TypeError, IndexError):
        return None


def _row_errors(records: Sequence[Any], names: tuple[str, ...], prefix: str, errors: _Errors) -> None:
    """The slow path: name every missing, unexpected or non-numeric feature of every row."""
    expected = frozenset(names)
    single = len(records) == 1
    for i, record in enumerate(records):
        row_prefix = prefix if single else f"{prefix}[{i}]"
        if not isinstance(record, Mapping):
            errors.add(row_prefix, "must be an object of features")
            continue
        _check_keys(record.keys(), expected, row_prefix, errors)
        for name in names:
            problem = _value_error(record[name]) if name in record else None
            if problem:
                errors.add(f"{row_prefix}.{name}", problem)


def matrix_from_records(
    records: Sequence[Mapping[str, Any]], signature: ModelSignature, prefix: str, max_rows: int
) -> FloatMatrix:
    """Rows given as ``{feature: value}`` objects; ``prefix`` names them in errors."""
    if len(records) > max_rows:
        raise BatchTooLarge(
            f"{len(records)} rows exceed the limit of {max_rows}",
            {"rows": len(records), "max_rows": max_rows},
        )
    if not records:
        raise InvalidFeatures("no rows to predict", {"errors": [{"field": prefix, "error": "empty"}]})
    names = signature.feature_names
    if all(isinstance(record, dict) for record in records):
        rows = _fast_rows(records, names)
        if rows is not None:
            matrix = _to_matrix(rows, len(names))
            if matrix is not None:
                return matrix
    errors = _Errors()
    _row_errors(records, names, prefix, errors)
    errors.raise_if_any("features do not match the model's signature")
    raise InvalidFeatures("features could not be read as numbers", {"errors": []})


def matrix_from_columns(
    columns: Mapping[str, Any], signature: ModelSignature, prefix: str, max_rows: int
) -> FloatMatrix:
    """Columnar form ``{feature: [values]}``; every column must have the same length."""
    names = signature.feature_names
    errors = _Errors()
    _check_keys(columns.keys(), frozenset(names), prefix, errors)
    lengths = set()
    for name in names:
        column = columns.get(name)
        if column is not None and not isinstance(column, list):
            errors.add(f"{prefix}.{name}", "must be a list of values")
        elif column is not None:
            lengths.add(len(column))
    errors.raise_if_any("feature columns do not match the model's signature")
    if len(lengths) != 1:
        raise InvalidFeatures(
            "feature columns have different lengths",
            {"errors": [{"field": prefix, "error": f"column lengths {sorted(lengths)}"}]},
        )
    (count,) = lengths
    if count > max_rows:
        raise BatchTooLarge(
            f"{count} rows exceed the limit of {max_rows}", {"rows": count, "max_rows": max_rows}
        )
    if count == 0:
        raise InvalidFeatures("no rows to predict", {"errors": [{"field": prefix, "error": "empty"}]})
    ordered = [columns[name] for name in names]
    matrix = _to_matrix(ordered, count)
    if matrix is not None:
        return np.ascontiguousarray(matrix.T)
    for name, column in zip(names, ordered, strict=True):
        for i, value in enumerate(column):
            problem = _value_error(value)
            if problem:
                errors.add(f"{prefix}.{name}[{i}]", problem)
    errors.raise_if_any("features must be finite numbers")
    raise InvalidFeatures("features could not be read as numbers", {"errors": []})
