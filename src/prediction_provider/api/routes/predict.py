"""``/predict`` and ``/predict/batch``: the native prediction endpoints."""

from __future__ import annotations

import time
from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from prediction_provider.accounts.principal import Principal
from prediction_provider.api.auth import prediction_slot
from prediction_provider.api.body import openapi_body, read_json
from prediction_provider.api.deps import Services, services_of
from prediction_provider.api.forecast_schemas import (
    ForecastBatchPublic,
    ForecastBatchRequest,
    ForecastPredictRequest,
    ForecastPublic,
    forecast_payload,
)
from prediction_provider.api.model_ops import ops_of, outcome_key_of, request_id_of
from prediction_provider.api.paid import charge_headers, paid_answer
from prediction_provider.api.routes.seed import legacy_predict
from prediction_provider.api.schemas import (
    ErrorBody,
    PredictBatchRequest,
    PredictBatchResponse,
    PredictRequest,
    PredictResponse,
)
from prediction_provider.api.seed_schemas import LegacyAccepted, LegacyPredict, asks_legacy_predict
from prediction_provider.errors import PredictionFailed, PredictionProviderError
from prediction_provider.forecasts.records import Forecast, Requester
from prediction_provider.forecasts.service import ForecastRequest, ForecastService
from prediction_provider.modelops.gateway import PRIOR
from prediction_provider.serving.cache import CachedModel
from prediction_provider.serving.features_input import matrix_from_columns, matrix_from_records
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


def json_response(payload: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    return Response(
        orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY),
        media_type="application/json",
        headers=headers,
    )


def asks_by_symbol(data: Any) -> bool:
    """A body without features that names a symbol asks for a forecast computed from market data."""
    return isinstance(data, dict) and "symbol" in data and "features" not in data


@router.post(
    "/predict",
    response_model=PredictResponse | ForecastPublic | LegacyAccepted,
    responses=ERROR_RESPONSES,
    openapi_extra=openapi_body(PredictRequest, ForecastPredictRequest, LegacyPredict),
    summary="Predict one row, or forecast a symbol from its market data",
)
async def predict(request: Request) -> Response:
    """With ``features``: the model's answer for that row. With ``symbol`` and no features: the
    symbol's forecast for every horizon (or ``horizon``/``horizons``) as of ``timestamp``. With
    ``instrument`` (the seed project's legacy body): a job by symbol, polled at ``/status/{id}``."""
    services = services_of(request)
    started = time.perf_counter()
    async with prediction_slot(request) as principal:
        data = await read_json(request)
        if asks_legacy_predict(data):
            return await legacy_predict(request, principal, data)
        if asks_by_symbol(data):
            forecast_body = ForecastPredictRequest.model_validate(data)
            forecast = await _forecast(services, principal, forecast_body.request(), "predict")
            return json_response(forecast_payload(forecast))
        body = PredictRequest.model_validate(data)
        if body.explain:
            cached = await services.cache.aget(body.model)
            async with paid_answer(services, principal, cached):
                return await _explained_row(services, cached, body, started)
        ops = ops_of(services)
        request_id = request_id_of(request)
        route = ops.route(body.model, principal, request.headers, request_id)
        paid_name = route.experiment.model if route.experiment is not None else None
        asked = None if paid_name else await ops.load(route.reference)
        async with paid_answer(services, principal, paid_name or asked) as charge:  # type: ignore[arg-type]
            served, _ = await ops.serve(
                route,
                lambda model: matrix_from_records([body.features], model.model.signature, "features", 1),
                request_id=request_id,
                channel="predict",
                principal=principal,
                outcome_key=outcome_key_of(request, body.outcome_key),
                members=body.return_members,
                primary=asked,
            )
    result = BatchResult(served.cached, served.output.predictions, served.output.probabilities, started)
    payload = single_payload(result, body.return_proba, services.predictions.bands)
    payload.update(served.body_fields())
    if served.fallback_target == PRIOR:
        payload["confidence"] = "low"
    return json_response(payload, {**served.headers(), **(charge_headers(charge) or {})})


