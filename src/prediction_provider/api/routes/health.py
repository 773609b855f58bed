"""Health for people (``/health``) and probes for orchestrators (``/health/live``, ``/ready``).

The probes need no credentials, so what they show anyone is only model names and versions;
artifact URIs and load errors (which name files and directories) are for operators and admins.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse

from prediction_provider import __version__
from prediction_provider.accounts.roles import Permission, allows
from prediction_provider.api.auth import authenticate
from prediction_provider.api.deps import Services, ServicesDep
from prediction_provider.api.schemas import HealthResponse, ProbeResponse
from prediction_provider.errors import (
    AuthenticationFailed,
    InvalidModelReference,
    PermissionDenied,
    RateLimited,
)
from prediction_provider.serving.references import parse_model_reference

# Who sees the cache's URIs and the warm-up errors on /health/ready.
LOCATION_READERS = (Permission.READ_METRICS, Permission.READ_LOGS)
WARM_FAILURE = "failed to load; an operator sees why on /health/ready"

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
async def ready(request: Request, services: ServicesDep) -> JSONResponse:
    """Anyone may probe; an operator or admin who signs in also sees URIs and load errors."""
    connected = await run_in_threadpool(services.registry.ping)
    ok = connected and not services.warm_errors
    details: dict[str, Any] = {"registry_connected": connected}
    if await _reads_locations(request, services):
        details["warm_failures"] = services.warm_errors
        details["cached_models"] = sorted(entry.resolved.uri for entry in services.cache.entries())
    else:
        details["warm_failures"] = {_label(ref): WARM_FAILURE for ref in services.warm_errors}
        details["cached_models"] = sorted(entry.resolved.label for entry in services.cache.entries())
    body = ProbeResponse(status="ready" if ok else "not_ready", details=details)
    return JSONResponse(body.model_dump(), status_code=200 if ok else 503)


async def _reads_locations(request: Request, services: Services) -> bool:
    """True for a signed-in operator or admin. A probe sends no credentials (no I/O then), and a
    stale key on a probe must not fail it: bad credentials only get the public view."""
    if "x-api-key" not in request.headers and "authorization" not in request.headers:
        return False
    try:
        principal = await authenticate(request, services)
    except (AuthenticationFailed, PermissionDenied, RateLimited):
        return False
    return any(allows(principal.role, permission) for permission in LOCATION_READERS)


def _label(reference: str) -> str:
    try:
        return parse_model_reference(reference).label
    except InvalidModelReference:
        return "invalid model reference"
