"""The reference profile of one model version: what its training data and held-out predictions
looked like, in the fixed bins live rows are counted on.

A profile is plain JSON (the MLflow artifact ``drift_reference.json``, or an uploaded one in
``drift_references``)::

    {"format": 1, "source": "training", "rows": 3000, "bins": 10, "subdivision": 5,
     "features": [{"name", "type": "numeric", "monitored", "edges" (bins + 1), "proportions"
                   (bins + 3: below, inside…, above, missing), "ks_grid" (bins·5 + 1), "ks_cdf"
                   (P(x < g) at each grid point), "mean", "std", "min", "max", "missing_share",
                   "importance"}],
     "class_priors": {label: share} | null,          # training labels
     "prediction": {"rows", "classes", "label_shares" (+ "other"), "expected_accuracy",
                    "series": [numeric entries "prediction:proba:<class>" | "prediction:value"]} | null,
     "calibration": {"chunk_rows", "chunks", "features": {name: {method: [mean, std]}},
                     "prediction": {"psi": [mean, std]}} | null,
     "importances": {name: gain} | null}

Calibration (NannyML's idea) is the statistic of consecutive ``chunk_rows`` chunks of held-out rows
against the reference: what "normal" movement of the same market looks like.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from prediction_provider.modelops.drift import statistics as st

FORMAT = 1
SUBDIVISION = 5
ARTIFACT = "drift_reference.json"
PROBA_PREFIX = "prediction:proba:"
VALUE_SERIES = "prediction:value"
OTHER = "other"

Matrix = np.ndarray[Any, np.dtype[np.float64]]


def _finite_float(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def numeric_entry(name: str, values: Sequence[float] | np.ndarray[Any, Any], bins: int) -> dict[str, Any]:
    """One numeric series' reference: quantile grid, coarse proportions, CDF on the grid, moments."""
    values = np.asarray(values, dtype=np.float64)
    finite = values[np.isfinite(values)]
    rows = len(values)
    missing_share = float(1 - len(finite) / rows) if rows else 1.0
    if not len(finite):
        return {"name": name, "type": "numeric", "monitored": False, "missing_share": missing_share}
    grid = np.quantile(finite, np.linspace(0.0, 1.0, bins * SUBDIVISION + 1))
    grid[-1] = np.nextafter(finite.max(), np.inf)
    grid = np.maximum.accumulate(grid)
    fine = np.bincount(np.searchsorted(grid, finite, side="right"), minlength=len(grid) + 1)
    fine = np.append(fine, rows - len(finite))
    coarse = st.coarse_counts(fine, SUBDIVISION)
    return {
        "name": name,
        "type": "numeric",
        "monitored": True,
        "edges": grid[::SUBDIVISION].tolist(),
        "proportions": (coarse / rows).tolist(),
        "ks_grid": grid.tolist(),
        "ks_cdf": st.fine_cdf(fine).tolist(),
        "mean": float(finite.mean()),
        "std": float(finite.std()),
        "min": float(finite.min()),
        "max": float(finite.max()),
        "missing_share": missing_share,
    }


def build_profile(
    feature_names: Sequence[str],
    matrix: Matrix,
    *,
    labels: Sequence[Any] | None = None,
    classes: Sequence[str] | None = None,
    test_matrix: Matrix | None = None,
    test_probabilities: Matrix | None = None,
    test_predictions: Sequence[float] | None = None,
    importances: Mapping[str, float] | None = None,
    bins: int = 10,
    window_rows: int = 1000,
    source: str = "training",
) -> dict[str, Any]:
    """A profile from training rows (``matrix``, ``labels`` as class labels or class indices), and,
    when given, held-out rows and the model's answers on them (probabilities of ``classes``, or a
    regressor's values). Calibration runs on the held-out rows, else on the training rows."""
    matrix = np.asarray(matrix, dtype=np.float64)
    if matrix.ndim != 2 or matrix.shape[1] != len(feature_names) or not len(matrix):
        raise ValueError(f"a profile needs rows of {len(feature_names)} features, got shape {matrix.shape}")
    features = [numeric_entry(name, matrix[:, i], bins) for i, name in enumerate(feature_names)]
    total_gain = sum(max(0.0, float(v)) for v in (importances or {}).values())
    for entry in features:
        gain = (importances or {}).get(entry["name"])
        entry["importance"] = float(gain) / total_gain if gain is not None and total_gain > 0 else None
    class_names = [str(c) for c in classes] if classes else []
    profile: dict[str, Any] = {
        "format": FORMAT,
        "source": source,
        "rows": len(matrix),
        "bins": bins,
        "subdivision": SUBDIVISION,
        "features": features,
        "class_priors": _label_shares(labels, class_names, with_other=False) if labels is not None else None,
        "prediction": _prediction(class_names, test_probabilities, test_predictions, bins),
        "importances": {k: float(v) for k, v in importances.items()} if importances else None,
        "calibration": None,
    }
    held_out = np.asarray(test_matrix, dtype=np.float64) if test_matrix is not None else matrix
    profile["calibration"] = calibrate(
        Reference.parse(profile), held_out, class_names, test_probabilities, window_rows
    )
    return profile


