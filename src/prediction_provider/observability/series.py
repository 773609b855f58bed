"""An hour of metric history in process memory, for charts and RED tiles without a Prometheus server.

The Prometheus client keeps only running totals. ``MetricSeries`` reads the
same totals ``/metrics`` serves every ``interval_s`` (the HTTP request counter
and duration histogram, from the memory-mapped files of every worker in
multiprocess mode; model calls in flight from the model-operations counters)
and keeps the last ``slots`` readings. Figures between two readings come from
their difference, as Prometheus computes ``rate`` and ``histogram_quantile``:
``red_figures`` is that arithmetic, pure and tested on its own.

Requests are keyed by (route template, model). HTTP requests carry no model (one
request may call several, or none); per-model figures come from the model calls
the resilience guard counts (``pp_model_calls_total`` and
``pp_model_call_duration_seconds``, any protocol), kept under a route of their
own so that totals and routes count HTTP requests only.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Literal

from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from prediction_provider.modelops.metrics import OpsCollector

if TYPE_CHECKING:
    from prometheus_client.core import Metric

    from prediction_provider.modelops.metrics import OpsMetrics
    from prediction_provider.observability.metrics import AppMetrics

log = logging.getLogger(__name__)

REQUESTS = "pp_http_requests_total"
DURATION_BUCKETS = "pp_http_request_duration_seconds_bucket"
IN_FLIGHT = "pp_model_inflight"
# Model calls (every protocol and channel, from the resilience guard): the per-model figures. They
# are kept under a route of their own, so totals and routes count HTTP requests only.
MODEL_CALLS = "pp_model_calls_total"
MODEL_CALL_BUCKETS = "pp_model_call_duration_seconds_bucket"
MODEL_CALLS_ROUTE = "<model calls>"
UNMATCHED = "<unmatched>"
NO_MODEL = ""
TOTAL = "total"

GroupBy = Literal["route", "model", "total"]
Key = tuple[str, str]  # (route template, model)


@dataclass(frozen=True, slots=True)
class Counts:
    """Cumulative counts of one (route, model) when a sample was taken, or the difference of two."""

    requests: float = 0.0
    server_errors: float = 0.0  # status 5xx
    client_errors: float = 0.0  # status 4xx
    bounds: tuple[float, ...] = ()  # the histogram's upper bounds, ascending, the last one +Inf
    buckets: tuple[float, ...] = ()  # cumulative observations at or below each bound (``le``)

    def plus(self, other: Counts) -> Counts:
        """Both summed; buckets only where the bounds agree (one app has one set of bounds)."""
        bounds, buckets = self.bounds or other.bounds, self.buckets or other.buckets
        if self.bounds and self.bounds == other.bounds:
            buckets = tuple(a + b for a, b in zip(self.buckets, other.buckets, strict=True))
        return Counts(
            self.requests + other.requests,
            self.server_errors + other.server_errors,
            self.client_errors + other.client_errors,
            bounds,
            buckets,
        )


NONE = Counts()


@dataclass(frozen=True, slots=True)
class Figures:
    """RED figures over a stretch of time; ``None`` where nothing was observed to compute one from."""

    count: int  # requests answered
    rate: float  # requests per second
    error_share: float | None  # share answered 5xx
    client_error_share: float | None  # share answered 4xx
    p50: float | None  # seconds, bucket estimates (see ``histogram_quantile``)
    p95: float | None
    p99: float | None


@dataclass(frozen=True, slots=True)
class Sample:
    """One reading: epoch seconds, counts by (route, model), model calls in flight by model."""

    t: float
    counts: dict[Key, Counts]
    in_flight: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Point:
    t: datetime  # when the last sample of the step was taken, UTC
    count: int
    rate: float
    error_share: float | None
    client_error_share: float | None
    p50: float | None
    p95: float | None
    p99: float | None


@dataclass(frozen=True, slots=True)
class SeriesLine:
    key: str
    points: list[Point]


@dataclass(frozen=True, slots=True)
class SeriesWindow:
    as_of: datetime
    window_s: float
    step_s: float
    group_by: GroupBy
    series: list[SeriesLine]


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The latest figures: over the last ``window_s`` seconds sampled (at most the one asked for)."""

    as_of: datetime | None  # the latest sample; None before the first
    window_s: float
    total: Figures
    routes: dict[str, Figures]
    models: dict[str, Figures]
    in_flight: dict[str, float]  # model calls in flight by model, in this process