@router.post(
    "/predict/batch",
    response_model=PredictBatchResponse | ForecastBatchPublic,
    responses=ERROR_RESPONSES,
    openapi_extra=openapi_body(PredictBatchRequest, ForecastBatchRequest),
    summary="Predict many rows, given as records or as columns; or forecast many symbols and times",
)
async def predict_batch(request: Request) -> Response:
    """With ``features_list``: one answer per row. With ``requests`` (``{symbol, timestamp?, ...}``
    each): one forecast per request, in order; the first that cannot be answered fails the call
    with its error, its index in ``details``."""
    services = services_of(request)
    started = time.perf_counter()
    async with prediction_slot(request) as principal:
        data = await read_json(request)
        if isinstance(data, dict) and "requests" in data and "features_list" not in data:
            batch = ForecastBatchRequest.model_validate(data)
            forecasts = await run_in_threadpool(
                _forecast_all, forecasting(services), principal, [item.request() for item in batch.requests]
            )
            return json_response(
                {
                    "results": [forecast_payload(forecast) for forecast in forecasts],
                    "count": len(forecasts),
                    "latency_ms": round((time.perf_counter() - started) * 1000, 3),
                }
            )
        body = PredictBatchRequest.model_validate(data)
        if body.explain:
            cached = await services.cache.aget(body.model)
            async with paid_answer(services, principal, cached, row_count(body.features_list)):
                return await _explained_rows(services, body, started)
        ops = ops_of(services)
        request_id = request_id_of(request)
        route = ops.route(body.model, principal, request.headers, request_id)
        paid_name = route.experiment.model if route.experiment is not None else None
        asked = None if paid_name else await ops.load(route.reference)
        rows_in = row_count(body.features_list)
        async with paid_answer(services, principal, paid_name or asked, rows_in) as charge:  # type: ignore[arg-type]
            served, _ = await ops.serve(
                route,
                lambda model: rows_matrix(services, model, body.features_list),
                request_id=request_id,
                channel="batch",
                principal=principal,
                outcome_key=outcome_key_of(request, body.outcome_key),
                members=body.return_members,
                build_in_thread=True,
                primary=asked,
            )
    result = BatchResult(served.cached, served.output.predictions, served.output.probabilities, started)
    payload = batch_payload(result, body.return_proba)
    payload.update(served.body_fields())
    return json_response(payload, {**served.headers(), **(charge_headers(charge) or {})})


def rows_matrix(services: Services, cached: CachedModel, rows: Any) -> Any:
    """Records or columns, validated against the model's signature (blocking for large batches)."""
    signature = cached.model.signature
    limit = services.predictions.max_batch_rows
    if isinstance(rows, dict):
        return matrix_from_columns(rows, signature, "features_list", limit)
    return matrix_from_records(rows, signature, "features_list", limit)


def row_count(rows: Any) -> int:
    """Rows given as records, or as columns (the longest column)."""
    if isinstance(rows, dict):
        return max((len(column) for column in rows.values() if isinstance(column, list)), default=1)
    return max(len(rows), 1) if isinstance(rows, list) else 1


def forecasting(services: Services) -> ForecastService:
    if services.forecasts is None:
        raise PredictionFailed("forecasts by symbol are not configured on this server")
    return services.forecasts


async def _forecast(
    services: Services, principal: Principal, request: ForecastRequest, channel: str
) -> Forecast:
    """Answered on the event loop when nothing needs loading (a few hundred microseconds of
    trees), else in a worker thread: a model load or a feeder read must not stall the loop."""
    forecasts = forecasting(services)
    requester = Requester(principal.user_id, principal.username, channel)
    if forecasts.is_warm(request):
        return forecasts.forecast(request, requester)
    return await run_in_threadpool(forecasts.forecast, request, requester)


def _forecast_all(
    forecasts: ForecastService, principal: Principal, requests: list[ForecastRequest]
) -> list[Forecast]:
    requester = Requester(principal.user_id, principal.username, "batch")
    answers = []
    for index, request in enumerate(requests):
        try:
            answers.append(forecasts.forecast(request, requester))
        except PredictionProviderError as exc:
            exc.message = f"requests[{index}]: {exc.message}"
            exc.details = {"index": index, "details": exc.details}
            raise
    return answers


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
