"""Live metrics ``/dashboard/metrics``: req/s by route and by model, 4xx vs 5xx, bucket-estimate
latency per route, model load times, and a per-worker view when workers share metric files.

The charts are ``GET /api/v1/metrics/series`` drawn: the same window, one step per sample, the same
bucket deltas. The per-route table is ``MetricSeries.snapshot`` over the window (figures from
the differences, never means of percentiles). Load times are those ``pp_model_load_seconds``
exposes (the model cache's entries). The metrics expose no batch sizes, and the page says so.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from prometheus_client.multiprocess import MultiProcessCollector
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from prediction_provider.accounts.roles import Permission
from prediction_provider.api.auth import require_permission
from prediction_provider.api.deps import services_of
from prediction_provider.api.query_params import DeclaredQueryOnly
from prediction_provider.dashboard.live import Snapshot, broadcaster
from prediction_provider.dashboard.nav import METRICS
from prediction_provider.dashboard.render import ApiCall, render, templates
from prediction_provider.dashboard.series_charts import (
    WINDOWS,
    WindowName,
    by_key_chart,
    latency_chart,
    metric_series,
    read_window,
    series_call,
    status_class_chart,
)
from prediction_provider.dashboard.session import Viewer, page_viewer
from prediction_provider.observability.multiprocess import MULTIPROC_ENV
from prediction_provider.observability.series import Figures, MetricSeries, SeriesWindow, read_sample
from prediction_provider.observability.series import Snapshot as SeriesSnapshot

router = APIRouter(prefix="/dashboard", include_in_schema=False)
MetricsViewer = Annotated[Viewer, Depends(page_viewer(METRICS))]
Window = Annotated[WindowName, Query(description="How far back from the latest sample.")]
By = Annotated[Literal["all", "worker"], Query(description="worker: a row per worker process.")]
GRAFANA_JSON = "deploy/grafana/prediction-provider.json"


@dataclass(frozen=True, slots=True)
class WorkerRow:
    pid: str
    requests: int
    server_errors: int
    client_errors: int


def multiprocess(request: Request) -> bool:
    return bool(getattr(request.app.state.metrics, "multiprocess", False))


def worker_rows() -> list[WorkerRow]:
    """Requests each worker answered since it started, from its own counter file (blocking: files).
    ``/metrics`` sums these files; read one at a time, they keep each worker apart."""
    directory = os.environ.get(MULTIPROC_ENV)
    if not directory:
        return []
    rows = []
    for path in sorted(Path(directory).glob("counter_*.db")):
        metrics = MultiProcessCollector._read_metrics([str(path)])
        families = MultiProcessCollector._accumulate_metrics(metrics, True)
        counts = read_sample(families, time.time()).counts.values()
        pid = path.stem.removeprefix("counter_")
        rows.append(WorkerRow(pid, round(sum(c.requests for c in counts)),
                              round(sum(c.server_errors for c in counts)),
                              round(sum(c.client_errors for c in counts))))  # fmt: skip
    return rows


def _load_times(request: Request) -> list[dict[str, Any]]:
    entries = services_of(request).cache.entries()
    return sorted(
        ({"name": e.resolved.name, "version": e.resolved.version or "", "loader": e.loader,
          "seconds": e.load_seconds} for e in entries),
        key=lambda row: (-row["seconds"], row["name"]),
    )  # fmt: skip


def _read_all(
    series: MetricSeries, seconds: float
) -> tuple[SeriesWindow, SeriesWindow, SeriesWindow, SeriesSnapshot]:
    """The page's windows, all of one latest sample: the sampler may add one between two reads,
    so a read that saw two samples is made again (a sample comes every ``interval_s``)."""
    for _ in range(3):
        found = tuple(read_window(series, seconds, group_by) for group_by in ("route", "model", "total"))
        snapshot = series.snapshot(seconds)
        if len({w.as_of for w in found} | {snapshot.as_of or found[0].as_of}) == 1:
            break
    return found[0], found[1], found[2], snapshot


async def metrics_context(request: Request, window: str, by: str) -> dict[str, Any]:
    series = metric_series(request)
    seconds = WINDOWS[window]
    by_route, by_model, total, snapshot = await run_in_threadpool(_read_all, series, seconds)
    routes: dict[str, Figures] = snapshot.routes
    split = by == "worker" and multiprocess(request)
    return {
        "window": window,
        "by": by,
        "multiprocess": multiprocess(request),
        "sample_t": total.as_of.timestamp(),
        "step_s": series.interval_s,
        "rate_chart": by_key_chart(by_route, "requests per second"),
        "model_chart": by_key_chart(by_model, "requests per second"),
        "status_chart": status_class_chart(total),
        "latency_chart": latency_chart(total),
        "routes": routes,
        "covered_s": snapshot.window_s,
        "workers": await run_in_threadpool(worker_rows) if split else [],
        "load_times": _load_times(request),
        "grafana": GRAFANA_JSON,
        "calls": {
            "route": series_call(series, window, "route"),
            "model": series_call(series, window, "model"),
            "total": series_call(series, window, "total"),
            "metrics": ApiCall("/metrics"),
        },
    }


@router.get("/metrics")
async def metrics_page(
    request: Request, viewer: MetricsViewer, window: Window = "15m", by: By = "all",
    _query: DeclaredQueryOnly = None,
) -> Response:  # fmt: skip
    require_permission(viewer.principal, Permission.READ_METRICS)
    context = await metrics_context(request, window, by)
    stream = f"/dashboard/stream/metrics?window={window}&by={by}"
    return render(request, "metrics.html", viewer, METRICS, stream=stream, **context)


@router.get("/stream/metrics")
async def metrics_stream(
    request: Request, viewer: MetricsViewer, window: Window = "15m", by: By = "all",
    _query: DeclaredQueryOnly = None,
) -> Response:  # fmt: skip
    require_permission(viewer.principal, Permission.READ_METRICS)
    origin = f"{request.url.scheme}://{request.url.netloc}"

    async def build() -> Snapshot:
        context = await metrics_context(request, window, by)
        return {
            "metrics-panels": templates.get_template("_metrics_panels.html").render(origin=origin, **context)
        }

    return broadcaster(request).stream(request, viewer, f"metrics:{window}:{by}", build)
