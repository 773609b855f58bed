"""The model-operations figures (prefix ``pp_``), counted in process memory and exported by one
collector at scrape time.

Why not prometheus-client's own metric objects: every app owns its registry (tests build many
apps in one process) while the request path, the shadow runner and the breakers are built
before any registry exists; and label sets come and go with experiments (a retired experiment's
series must drop). A dictionary per metric, read at scrape time, does both. Under ``serve
--workers N`` each process reports its own values with a ``pid`` label; figures computed from the
database (drift, variant metrics) are the same from any process and carry none.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


@dataclass(frozen=True, slots=True)
class Spec:
    name: str  # without the pp_ prefix
    kind: str  # counter | gauge | histogram
    help: str
    labels: tuple[str, ...]


SPECS: dict[str, Spec] = {
    spec.name: spec
    for spec in (
        Spec(
            "experiment_requests",
            "counter",
            "Answers of experiment traffic by variant.",
            ("experiment", "variant", "version", "status", "served_by"),
        ),
        Spec(
            "experiment_request_duration_seconds",
            "histogram",
            "Model call time of experiment traffic.",
            ("experiment", "variant"),
        ),
        Spec(
            "experiment_unsticky",
            "counter",
            "Experiment requests without a unit (assigned by request id).",
            ("experiment",),
        ),
        Spec(
            "experiment_forced", "counter", "Experiment requests that forced their variant.", ("experiment",)
        ),
        Spec(
            "experiment_weight_ratio",
            "gauge",
            "A running experiment's weight of each variant (0-1).",
            ("experiment", "variant"),
        ),
        Spec("experiment_state", "gauge", "1 for an experiment's current state.", ("experiment", "state")),
        Spec(
            "rollout_transitions",
            "counter",
            "Rollout controller transitions.",
            ("experiment", "from", "to", "reason"),
        ),
        Spec("shadow_requests", "counter", "Shadow calls by result.", ("experiment", "target", "result")),
        Spec("shadow_queue_depth", "gauge", "Shadow jobs waiting.", ("experiment",)),
        Spec(
            "shadow_agreement_ratio",
            "gauge",
            "Share of equal labels, shadow vs primary, last window.",
            ("experiment",),
        ),
        Spec(
            "shadow_mean_tv",
            "gauge",
            "Mean total variation distance, shadow vs primary, last window.",
            ("experiment",),
        ),
        Spec("circuit_state", "gauge", "1 for a breaker's current state.", ("model", "version", "state")),
        Spec("circuit_transitions", "counter", "Breaker state changes.", ("model", "version", "to")),
        Spec(
            "fallback", "counter", "Answers served by a fallback.", ("model", "version", "reason", "fallback")
        ),
        Spec("model_inflight", "gauge", "Model calls in flight.", ("model", "version")),
        Spec(
            "model_calls",
            "counter",
            "Model calls by outcome (ok, error), every protocol and channel.",
            ("model", "version", "outcome"),
        ),
        Spec("model_call_duration_seconds", "histogram", "Model call time.", ("model", "version")),
        Spec(
            "ensemble_member_failures",
            "counter",
            "Ensemble members dropped from an answer.",
            ("ensemble", "member", "reason"),
        ),
    )
}


@dataclass
class OpsMetrics:
    """Process-local values of the metrics in ``SPECS``; thread-safe."""

    _values: dict[str, dict[tuple[str, ...], float]] = field(default_factory=dict)
    _histograms: dict[tuple[str, tuple[str, ...]], list[float]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def inc(self, name: str, labels: tuple[str, ...], by: float = 1.0) -> None:
        with self._lock:
            series = self._values.setdefault(name, {})
            series[labels] = series.get(labels, 0.0) + by

    def set(self, name: str, labels: tuple[str, ...], value: float) -> None:
        with self._lock:
            self._values.setdefault(name, {})[labels] = value

    def set_state(self, name: str, prefix: tuple[str, ...], states: Iterable[str], current: str) -> None:
        """An enum gauge: 1 for ``current``, 0 for the other ``states``."""
        with self._lock:
            series = self._values.setdefault(name, {})
            for state in states:
                series[(*prefix, state)] = 1.0 if state == current else 0.0

    def drop(self, name: str, prefix: tuple[str, ...]) -> None:
        """Forget every series of ``name`` whose labels start with ``prefix`` (a retired experiment)."""
        with self._lock:
            series = self._values.get(name, {})
            for labels in [labels for labels in series if labels[: len(prefix)] == prefix]:
                del series[labels]
            for key in [
                key for key in self._histograms if key[0] == name and key[1][: len(prefix)] == prefix
            ]:
                del self._histograms[key]

    def observe(
        self, labels: tuple[str, ...], seconds: float, name: str = "experiment_request_duration_seconds"
    ) -> None:
        """One observation of a histogram (by default a model call of experiment traffic)."""
        with self._lock:
            counts = self._histograms.get((name, labels))
            if counts is None:
                counts = self._histograms[(name, labels)] = [0.0] * (len(LATENCY_BUCKETS) + 2)  # + inf, sum
            for index, bound in enumerate(LATENCY_BUCKETS):
                if seconds <= bound:
                    counts[index] += 1
                    break
            else:
                counts[len(LATENCY_BUCKETS)] += 1
            counts[-1] += seconds

    def value(self, name: str, labels: tuple[str, ...]) -> float:
        with self._lock:
            return self._values.get(name, {}).get(labels, 0.0)

    def snapshot(
        self,
    ) -> tuple[dict[str, dict[tuple[str, ...], float]], dict[tuple[str, tuple[str, ...]], list[float]]]:
        with self._lock:
            return (
                {name: dict(series) for name, series in self._values.items()},
                {key: list(counts) for key, counts in self._histograms.items()},
            )


class OpsCollector(Collector):
    """Exports an ``OpsMetrics`` (and any extra families, e.g. drift gauges from the database)."""

    def __init__(
        self,
        metrics: Callable[[], OpsMetrics | None],
        *,
        per_process: bool,
        extra: Callable[[], Iterable[Metric]] | None = None,
    ) -> None:
        self._metrics = metrics
        self._per_process = per_process
        self._extra = extra

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        metrics = self._metrics()
        if metrics is not None:
            yield from self._families(metrics)
        if self._extra is not None:
            yield from self._extra()

    def _families(self, metrics: OpsMetrics) -> Iterator[Metric]:
        values, histograms = metrics.snapshot()
        pid = (str(os.getpid()),) if self._per_process else ()
        pid_label = ("pid",) if self._per_process else ()
        for spec in SPECS.values():
            labels = [*spec.labels, *pid_label]
            if spec.kind == "histogram":
                family: Metric = HistogramMetricFamily(f"pp_{spec.name}", spec.help, labels=labels)
                for (name, key), counts in histograms.items():
                    if name != spec.name:
                        continue
                    cumulative, buckets = 0.0, []
                    for bound, count in zip((*LATENCY_BUCKETS, float("inf")), counts[:-1], strict=True):
                        cumulative += count
                        buckets.append((str(bound) if bound != float("inf") else "+Inf", cumulative))
                    family.add_metric([*key, *pid], buckets, counts[-1])  # type: ignore[attr-defined]
                yield family
                continue
            cls = CounterMetricFamily if spec.kind == "counter" else GaugeMetricFamily
            family = cls(f"pp_{spec.name}", spec.help, labels=labels)
            for key, value in values.get(spec.name, {}).items():
                family.add_metric([*key, *pid], value)  # type: ignore[attr-defined]
            yield family
