"""Binning live rows: every path (one row, small and large batches) gives the counts of a plain
``searchsorted`` per value; features are matched by name; outputs are counted beside them."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest

from prediction_provider.modelops.drift.counters import (
    LABEL_SERIES,
    TOP_SCALE,
    TOP_SERIES,
    VersionCounters,
    bin_rows,
    series_rows,
)
from prediction_provider.modelops.drift.reference import Reference, build_profile

RNG = np.random.default_rng(5)
NAMES = ("a", "b", "c")
CLASSES = ("down", "flat", "up")
SLOT = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def reference() -> Reference:
    train = RNG.normal(size=(2000, 3))
    test = RNG.normal(size=(600, 3))
    probabilities = RNG.dirichlet([2, 1, 2], size=600)
    profile = build_profile(
        NAMES, train, labels=RNG.integers(0, 3, 2000).tolist(), classes=CLASSES, test_matrix=test,
        test_probabilities=probabilities,
    )  # fmt: skip
    return Reference.parse(profile)


def expected_fine(reference: Reference, values: np.ndarray) -> np.ndarray:
    """Counts by one searchsorted per value, missing last."""
    out = np.zeros((values.shape[1], reference.points + 2), dtype=np.int64)
    for series in range(values.shape[1]):
        for value in values[:, series]:
            if np.isfinite(value):
                out[series, np.searchsorted(reference.grid[series], value, side="right")] += 1
            else:
                out[series, -1] += 1
    return out


@pytest.mark.parametrize("rows", [1, 7, 32, 33, 500])
def test_every_binning_path_equals_searchsorted_per_value(reference: Reference, rows: int) -> None:
    values = RNG.normal(scale=1.5, size=(rows, 3))
    values[0, 1] = np.nan
    if rows > 2:
        values[1, 0], values[2, 2] = np.inf, -np.inf
    values[-1, 2] = reference.grid[2][0]  # the minimum: first inside bin, not below
    counts = bin_rows(values, reference.grid[:3])
    assert counts.tolist() == expected_fine(reference, values).tolist()
    expected = expected_fine(reference, values).tolist()
    one_by_one, as_batch = VersionCounters(reference), VersionCounters(reference)
    for row in range(rows):
        one_by_one.count(SLOT, NAMES, values[row : row + 1], None, [], None)
    as_batch.count(SLOT, NAMES, values, None, [], None)
    assert one_by_one.take()[SLOT].numeric[:3].tolist() == expected
    assert as_batch.take()[SLOT].numeric[:3].tolist() == expected


def test_values_at_and_above_the_maximum(reference: Reference) -> None:
    maximum = float(reference.entries[0]["max"])
    counts = bin_rows(np.array([[maximum], [np.nextafter(maximum, np.inf)]]), reference.grid[:1])
    points = reference.points
    assert counts[0, points - 1] == 1  # the maximum falls in the last inside bin
    assert counts[0, points] == 1  # above max⁺'s predecessor: the above-range bin


def test_features_are_matched_by_name_whatever_the_matrix_order(reference: Reference) -> None:
    values = RNG.normal(size=(40, 3))
    in_order = VersionCounters(reference)
    in_order.count(SLOT, NAMES, values, None, [], None)
    shuffled = VersionCounters(reference)
    reordered = np.column_stack([values[:, 2], values[:, 0], values[:, 1], np.zeros(40)])
    shuffled.count(SLOT, ("c", "a", "b", "extra"), reordered, None, [], None)
    assert in_order.take()[SLOT].numeric.tolist() == shuffled.take()[SLOT].numeric.tolist()


def test_a_matrix_missing_a_reference_feature_counts_nothing(reference: Reference) -> None:
    counters = VersionCounters(reference)
    assert counters.count(SLOT, ("a", "b"), RNG.normal(size=(5, 2)), None, [], None) == 0
    assert counters.take() == {}


def test_outputs_are_counted_labels_probabilities_and_top_probability(reference: Reference) -> None:
    counters = VersionCounters(reference)
    probabilities = np.array([[0.2, 0.3, 0.5], [0.7, 0.2, 0.1], [0.1, 0.8, 0.1]])
    # The model's class order differs from the reference's: columns follow the names.
    model_classes = ("up", "down", "flat")
    reordered = probabilities[:, [2, 0, 1]]
    counters.count(SLOT, NAMES, RNG.normal(size=(3, 3)), model_classes, ["up", "down", "sideways"], reordered)
    counters.count(SLOT, NAMES, RNG.normal(size=(1, 3)), model_classes, ["flat"], reordered[2:3])
    counts = counters.take()[SLOT]
    assert counts.labels.tolist() == [1, 1, 1, 1]  # down, flat, up, other ("sideways")
    assert counts.top == [round((0.5 + 0.7 + 0.8 + 0.8) * TOP_SCALE), 4]
    rows = series_rows(reference, SLOT, counts)
    series = {name for name, _, _ in rows}
    assert {"a", "b", "c", "prediction:proba:down", LABEL_SERIES, TOP_SERIES} <= series
    proba_up = [c for name, _, c in rows if name == "prediction:proba:up"]
    assert sum(proba_up) == 4


def test_missing_values_are_stored_in_bin_minus_one(reference: Reference) -> None:
    counters = VersionCounters(reference)
    counters.count(SLOT, NAMES, np.array([[np.nan, 0.0, 0.0]]), None, [], None)
    rows = series_rows(reference, SLOT, counters.take()[SLOT])
    assert ("a", -1, 1) in rows
