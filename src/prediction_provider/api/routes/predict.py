"""``/predict`` and ``/predict/batch``: the native prediction endpoints."""

from __future__ import annotations

import time
from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from prediction_provider.api.auth import prediction_slot
from prediction_provider.api.body import openapi_body, read_json_body
from prediction_provider.api.deps import Services, services_of
from prediction_provider.api.schemas import (
    ErrorBody,
    PredictBatchRequest,
    PredictBatchResponse,
    PredictRequest,
    PredictResponse,
)
from prediction_provider.serving.cache import CachedModel
from prediction_provider.serving.inference import BatchResult
from prediction_provider.serving.responses import batch_payload, single_payload

router = APIRouter(tags=["predictions"])

ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": description}
    for status, description in (
        (400, "Malformed JSON"),
        (403, "Model file outside the trusted roots"),
        (404, "Unknown model or version"),
        (413, "Batch or body too large"),
        (422, "Invalid features, or explain: true for a model that cannot explain"),
        (503, "Model failed to load or registry unavailable"),
    )
}


def json_response(payload: dict[str, Any]) -> Response:
    return Response(orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY), media_type="application/json")


@router.post(
    "/predict",
    response_model=PredictResponse,
    responses=ERROR_RESPONSES,
    openapi_extra=openapi_body(PredictRequest),
    summary="Predict one row",
)
async def predict(request: Request) -> Response:
    services = services_of(request)
    started = time.perf_counter()
    async with prediction_slot(request):
        body = await read_json_body(request, PredictRequest)
        cached = await services.cache.aget(body.model)
        if body.explain:
            return await _explained_row(services, cached, body, started)
        result = await services.predictions.predict_record(cached, body.features, started)
    return json_response(single_payload(result, body.return_proba, services.predictions.bands))


@router.post(
    "/predict/batch",
    response_model=PredictBatchResponse,
    responses=ERROR_RESPONSES,
    openapi_extra=openapi_body(PredictBatchRequest),
    summary="Predict many rows, given as records or as columns",
)
async def predict_batch(request: Request) -> Response:
    services = services_of(request)
    started = time.perf_counter()
    async with prediction_slot(request):
        body = await read_json_body(request, PredictBatchRequest)
        if body.explain:
            return await _explained_rows(services, body, started)
        result = await _predict_rows(services, body, started)
    return json_response(batch_payload(result, body.return_proba))


async def _explained_row(
    services: Services, cached: CachedModel, body: PredictRequest, started: float
) -> Response:
    result, explanations = await _explain(services, cached, [body.features], "features", started)
    payload = single_payload(result, body.return_proba, services.predictions.bands)
    payload["explanation"] = explanations[0]
    return json_response(payload)


async def _explained_rows(services: Services, body: PredictBatchRequest, started: float) -> Response:
    cached = await services.cache.aget(body.model)
    result, explanations = await _explain(services, cached, body.features_list, "features_list", started)
    payload = batch_payload(result, body.return_proba)
    payload["explanations"] = explanations
    return json_response(payload)


async def _explain(
    services: Services, cached: CachedModel, rows: Any, prefix: str, started: float
) -> tuple[BatchResult, list[dict[str, Any]]]:
    """Predicted and explained off the event loop; the explanations in their JSON shape."""
    result, explanations = await run_in_threadpool(
        services.predictions.explain_rows, cached, rows, prefix, started
    )
    return result, [explanation.as_dict() for explanation in explanations]


async def _predict_rows(services: Services, body: PredictBatchRequest, started: float) -> BatchResult:
    cached = await services.cache.aget(body.model)
    rows = body.features_list
    # Validation and the model call both run in a worker thread: 1024 rows take milliseconds.
    if isinstance(rows, dict):
        return await run_in_threadpool(
            services.predictions.predict_columns, cached, rows, "features_list", started
        )
    return await run_in_threadpool(
        services.predictions.predict_records, cached, rows, "features_list", started
    )
