"""Entry/exit signals on the paths existing strategy clients call.

``POST /api/v1/predict/entry``, ``POST /api/v1/predict/exit`` (permission
``predict``, counted against the caller's in-flight predictions) and
``GET /api/v1/model/info`` (``read_models``). Which predictor answers is set
by ``PP_SIGNAL_PREDICTOR`` (``signals.registry``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import orjson
from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from prediction_provider.api.auth import ModelReader, prediction_slot
from prediction_provider.api.body import openapi_body, read_json_body
from prediction_provider.api.deps import services_of
from prediction_provider.api.schemas import ErrorBody
from prediction_provider.api.signal_schemas import (
    EntrySignalRequest,
    EntrySignalResponse,
    ExitSignalRequest,
    ExitSignalResponse,
    ModelInfoResponse,
)
from prediction_provider.signals.levels import TradeCosts
from prediction_provider.signals.predictor import EntryQuery, ExitQuery, SignalPredictor
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
    async with prediction_slot(request):
        body = await read_json_body(request, EntrySignalRequest)
        query = EntryQuery(
            parse_request_time(body.datetime),
            body.tp,
            body.sl,
            TradeCosts(body.spread_pips, body.commission_per_lot, body.slippage_pips),
        )
        predictor = await signal_predictor(request)
        signal = await answer(predictor, predictor.entry, query)
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
    async with prediction_slot(request):
        body = await read_json_body(request, ExitSignalRequest)
        query = ExitQuery(
            parse_request_time(body.datetime), parse_direction(body.direction), body.tp_price, body.sl_price
        )
        predictor = await signal_predictor(request)
        signal = await answer(predictor, predictor.exit, query)
    return json_response(signal.payload())
