"""``GET /``: what answers here, and where to go next (public, like the probes)."""

from __future__ import annotations

from fastapi import APIRouter

from prediction_provider import __version__
from prediction_provider.api.service_schemas import ServiceInfo, ServiceLinks

NAME = "Prediction Provider"

router = APIRouter(tags=["health"])

ROOT = ServiceInfo(
    name=NAME,
    message=f"{NAME} API",
    version=__version__,
    docs="/docs",
    health="/health",
    links=ServiceLinks(
        openapi="/openapi.json",
        redoc="/redoc",
        health="/health",
        ready="/health/ready",
        models="/models",
        plugins="/api/v1/plugins",
        metrics="/metrics",
        open_inference="/v2",
    ),
)


@router.get("/", response_model=ServiceInfo, summary="The server's name and version, and links to its docs")
async def root() -> ServiceInfo:
    return ROOT