def counts_delta(earlier: Counts | None, later: Counts) -> Counts:
    """What was counted between two samples. A count that went down means the counters restarted
    (as Prometheus's ``rate`` assumes): everything the later sample holds was counted since."""
    if earlier is None:
        return later
    before = earlier.buckets if earlier.bounds == later.bounds else (0.0,) * len(later.buckets)
    reset = (
        later.requests < earlier.requests
        or later.server_errors < earlier.server_errors
        or later.client_errors < earlier.client_errors
        or bool(earlier.bounds and later.bounds != earlier.bounds)
        or any(b < a for a, b in zip(before, later.buckets, strict=True))
    )
    if reset:
        return later
    return Counts(
        later.requests - earlier.requests,
        later.server_errors - earlier.server_errors,
        later.client_errors - earlier.client_errors,
        later.bounds,
        tuple(b - a for a, b in zip(before, later.buckets, strict=True)),
    )


def histogram_quantile(q: float, bounds: Sequence[float], cumulative: Sequence[float]) -> float | None:
    """Prometheus's ``histogram_quantile`` over cumulative bucket counts: linear inside the bucket
    holding the rank, the first bucket starting at 0; a rank in the +Inf bucket answers the upper
    bound of the last finite one. ``None`` where Prometheus answers NaN (no observations, no +Inf
    bucket, fewer than two buckets)."""
    if len(bounds) < 2 or len(bounds) != len(cumulative) or bounds[-1] != math.inf:
        return None
    if q < 0:
        return -math.inf
    if q > 1:
        return math.inf
    counts = list(itertools.accumulate(cumulative, max))  # as Prometheus, forced monotonic
    observations = counts[-1]
    if observations <= 0:
        return None
    rank = q * observations
    last = len(bounds) - 1
    b = next((i for i in range(last) if counts[i] >= rank), last)
    if b == last:
        return bounds[-2]
    if b == 0 and bounds[0] <= 0:
        return bounds[0]
    start, end, count = 0.0, bounds[b], counts[b]
    if b > 0:
        start = bounds[b - 1]
        count -= counts[b - 1]
        rank -= counts[b - 1]
    return start if count <= 0 else start + (end - start) * (rank / count)


def figures(delta: Counts, seconds: float) -> Figures:
    """RED figures of what was counted over ``seconds``."""
    answered = delta.requests

    def share(part: float) -> float | None:
        return part / answered if answered > 0 else None

    def quantile(q: float) -> float | None:
        return histogram_quantile(q, delta.bounds, delta.buckets)

    return Figures(
        count=round(answered),
        rate=answered / seconds if seconds > 0 else 0.0,
        error_share=share(delta.server_errors),
        client_error_share=share(delta.client_errors),
        p50=quantile(0.5),
        p95=quantile(0.95),
        p99=quantile(0.99),
    )


def red_figures(earlier: Counts | None, later: Counts, seconds: float) -> Figures:
    """Rate, error shares and p50/p95/p99 between two samples ``seconds`` apart."""
    return figures(counts_delta(earlier, later), seconds)


