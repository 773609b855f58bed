"""``/api/v1/decisions``: the recorded trading decisions, your own or (admins, operators) everyone's.

A decision is recorded a moment after it is answered (by a background
writer), so a read straight after ``POST /api/v1/predict`` may not find it yet.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from starlette.concurrency import run_in_threadpool

from prediction_provider.accounts.principal import Principal
from prediction_provider.accounts.roles import Permission, allows
from prediction_provider.api.account_schemas import USERNAME
from prediction_provider.api.auth import missing_permission, signed_in
from prediction_provider.api.decision_record_schemas import DecisionRecordPage, DecisionRecordPublic
from prediction_provider.api.decision_schemas import Symbol
from prediction_provider.api.deps import ServicesDep
from prediction_provider.api.query_params import DeclaredQueryOnly, Limit, Offset
from prediction_provider.api.schemas import ErrorBody
from prediction_provider.trading.records import (
    READ_ALL_DECISIONS,
    DecisionFilter,
    find_decision,
    search_decisions,
)

router = APIRouter(prefix="/api/v1/decisions", tags=["trading decisions"])

ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": description}
    for status, description in (
        (401, "Not signed in"),
        (403, "Neither allowed to predict nor to see every decision"),
        (404, "No such decision, or not yours"),
        (422, "Invalid query"),
    )
}


async def decision_reader(request: Request) -> Principal:
    """A signed-in caller who may predict (and so read its own decisions) or may read everyone's."""
    principal = await signed_in(request)
    if not (allows(principal.role, Permission.PREDICT) or allows(principal.role, READ_ALL_DECISIONS)):
        raise missing_permission(principal, Permission.PREDICT, READ_ALL_DECISIONS)
    return principal


DecisionReader = Annotated[Principal, Depends(decision_reader)]
DecisionId = Annotated[str, Path(min_length=1, max_length=64, description="The decision_id of the answer.")]


@router.get("", response_model=DecisionRecordPage, responses=ERRORS)
async def list_decisions(
    principal: DecisionReader,
    services: ServicesDep,
    symbol: Annotated[Symbol | None, Query()] = None,
    username: Annotated[
        str | None, Query(pattern=USERNAME, description="Only for callers who may see every decision.")
    ] = None,
    limit: Limit = 50,
    offset: Offset = 0,
    _query: DeclaredQueryOnly = None,
) -> DecisionRecordPage:
    """Your decisions, newest first, approved and refused alike; admins and operators see everyone's."""
    filters = DecisionFilter(symbol, username)
    rows, total = await run_in_threadpool(search_decisions, services.db, principal, filters, limit, offset)
    return DecisionRecordPage(
        items=[DecisionRecordPublic.of(row) for row in rows], total=total, limit=limit, offset=offset
    )


@router.get("/{decision_id}", response_model=DecisionRecordPublic, responses=ERRORS)
async def get_decision(
    decision_id: DecisionId, principal: DecisionReader, services: ServicesDep
) -> DecisionRecordPublic:
    record = await run_in_threadpool(find_decision, services.db, decision_id, principal)
    return DecisionRecordPublic.of(record)
