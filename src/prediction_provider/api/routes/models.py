"""``/models``: the registry's catalogue and what each model expects."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query
from pydantic import Field
from starlette.concurrency import run_in_threadpool

from prediction_provider.api.auth import ModelReader
from prediction_provider.api.deps import ServicesDep
from prediction_provider.api.query_params import DeclaredQueryOnly, Limit, Offset
from prediction_provider.api.routes.predict import ERROR_RESPONSES
from prediction_provider.api.schemas import ModelInfo, ModelList, ModelVersionList, RegisteredModelPublic
from prediction_provider.serving.references import NAME_PATTERN

router = APIRouter(prefix="/models", tags=["models"])

ModelName = Annotated[str, Path(pattern=NAME_PATTERN.pattern, max_length=128)]


class CatalogueEntry(RegisteredModelPublic):
    type: Literal["model", "ensemble"] = Field(
        default="model", description="Ensembles are served by name too."
    )
    method: str | None = Field(default=None, description="Ensembles: how the members combine.")
    members: list[str] | None = Field(default=None, description="Ensembles: the members' targets.")


class Catalogue(ModelList):
    models: list[CatalogueEntry]  # type: ignore[assignment]


@router.get(
    "", response_model=Catalogue, summary="Registered models with versions and run metrics, then ensembles"
)
def list_models(
    reader: ModelReader,
    services: ServicesDep,
    experiment_name: Annotated[str | None, Query(max_length=256)] = None,
    limit: Limit = 100,
    offset: Offset = 0,
    _query: DeclaredQueryOnly = None,
) -> dict[str, Any]:
    """Registered models by name (``type: "model"``), then ensembles by name (``type:
    "ensemble"``; none under an ``experiment_name`` filter)."""
    registered, registered_total = services.registry.page_models(experiment_name, limit, offset)
    models: list[dict[str, Any]] = [{**entry, "type": "model"} for entry in registered]
    store = getattr(services, "ensembles", None)
    ensembles = store.catalogue() if store is not None and not experiment_name else []
    if len(models) < limit:
        start = max(0, offset - registered_total)
        models += ensembles[start : start + limit - len(models)]
    total = registered_total + len(ensembles)
    return {"models": models, "count": len(models), "total": total, "limit": limit, "offset": offset}


@router.get(
    "/{name}/versions", response_model=ModelVersionList, responses=ERROR_RESPONSES, summary="Versions"
)
def list_versions(
    name: ModelName,
    reader: ModelReader,
    services: ServicesDep,
    limit: Limit = 100,
    offset: Offset = 0,
    _query: DeclaredQueryOnly = None,
) -> dict[str, Any]:
    """Newest first."""
    versions = services.registry.versions(name)
    page = versions[offset : offset + limit]
    return {"name": name, "versions": page, "count": len(page), "total": len(versions), "limit": limit,
            "offset": offset}  # fmt: skip


@router.get(
    "/{name}/info",
    response_model=ModelInfo,
    responses=ERROR_RESPONSES,
    summary="Signature, metrics and aliases of a version (default: champion, else latest)",
)
async def model_info(
    name: ModelName,
    reader: ModelReader,
    services: ServicesDep,
    version: Annotated[str | None, Query(pattern=r"^\d{1,9}$")] = None,
    _query: DeclaredQueryOnly = None,
) -> dict[str, Any]:
    reference = f"models:/{name}/{version}" if version else name
    cached = await services.cache.aget(reference)
    versions = await run_in_threadpool(services.registry.versions, name)
    described = next((v for v in versions if v["version"] == cached.resolved.version), {})
    return {
        "name": cached.resolved.name,
        "version": cached.resolved.version,
        "uri": cached.resolved.uri,
        "framework": cached.model.framework,
        "loader": cached.loader,
        "aliases": described.get("aliases", []),
        "signature": cached.model.signature.as_dict(),
        "metrics": described.get("metrics", {}),
        "params": described.get("params", {}),
        "tags": described.get("tags", {}),
        "loaded_at": cached.loaded_at.isoformat(),
        "load_seconds": round(cached.load_seconds, 4),
    }
