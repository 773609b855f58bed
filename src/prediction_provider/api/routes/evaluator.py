"""Evaluators: the queue, claims under leases (heartbeat, result, release) and stats, plus the seed's
routes (``pending``, ``claim/{id}``, ``submit/{id}``, ``release/{id}``, ``assigned``) as aliases
that name the request instead of the claim. Parse, authorize, call ``marketplace.leases``."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from prediction_provider.accounts.principal import Principal
from prediction_provider.accounts.roles import Permission
from prediction_provider.api.auth import holding
from prediction_provider.api.deps import Services, ServicesDep
from prediction_provider.api.query_params import DeclaredQueryOnly, Limit, Offset
from prediction_provider.api.schemas import ErrorBody
from prediction_provider.errors import InvalidInput, PredictionFailed
from prediction_provider.marketplace.leases import Leases

router = APIRouter(tags=["evaluator"])
ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": description}
    for status, description in (
        (401, "Not signed in"),
        (403, "Not an evaluator"),
        (404, "Unknown request or claim, or nothing queued"),
        (409, "Already claimed, stale or expired lease, too late, already submitted, own request"),
        (422, "Invalid request or output"),
    )
}
Evaluator = Annotated[Principal, Depends(holding(Permission.EVALUATE))]
Reason = Literal["insufficient_resources", "technical_issue", "other"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ClaimCreate(Strict):
    request_id: str | None = Field(default=None, max_length=64)


class Token(Strict):
    lease_token: int = Field(ge=1)


class ResultBody(Strict):
    lease_token: int = Field(ge=1)
    output: Any


class ReleaseBody(Strict):
    lease_token: int = Field(ge=1)
    reason: Reason
    details: str | None = Field(default=None, max_length=2000)


class SeedSubmit(BaseModel):
    """The seed's body: ``result`` (or ``output``), and a token if the caller has one."""

    model_config = ConfigDict(extra="ignore")
    result: Any = None
    output: Any = None
    lease_token: int | None = Field(default=None, ge=1)


class SeedRelease(BaseModel):
    model_config = ConfigDict(extra="ignore")
    lease_token: int | None = Field(default=None, ge=1)
    reason: Reason = "other"
    details: str | None = Field(default=None, max_length=2000)


def leases_of(services: Services) -> Leases:
    if services.marketplace is None:
        raise PredictionFailed("the marketplace is not configured on this server")
    return services.marketplace.leases


def page(items: list[dict[str, Any]], total: int, limit: int, offset: int) -> dict[str, Any]:
    return {"items": items, "total": total, "limit": limit, "offset": offset}


# -- native routes -------------------------------------------------------------------------------------


@router.get("/api/v1/evaluator/queue", responses=ERRORS)
async def queue(
    principal: Evaluator, services: ServicesDep,
    symbol: Annotated[str | None, Query(max_length=20)] = None,
    target: Annotated[str | None, Query(max_length=16)] = None,
    limit: Limit = 50, offset: Offset = 0, _query: DeclaredQueryOnly = None,
) -> dict[str, Any]:  # fmt: skip
    """Queued requests executed by evaluators, not past their deadline, oldest first."""
    leases = leases_of(services)
    items, total = await run_in_threadpool(
        lambda: leases.queue(principal, symbol=symbol, target=target, limit=limit, offset=offset)
    )
    return page(items, total, limit, offset)


@router.post("/api/v1/evaluator/claims", status_code=201, responses=ERRORS)
async def claim(
    principal: Evaluator, services: ServicesDep, body: ClaimCreate | None = None
) -> dict[str, Any]:
    """Claim a request (or, without ``request_id``, the oldest one): exactly one evaluator wins."""
    return await run_in_threadpool(
        leases_of(services).claim, principal, None if body is None else body.request_id
    )


@router.get("/api/v1/evaluator/claims", responses=ERRORS)
async def list_claims(
    principal: Evaluator, services: ServicesDep,
    state: Annotated[Literal["active", "submitted", "released", "expired"] | None, Query()] = None,
    limit: Limit = 50, offset: Offset = 0, _query: DeclaredQueryOnly = None,
) -> dict[str, Any]:  # fmt: skip
    leases = leases_of(services)
    items, total = await run_in_threadpool(leases.claims, principal, state, limit, offset)
    return page(items, total, limit, offset)


