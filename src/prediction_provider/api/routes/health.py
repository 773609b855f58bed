"""Health for people (``/health``) and probes for orchestrators (``/health/live``, ``/ready``)."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse

from prediction_provider import __version__
from prediction_provider.api.deps import ServicesDep
from prediction_provider.api.schemas import HealthResponse, ProbeResponse

router = APIRouter(prefix="/health", tags=["health"])


@router.get("", response_model=HealthResponse, summary="Service health")
async def health(services: ServicesDep) -> HealthResponse:
    connected = await run_in_threadpool(services.registry.ping)
    return HealthResponse(
        status="healthy" if connected else "degraded",
        registry_connected=connected,
        gpu_available=services.gpu_available,
        cached_models=len(services.cache),
        cache=services.cache.stats.as_dict(),
        version=__version__,
    )


@router.get("/live", response_model=ProbeResponse, summary="Liveness probe")
async def live() -> ProbeResponse:
    return ProbeResponse(status="alive")


@router.get(
    "/ready",
    response_model=ProbeResponse,
    responses={503: {"model": ProbeResponse, "description": "Not ready"}},
    summary="Readiness probe: registry reachable and every warm model loaded",
)
async def ready(services: ServicesDep) -> JSONResponse:
    connected = await run_in_threadpool(services.registry.ping)
    cached = sorted(entry.resolved.uri for entry in services.cache.entries())
    ok = connected and not services.warm_errors
    body = ProbeResponse(
        status="ready" if ok else "not_ready",
        details={
            "registry_connected": connected,
            "warm_failures": services.warm_errors,
            "cached_models": cached,
        },
    )
    return JSONResponse(body.model_dump(), status_code=200 if ok else 503)
