"""``/api/v1/plugins``: the installed plugins by kind, and whether the configured ones load.

Callers need ``read_models`` (every role; anonymous callers too with
``PP_REQUIRE_AUTH=false``, as the seed project's flexible authentication
served them). Why a plugin does not load may name files and settings, so the
message is shown to operators and admins only; everyone sees its code.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from prediction_provider.accounts.roles import allows
from prediction_provider.api.auth import ModelReader
from prediction_provider.api.deps import ServicesDep
from prediction_provider.api.routes.health import LOCATION_READERS
from prediction_provider.api.routes.signals import predictor_slot
from prediction_provider.api.schemas import ErrorBody
from prediction_provider.api.service_schemas import PluginCatalogPublic, PluginStatusPublic
from prediction_provider.plugins import plugin_catalog, plugin_status

ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "No valid credentials"},
    403: {"model": ErrorBody, "description": "The caller may not read models"},
}

router = APIRouter(prefix="/api/v1/plugins", tags=["plugins"], responses=ERRORS)


@router.get("", response_model=PluginCatalogPublic, summary="Installed plugins of every kind")
async def installed_plugins(_: ModelReader) -> dict[str, list[str]]:
    return plugin_catalog().payload()


@router.get(
    "/status",
    response_model=PluginStatusPublic,
    summary="The configured feeder, signal predictor, pipeline and job executor: do they load?",
)
async def configured_plugins(
    principal: ModelReader, request: Request, services: ServicesDep
) -> dict[str, Any]:
    settings = services.settings
    backend = services.jobs.backend if services.jobs is not None else settings.job_backend
    status = await run_in_threadpool(plugin_status, settings, backend, predictor_slot(request).get)
    with_reasons = any(allows(principal.role, permission) for permission in LOCATION_READERS)
    return status.payload(with_reasons)