def read_sample(families: Iterable[Metric], t: float) -> Sample:
    """The counts in ``families`` (as ``collect()`` yields them), summed over methods and statuses."""
    requests: dict[Key, list[float]] = {}
    buckets: dict[Key, dict[float, float]] = {}
    in_flight: dict[str, float] = {}
    for family in families:
        for sample in family.samples:
            labels = sample.labels
            if sample.name == REQUESTS:
                key = (labels.get("route", UNMATCHED), labels.get("model", NO_MODEL))
                counted = requests.setdefault(key, [0.0, 0.0, 0.0])
                counted[0] += sample.value
                status = labels.get("status", "")
                if status.startswith("5"):
                    counted[1] += sample.value
                elif status.startswith("4"):
                    counted[2] += sample.value
            elif sample.name == DURATION_BUCKETS:
                key = (labels.get("route", UNMATCHED), labels.get("model", NO_MODEL))
                by_bound = buckets.setdefault(key, {})
                bound = float(labels["le"])
                by_bound[bound] = by_bound.get(bound, 0.0) + sample.value
            elif sample.name == MODEL_CALLS:
                counted = requests.setdefault(
                    (MODEL_CALLS_ROUTE, labels.get("model", NO_MODEL)), [0.0, 0.0, 0.0]
                )
                counted[0] += sample.value
                if labels.get("outcome") == "error":
                    counted[1] += sample.value
            elif sample.name == MODEL_CALL_BUCKETS:
                by_bound = buckets.setdefault((MODEL_CALLS_ROUTE, labels.get("model", NO_MODEL)), {})
                bound = float(labels["le"])
                by_bound[bound] = by_bound.get(bound, 0.0) + sample.value
            elif sample.name == IN_FLIGHT:
                model = labels.get("model", NO_MODEL)
                in_flight[model] = in_flight.get(model, 0.0) + sample.value
    counts: dict[Key, Counts] = {}
    for key in requests.keys() | buckets.keys():
        total, server, client = requests.get(key, (0.0, 0.0, 0.0))
        by_bound = buckets.get(key, {})
        bounds = tuple(sorted(by_bound))
        counts[key] = Counts(total, server, client, bounds, tuple(by_bound[b] for b in bounds))
    return Sample(t, counts, in_flight)


def app_source(metrics: AppMetrics, ops: Callable[[], OpsMetrics | None]) -> Callable[[], Iterator[Metric]]:
    """What a sample reads of one app: only the families it needs, never the whole registry (whose
    collectors ask the database). In multiprocess mode the HTTP figures of every worker, summed from
    their files as ``/metrics`` does; model calls in flight are this process's own."""
    collectors: list[Collector]
    if metrics.multiprocess:
        collectors = [MultiProcessCollector(None)]
    else:
        collectors = [metrics.http.requests, metrics.http.duration]
    collectors.append(OpsCollector(ops, per_process=False))

    def collect() -> Iterator[Metric]:
        for collector in collectors:
            yield from collector.collect()

    return collect


def utc(t: float) -> datetime:
    return datetime.fromtimestamp(t, UTC)


def _group_of(group_by: GroupBy) -> Callable[[Key], str | None]:
    if group_by == "route":
        return lambda key: key[0] if key[0] != MODEL_CALLS_ROUTE else None
    if group_by == "model":
        return lambda key: (key[1] or None) if key[0] == MODEL_CALLS_ROUTE else None
    return lambda key: TOTAL if key[0] != MODEL_CALLS_ROUTE else None


@dataclass(slots=True)
class _Stretch:
    """Differences of consecutive samples summed over a stretch of time, by group."""

    seconds: float = 0.0
    last_t: float = 0.0
    groups: dict[str, Counts] = field(default_factory=dict)

    def add(self, earlier: Sample, later: Sample, group_of: Callable[[Key], str | None],
            wanted: Callable[[Key], bool]) -> None:  # fmt: skip
        self.seconds += later.t - earlier.t
        self.last_t = later.t
        for key, counts in later.counts.items():
            group = group_of(key) if wanted(key) else None
            if group is not None:
                delta = counts_delta(earlier.counts.get(key), counts)
                self.groups[group] = self.groups.get(group, NONE).plus(delta)


