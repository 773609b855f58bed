"""Routes of a foreign protocol answer errors in that protocol's shape, not ours."""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Mapping
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import ValidationError
from starlette.exceptions import HTTPException
from starlette.responses import Response

from prediction_provider import errors
from prediction_provider.api.errors import headers_for, status_for

RenderError = Callable[[int, str, str], Response]
"""``(status, code, message) -> Response`` in the protocol's error shape."""


def protocol_route_class(
    render: RenderError, status_overrides: Mapping[type[errors.PredictionProviderError], int]
) -> type[APIRoute]:
    class ProtocolRoute(APIRoute):
        def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
            handler = super().get_route_handler()

            async def handle(request: Request) -> Response:
                try:
                    return await handler(request)
                except errors.PredictionProviderError as exc:
                    status = status_overrides.get(type(exc)) or status_for(exc)
                    response = render(status, exc.code, _with_fields(exc))
                    response.headers.update(headers_for(exc) or {})
                    return response
                except (RequestValidationError, ValidationError) as exc:
                    message = "; ".join(str(e.get("msg")) for e in exc.errors())
                    return render(400, "bad_request", message)
                except HTTPException as exc:
                    return render(exc.status_code, "http_error", str(exc.detail))

            return handle

    return ProtocolRoute


def _with_fields(exc: errors.PredictionProviderError) -> str:
    """Protocols have one message string: name the offending fields in it."""
    details = exc.details if isinstance(exc.details, Mapping) else {}
    problems = details.get("errors") or []
    named = [f"{p['field']}: {p['error']}" for p in problems if isinstance(p, Mapping) and "field" in p]
    return f"{exc.message} ({'; '.join(named)})" if named else exc.message