def _label_shares(labels: Sequence[Any], classes: Sequence[str], *, with_other: bool) -> dict[str, float]:
    """Shares of each class; integer labels are class indices when ``classes`` are named."""
    values = list(labels)
    if not values:
        return {}
    named: list[str] = []
    for value in values:
        if classes and isinstance(value, (int, np.integer)) and 0 <= int(value) < len(classes):
            named.append(classes[int(value)])
        else:
            named.append(str(value))
    keys = list(classes) or sorted(set(named))
    shares = {key: named.count(key) / len(named) for key in keys}
    if with_other:
        shares[OTHER] = sum(1 for value in named if value not in shares) / len(named)
    return shares


def _prediction(
    classes: Sequence[str],
    probabilities: Matrix | None,
    predictions: Sequence[float] | None,
    bins: int,
) -> dict[str, Any] | None:
    if probabilities is not None and classes:
        probabilities = np.asarray(probabilities, dtype=np.float64)
        predicted = probabilities.argmax(axis=1)
        return {
            "rows": len(probabilities),
            "classes": list(classes),
            "label_shares": _label_shares(predicted.tolist(), classes, with_other=True),
            "expected_accuracy": _finite_float(float(probabilities.max(axis=1).mean())),
            "series": [
                numeric_entry(f"{PROBA_PREFIX}{name}", probabilities[:, i], bins)
                for i, name in enumerate(classes)
            ],
        }
    if predictions is not None:
        return {
            "rows": len(predictions),
            "classes": [],
            "label_shares": None,
            "expected_accuracy": None,
            "series": [numeric_entry(VALUE_SERIES, np.asarray(predictions, dtype=np.float64), bins)],
        }
    if classes:
        return {
            "rows": 0,
            "classes": list(classes),
            "label_shares": None,
            "expected_accuracy": None,
            "series": [],
        }
    return None


def calibrate(
    reference: Reference,
    matrix: Matrix,
    classes: Sequence[str],
    probabilities: Matrix | None,
    window_rows: int,
) -> dict[str, Any] | None:
    """Each method's mean and standard deviation over consecutive chunks of ``matrix`` (chunks of
    ``window_rows``, or a quarter of the rows when fewer than two windows fit); None under 2 chunks."""
    from prediction_provider.modelops.drift.counters import bin_rows

    rows = len(matrix)
    chunk_rows = window_rows if rows >= 2 * window_rows else rows // 4
    if chunk_rows < 10:
        return None
    chunks = rows // chunk_rows
    per_feature: dict[str, dict[str, list[float]]] = {
        name: {m: [] for m in st.METHODS} for name in reference.feature_names
    }
    prediction_psi: list[float] = []
    for chunk in range(chunks):
        part = matrix[chunk * chunk_rows : (chunk + 1) * chunk_rows]
        counts = bin_rows(part, reference.grid[: len(reference.feature_names)])
        for index, name in enumerate(reference.feature_names):
            for method, value in reference.scores(index, counts[index]).items():
                per_feature[name][method].append(value)
        if probabilities is not None and reference.label_shares:
            predicted = np.asarray(probabilities, dtype=np.float64)[
                chunk * chunk_rows : (chunk + 1) * chunk_rows
            ]
            labels = np.bincount(predicted.argmax(axis=1), minlength=len(classes) + 1)
            prediction_psi.append(st.psi(reference.label_proportions(), st.proportions(labels)))
    return {
        "chunk_rows": chunk_rows,
        "chunks": chunks,
        "features": {
            name: {method: [float(np.mean(v)), float(np.std(v))] for method, v in methods.items()}
            for name, methods in per_feature.items()
        },
        "prediction": {"psi": [float(np.mean(prediction_psi)), float(np.std(prediction_psi))]}
        if prediction_psi
        else None,
    }


