"""Drift counting on the hot path: ``DriftMonitor.observe`` per row at 16 features on the real
EURUSD feature rows with a classifier's outputs (labels and 3 class probabilities), batch 1 and 256,
and the cost of one flush of the counts to a SQLite file.

    .venv/bin/python bench/drift_bench.py [--seconds 2]

The design's budget is ≤ 5 µs per row (16 features, vectorized per batch).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from prediction_provider.clock import SystemClock
from prediction_provider.config import Settings
from prediction_provider.db import migrate
from prediction_provider.db.modelops_models import OpsStamp
from prediction_provider.db.session import Database
from prediction_provider.features.market_data import load_sample_bars
from prediction_provider.features.pipeline import DIRECTION_CLASSES, FEATURE_NAMES, compute_features
from prediction_provider.modelops.drift.monitor import DriftMonitor
from prediction_provider.modelops.drift.reference import build_profile
from prediction_provider.serving.registry import ModelRegistry


def per_row_us(monitor: DriftMonitor, batch: int, rows: np.ndarray, seconds: float) -> float:
    rng = np.random.default_rng(1)
    probabilities = rng.dirichlet([1, 1, 1], size=batch)
    labels = [DIRECTION_CLASSES[i] for i in probabilities.argmax(axis=1)]
    starts = rng.integers(0, len(rows) - batch, size=4096)
    calls, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        for start in starts[:256]:
            matrix = rows[start : start + batch]
            monitor.observe("bench", "1", FEATURE_NAMES, matrix, DIRECTION_CLASSES, labels, probabilities)
        calls += 256
    return (time.perf_counter() - started) / (calls * batch) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="time per measurement")
    args = parser.parse_args()
    rows = compute_features(load_sample_bars("EURUSD")).dropna().to_numpy(np.float64)
    rng = np.random.default_rng(0)
    profile = build_profile(
        FEATURE_NAMES,
        rows[:3000],
        labels=rng.integers(0, 3, 3000).tolist(),
        classes=DIRECTION_CLASSES,
        test_matrix=rows[3000:],
        test_probabilities=rng.dirichlet([1, 1, 1], size=len(rows) - 3000),
    )
    with tempfile.TemporaryDirectory() as folder:
        settings = Settings(data_dir=Path(folder))
        migrate.upgrade(settings.database)
        db = Database(settings.database)
        with db.session() as session:
            if session.get(OpsStamp, 1) is None:
                session.add(OpsStamp(id=1, version=0))
        monitor = DriftMonitor(db, settings, ModelRegistry(settings), SystemClock())
        monitor.save_reference("bench", "1", profile, None)
        monitor.observe("bench", "1", FEATURE_NAMES, rows[:1], DIRECTION_CLASSES, ["up"], None)
        monitor.flush()  # looks the reference up
        print(f"observe, {len(FEATURE_NAMES)} features + 3 class probabilities:")
        for batch in (1, 256):
            print(f"  batch {batch:>3}: {per_row_us(monitor, batch, rows, args.seconds):6.2f} µs/row")
        started = time.perf_counter()
        monitor.flush()
        print(f"flush of the counts gathered above: {(time.perf_counter() - started) * 1e3:.1f} ms")
        db.dispose()


if __name__ == "__main__":
    main()
