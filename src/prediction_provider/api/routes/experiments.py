"""Experiments (A/B, shadow, canary), their results on realized outcomes, a rollout pass on demand,
and setting a model alias by hand. Operators and admins.

Parse, authorize, call ``services.experiments`` / ``services.rollouts``, shape the answer; every
change is audited (the request envelope's audit row, and an ``experiment_transitions`` row with
who, from, to and why)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Path, Query
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from prediction_provider.api.auth import ModelOperator
from prediction_provider.api.deps import Services, ServicesDep
from prediction_provider.api.query_params import DeclaredQueryOnly, Limit, Offset
from prediction_provider.api.schemas import ErrorBody
from prediction_provider.errors import ModelNotFound, PredictionFailed
from prediction_provider.modelops.experiment_config import (
    NAME,
    STATES,
    ExperimentCreate,
    ExperimentPatch,
    TransitionIn,
)
from prediction_provider.modelops.experiments import Experiments

router = APIRouter(tags=["experiments"])
ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": description}
    for status, description in (
        (401, "Not signed in"),
        (403, "Operators and admins only"),
        (404, "Unknown experiment or model"),
        (409, "State does not allow it, the name is taken, or the model already has a running experiment"),
        (422, "Invalid experiment, or targets that do not exist or do not agree"),
    )
}
ExperimentName = Annotated[str, Path(pattern=NAME)]
Action = Literal["start", "pause", "resume", "stop", "promote", "rollback"]


def experiments_of(services: Services) -> Experiments:
    if services.experiments is None:
        raise PredictionFailed("experiments are not available in this process")
    return services.experiments


@router.post(
    "/api/v1/experiments", status_code=201, responses=ERRORS, summary="Create an experiment (a draft)"
)
async def create_experiment(
    principal: ModelOperator, services: ServicesDep, body: Annotated[ExperimentCreate, Body()]
) -> dict[str, Any]:
    """Variants split the model's default traffic (bare name or ``@champion``) by weight, sticky
    per unit; ``shadow`` copies rows to a target after the answer; ``rollout`` steps a canary.
    Targets are checked to exist and to agree on classes and features (422)."""
    return await run_in_threadpool(experiments_of(services).create, body, principal.username)


@router.get("/api/v1/experiments", responses=ERRORS, summary="Experiments, newest first")
async def list_experiments(
    principal: ModelOperator,
    services: ServicesDep,
    model: Annotated[str | None, Query(max_length=256)] = None,
    state: Annotated[Literal[STATES] | None, Query()] = None,  # type: ignore[valid-type]
    limit: Limit = 50,
    offset: Offset = 0,
    _query: DeclaredQueryOnly = None,
) -> dict[str, Any]:
    return await run_in_threadpool(experiments_of(services).list, model, state, limit, offset)


@router.get("/api/v1/experiments/{name}", responses=ERRORS, summary="An experiment")
async def get_experiment(
    name: ExperimentName, principal: ModelOperator, services: ServicesDep
) -> dict[str, Any]:
    """Config, versions resolved at start, state, current weights, counts per variant and the last
    20 transitions with their reasons."""
    return await run_in_threadpool(experiments_of(services).get, name)


@router.patch(
    "/api/v1/experiments/{name}", responses=ERRORS, summary="Change weights or the shadow's percent"
)
async def patch_experiment(
    name: ExperimentName,
    principal: ModelOperator,
    services: ServicesDep,
    body: Annotated[ExperimentPatch, Body()],
) -> dict[str, Any]:
    """Weights move only units between the control and a candidate (monotone ramps). A rollout's
    weights belong to its controller (409)."""
    return await run_in_threadpool(experiments_of(services).patch, name, body, principal.username)


@router.delete(
    "/api/v1/experiments/{name}",
    status_code=204,
    responses=ERRORS,
    summary="Delete a draft or ended experiment",
)
async def delete_experiment(
    name: ExperimentName, principal: ModelOperator, services: ServicesDep
) -> Response:
    await run_in_threadpool(experiments_of(services).delete, name, principal.username)
    return Response(status_code=204)


@router.post(
    "/api/v1/experiments/{name}/{action}",
    responses=ERRORS,
    summary="Start, pause, resume, stop, promote or roll back",
)
async def change_experiment(
    name: ExperimentName,
    action: Action,
    principal: ModelOperator,
    services: ServicesDep,
    body: Annotated[TransitionIn | None, Body()] = None,
) -> dict[str, Any]:
    """``promote`` moves the ``champion`` alias (or the rollout's ``on_promote.alias``) to the
    candidate's version and keeps the old one as ``previous-champion``; ``rollback`` sends all
    traffic back to the control and leaves aliases alone. Live in every worker within a second."""
    reason = body.reason if body is not None else None
    experiments = experiments_of(services)
    if action == "start":
        return await run_in_threadpool(experiments.start, name, principal.username, reason)
    return await run_in_threadpool(experiments.change_state, name, action, principal.username, reason)


@router.get(
    "/api/v1/experiments/{name}/results", responses=ERRORS, summary="Per-variant results on realized outcomes"
)
async def experiment_results(
    name: ExperimentName, principal: ModelOperator, services: ServicesDep, _query: DeclaredQueryOnly = None
) -> dict[str, Any]:
    """Requests, errors, fallbacks, latency percentiles, outcomes, accuracy, log loss, Brier and
    realized return per variant; paired tests on shadow pairs (McNemar, Diebold-Mariano) and
    unpaired tests between arms (bootstrap clustered by unit), each final only past its minimum
    sample. Forced requests are left out."""
    from prediction_provider.modelops.results import experiment_results as compute

    experiments = experiments_of(services)

    def work() -> dict[str, Any]:
        if services.experiment_records is not None:
            services.experiment_records.flush()
        with services.db.session() as session:
            row = experiments.row(session, name)
            return {"experiment": name, "state": row.state, **compute(session, row)}

    return await run_in_threadpool(work)


@router.post("/api/v1/admin/rollouts/run", responses=ERRORS, summary="Run a rollout controller pass now")
async def run_rollouts(principal: ModelOperator, services: ServicesDep) -> dict[str, Any]:
    """Every running canary whose interval has passed (by the server's clock) is evaluated and
    stepped, promoted or rolled back now; fast aborts apply at once. The controller runs the same
    pass every ``PP_ROLLOUT_INTERVAL_S`` in one leader process."""
    if services.rollouts is None:
        raise PredictionFailed("the rollout controller is not available in this process")
    report = await run_in_threadpool(services.rollouts.run)
    return report.as_dict()


class AliasIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: str = Field(pattern=r"^[0-9]{1,9}$")


@router.put("/models/{name}/aliases/{alias}", responses=ERRORS, summary="Point a model alias at a version")
async def set_alias(
    name: Annotated[str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,255}$")],
    alias: Annotated[str, Path(pattern=r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")],
    principal: ModelOperator,
    services: ServicesDep,
    body: Annotated[AliasIn, Body()],
) -> dict[str, Any]:
    """Manual promotion or a restore (audited). The alias is re-resolved in this process at once,
    in others within the model-reference refresh."""

    def work() -> dict[str, Any]:
        client = services.registry.client
        try:
            registered = client.get_registered_model(name)
            client.get_model_version(name, body.version)
        except Exception as exc:
            raise ModelNotFound(f"no version {body.version} of model {name!r}", {"model": name}) from exc
        previous = (registered.aliases or {}).get(alias)
        client.set_registered_model_alias(name, alias, body.version)
        services.cache.forget_references(name)
        return {
            "model": name,
            "alias": alias,
            "version": body.version,
            "previous": str(previous) if previous is not None else None,
        }

    return await run_in_threadpool(work)