@router.post("/api/v1/evaluator/claims/{claim_id}/heartbeat", responses=ERRORS)
async def heartbeat(
    claim_id: str, body: Token, principal: Evaluator, services: ServicesDep
) -> dict[str, Any]:
    """Renew the lease by ``PP_LEASE_S``, never past the request's deadline."""
    return await run_in_threadpool(leases_of(services).heartbeat, principal, claim_id, body.lease_token)


@router.post("/api/v1/evaluator/claims/{claim_id}/result", responses=ERRORS)
async def result(
    claim_id: str, body: ResultBody, principal: Evaluator, services: ServicesDep
) -> dict[str, Any]:
    """Submit the output: checked against the target's schema, accepted only from the current lease
    and before the deadline; the request completes and the money is split in one transaction."""
    return await run_in_threadpool(
        leases_of(services).result, principal, claim_id, body.lease_token, body.output
    )


@router.post("/api/v1/evaluator/claims/{claim_id}/release", responses=ERRORS)
async def release(
    claim_id: str, body: ReleaseBody, principal: Evaluator, services: ServicesDep
) -> dict[str, Any]:
    released = await run_in_threadpool(
        leases_of(services).release, principal, claim_id, body.lease_token, body.reason, body.details
    )
    return {"claim_id": claim_id, "request_status": released.request_status, "attempts": released.attempts}


@router.get("/api/v1/evaluator/stats", responses=ERRORS)
async def stats(
    principal: Evaluator, services: ServicesDep,
    window: Annotated[Literal["7d", "30d", "90d"], Query()] = "30d", _query: DeclaredQueryOnly = None,
) -> dict[str, Any]:  # fmt: skip
    """Claims, completed, released, expired, success rate, median latency and earnings, computed."""
    return await run_in_threadpool(leases_of(services).stats, principal, window)


# -- the seed's routes, over the native ones -------------------------------------------------------------


@router.get("/api/v1/evaluator/pending", responses=ERRORS)
async def pending(
    principal: Evaluator, services: ServicesDep, limit: Limit = 50, offset: Offset = 0,
    _query: DeclaredQueryOnly = None,
) -> dict[str, Any]:  # fmt: skip
    leases = leases_of(services)
    items, total = await run_in_threadpool(lambda: leases.queue(principal, limit=limit, offset=offset))
    return page(items, total, limit, offset)


@router.post("/api/v1/evaluator/claim/{request_id}", status_code=201, responses=ERRORS)
async def claim_request(request_id: str, principal: Evaluator, services: ServicesDep) -> dict[str, Any]:
    return await run_in_threadpool(leases_of(services).claim, principal, request_id)


async def _token(leases: Leases, principal: Principal, request_id: str, given: int | None) -> tuple[str, int]:
    held = await run_in_threadpool(leases.active_claim, principal, request_id)
    return held.id, held.lease_token if given is None else given


@router.post("/api/v1/evaluator/submit/{request_id}", responses=ERRORS)
async def submit_request(
    request_id: str, body: SeedSubmit, principal: Evaluator, services: ServicesDep
) -> dict[str, Any]:
    output = body.output if body.output is not None else body.result
    if output is None:
        raise InvalidInput("send the output as result (or output)", [{"field": "result", "error": "missing"}])
    leases = leases_of(services)
    claim_id, token = await _token(leases, principal, request_id, body.lease_token)
    return await run_in_threadpool(leases.result, principal, claim_id, token, output)


@router.post("/api/v1/evaluator/release/{request_id}", responses=ERRORS)
async def release_request(
    request_id: str, principal: Evaluator, services: ServicesDep, body: SeedRelease | None = None
) -> dict[str, Any]:
    body = body or SeedRelease()
    leases = leases_of(services)
    claim_id, token = await _token(leases, principal, request_id, body.lease_token)
    released = await run_in_threadpool(leases.release, principal, claim_id, token, body.reason, body.details)
    return {"claim_id": claim_id, "request_id": request_id, "request_status": released.request_status,
            "attempts": released.attempts}  # fmt: skip


@router.get("/api/v1/evaluator/assigned", responses=ERRORS)
async def assigned(
    principal: Evaluator, services: ServicesDep, limit: Limit = 50, offset: Offset = 0,
    _query: DeclaredQueryOnly = None,
) -> dict[str, Any]:  # fmt: skip
    leases = leases_of(services)
    items, total = await run_in_threadpool(leases.claims, principal, "active", limit, offset)
    return page(items, total, limit, offset)
