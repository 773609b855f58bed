"""``pp_drift_*`` gauges, computed at scrape time from the merged ``drift_counts`` (the same values
from every worker, so they carry no ``pid``): the current window of every version with counts in
the kept horizon and a reference. A computation is kept for ``CACHE_S`` so that scrapes of several
workers, or a fast scraper, do not recompute it."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from prediction_provider.modelops.drift.monitor import DriftMonitor
from prediction_provider.modelops.drift.report import KEPT_WINDOWS, STATUS_CODES

log = logging.getLogger(__name__)

CACHE_S = 2.0


def drift_reports(monitor: DriftMonitor) -> list[dict[str, Any]]:
    since = monitor.clock.now() - timedelta(seconds=KEPT_WINDOWS * monitor.settings.drift_window_max_s)
    reports = []
    for model, version in monitor.store.active_versions(since):
        report = monitor.report(model, version)
        if report is not None and report.get("window") is not None:
            reports.append(report)
    return reports


def families(reports: list[dict[str, Any]]) -> list[Metric]:
    score = GaugeMetricFamily(
        "pp_drift_score",
        "Drift score of a feature, current window.",
        labels=["model", "version", "feature", "method"],
    )
    status = GaugeMetricFamily(
        "pp_drift_status",
        "Feature drift status: 0 ok, 1 warn, 2 drift, -1 insufficient.",
        labels=["model", "version", "feature"],
    )
    share = GaugeMetricFamily("pp_drift_share", "Share of drifted features.", labels=["model", "version"])
    dataset = GaugeMetricFamily(
        "pp_drift_dataset", "1 when the dataset drifted.", labels=["model", "version"]
    )
    rows = GaugeMetricFamily(
        "pp_drift_window_rows", "Rows in the current window.", labels=["model", "version"]
    )
    psi = GaugeMetricFamily(
        "pp_prediction_drift_psi", "PSI of predicted labels.", labels=["model", "version"]
    )
    expected = GaugeMetricFamily(
        "pp_expected_accuracy", "Mean top probability (CBPE), current window.", labels=["model", "version"]
    )
    for report in reports:
        labels = [report["model"], report["version"]]
        for feature in report["features"]:
            score.add_metric([*labels, feature["name"], feature["method"]], feature["score"])
            status.add_metric([*labels, feature["name"]], STATUS_CODES[feature["status"]])
        share.add_metric(labels, report["drift_share"])
        dataset.add_metric(labels, 1.0 if report["dataset_drift"] else 0.0)
        rows.add_metric(labels, report["window"]["rows"])
        prediction = report["prediction"]
        if prediction["psi"] is not None:
            psi.add_metric(labels, prediction["psi"])
        if prediction["expected_accuracy"] is not None:
            expected.add_metric(labels, prediction["expected_accuracy"])
    return [score, status, share, dataset, rows, psi, expected]


class DriftCollector(Collector):
    """Reads ``services().drift`` at scrape time; nothing when drift monitoring is off."""

    def __init__(self, services: Callable[[], Any]) -> None:
        self._services = services
        self._lock = threading.Lock()
        self._cached: tuple[float, list[Metric]] | None = None

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        monitor = getattr(self._services(), "drift", None)
        if monitor is None:
            return
        with self._lock:
            if self._cached is None or time.monotonic() - self._cached[0] > CACHE_S:
                try:
                    self._cached = (time.monotonic(), families(drift_reports(monitor)))
                except Exception:
                    log.exception("drift gauges: could not compute")
                    self._cached = (time.monotonic(), [])
            found = self._cached[1]
        yield from found
