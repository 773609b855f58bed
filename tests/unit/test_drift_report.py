"""Windows of slots, and the drift report on the real EURUSD features: the reference is the first
60 % of the bars, calibrated on the next 20 %; the last 20 % (a later market, never seen) must not
alarm, while the same rows with one feature shifted must flag exactly that feature."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from prediction_provider.features.market_data import load_sample_bars
from prediction_provider.features.pipeline import FEATURE_NAMES, compute_features
from prediction_provider.modelops.drift.counters import VersionCounters, series_rows
from prediction_provider.modelops.drift.reference import Reference, build_profile
from prediction_provider.modelops.drift.report import Window, drift_report, select_windows

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)


def slots(*rows: int) -> list[tuple[datetime, int]]:
    """Slots one minute apart ending at T0, newest first."""
    return [(T0 - (i + 1) * MINUTE, count) for i, count in enumerate(rows)]


def test_the_current_window_gathers_slots_until_it_has_enough_rows() -> None:
    windows = select_windows(slots(400, 400, 400, 400, 400, 400), T0, window_rows=1000, window_max_s=3600)
    assert [(w.index, w.rows) for w in windows] == [(0, 1200), (1, 1200)]
    assert windows[0].start == T0 - 3 * MINUTE
    assert windows[0].end == T0
    assert windows[1].end == windows[0].start


def test_a_window_never_spans_more_than_window_max_s() -> None:
    windows = select_windows(slots(10, 10, 10, 10, 10), T0, window_rows=1000, window_max_s=150)
    assert windows[0].rows == 20  # the two slots starting within 150 s of the end
    assert windows[0].start == T0 - timedelta(seconds=150)
    assert sum(w.rows for w in windows) == 50


def test_without_slots_the_current_window_is_empty() -> None:
    (window,) = select_windows([], T0, window_rows=1000, window_max_s=3600)
    assert window.rows == 0
    assert window.start == T0 - timedelta(hours=1)


def test_at_most_48_windows_are_kept() -> None:
    assert len(select_windows(slots(*[1000] * 60), T0, window_rows=1000, window_max_s=3600)) == 48


@pytest.fixture(scope="module")
def eurusd() -> np.ndarray:
    return compute_features(load_sample_bars("EURUSD")).dropna().to_numpy(np.float64)


@pytest.fixture(scope="module")
def reference(eurusd: np.ndarray) -> Reference:
    train_end, calibration_end = int(len(eurusd) * 0.6), int(len(eurusd) * 0.8)
    return Reference.parse(
        build_profile(FEATURE_NAMES, eurusd[:train_end], test_matrix=eurusd[train_end:calibration_end])
    )


def report_of(reference: Reference, rows: np.ndarray) -> dict:
    counters = VersionCounters(reference)
    for start in range(0, len(rows), 256):
        counters.count(T0, FEATURE_NAMES, rows[start : start + 256], None, [], None)
    sums: dict[str, dict[int, int]] = {}
    for series, bin_, count in series_rows(reference, T0, counters.take()[T0]):
        sums.setdefault(series, {})[bin_] = count
    return drift_report(
        "eurusd", "1", reference, "training", Window(0, T0, T0 + MINUTE, len(rows)), sums, 200
    )


def test_normal_market_movement_in_a_later_period_does_not_alarm(
    reference: Reference, eurusd: np.ndarray
) -> None:
    live = eurusd[int(len(eurusd) * 0.8) :][:1000]
    report = report_of(reference, live)
    assert report["status"] in ("ok", "warn")
    assert not report["dataset_drift"]
    assert [f["name"] for f in report["features"] if f["status"] == "drift"] == []
    # The calibrated thresholds are what absorbs it: some volatility feature would cross the default.
    crossing = [f for f in report["features"] if f["score"] >= 0.25]
    assert crossing
    assert all(f["drift"] > 0.25 for f in crossing)


def test_a_shifted_feature_drifts_and_only_it(reference: Reference, eurusd: np.ndarray) -> None:
    live = eurusd[int(len(eurusd) * 0.8) :][:1000].copy()
    column = FEATURE_NAMES.index("rsi_14")
    live[:, column] += 2 * float(reference.entries[column]["std"])
    report = report_of(reference, live)
    drifted = [f["name"] for f in report["features"] if f["status"] == "drift"]
    assert drifted == ["rsi_14"]
    assert report["drift_share"] == pytest.approx(1 / len(FEATURE_NAMES))
    assert report["status"] == "warn"


def test_most_features_shifted_is_dataset_drift(reference: Reference, eurusd: np.ndarray) -> None:
    live = eurusd[int(len(eurusd) * 0.8) :][:1000].copy()
    stds = np.asarray([e["std"] for e in reference.entries])
    live += 3 * stds
    report = report_of(reference, live)
    assert report["dataset_drift"] is True
    assert report["status"] == "drift"


def test_every_score_is_recomputable_from_the_reported_counts(
    reference: Reference, eurusd: np.ndarray
) -> None:
    from prediction_provider.modelops.drift import statistics as st

    report = report_of(reference, eurusd[-700:])
    for index, feature in enumerate(report["features"]):
        entry = reference.entries[index]
        current = st.proportions(feature["counts"]["bins"])
        assert feature["score"] == pytest.approx(st.psi(entry["proportions"], current))
        fine = np.asarray([*feature["counts"]["ks"], feature["counts"]["bins"][-1]])
        assert feature["statistics"]["ks"] == pytest.approx(
            st.binned_ks(entry["ks_cdf"], reference.rows, fine).statistic
        )


def test_under_min_rows_the_status_is_insufficient_data(reference: Reference, eurusd: np.ndarray) -> None:
    report = report_of(reference, eurusd[-150:])
    assert report["status"] == "insufficient_data"
    assert {f["status"] for f in report["features"]} == {"insufficient_data"}
