from __future__ import annotations

import numpy as np
import pytest

from prediction_provider.errors import BatchTooLarge, InvalidFeatures
from prediction_provider.serving.features_input import matrix_from_columns, matrix_from_records
from prediction_provider.serving.signature import ModelSignature

SIGNATURE = ModelSignature.from_names(["a", "b", "c"], ["down", "flat", "up"])


def fields(exc: pytest.ExceptionInfo[InvalidFeatures]) -> list[str]:
    return [item["field"] for item in exc.value.details["errors"]]


def test_records_become_a_matrix_in_signature_order() -> None:
    matrix = matrix_from_records([{"c": 3, "a": 1.5, "b": -2}], SIGNATURE, "features", 10)
    assert matrix.dtype == np.float64
    assert matrix.tolist() == [[1.5, -2.0, 3.0]]


def test_columns_become_the_same_matrix_as_records() -> None:
    records = [{"a": 1, "b": 2, "c": 3}, {"a": 4, "b": 5, "c": 6}]
    columns = {"a": [1, 4], "b": [2, 5], "c": [3, 6]}
    from_records = matrix_from_records(records, SIGNATURE, "rows", 10)
    from_columns = matrix_from_columns(columns, SIGNATURE, "rows", 10)
    assert from_columns.flags.c_contiguous
    assert np.array_equal(from_records, from_columns)


def test_single_feature_models_work() -> None:
    signature = ModelSignature.from_names(["only"])
    assert matrix_from_records([{"only": 2}], signature, "f", 5).tolist() == [[2.0]]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("1.5", "got str"),
        (None, "got null"),
        (True, "got bool"),
        ([1], "got list"),
        (float("nan"), "finite"),
        (float("inf"), "finite"),
        (10**400, "out of range"),
    ],
)
def test_non_numeric_and_non_finite_values_are_named(value: object, message: str) -> None:
    with pytest.raises(InvalidFeatures) as exc:
        matrix_from_records([{"a": 1, "b": value, "c": 3}], SIGNATURE, "features", 10)
    assert fields(exc) == ["features.b"]
    assert message in exc.value.details["errors"][0]["error"]


def test_missing_extra_and_bad_values_are_reported_together() -> None:
    with pytest.raises(InvalidFeatures) as exc:
        matrix_from_records([{"a": "x", "c": 1, "z": 0}], SIGNATURE, "features", 10)
    assert sorted(fields(exc)) == ["features.a", "features.b", "features.z"]


def test_batch_rows_are_indexed_in_errors() -> None:
    rows = [{"a": 1, "b": 2, "c": 3}, {"a": 1, "b": 2}, {"a": float("nan"), "b": 2, "c": 3}, "row"]
    with pytest.raises(InvalidFeatures) as exc:
        matrix_from_records(rows, SIGNATURE, "features_list", 10)  # type: ignore[arg-type]
    assert fields(exc) == ["features_list[1].c", "features_list[2].a", "features_list[3]"]


def test_error_lists_are_bounded() -> None:
    rows = [{"a": "x", "b": "y", "c": "z"}] * 200
    with pytest.raises(InvalidFeatures) as exc:
        matrix_from_records(rows, SIGNATURE, "rows", 1000)
    assert len(exc.value.details["errors"]) == 100
    assert exc.value.details["truncated"] is True


def test_row_limit_is_enforced_for_both_forms() -> None:
    with pytest.raises(BatchTooLarge):
        matrix_from_records([{"a": 1, "b": 2, "c": 3}] * 3, SIGNATURE, "rows", 2)
    with pytest.raises(BatchTooLarge):
        matrix_from_columns({"a": [1] * 3, "b": [1] * 3, "c": [1] * 3}, SIGNATURE, "rows", 2)


def test_empty_batches_are_refused() -> None:
    with pytest.raises(InvalidFeatures):
        matrix_from_records([], SIGNATURE, "rows", 2)
    with pytest.raises(InvalidFeatures):
        matrix_from_columns({"a": [], "b": [], "c": []}, SIGNATURE, "rows", 2)


def test_column_problems_are_named() -> None:
    with pytest.raises(InvalidFeatures) as exc:
        matrix_from_columns({"a": [1, 2], "b": 3, "d": [1]}, SIGNATURE, "cols", 10)
    assert sorted(fields(exc)) == ["cols.b", "cols.c", "cols.d"]
    with pytest.raises(InvalidFeatures) as exc:
        matrix_from_columns({"a": [1, 2], "b": [1, None], "c": [1, 2]}, SIGNATURE, "cols", 10)
    assert fields(exc) == ["cols.b[1]"]
