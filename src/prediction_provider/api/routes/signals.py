"""Entry/exit signals on the paths existing strategy clients call.

``POST /api/v1/predict/entry``, ``POST /api/v1/predict/exit`` (permission
``predict``, counted against the caller's in-flight predictions) and
``GET /api/v1/model/info`` (``read_models``). Which predictor answers is set
by ``PP_SIGNAL_PREDICTOR`` (``signals.registry``).

The seed project's noise sweeps: ``POST /api/v1/predict/set_noise``
(``tune_signal_noise``: operators and admins) and ``GET /api/v1/predict/metrics``
(``read_models``), answered by a predictor that takes noise
(``signals.noisy_oracle``); any other answers 409 ``noise_unsupported``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

import orjson
from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from prediction_provider.accounts.principal import Principal
from prediction_provider.api.auth import ModelReader, SignalNoiseTuner, prediction_slot
from prediction_provider.api.body import openapi_body, read_json_body
from prediction_provider.api.deps import services_of
from prediction_provider.api.schemas import ErrorBody
from prediction_provider.api.signal_schemas import (
    EntrySignalRequest,
    EntrySignalResponse,
    ExitSignalRequest,
    ExitSignalResponse,
    ModelInfoResponse,
    NoiseMetrics,
    NoiseSet,
    NoiseSetting,
)
from prediction_provider.forecasts.records import Requester
from prediction_provider.signals.levels import TradeCosts
from prediction_provider.signals.noisy_oracle import noise_control
from prediction_provider.signals.predictor import EntryQuery, ExitQuery, SignalPredictor
from prediction_provider.signals.records import SIGNAL_CHANNEL
from prediction_provider.signals.registry import SignalPredictorSlot
from prediction_provider.signals.request_fields import parse_direction, parse_request_time

router = APIRouter(tags=["signals"])

QueryT = TypeVar("QueryT")
AnswerT = TypeVar("AnswerT")


def _errors(*statuses: tuple[int, str]) -> dict[int | str, dict[str, Any]]:
    return {status: {"model": ErrorBody, "description": description} for status, description in statuses}


UNAVAILABLE = (503, "No signal predictor: oracle file missing, or signal models not trained")
SIGNAL_ERRORS = _errors(
    (400, "A datetime in another format, an unknown direction, or malformed JSON"),
    (401, "No valid credentials"),
    (403, "The caller may not predict"),
    (422, "A missing or invalid field, or a time before the bars the features need"),
    UNAVAILABLE,
)


def requester_of(principal: Principal) -> Requester:
    return Requester(principal.user_id, principal.username, SIGNAL_CHANNEL)


def json_response(payload: dict[str, Any]) -> Response:
    return Response(orjson.dumps(payload), media_type="application/json")


def predictor_slot(request: Request) -> SignalPredictorSlot:
    # Created on the event loop with no await in between, so two first requests share one slot.
    state = request.app.state
    slot: SignalPredictorSlot | None = getattr(state, "signal_predictor_slot", None)
    if slot is None:
        slot = SignalPredictorSlot(services_of(request).settings)
        state.signal_predictor_slot = slot
    return slot


async def signal_predictor(request: Request) -> SignalPredictor:
    slot = predictor_slot(request)
    if slot.predictor is not None:
        return slot.predictor
    return await run_in_threadpool(slot.get)


async def answer(predictor: SignalPredictor, call: Callable[[QueryT], AnswerT], query: QueryT) -> AnswerT:
    if predictor.answers_inline:
        return call(query)
    return await run_in_threadpool(call, query)


@router.get(
    "/api/v1/model/info",
    response_model=ModelInfoResponse,
    responses=_errors((401, "No valid credentials"), (403, "The caller may not read models"), UNAVAILABLE),
    summary="Which signal predictor answers, and what it needs",
)
async def model_info(request: Request, _: ModelReader) -> Response:
    predictor = await signal_predictor(request)
    return json_response(predictor.info().payload())


@router.post(
    "/api/v1/predict/entry",
    response_model=EntrySignalResponse,
    response_model_exclude_none=True,
    responses=SIGNAL_ERRORS,
    openapi_extra=openapi_body(EntrySignalRequest),
    summary="Open a buy, a sell, both or neither: is each target reached before its stop this week?",
)
async def predict_entry(request: Request) -> Response:
    async with prediction_slot(request) as principal:
        started = time.perf_counter()
        body = await read_json_body(request, EntrySignalRequest)
        query = EntryQuery(
            parse_request_time(body.datetime),
            body.tp,
            body.sl,
            TradeCosts(body.spread_pips, body.commission_per_lot, body.slippage_pips),
        )
        predictor = await signal_predictor(request)
        signal = await answer(predictor, predictor.entry, query)
    recorder = services_of(request).signal_records
    if recorder is not None:
        latency_ms = (time.perf_counter() - started) * 1000
        recorder.record_entry(predictor, query, signal, requester_of(principal), latency_ms)
    return json_response(signal.payload())


@router.post(
    "/api/v1/predict/exit",
    response_model=ExitSignalResponse,
    response_model_exclude_none=True,
    responses=SIGNAL_ERRORS,
    openapi_extra=openapi_body(ExitSignalRequest),
    summary="Keep an open position (1) or close it now (0)",
)
async def predict_exit(request: Request) -> Response:
    async with prediction_slot(request) as principal:
        started = time.perf_counter()
        body = await read_json_body(request, ExitSignalRequest)
        query = ExitQuery(
            parse_request_time(body.datetime), parse_direction(body.direction), body.tp_price, body.sl_price
        )
        predictor = await signal_predictor(request)
        signal = await answer(predictor, predictor.exit, query)
    recorder = services_of(request).signal_records
    if recorder is not None:
        latency_ms = (time.perf_counter() - started) * 1000
        recorder.record_exit(predictor, query, signal, requester_of(principal), latency_ms)
    return json_response(signal.payload())


NOISE_UNSUPPORTED = (409, "The signal predictor serving takes no noise (noise_unsupported)")
CREDENTIALS_MISSING = (401, "No valid credentials")


@router.post(
    "/api/v1/predict/set_noise",
    response_model=NoiseSet,
    responses=_errors(
        CREDENTIALS_MISSING,
        (403, "The caller may not tune the signal noise (operators and admins may)"),
        NOISE_UNSUPPORTED,
        (422, "noise_std missing, negative or not a finite number"),
        UNAVAILABLE,
    ),
    summary="Set the noisy oracle's noise_std; resets its metrics and restarts its random stream",
)
async def set_noise(body: NoiseSetting, request: Request, _: SignalNoiseTuner) -> NoiseSet:
    predictor = await signal_predictor(request)
    noise_control(predictor).set_noise(body.noise_std)
    return NoiseSet(noise_std=body.noise_std, status="ok", predictor=predictor.name)


@router.get(
    "/api/v1/predict/metrics",
    response_model=NoiseMetrics,
    responses=_errors(
        CREDENTIALS_MISSING, (403, "The caller may not read models"), NOISE_UNSUPPORTED, UNAVAILABLE
    ),
    summary="Precision, recall, F1 and accuracy of the noisy answers against the noiseless oracle",
)
async def noise_metrics(request: Request, _: ModelReader) -> NoiseMetrics:
    predictor = await signal_predictor(request)
    metrics = noise_control(predictor).metrics()
    return NoiseMetrics(
        tp=metrics.tp,
        fp=metrics.fp,
        tn=metrics.tn,
        fn=metrics.fn,
        total_predictions=metrics.total,
        precision=round(metrics.precision, 6),
        recall=round(metrics.recall, 6),
        f1=round(metrics.f1, 6),
        accuracy=round(metrics.accuracy, 6),
        noise_std=metrics.noise_std,
        predictor=predictor.name,
        since=metrics.since,
    )
