"""``GET /api/v1/experiments/{name}/records``: an experiment's recorded traffic, primary answers or
shadow answers, for operators and admins (records may hold features).

Records are written a moment after the answer (by a background writer, every
``PP_RECORD_FLUSH_MS``), so a read straight after a prediction may not find it yet. Pages are newest
first and keyset-paged: pass ``next_cursor`` back as ``cursor`` for the next page; rows written
meanwhile never shift a page.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from prediction_provider.api.auth import RecordReader
from prediction_provider.api.deps import ServicesDep
from prediction_provider.api.query_params import DeclaredQueryOnly
from prediction_provider.api.schemas import ErrorBody
from prediction_provider.modelops.records import RecordQuery, read_records

router = APIRouter(prefix="/api/v1/experiments", tags=["experiments"])

ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": description}
    for status, description in (
        (401, "Not signed in"),
        (403, "Not an operator or admin"),
        (404, "No experiment of that name"),
        (422, "Invalid query or cursor"),
    )
}

ExperimentName = Annotated[str, Path(min_length=1, max_length=128, description="The experiment's name.")]


class ExperimentRecordPublic(BaseModel):
    """One recorded row: a primary answer (``role: primary``) or a shadow's (``role: shadow``) to the
    same ``(request_id, row)``."""

    request_id: str
    row: int
    created_at: datetime
    role: Literal["primary", "shadow"]
    experiment: str | None
    variant: str | None
    target: str | None
    model_name: str
    model_version: str | None
    label: str | None
    probabilities: dict[str, float] | None
    value: float | None
    status: str
    latency_ms: float | None
    unit_hash: str | None
    # primary rows only
    channel: str | None = None
    served_by: str | None = None
    fallback_reason: str | None = None
    forced: bool | None = None
    outcome_key: str | None = None
    feature_hash: str | None = None
    features: dict[str, float | None] | None = None
    # shadow rows only: "shadow", or "control" when the control shadows a candidate
    shadow_of: str | None = None


class ExperimentRecordPage(BaseModel):
    items: list[ExperimentRecordPublic]
    limit: int
    next_cursor: str | None  # None on the last page


@router.get("/{name}/records", response_model=ExperimentRecordPage, responses=ERRORS)
async def list_experiment_records(
    name: ExperimentName,
    principal: RecordReader,
    services: ServicesDep,
    role: Annotated[
        Literal["primary", "shadow"], Query(description="Served answers or shadows.")
    ] = "primary",
    variant: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
    request_id: Annotated[str | None, Query(min_length=1, max_length=36)] = None,
    status: Annotated[
        Literal["ok", "error", "timeout", "rejected", "dropped"] | None,
        Query(description="The call's fate (dropped: shadows only)."),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500, description="At most this many items.")] = 50,
    cursor: Annotated[
        str | None, Query(min_length=1, max_length=512, description="next_cursor of the previous page.")
    ] = None,
    _query: DeclaredQueryOnly = None,
) -> ExperimentRecordPage:
    """An experiment's records, newest first, filtered by variant, request id and status."""
    query = RecordQuery(name, role, variant, request_id, status, limit, cursor)
    page = await run_in_threadpool(read_records, services.db, query)
    return ExperimentRecordPage(
        items=[ExperimentRecordPublic(**item) for item in page.items],
        limit=limit,
        next_cursor=page.next_cursor,
    )
