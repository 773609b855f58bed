"""In-process drift counters: a batch of rows binned on a version's reference grids into int64
counts per (model, version, slot), taken out whole by the flush.

Everything here is additive: the counts of two processes summed equal the counts of one process
that saw both sets of rows, which is what makes the shared table exact for any number of workers.

Counter layout of one slot (``SlotCounts``): ``numeric`` is ``(series, G + 2)``: the fine bins of
each numeric series (features first, then the output series), the last column the missing bin;
``labels`` counts predicted labels by class index, the last entry the labels outside the classes;
``top`` is ``[Σ round(max probability · 10⁶), rows with probabilities]`` (the expected accuracy's
numerator and denominator, exact to 10⁻⁶ per row and still an integer).
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np

from prediction_provider.modelops.drift.reference import Reference

# Up to this many rows, one broadcast comparison bins every series at once (fewer numpy calls);
# above it, one searchsorted per series costs less than rows x series x grid comparisons.
BROADCAST_ROWS = 32
TOP_SCALE = 1_000_000

Matrix = np.ndarray[Any, np.dtype[np.float64]]
Counts = np.ndarray[Any, np.dtype[np.int64]]


def bin_rows(values: Matrix, grid: Matrix) -> Counts:
    """Fine-bin counts ``(series, G + 2)`` of ``values`` ``(rows, series)`` on ``grid`` ``(series, G)``
    (``searchsorted(side="right")`` per series; NaN and ±inf in the last, missing, column)."""
    rows, series = values.shape
    points = grid.shape[1]
    if rows <= BROADCAST_ROWS:
        bins = (values[:, :, None] >= grid[None, :, :]).sum(axis=2)
    else:
        bins = np.empty((rows, series), dtype=np.intp)
        for index in range(series):
            bins[:, index] = np.searchsorted(grid[index], values[:, index], side="right")
    bins[~np.isfinite(values)] = points + 1
    width = points + 2
    flat = bins + np.arange(series) * width
    return np.bincount(flat.ravel(), minlength=series * width).reshape(series, width).astype(np.int64)


@dataclass(slots=True)
class SlotCounts:
    numeric: Counts
    labels: Counts
    top: list[int] = field(default_factory=lambda: [0, 0])
    # Flat ``numeric`` indices of single rows, folded in with one bincount (``fold``): adding them
    # one numpy call per row would cost more than binning the row.
    pending: list[int] = field(default_factory=list)

    def fold(self) -> None:
        if self.pending:
            flat = self.numeric.reshape(-1)
            flat += np.bincount(self.pending, minlength=len(flat))
            self.pending.clear()

    def add(self, other: SlotCounts) -> None:
        other.fold()
        self.numeric += other.numeric
        self.labels += other.labels
        self.top[0] += other.top[0]
        self.top[1] += other.top[1]


FOLD_AT = 1 << 16  # pending indices before a fold (bounds their memory)


@dataclass(slots=True)
class VersionCounters:
    """One version's compiled reference and its unflushed counts by slot start."""

    reference: Reference
    reset_at: datetime | None = None
    slots: dict[datetime, SlotCounts] = field(default_factory=dict)
    _columns: dict[tuple[str, ...], np.ndarray[Any, Any] | None] = field(default_factory=dict)
    _classes: dict[tuple[str, ...] | None, np.ndarray[Any, Any] | None] = field(default_factory=dict)
    # The last names object seen and its columns: callers pass their signature's own tuple every
    # time, so an identity check skips hashing 16 names per request.
    _last_names: Any = None
    _last_columns: np.ndarray[Any, Any] | None = None
    _last_classes: Any = None
    _last_class_columns: np.ndarray[Any, Any] | None = None
    _grid_lists: list[list[float]] = field(default_factory=list)
    _row_columns: tuple[Any, list[int]] = (None, [])

    def __post_init__(self) -> None:
        self._grid_lists = self.reference.grid.tolist()

    def empty(self) -> SlotCounts:
        reference = self.reference
        return SlotCounts(
            np.zeros((len(reference.series), reference.points + 2), dtype=np.int64),
            np.zeros(len(reference.classes) + 1, dtype=np.int64),
        )

    def columns(self, feature_names: Sequence[str]) -> np.ndarray[Any, Any] | None:
        """The matrix columns of the reference's features, in its order (None: a feature is absent)."""
        if feature_names is self._last_names:
            return self._last_columns
        key = tuple(feature_names)
        if key not in self._columns:
            position = {name: index for index, name in enumerate(key)}
            wanted = [position.get(name) for name in self.reference.feature_names]
            self._columns[key] = None if None in wanted else np.asarray(wanted, dtype=np.intp)
        self._last_names, self._last_columns = feature_names, self._columns[key]
        return self._last_columns

    def class_columns(self, classes: Sequence[str] | None) -> np.ndarray[Any, Any] | None:
        """The probability columns of the reference's output classes (None: they do not match)."""
        if classes is self._last_classes and classes is not None:
            return self._last_class_columns
        key = tuple(str(c) for c in classes) if classes else None
        if key not in self._classes:
            found = None
            if key is not None and self.reference.proba_classes:
                position = {name: index for index, name in enumerate(key)}
                wanted = [position.get(name) for name in self.reference.proba_classes]
                found = None if None in wanted else np.asarray(wanted, dtype=np.intp)
            self._classes[key] = found
        self._last_classes, self._last_class_columns = classes, self._classes[key]
        return self._last_class_columns

    def count(
        self,
        slot: datetime,
        feature_names: Sequence[str],
        matrix: Matrix,
        classes: Sequence[str] | None,
        predictions: Sequence[Any],
        probabilities: Matrix | None,
    ) -> int:
        """Bin one batch into ``slot``; the rows counted (0 when the features do not match)."""
        reference = self.reference
        columns = self.columns(feature_names)
        if columns is None or matrix.ndim != 2 or not len(matrix):
            return 0
        rows = len(matrix)
        counts = self.slots.get(slot)
        if counts is None:
            counts = self.slots[slot] = self.empty()
        if rows == 1:
            self._count_row(counts, columns, matrix[0].tolist(), classes, predictions, probabilities)
            return 1
        values = np.asarray(matrix[:, columns], dtype=np.float64)
        outputs = self._outputs(classes, predictions, probabilities, rows)
        if outputs is not None:
            values = np.hstack([values, outputs])
        numeric = bin_rows(values, reference.grid[: values.shape[1]])
        counts.numeric[: len(numeric)] += numeric
        if reference.classes and len(predictions) == rows:
            index = reference.class_index
            other = len(reference.classes)
            labels = [index.get(str(label), other) for label in predictions]
            counts.labels += np.bincount(labels, minlength=other + 1)
        if probabilities is not None and reference.proba_classes and len(probabilities) == rows:
            top = np.asarray(probabilities, dtype=np.float64).max(axis=1)
            top = top[np.isfinite(top)]
            counts.top[0] += int(np.rint(top * TOP_SCALE).sum())
            counts.top[1] += len(top)
        return rows

    def _count_row(
        self,
        counts: SlotCounts,
        columns: np.ndarray[Any, Any],
        row: list[float],
        classes: Sequence[str] | None,
        predictions: Sequence[Any],
        probabilities: Matrix | None,
    ) -> None:
        """One row in plain Python (``bisect`` on the grids as lists): a numpy call per series, or
        even per row, would cost more than the binning itself."""
        reference = self.reference
        if columns is not self._row_columns[0]:
            self._row_columns = (columns, columns.tolist())
        values = [row[column] for column in self._row_columns[1]]
        if reference.proba_classes:
            class_columns = self.class_columns(classes)
            if probabilities is not None and class_columns is not None and len(probabilities) == 1:
                probability_row = probabilities[0].tolist()
                values.extend(probability_row[column] for column in class_columns.tolist())
                top = max(probability_row)
                if top - top == 0.0:
                    counts.top[0] += round(top * TOP_SCALE)
                    counts.top[1] += 1
        elif reference.predicts_value and len(predictions) == 1:
            with suppress(TypeError, ValueError):
                values.append(float(predictions[0]))
        width = reference.points + 2
        missing = width - 1
        pending = counts.pending
        offset = 0
        for grid, value in zip(self._grid_lists, values, strict=False):
            # value - value is 0.0 for a finite float, NaN for NaN and ±inf.
            pending.append(offset + (bisect_right(grid, value) if value - value == 0.0 else missing))
            offset += width
        if len(pending) >= FOLD_AT:
            counts.fold()
        if reference.classes and len(predictions) == 1:
            counts.labels[reference.class_index.get(str(predictions[0]), len(reference.classes))] += 1

    def _outputs(
        self,
        classes: Sequence[str] | None,
        predictions: Sequence[Any],
        probabilities: Matrix | None,
        rows: int,
    ) -> Matrix | None:
        """The output series' columns: class probabilities, or a regressor's predicted value."""
        reference = self.reference
        if reference.proba_classes:
            columns = self.class_columns(classes)
            if probabilities is None or columns is None or len(probabilities) != rows:
                return None
            return np.asarray(probabilities, dtype=np.float64)[:, columns]
        if reference.predicts_value and len(predictions) == rows:
            try:
                return np.asarray(predictions, dtype=np.float64).reshape(rows, 1)
            except (TypeError, ValueError):
                return None
        return None

    def take(self) -> dict[datetime, SlotCounts]:
        taken, self.slots = self.slots, {}
        for counts in taken.values():
            counts.fold()
        return taken

    def put_back(self, taken: dict[datetime, SlotCounts]) -> None:
        """Counts a failed flush could not write, merged back for the next one."""
        for slot, counts in taken.items():
            mine = self.slots.get(slot)
            if mine is None:
                self.slots[slot] = counts
            else:
                mine.add(counts)

    def drop_before(self, when: datetime) -> None:
        for slot in [slot for slot in self.slots if slot < when]:
            del self.slots[slot]


def series_rows(reference: Reference, slot: datetime, counts: SlotCounts) -> list[tuple[str, int, int]]:
    """The non-zero ``(series, bin, count)`` of one slot, as stored (missing bin: -1)."""
    found: list[tuple[str, int, int]] = []
    missing = reference.points + 1
    rows, columns = np.nonzero(counts.numeric)
    for row, column in zip(rows.tolist(), columns.tolist(), strict=True):
        found.append(
            (reference.series[row], -1 if column == missing else column, int(counts.numeric[row, column]))
        )
    for column in np.nonzero(counts.labels)[0].tolist():
        found.append((LABEL_SERIES, column, int(counts.labels[column])))
    if counts.top[1]:
        found.append((TOP_SERIES, 0, counts.top[0]))
        found.append((TOP_SERIES, 1, counts.top[1]))
    return found


LABEL_SERIES = "prediction:label"
TOP_SERIES = "prediction:top_proba"
