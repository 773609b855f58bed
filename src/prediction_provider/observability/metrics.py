"""Prometheus metrics of one app: HTTP traffic counted per request, the services read at scrape time.

Every app owns its ``CollectorRegistry``: tests build many apps in one process,
and the global default registry refuses a metric name the second time.

Under ``serve --workers N`` each process counts its own requests. When
``PROMETHEUS_MULTIPROC_DIR`` is set before prometheus-client is imported (the
CLI does it, see ``observability.multiprocess``), the counters live in
memory-mapped files, one set per process, and a scrape of any process sums
them all; figures that only describe one process (its model cache, its audit
queue) then carry a ``pid`` label instead, and the process collector, which
can only see its own process, is left out.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
    values,
)
from prometheus_client.multiprocess import MultiProcessCollector
from starlette.types import Scope

from prediction_provider.modelops.drift.gauges import DriftCollector
from prediction_provider.modelops.metrics import OpsCollector
from prediction_provider.observability.service_metrics import ObservedServices, ServiceCollector
from prediction_provider.outcomes.gauges import RealizedCollector

__all__ = ["CONTENT_TYPE_LATEST", "AppMetrics", "HttpMetrics", "multiprocess_enabled", "route_label"]

UNMATCHED = "<unmatched>"
# Any other token a client sends as its method is counted as OTHER: a label must not take
# arbitrary values from the network, or every new value is a new series held forever.
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# A cached single-row prediction takes ~0.6 ms end to end, a batch or a model load seconds.
LATENCY_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip


def multiprocess_enabled() -> bool:
    """Whether prometheus-client keeps values in per-process files. It decides once, when it is
    first imported, from ``PROMETHEUS_MULTIPROC_DIR``; reading its decision (not the variable now)
    keeps exposition consistent with where the values really are."""
    return values.ValueClass is not values.MutexValue


def route_label(scope: Scope) -> str:
    """The template of the route that handled the request (``/api/v1/predictions/{job_id}``), never
    the raw path: one series per route, however many ids clients send. The router leaves the route
    in the scope; a request it never saw (no route matched, or refused before routing because its
    declared body was over the limit) is ``<unmatched>``."""
    route = scope.get("route")
    template = getattr(route, "path_format", None) or getattr(route, "path", None)
    return template if isinstance(template, str) else UNMATCHED


class HttpMetrics:
    """Requests and their latency by method, route template and status."""

    def __init__(self, registry: CollectorRegistry | None) -> None:
        self.requests = Counter(
            "pp_http_requests",
            "HTTP requests answered, by method, route template and status.",
            ("method", "route", "status"),
            registry=registry,
        )
        self.duration = Histogram(
            "pp_http_request_duration_seconds",
            "Time from receiving a request to the end of its response, by method and route template.",
            ("method", "route"),
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        # The labelled children, looked up once per label set: ``labels()`` takes a lock and
        # validates its arguments on every call, this dictionary does neither.
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def observe(self, scope: Scope, status: int, seconds: float) -> None:
        """Count one answered request; called by the outermost middleware once the response ends."""
        method: str = scope["method"]
        if method not in KNOWN_METHODS:
            method = "OTHER"
        key = (method, route_label(scope), status)
        children = self._children.get(key)
        if children is None:
            children = self._children[key] = (
                self.requests.labels(method, key[1], str(status)),
                self.duration.labels(method, key[1]),
            )
        children[0].inc()
        children[1].observe(seconds)


class AppMetrics:
    """The registry of one app: HTTP metrics, the services' figures, process information."""

    def __init__(self, services: Callable[[], ObservedServices | None]) -> None:
        # A ``*_created`` series beside every counter and histogram doubles what Prometheus stores
        # for a timestamp it does not use (prometheus-client's switch is process-wide).
        disable_created_metrics()
        self.multiprocess = multiprocess_enabled()
        self.registry = CollectorRegistry()
        if self.multiprocess:
            # The values are in the files every process writes; read them from there, not twice.
            MultiProcessCollector(self.registry)
            self.http = HttpMetrics(registry=None)
        else:
            self.http = HttpMetrics(self.registry)
            ProcessCollector(registry=self.registry)
            GCCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        self.registry.register(ServiceCollector(services, per_process=self.multiprocess))
        # Realized accuracy and Brier skill: from the score rows, the same figures from any process.
        self.registry.register(RealizedCollector(services))
        # Drift scores and statuses: from the merged drift counters, the same figures from any process.
        self.registry.register(DriftCollector(services))
        # Experiments, shadows, breakers, fallbacks, ensembles: process-local counters.
        self.registry.register(
            OpsCollector(lambda: getattr(services(), "ops_metrics", None), per_process=self.multiprocess)
        )

    def exposition(self) -> bytes:
        """Every metric in the Prometheus text format; blocking (asks the database for job counts)."""
        return generate_latest(self.registry)
