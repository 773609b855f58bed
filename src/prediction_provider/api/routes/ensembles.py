"""Ensembles (design §3.8): create, list, read and delete named combinations of model versions.

Creating and deleting need an operator or admin; reading, anyone who may read models. Parse,
authorize, call ``services.ensembles``, shape the answer. Every change is audited by the request
envelope's audit row, and the stored row keeps who created it; a change is live in every worker
within a second (the ops stamp) and in this one before it answers. An ensemble is served by name
on every protocol and listed in ``GET /models`` with ``type: "ensemble"``."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Path
from fastapi.responses import Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from prediction_provider.api.auth import ModelOperator, ModelReader
from prediction_provider.api.deps import Services, ServicesDep
from prediction_provider.api.query_params import DeclaredQueryOnly, Limit, Offset
from prediction_provider.api.schemas import ErrorBody
from prediction_provider.errors import PredictionFailed
from prediction_provider.modelops.ensembles import EnsembleCreate, Ensembles
from prediction_provider.serving.references import NAME_PATTERN

router = APIRouter(prefix="/api/v1/ensembles", tags=["ensembles"])
ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": description}
    for status, description in (
        (401, "Not signed in"),
        (403, "Operators and admins only (reading: anyone who may read models)"),
        (404, "No such ensemble"),
        (409, "The name is taken by an ensemble or a registered model"),
        (
            422,
            "Invalid ensemble: unknown members, members whose classes or task differ, a method that does "
            "not fit them, or a meta model whose features are not the members' columns",
        ),
    )
}
EnsembleName = Annotated[str, Path(pattern=NAME_PATTERN.pattern, max_length=128)]


class EnsembleList(BaseModel):
    items: list[dict[str, Any]] = Field(
        description="Ensembles by name, each as GET /api/v1/ensembles/{name}."
    )
    count: int = Field(description="Ensembles on this page.")
    total: int = Field(description="Ensembles in all.")
    limit: int
    offset: int


def ensembles_of(services: Services) -> Ensembles:
    ensembles: Ensembles | None = getattr(services, "ensembles", None)
    if ensembles is None:
        raise PredictionFailed("ensembles are not available in this process")
    return ensembles


@router.post("", status_code=201, responses=ERRORS, summary="Create an ensemble")
async def create_ensemble(
    principal: ModelOperator, services: ServicesDep, body: Annotated[EnsembleCreate, Body()]
) -> dict[str, Any]:
    """Members are loaded and checked: identical class labels (aligned by name; each member's
    probability columns are reordered to the first member's class order), a method that fits
    the task (``mean_proba``, ``weighted_mean_proba``, ``geometric_mean``, ``majority_vote``,
    ``stacking`` for classifiers; ``mean``, ``weighted_mean``, ``median`` for regressors), and for
    stacking a meta model whose features are exactly ``<member>__<class>`` in declared order
    (then the ensemble's features with ``passthrough``). The ensemble reads the union of the
    members' features (the first member's order, then new names as they appear); each member
    gets its own columns."""
    ensembles = ensembles_of(services)

    def work() -> dict[str, Any]:
        created = ensembles.create(body, principal.username)
        ensembles.refresh(services.ops_stamp)
        return ensembles.get(created["name"])

    return await run_in_threadpool(work)


@router.get("", response_model=EnsembleList, responses=ERRORS, summary="Ensembles, by name")
async def list_ensembles(
    principal: ModelReader,
    services: ServicesDep,
    limit: Limit = 50,
    offset: Offset = 0,
    _query: DeclaredQueryOnly = None,
) -> dict[str, Any]:
    return await run_in_threadpool(ensembles_of(services).page, limit, offset)


@router.get("/{name}", responses=ERRORS, summary="An ensemble")
async def get_ensemble(
    name: EnsembleName, principal: ModelReader, services: ServicesDep, _query: DeclaredQueryOnly = None
) -> dict[str, Any]:
    """The stored config, its version (a hash of the config), the signature it answers on and,
    per member, this process's breaker state."""
    return await run_in_threadpool(ensembles_of(services).get, name)


@router.delete("/{name}", status_code=204, responses=ERRORS, summary="Delete an ensemble")
async def delete_ensemble(name: EnsembleName, principal: ModelOperator, services: ServicesDep) -> Response:
    ensembles = ensembles_of(services)

    def work() -> None:
        ensembles.delete(name)
        ensembles.refresh(services.ops_stamp)

    await run_in_threadpool(work)
    return Response(status_code=204)
