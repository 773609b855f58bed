"""``POST /api/v1/predict``: a trading decision with regime, sizing and risk checks."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from prediction_provider.api.auth import prediction_slot
from prediction_provider.api.body import openapi_body, read_json
from prediction_provider.api.decision_schemas import DecisionBody, DecisionPublic
from prediction_provider.api.deps import services_of
from prediction_provider.api.errors import error_response
from prediction_provider.api.routes.jobs import idempotency_key, submit_symbol_job
from prediction_provider.api.schemas import ErrorBody
from prediction_provider.api.seed_schemas import SeedPredictionAccepted, SeedPredictionCreate, asks_seed_job
from prediction_provider.errors import PredictionFailed
from prediction_provider.trading.decisions import Decision, DecisionRequest, decision_payload

router = APIRouter(prefix="/api/v1", tags=["trading decisions"])

MAX_HEADER_WARNINGS = 8
MAX_HEADER_CHARS = 2000

ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": description}
    for status, description in (
        (400, "Malformed JSON, or an unknown strategy_override"),
        (403, "Missing permission, or the decision failed its risk checks (code risk_rejected; "
              "details hold the decision and the failed checks; X-Risk-Warnings lists them)"),
        (404, "Unknown symbol or trading account"),
        (422, "Invalid body, or no data at or before the timestamp"),
    )
}  # fmt: skip


def risk_header(warnings: list[str] | tuple[str, ...]) -> str:
    """The warnings as one header line: ASCII, no line breaks, bounded."""
    text = "; ".join(warnings[:MAX_HEADER_WARNINGS])
    text = text.encode("ascii", "replace").decode("ascii").replace("\r", " ").replace("\n", " ")
    return text[:MAX_HEADER_CHARS]


def rejection(decision: Decision, payload: dict[str, Any]) -> Response:
    allowed = decision.risk.allowed_quantity
    reasons = decision.risk.reasons
    details = {
        "decision": payload,
        "reasons": reasons,
        "allowed_quantity": None if allowed is None else float(allowed),
    }
    codes = ", ".join(str(reason["code"]) for reason in reasons)
    return error_response(
        403,
        "risk_rejected",
        f"the {decision.action} decision on {decision.symbol} failed its risk checks: {codes}",
        details,
        {"X-Risk-Warnings": risk_header(decision.risk.warnings)},
    )


@router.post(
    "/predict",
    response_model=DecisionPublic,
    responses={
        **ERROR_RESPONSES,
        201: {
            "model": SeedPredictionAccepted,
            "description": "The seed project's prediction request (recognised by its fields: ticker, "
            "prediction_type, prediction_horizon, interval, baseline_datetime, *_plugin, model_name): "
            "a forecast job by symbol, as POST /api/v1/predictions answers it",
        },
    },
    openapi_extra=openapi_body(DecisionBody, SeedPredictionCreate),
    summary="A trading decision: action, size, regime and risk validation (or the seed's prediction job)",
)
async def decide(request: Request) -> Response:
    services = services_of(request)
    if services.decisions is None:
        raise PredictionFailed("trading decisions are not configured on this server")
    async with prediction_slot(request) as principal:
        data = await read_json(request)
        if asks_seed_job(data):
            # The seed project's prediction request (its fields, not a decision's): a job by symbol.
            return await submit_symbol_job(request, principal, services, data, idempotency_key(request))
        body = DecisionBody.model_validate(data)
        decision = await services.decisions.decide(
            DecisionRequest(
                symbol=body.symbol,
                timestamp=body.timestamp,
                strategy_override=body.strategy_override,
                risk_check=body.risk_check,
                explain=body.explain,
                account=body.account,
            ),
            principal,
        )
    payload = decision_payload(decision)
    if not decision.approved:
        return rejection(decision, payload)
    headers = {"X-Risk-Warnings": risk_header(decision.risk.warnings)} if decision.risk.warnings else None
    return Response(orjson.dumps(payload), media_type="application/json", headers=headers)
