"""Figures read from the services when Prometheus scrapes, so that serving pays nothing for them.

The model cache already counts its hits, misses, loads, failures and evictions,
the job store knows how many jobs are in each state, and the audit writer how
many entries wait for the database: a collector reads them on demand instead of
every request updating a second copy.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy.exc import SQLAlchemyError

from prediction_provider import __version__ as VERSION

if TYPE_CHECKING:
    from prediction_provider.jobs.runtime import JobRuntime
    from prediction_provider.observability.audit import AuditWriter
    from prediction_provider.serving.cache import ModelCache

log = logging.getLogger(__name__)

CACHE_COUNTERS = (
    ("hits", "Model lookups answered from the cache."),
    ("misses", "Model lookups that had to resolve the reference (and load the model if new)."),
    ("loads", "Models loaded into the cache."),
    ("load_failures", "Model loads that failed."),
    ("evictions", "Models dropped from the cache (least recently used, or unloaded)."),
)
AUDIT_QUEUE = "Audit entries waiting to be written to the database."


class ObservedServices(Protocol):
    """What the collector reads of the app's services (``api.deps.Services``)."""

    @property
    def cache(self) -> ModelCache: ...

    @property
    def audit(self) -> AuditWriter: ...

    @property
    def jobs(self) -> JobRuntime | None: ...


class ServiceCollector(Collector):
    """A custom collector over the services of one app; they exist once the lifespan built them.

    ``per_process`` adds a ``pid`` label to what describes this process alone, for
    multi-process serving: scrapes land on any process, and without the label one
    process's cache counters would follow another's and look like counter resets.
    """

    def __init__(self, services: Callable[[], ObservedServices | None], *, per_process: bool) -> None:
        self._services = services
        self._per_process = per_process

    def describe(self) -> list[Metric]:
        # Without this, registering would collect once, before the services exist.
        return []

    def collect(self) -> Iterator[Metric]:
        yield InfoMetricFamily("pp_build", "The Prediction Provider version serving.", {"version": VERSION})
        services = self._services()
        if services is None:
            return
        process = {"pid": str(os.getpid())} if self._per_process else {}
        yield from _cache_metrics(services.cache, process)
        queued = services.audit.pending()
        yield _single(GaugeMetricFamily, "pp_audit_queue_length", AUDIT_QUEUE, queued, process)
        if services.jobs is not None:
            yield from _job_metrics(services.jobs)


def _single(
    family: type[CounterMetricFamily | GaugeMetricFamily],
    name: str,
    documentation: str,
    value: float,
    process: dict[str, str],
) -> Metric:
    """A metric with one sample, labelled with the process where it describes only that one."""
    metric = family(name, documentation, labels=list(process))
    metric.add_metric(list(process.values()), value)
    return metric


def _cache_metrics(cache: ModelCache, process: dict[str, str]) -> Iterator[Metric]:
    stats = cache.stats.as_dict()
    for field, documentation in CACHE_COUNTERS:
        yield _single(CounterMetricFamily, f"pp_model_cache_{field}", documentation, stats[field], process)
    entries = cache.entries()
    yield _single(
        GaugeMetricFamily, "pp_model_cache_models", "Models in the cache now.", len(entries), process
    )
    capacity = "Models the cache holds before it evicts (PP_MAX_MODELS)."
    yield _single(GaugeMetricFamily, "pp_model_cache_capacity", capacity, cache.max_models, process)
    labels = ["name", "version", "loader", *process]
    loaded = GaugeMetricFamily("pp_model_loaded", "1 for each model version in the cache.", labels=labels)
    load_seconds = GaugeMetricFamily(
        "pp_model_load_seconds", "How long loading each cached model version took.", labels=labels
    )
    for entry in entries:
        values = [entry.resolved.name, entry.resolved.version or "", entry.loader, *process.values()]
        loaded.add_metric(values, 1)
        load_seconds.add_metric(values, entry.load_seconds)
    yield loaded
    yield load_seconds


def _job_metrics(jobs: JobRuntime) -> Iterator[Metric]:
    """Jobs by state, from the database every process shares: the same figure from any process."""
    try:
        counts = jobs.service.store.counts()
    except SQLAlchemyError as exc:
        # The rest of the scrape still answers; the missing series is what an alert can watch.
        log.warning("metrics: could not count prediction jobs: %s", exc)
        return
    gauge = GaugeMetricFamily("pp_prediction_jobs", "Prediction jobs by status.", labels=["status"])
    for status, count in sorted(counts.items()):
        gauge.add_metric([status], count)
    yield gauge
