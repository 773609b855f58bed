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
    def translate_error(exc: Exception) -> Response | None:
        """The protocol's answer to ``exc``; None for errors it leaves to the app's handlers."""
        if isinstance(exc, errors.PredictionProviderError):
            status = status_overrides.get(type(exc)) or status_for(exc)
            response = render(status, exc.code, _with_fields(exc))
            response.headers.update(headers_for(exc) or {})
            return response
        if isinstance(exc, RequestValidationError | ValidationError):
            message = "; ".join(str(e.get("msg")) for e in exc.errors())
            return render(400, "bad_request", message)
        if isinstance(exc, HTTPException):
            return render(exc.status_code, "http_error", str(exc.detail))
        return None

    class ProtocolRoute(APIRoute):
        # Also read by ``HotRoutes``, which calls the endpoint without this class's handler.
        error_translator: Callable[[Exception], Response | None] = staticmethod(translate_error)

        def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
            handler = super().get_route_handler()

            async def handle(request: Request) -> Response:
                try:
                    return await handler(request)
                except Exception as exc:
                    response = translate_error(exc)
                    if response is None:
                        raise
                    return response

            return handle

    return ProtocolRoute


def _with_fields(exc: errors.PredictionProviderError) -> str:
    """Protocols have one message string: name the offending fields in it."""
    details = exc.details if isinstance(exc.details, Mapping) else {}
    problems = details.get("errors") or []
    named = [f"{p['field']}: {p['error']}" for p in problems if isinstance(p, Mapping) and "field" in p]
    return f"{exc.message} ({'; '.join(named)})" if named else exc.message