@dataclass(slots=True)
class Reference:
    """A parsed profile, with the arrays the hot path bins on."""

    profile: dict[str, Any]
    entries: list[dict[str, Any]]  # monitored numeric series: features, then outputs
    series: list[str]
    feature_names: tuple[str, ...]
    grid: Matrix
    points: int
    subdivision: int
    classes: tuple[str, ...]
    proba_classes: tuple[str, ...]
    predicts_value: bool
    class_index: dict[str, int] = field(default_factory=dict)

    @classmethod
    def parse(cls, profile: Mapping[str, Any]) -> Reference:
        """Validate and compile a profile; ``ValueError`` names what is wrong."""
        if not isinstance(profile, Mapping) or profile.get("format") != FORMAT:
            raise ValueError(f"not a drift reference profile (format {FORMAT})")
        subdivision = int(profile.get("subdivision", SUBDIVISION))
        bins = int(profile["bins"])
        points = bins * subdivision + 1
        features = [e for e in profile.get("features", []) if e.get("monitored")]
        prediction = profile.get("prediction") or {}
        outputs = [e for e in prediction.get("series", []) if e.get("monitored")]
        entries = [*features, *outputs]
        if not features:
            raise ValueError("the profile monitors no feature")
        for entry in entries:
            if len(entry.get("ks_grid", [])) != points or len(entry.get("proportions", [])) != bins + 3:
                raise ValueError(f"series {entry.get('name')!r} does not have {bins} bins")
        grid = np.asarray([e["ks_grid"] for e in entries], dtype=np.float64)
        classes = tuple(str(c) for c in prediction.get("classes") or ())
        proba_classes = tuple(
            e["name"][len(PROBA_PREFIX) :] for e in outputs if str(e["name"]).startswith(PROBA_PREFIX)
        )
        return cls(
            profile=dict(profile),
            entries=entries,
            series=[str(e["name"]) for e in entries],
            feature_names=tuple(str(e["name"]) for e in features),
            grid=grid,
            points=points,
            subdivision=subdivision,
            classes=classes,
            proba_classes=proba_classes if proba_classes == classes else (),
            predicts_value=any(e["name"] == VALUE_SERIES for e in outputs),
            class_index={name: i for i, name in enumerate(classes)},
        )

    @property
    def rows(self) -> int:
        return int(self.profile.get("rows") or 0)

    @property
    def label_shares(self) -> dict[str, float] | None:
        shares = (self.profile.get("prediction") or {}).get("label_shares")
        return dict(shares) if shares else None

    @property
    def class_priors(self) -> dict[str, float] | None:
        priors = self.profile.get("class_priors")
        return {str(k): float(v) for k, v in priors.items()} if priors else None

    def label_proportions(self) -> list[float]:
        """Reference shares of the predicted labels in class order, then ``other``."""
        shares = self.label_shares or {}
        return [float(shares.get(name, 0.0)) for name in self.classes] + [float(shares.get(OTHER, 0.0))]

    def calibration(self, name: str) -> dict[str, list[float]]:
        calibration = self.profile.get("calibration") or {}
        return dict((calibration.get("features") or {}).get(name) or {})

    def scores(self, index: int, fine: Sequence[int] | np.ndarray[Any, Any]) -> dict[str, float]:
        """PSI, JS distance and normalized Wasserstein of series ``index``'s fine counts."""
        entry = self.entries[index]
        current = st.proportions(st.coarse_counts(fine, self.subdivision))
        return {
            "psi": st.psi(entry["proportions"], current),
            "js": st.js_distance(entry["proportions"], current),
            "wasserstein": st.binned_wasserstein(
                entry["ks_cdf"], entry["ks_grid"], fine, float(entry["std"])
            ),
        }