class MetricSeries:
    """A bounded ring of samples, taken every ``interval_s`` by a task ``start()`` runs on the event
    loop. ``sample``, ``window`` and ``snapshot`` are safe to call from any thread."""

    def __init__(
        self,
        source: Callable[[], Iterable[Metric]],
        *,
        interval_s: float = 5.0,
        slots: int = 720,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if interval_s <= 0 or slots < 2:
            raise ValueError("a metric series needs interval_s > 0 and at least 2 slots")
        self.interval_s = interval_s
        self.slots = slots
        self._source = source
        self._clock = clock
        self._ring: deque[Sample] = deque(maxlen=slots)
        self._lock = threading.Lock()
        self._task: asyncio.Task[None] | None = None

    @classmethod
    def of_app(
        cls, metrics: AppMetrics, ops: Callable[[], OpsMetrics | None], *, interval_s: float = 5.0,
        slots: int = 720,
    ) -> MetricSeries:  # fmt: skip
        return cls(app_source(metrics, ops), interval_s=interval_s, slots=slots)

    def sample(self, now: float | None = None) -> Sample:
        """Read the counters now (or as of ``now``, epoch seconds) into the ring, the oldest sample
        dropped when it is full. A time not after the latest sample's is not kept: that one is returned."""
        t = self._clock() if now is None else now
        taken = read_sample(self._source(), t)
        with self._lock:
            if self._ring and t <= self._ring[-1].t:
                return self._ring[-1]
            self._ring.append(taken)
        return taken

    def samples(self) -> list[Sample]:
        """The samples held, oldest first."""
        with self._lock:
            return list(self._ring)

    def start(self) -> None:
        """Sample now and every ``interval_s`` in a task of the running loop, until ``aclose``."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="metric-series")

    async def aclose(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        while True:
            try:
                self.sample()
            except Exception:
                log.exception("metric series: sampling failed")
            await asyncio.sleep(self.interval_s)

    def window(
        self,
        seconds: float,
        step_s: float,
        route: str | None = None,
        model: str | None = None,
        group_by: GroupBy = "route",
    ) -> SeriesWindow:
        """Points every ``step_s`` (steps aligned to multiples of it since the epoch) over the last
        ``seconds`` before the latest sample, one series per group, every series on the same times."""
        if seconds <= 0 or step_s <= 0:
            raise ValueError("seconds and step_s must be positive")
        ring = self.samples()
        as_of = ring[-1].t if ring else self._clock()
        group_of, wanted = _group_of(group_by), _filter(route, model)
        steps: dict[int, _Stretch] = {}
        for earlier, later in _pairs(ring, as_of - seconds):
            steps.setdefault(math.ceil(later.t / step_s), _Stretch()).add(earlier, later, group_of, wanted)
        keys = sorted({group for stretch in steps.values() for group in stretch.groups})
        series = [
            SeriesLine(key, [_point(stretch, stretch.groups.get(key, NONE)) for stretch in steps.values()])
            for key in keys
        ]
        return SeriesWindow(utc(as_of), seconds, step_s, group_by, series)

    def snapshot(self, seconds: float = 60.0) -> Snapshot:
        """Figures over the last ``seconds`` sampled, in all, by route and by model."""
        ring = self.samples()
        if not ring:
            return Snapshot(None, 0.0, figures(NONE, 0.0), {}, {}, {})
        pairs = list(_pairs(ring, ring[-1].t - seconds))
        found: dict[GroupBy, _Stretch] = {}
        for group_by in ("total", "route", "model"):
            stretch = found[group_by] = _Stretch()
            group_of = _group_of(group_by)
            for earlier, later in pairs:
                stretch.add(earlier, later, group_of, _filter(None, None))
        covered = found["total"].seconds

        def by_group(group_by: GroupBy) -> dict[str, Figures]:
            return {key: figures(counts, covered) for key, counts in sorted(found[group_by].groups.items())}

        return Snapshot(
            as_of=utc(ring[-1].t),
            window_s=covered,
            total=figures(found["total"].groups.get(TOTAL, NONE), covered),
            routes=by_group("route"),
            models=by_group("model"),
            in_flight=dict(ring[-1].in_flight),
        )


def _pairs(ring: Sequence[Sample], after: float) -> Iterator[tuple[Sample, Sample]]:
    """Consecutive samples whose later one was taken after ``after``."""
    for earlier, later in itertools.pairwise(ring):
        if later.t > after:
            yield earlier, later


def _filter(route: str | None, model: str | None) -> Callable[[Key], bool]:
    return lambda key: (route is None or key[0] == route) and (model is None or key[1] == model)


def _point(stretch: _Stretch, counts: Counts) -> Point:
    found = figures(counts, stretch.seconds)
    return Point(
        utc(stretch.last_t), found.count, found.rate, found.error_share, found.client_error_share,
        found.p50, found.p95, found.p99,
    )  # fmt: skip
