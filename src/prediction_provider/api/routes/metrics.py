"""``GET /metrics``: Prometheus text format, for operators and admins; ``GET /api/v1/metrics/series``:
the same counters as RED figures over the last hour, from the in-process history.

Prometheus sends one static credential; an API key works as a bearer token for
that (``Authorization: Bearer pp_...``, see ``api.auth``).
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any, Literal

from fastapi import APIRouter, FastAPI, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from prediction_provider.api.auth import MetricsReader
from prediction_provider.api.metrics_schemas import MetricSeriesAnswer
from prediction_provider.api.query_params import DeclaredQueryOnly
from prediction_provider.api.schemas import ErrorBody
from prediction_provider.observability.metrics import CONTENT_TYPE_LATEST, AppMetrics, HttpMetrics
from prediction_provider.observability.series import GroupBy, MetricSeries

router = APIRouter(tags=["monitoring"])

RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "Every metric, Prometheus text format", "content": {CONTENT_TYPE_LATEST: {}}},
    401: {"model": ErrorBody, "description": "Not signed in"},
    403: {"model": ErrorBody, "description": "Not allowed to read metrics"},
}
SERIES_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: RESPONSES[401],
    403: RESPONSES[403],
    422: {"model": ErrorBody, "description": "A window, step or grouping the route does not take"},
}
WINDOWS = {"5m": 300, "15m": 900, "1h": 3600}
Window = Annotated[Literal["5m", "15m", "1h"], Query(description="How far back from the latest sample.")]
Step = Annotated[int, Query(ge=1, le=300, description="Seconds per point.")]
Grouping = Annotated[GroupBy, Query(description="One series per route, per model, or one in all.")]
RouteFilter = Annotated[str | None, Query(max_length=512, description="Only this route template.")]
ModelFilter = Annotated[str | None, Query(max_length=256, description="Only this model.")]


def install(app: FastAPI) -> HttpMetrics:
    """Give ``app`` a registry of its own; the HTTP metrics returned are for its outermost middleware."""
    metrics = AppMetrics(lambda: getattr(app.state, "services", None))
    app.state.metrics = metrics
    return metrics.http


@router.get("/metrics", response_class=Response, responses=RESPONSES, summary="Prometheus metrics")
async def metrics(principal: MetricsReader, request: Request) -> Response:
    app_metrics: AppMetrics = request.app.state.metrics
    # Off the event loop: collecting counts the prediction jobs in the database.
    body = await run_in_threadpool(app_metrics.exposition)
    return Response(body, media_type=CONTENT_TYPE_LATEST)


@router.get(
    "/api/v1/metrics/series",
    response_model=MetricSeriesAnswer,
    responses=SERIES_RESPONSES,
    summary="Request rate, error share and latency quantiles over time",
)
async def metric_series(
    principal: MetricsReader,
    request: Request,
    window: Window = "15m",
    step: Step = 5,
    group_by: Grouping = "route",
    route: RouteFilter = None,
    model: ModelFilter = None,
    _query: DeclaredQueryOnly = None,
) -> MetricSeriesAnswer:
    series: MetricSeries = request.app.state.metric_series
    # Off the event loop: an hour of samples over every route is a few thousand differences.
    found = await run_in_threadpool(series.window, WINDOWS[window], step, route, model, group_by)
    return MetricSeriesAnswer.model_validate({**asdict(found), "window_s": WINDOWS[window], "step_s": step})
