"""``/models``: the registry's catalogue and what each model expects."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from starlette.concurrency import run_in_threadpool

from prediction_provider.api.auth import ModelReader
from prediction_provider.api.deps import ServicesDep
from prediction_provider.api.query_params import DeclaredQueryOnly, Limit, Offset
from prediction_provider.api.routes.predict import ERROR_RESPONSES
from prediction_provider.api.schemas import ModelInfo, ModelList, ModelVersionList
from prediction_provider.serving.references import NAME_PATTERN

router = APIRouter(prefix="/models", tags=["models"])

ModelName = Annotated[str, Path(pattern=NAME_PATTERN.pattern, max_length=128)]


@router.get("", response_model=ModelList, summary="Registered models with versions and run metrics")
def list_models(
    reader: ModelReader,
    services: ServicesDep,
    experiment_name: Annotated[str | None, Query(max_length=256)] = None,
    limit: Limit = 100,
    offset: Offset = 0,
    _query: DeclaredQueryOnly = None,
) -> dict[str, Any]:
    models, total = services.registry.page_models(experiment_name, limit, offset)
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
