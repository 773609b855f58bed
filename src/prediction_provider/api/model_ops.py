"""What every protocol adapter shares to put a request through model operations."""

from __future__ import annotations

from starlette.requests import Request

from prediction_provider.api.deps import Services
from prediction_provider.api.middleware import new_request_id
from prediction_provider.modelops.gateway import ModelOps


def ops_of(services: Services) -> ModelOps:
    ops = services.modelops
    assert ops is not None, "build_services builds the model operations"
    return ops


def request_id_of(request: Request) -> str:
    """The id the request envelope gave this request (X-Request-ID), else a fresh one."""
    state = request.scope.get("state") or {}
    request_id = state.get("request_id")
    return request_id if isinstance(request_id, str) else new_request_id()


def outcome_key_of(request: Request, from_body: str | None = None) -> str | None:
    key = from_body or request.headers.get("x-pp-outcome-key")
    return key[:128] if key else None
