"""The arithmetic of ensembles (design §3.8), pure numpy: no models, no I/O.

Every function takes the surviving members' outputs already aligned to the ensemble's class order
(columns reordered by class name) and their weights; dropping a member and calling again with the
survivors is how weights are renormalized. The label of a classifier ensemble is the argmax of
the combined probabilities, except for ``majority_vote`` whose label is the weighted vote's
winner (ties go to the class with the highest mean probability) and whose probabilities are the
vote shares.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

Matrix = npt.NDArray[np.float64]

PROBA_METHODS = ("mean_proba", "weighted_mean_proba", "geometric_mean", "majority_vote", "stacking")
VALUE_METHODS = ("mean", "weighted_mean", "median")
METHODS = (*PROBA_METHODS, *VALUE_METHODS)
GEOMETRIC_FLOOR = 1e-12


@dataclass(frozen=True, slots=True)
class Combined:
    """Combined probabilities ``(n, k)`` and the index of each row's label in the class order."""

    probabilities: Matrix
    label_index: npt.NDArray[np.intp]


def _weights(weights: Sequence[float], count: int) -> Matrix:
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (count,) or count == 0:
        raise ValueError(f"need one weight per member ({count} members, {w.shape} weights)")
    if not np.all(w > 0):
        raise ValueError("weights must be > 0")
    return w


def _stack(outputs: Sequence[Matrix]) -> Matrix:
    """``(members, n, k)`` or ``(members, n)``."""
    if not outputs:
        raise ValueError("nothing to combine: no member answered")
    return np.stack([np.asarray(output, dtype=np.float64) for output in outputs])


def combine_probabilities(method: str, probabilities: Sequence[Matrix], weights: Sequence[float]) -> Combined:
    """Combine member class probabilities (each ``(n, k)``, same class order) by ``method``."""
    stacked = _stack(probabilities)
    if stacked.ndim != 3:
        raise ValueError("member probabilities must be (rows, classes) matrices")
    w = _weights(weights, len(stacked))
    if method == "mean_proba":
        combined = stacked.mean(axis=0)
    elif method == "weighted_mean_proba":
        combined = np.tensordot(w, stacked, axes=1) / w.sum()
    elif method == "geometric_mean":
        logs = np.log(np.maximum(stacked, GEOMETRIC_FLOOR))
        combined = np.exp(np.tensordot(w / w.sum(), logs, axes=1))
        combined = combined / combined.sum(axis=1, keepdims=True)
    elif method == "majority_vote":
        return majority_vote(stacked, w)
    else:
        raise ValueError(f"{method!r} does not combine probabilities")
    return Combined(combined, np.argmax(combined, axis=1))


def majority_vote(stacked: Matrix, weights: Matrix) -> Combined:
    """Each member votes its argmax with its weight; probabilities are the vote shares. A tie
    between top classes goes to the one with the highest mean probability over the members."""
    members, rows, classes = stacked.shape
    votes = np.zeros((rows, classes), dtype=np.float64)
    picks = np.argmax(stacked, axis=2)  # (members, rows)
    for member in range(members):
        votes[np.arange(rows), picks[member]] += weights[member]
    shares = votes / weights.sum()
    top = votes.max(axis=1, keepdims=True)
    tied = np.isclose(votes, top, rtol=0.0, atol=1e-12 * weights.sum())
    mean = stacked.mean(axis=0)
    label_index = np.argmax(np.where(tied, mean, -np.inf), axis=1)
    return Combined(shares, label_index)


def combine_values(method: str, values: Sequence[Matrix], weights: Sequence[float]) -> Matrix:
    """Combine regressor outputs (each ``(n,)``): ``mean``, ``weighted_mean`` or ``median``
    (the plain median of the members' values; weights do not move it)."""
    stacked = _stack(values)
    if stacked.ndim != 2:
        raise ValueError("member values must be (rows,) vectors")
    w = _weights(weights, len(stacked))
    if method == "mean":
        return np.asarray(stacked.mean(axis=0))
    if method == "weighted_mean":
        return np.asarray(np.tensordot(w, stacked, axes=1) / w.sum())
    if method == "median":
        return np.asarray(np.median(stacked, axis=0))
    raise ValueError(f"{method!r} does not combine values")


def class_order(member_classes: Sequence[str], ensemble_classes: Sequence[str]) -> npt.NDArray[np.intp]:
    """Column ``i`` of the aligned matrix is the member's column for ``ensemble_classes[i]``."""
    position = {label: index for index, label in enumerate(member_classes)}
    if set(position) != set(ensemble_classes) or len(member_classes) != len(ensemble_classes):
        raise ValueError(f"classes {list(member_classes)} are not {list(ensemble_classes)}")
    return np.array([position[label] for label in ensemble_classes], dtype=np.intp)


def stacking_columns(members: Sequence[str], classes: Sequence[str]) -> list[str]:
    """The meta model's inputs, in order: ``<member>__<class>`` member by member."""
    return [f"{member}__{label}" for member in members for label in classes]


def stacking_matrix(probabilities: Sequence[Matrix], passthrough: Matrix | None = None) -> Matrix:
    """The meta model's matrix: each member's aligned probabilities side by side, then the
    ensemble's own features when ``passthrough``."""
    blocks = [np.asarray(block, dtype=np.float64) for block in probabilities]
    if passthrough is not None:
        blocks.append(np.asarray(passthrough, dtype=np.float64))
    return np.hstack(blocks)
