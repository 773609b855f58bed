"""Windows of slots, and the drift report of one window against the reference (the payload of
``GET /models/{name}/drift``).

Window 0 (``current``) ends where the clock's slot ends and gathers slots back in time until it
holds ``window_rows`` rows or spans ``window_max_s``; window ``k`` ends where window ``k - 1``
starts. Under ``min_rows`` rows a feature's and the model's status is ``insufficient_data``.

Model level: ``drift_share`` = drifted / monitored features; ``dataset_drift`` = share ≥
``DATASET_SHARE``; ``weighted_drift`` = the share of the model's gain importance that drifted
(null without importances); status ``drift`` on dataset drift, ``warn`` when any feature warns or
drifts, else ``ok``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np

from prediction_provider.modelops.drift import statistics as st
from prediction_provider.modelops.drift.counters import LABEL_SERIES, TOP_SCALE, TOP_SERIES
from prediction_provider.modelops.drift.reference import OTHER, Reference

KEPT_WINDOWS = 48
DATASET_SHARE = 0.5
METHOD = "psi"
STATUS_CODES = {"ok": 0, "warn": 1, "drift": 2, "insufficient_data": -1}


@dataclass(frozen=True, slots=True)
class Window:
    index: int
    start: datetime
    end: datetime
    rows: int


def slot_floor(when: datetime, slot_s: int) -> datetime:
    epoch = int(when.timestamp()) // slot_s * slot_s
    return datetime.fromtimestamp(epoch, tz=when.tzinfo)


def select_windows(
    slots: Sequence[tuple[datetime, int]],
    end: datetime,
    window_rows: int,
    window_max_s: float,
    keep: int = KEPT_WINDOWS,
) -> list[Window]:
    """Windows over ``slots`` (``(slot_start, rows)`` newest first, all before ``end``); window 0
    always exists (maybe empty), the others only while older slots remain."""
    span = timedelta(seconds=window_max_s)
    windows: list[Window] = []
    position = 0
    while len(windows) < keep:
        earliest = end - span
        rows, start = 0, earliest
        while position < len(slots) and slots[position][0] >= earliest and rows < window_rows:
            start = slots[position][0]
            rows += slots[position][1]
            position += 1
        if rows < window_rows:
            start = earliest
        windows.append(Window(len(windows), start, end, rows))
        if position >= len(slots):
            break
        end = start
    return windows


def _fine(counts: Mapping[int, int] | None, points: int) -> np.ndarray[Any, Any]:
    """Stored bins (missing: -1) as the ``G + 2`` fine-count vector."""
    fine = np.zeros(points + 2, dtype=np.int64)
    for bin_, count in (counts or {}).items():
        fine[points + 1 if bin_ < 0 else bin_] += count
    return fine


def feature_report(
    reference: Reference, index: int, fine: np.ndarray[Any, Any], min_rows: int
) -> dict[str, Any]:
    entry = reference.entries[index]
    coarse = st.coarse_counts(fine, reference.subdivision)
    rows = int(fine.sum())
    scores = reference.scores(index, fine)
    calibration = reference.calibration(entry["name"])
    warn, drift = st.thresholds(METHOD, calibration.get(METHOD))
    ks = st.binned_ks(entry["ks_cdf"], reference.rows, fine)
    chi2 = st.chi2(np.asarray(entry["proportions"]) * reference.rows, coarse)
    score = scores[METHOD]
    return {
        "name": entry["name"],
        "type": entry.get("type", "numeric"),
        "method": METHOD,
        "score": score,
        "warn": warn,
        "drift": drift,
        "status": "insufficient_data" if rows < min_rows else st.status_of(score, warn, drift),
        "p_value": chi2.p_value,
        "missing_share": float(fine[-1] / rows) if rows else 0.0,
        "out_of_range_share": float((fine[0] + fine[-2]) / rows) if rows else 0.0,
        "importance": entry.get("importance"),
        "statistics": {
            "psi": scores["psi"],
            "js": scores["js"],
            "wasserstein": scores["wasserstein"],
            "ks": ks.statistic,
            "ks_p_value": ks.p_value,
            "chi2": chi2.statistic,
            "chi2_p_value": chi2.p_value,
        },
        "counts": {"bins": coarse.tolist(), "ks": fine[:-1].tolist()},
    }


def prediction_report(reference: Reference, sums: Mapping[str, Mapping[int, int]]) -> dict[str, Any]:
    classes = reference.classes
    labels = np.zeros(len(classes) + 1, dtype=np.int64)
    for bin_, count in (sums.get(LABEL_SERIES) or {}).items():
        if 0 <= bin_ <= len(classes):
            labels[bin_] += count
    total = int(labels.sum())
    psi = None
    if total and reference.label_shares:
        psi = st.psi(reference.label_proportions(), st.proportions(labels))
    top = sums.get(TOP_SERIES) or {}
    expected = top.get(0, 0) / TOP_SCALE / top[1] if top.get(1) else None
    outputs: dict[str, float] = {}
    for index in range(len(reference.feature_names), len(reference.entries)):
        fine = _fine(sums.get(reference.series[index]), reference.points)
        if fine.sum():
            outputs[reference.series[index]] = reference.scores(index, fine)["psi"]
    prediction = reference.profile.get("prediction") or {}
    return {
        "psi": psi,
        "label_shares": {name: int(labels[i]) / total for i, name in enumerate((*classes, OTHER))}
        if total
        else {},
        "label_counts": {name: int(labels[i]) for i, name in enumerate((*classes, OTHER))},
        "reference_label_shares": reference.label_shares,
        "output_psi": outputs,
        "expected_accuracy": expected,
        "reference_expected_accuracy": prediction.get("expected_accuracy"),
        "top_probability": {"sum_micro": int(top.get(0, 0)), "rows": int(top.get(1, 0))},
        "realized_accuracy": None,
    }


def drift_report(
    model: str,
    version: str,
    reference: Reference,
    source: str,
    window: Window,
    sums: Mapping[str, Mapping[int, int]],
    min_rows: int,
) -> dict[str, Any]:
    features = [
        feature_report(reference, i, _fine(sums.get(name), reference.points), min_rows)
        for i, name in enumerate(reference.feature_names)
    ]
    insufficient = window.rows < min_rows
    drifted = [f for f in features if f["status"] == "drift"]
    share = len(drifted) / len(features) if features and not insufficient else 0.0
    weights = [f["importance"] for f in features]
    weighted = None
    if not insufficient and all(w is not None for w in weights) and sum(weights):  # type: ignore[arg-type]
        weighted = sum(f["importance"] for f in drifted) / sum(weights)  # type: ignore[arg-type]
    dataset_drift = not insufficient and share >= DATASET_SHARE
    if insufficient:
        status = "insufficient_data"
    elif dataset_drift:
        status = "drift"
    elif any(f["status"] in ("warn", "drift") for f in features):
        status = "warn"
    else:
        status = "ok"
    return {
        "model": model,
        "version": version,
        "reference": {"rows": reference.rows, "source": source},
        "window": {"index": window.index, "start": window.start, "end": window.end, "rows": window.rows},
        "status": status,
        "dataset_drift": dataset_drift,
        "drift_share": share,
        "weighted_drift": weighted,
        "drift_score": max((f["score"] for f in features), default=None) if window.rows else None,
        "features": features,
        "prediction": prediction_report(reference, sums),
    }
