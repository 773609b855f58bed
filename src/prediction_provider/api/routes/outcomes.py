"""Realized outcomes: the leaderboard, a model's realized performance per version, the score of one
prediction, outcomes reported for answers without market context, and a scoring pass on demand.

Parse, authorize, call ``services.outcomes`` / ``services.scorer``, shape the answer."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field, model_validator
from starlette.concurrency import run_in_threadpool

from prediction_provider.accounts.principal import Principal
from prediction_provider.accounts.roles import Permission, allows
from prediction_provider.api.auth import ModelReader, authenticate, holding, missing_permission
from prediction_provider.api.deps import Services, ServicesDep, services_of
from prediction_provider.api.query_params import DeclaredQueryOnly
from prediction_provider.api.schemas import ErrorBody
from prediction_provider.errors import AuthenticationFailed, PredictionFailed
from prediction_provider.outcomes.scoring import Scorer
from prediction_provider.outcomes.service import BoardQuery, Outcomes

router = APIRouter(prefix="/api/v1", tags=["outcomes"])
ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": description}
    for status, description in (
        (401, "Not signed in"),
        (403, "Not allowed"),
        (404, "Unknown prediction"),
        (422, "Invalid query or outcome"),
    )
}
ScoringRunner = Annotated[Principal, Depends(holding(Permission.RUN_SCORING))]
RequestId = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]
MAX_OUTCOMES = 1000


class OutcomeItem(BaseModel):
    model_config = ConfigDict(extra="forbid")

    request_id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")
    row: int = Field(default=0, ge=0, le=1_000_000)
    label: str | int | None = Field(default=None, description="The realized class of a classifier's row.")
    value: float | None = Field(default=None, allow_inf_nan=False, description="The realized value.")
    realized_return: float | None = Field(default=None, allow_inf_nan=False)

    @model_validator(mode="after")
    def _something(self) -> OutcomeItem:
        if self.label is None and self.value is None and self.realized_return is None:
            raise ValueError("give label, value or realized_return")
        return self


def outcomes_of(services: Services) -> Outcomes:
    if services.outcomes is None:
        raise PredictionFailed("realized outcomes are not available in this process")
    return services.outcomes


def scorer_of(services: Services) -> Scorer:
    if services.scorer is None:
        raise PredictionFailed("scoring is not available in this process")
    return services.scorer


async def signed_in(request: Request) -> Principal:
    """Any signed-in account; a dependency, so that it is answered before the body is read."""
    return await _signed_in(request, services_of(request))


SignedIn = Annotated[Principal, Depends(signed_in)]


@router.get("/leaderboard", responses=ERRORS, summary="Models and providers ranked on realized outcomes")
async def leaderboard(
    principal: ModelReader,
    services: ServicesDep,
    target: Literal["direction", "return", "quantiles", "entry_signal"] = "direction",
    horizon: Annotated[int | None, Query(ge=1, le=10_000)] = None,
    symbol: Annotated[str | None, Query(min_length=1, max_length=20, pattern=r"^[A-Za-z0-9._=^-]+$")] = None,
    window: Literal["7d", "30d", "90d", "all"] = "30d",
    group: Literal["model", "provider"] = "model",
    set: Literal["organic", "common"] = "organic",
    min_n: Annotated[int, Query(ge=1, le=1_000_000)] = 30,
    min_days: Annotated[int, Query(ge=1, le=10_000)] = 5,
    _query: DeclaredQueryOnly = None,
) -> dict[str, Any]:
    """Entries ranked by a proper score: Brier skill score against a point-in-time base rate
    (direction), mean information coefficient (return), pinball loss (quantiles). Entries under
    ``min_n`` scores or ``min_days`` distinct days are provisional, unranked. Only eligible scores
    count: self-dealing, stale-data, late and shadow answers are scored but left out. ``digest``
    changes exactly when the board's inputs change."""
    query = BoardQuery(target, horizon, symbol, window, group, set, min_n, min_days)
    return await run_in_threadpool(outcomes_of(services).leaderboard, query)


@router.get("/models/{name}/performance", responses=ERRORS, summary="A model's realized metrics per version")
async def performance(
    name: Annotated[str, Path(min_length=1, max_length=256)],
    principal: ModelReader,
    services: ServicesDep,
    version: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
    window: Literal["7d", "30d", "90d", "all"] = "30d",
    _query: DeclaredQueryOnly = None,
) -> dict[str, Any]:
    """Per version: counts, accuracy, Brier, log loss, return errors, interval coverage and
    pinball loss, in total, per horizon and per UTC day, from the current score rows."""
    return await run_in_threadpool(outcomes_of(services).performance, name, version, window)


@router.get("/predictions/{request_id}/score", responses=ERRORS, summary="The realized score of a prediction")
async def prediction_score(
    request_id: RequestId, principal: SignedIn, services: ServicesDep
) -> dict[str, Any]:
    """A forecast id, a job id or a marketplace request id: each row's status (pending until its
    outcome exists, scored, or void), the bars used with their versions, the formula version and
    every score version. Another user's prediction is 404."""
    return await run_in_threadpool(outcomes_of(services).score_of, request_id, principal)


@router.post("/outcomes", responses=ERRORS, summary="Report realized outcomes of answers")
async def report_outcomes(
    principal: SignedIn,
    items: Annotated[list[OutcomeItem], Field(min_length=1, max_length=MAX_OUTCOMES)],
    services: ServicesDep,
) -> dict[str, Any]:
    """For models without market context: per item ``accepted``, ``duplicate`` (the same outcome
    again), ``conflict`` (a different one; the first is kept) or ``unknown``. Evaluators and admins
    for any request, a client for its own requests only."""
    if not (allows(principal.role, Permission.PREDICT) or allows(principal.role, Permission.EVALUATE)):
        raise missing_permission(principal, Permission.PREDICT, Permission.EVALUATE)
    answers = await run_in_threadpool(
        outcomes_of(services).report, [item.model_dump() for item in items], principal
    )
    counts: dict[str, int] = {}
    for answer in answers:
        counts[answer["status"]] = counts.get(answer["status"], 0) + 1
    return {"items": answers, "counts": counts}


@router.post("/admin/scoring/run", responses=ERRORS, summary="Score what has come due now")
async def run_scoring(principal: ScoringRunner, services: ServicesDep) -> dict[str, Any]:
    """One scoring pass at the clock's time (the embedded scorer and the Celery beat task run the
    same pass on their schedule): resolves and scores due answers, rescoring revised bars."""
    report = await run_in_threadpool(scorer_of(services).run)
    return {"now": services.clock.now().isoformat() if services.clock else None, **report.as_dict()}


async def _signed_in(request: Request, services: Services) -> Principal:
    principal = await authenticate(request, services_of(request))
    if principal.user_id is None:
        raise AuthenticationFailed("sign in with an API key or a bearer token")
    return principal


@router.post("/admin/scoring/rounds", responses=ERRORS, summary="Run a common round now")
async def run_common_round(principal: ScoringRunner, services: ServicesDep) -> dict[str, Any]:
    """The benchmark account asks every opted-in offer (``benchmark_opt_in``) one free question per
    symbol and horizon, all as of the data known now (the schedule runs the same round every
    ``PP_SCORING_ROUND_INTERVAL_S``, daily at 00:00 UTC). Their scores form ``set=common``. The
    same second's round run twice asks nothing new."""
    if services.marketplace is None:
        raise PredictionFailed("the marketplace is not configured on this server")
    report = await run_in_threadpool(services.marketplace.rounds.run)
    return report.as_dict()
