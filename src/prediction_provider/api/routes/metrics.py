"""``GET /metrics``: Prometheus text format, for operators and admins.

Prometheus sends one static credential; an API key works as a bearer token for
that (``Authorization: Bearer pp_...``, see ``api.auth``).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, FastAPI, Request, Response
from starlette.concurrency import run_in_threadpool

from prediction_provider.api.auth import MetricsReader
from prediction_provider.api.schemas import ErrorBody
from prediction_provider.observability.metrics import CONTENT_TYPE_LATEST, AppMetrics, HttpMetrics

router = APIRouter(tags=["monitoring"])

RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "Every metric, Prometheus text format", "content": {CONTENT_TYPE_LATEST: {}}},
    401: {"model": ErrorBody, "description": "Not signed in"},
    403: {"model": ErrorBody, "description": "Not allowed to read metrics"},
}


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
