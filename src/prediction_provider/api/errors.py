"""One error shape for every failure: ``{"error": {"code", "message", "details"}}``."""

from __future__ import annotations

import logging
import math
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from prediction_provider import errors

log = logging.getLogger(__name__)

STATUS_BY_ERROR: dict[type[errors.PredictionProviderError], int] = {
    errors.InvalidModelReference: 422,
    errors.InvalidFeatures: 422,
    errors.InvalidTensor: 400,
    errors.ModelNotFound: 404,
    errors.UntrustedModelPath: 403,
    errors.BatchTooLarge: 413,
    errors.ModelLoadFailed: 503,
    errors.RegistryUnavailable: 503,
    errors.ModelUnloaded: 503,
    errors.PredictionFailed: 500,
    errors.AuthenticationFailed: 401,
    errors.PermissionDenied: 403,
    errors.UserNotFound: 404,
    errors.Conflict: 409,
    errors.InvalidInput: 422,
    errors.RateLimited: 429,
    errors.UnknownSymbol: 404,
    errors.InvalidMarketData: 422,
    errors.FeederUnavailable: 503,
    errors.PipelineUnavailable: 503,
    errors.UnknownStrategy: 400,
    errors.TradingAccountNotFound: 404,
    errors.JobNotFound: 404,
    errors.BrokerUnavailable: 503,
    errors.DatasetNotFound: 404,
    errors.PrecomputedNotFound: 404,
    errors.InvalidDatetime: 400,
    errors.UnknownDirection: 400,
    errors.DecisionNotFound: 404,
    errors.PaymentRequired: 402,
    errors.MarketNotFound: 404,
    errors.PredictionNotFound: 404,
    errors.IdempotencyKeyMissing: 400,
    errors.ModelUnavailable: 503,
    errors.ModelTimeout: 504,
}


def headers_for(exc: errors.PredictionProviderError) -> dict[str, str] | None:
    if isinstance(exc, errors.RateLimited):
        return {"Retry-After": str(exc.retry_after)}
    if isinstance(exc, errors.ModelUnavailable) and exc.retry_after_s > 0:
        return {"Retry-After": str(max(1, math.ceil(exc.retry_after_s)))}
    if isinstance(exc, errors.AuthenticationFailed):
        return {"WWW-Authenticate": 'Bearer realm="prediction-provider", ApiKey header="X-API-KEY"'}
    return None


CODE_BY_STATUS = {
    400: "bad_request",
    401: "unauthorized",
    402: "payment_required",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "too_many_requests",
}


class MalformedJSON(StarletteHTTPException):
    code = "malformed_json"

    def __init__(self, reason: str) -> None:
        super().__init__(400, f"request body is not valid JSON: {reason}")


class PayloadTooLarge(StarletteHTTPException):
    """Raised while streaming a body past the limit; an HTTPException so FastAPI re-raises it."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body exceeds {limit} bytes")
        self.limit = limit


def error_response(
    status: int, code: str, message: str, details: Any = None, headers: dict[str, str] | None = None
) -> Response:
    body = {"error": {"code": code, "message": message, "details": details}}
    return Response(orjson.dumps(body), status_code=status, media_type="application/json", headers=headers)


def status_for(exc: errors.PredictionProviderError) -> int:
    for error_type in type(exc).__mro__:
        if error_type in STATUS_BY_ERROR:
            return STATUS_BY_ERROR[error_type]  # type: ignore[index]
    return 500


def validation_details(exc: ValidationError | RequestValidationError) -> list[dict[str, str]]:
    details = []
    for item in exc.errors():
        location = [str(part) for part in item.get("loc", ()) if part != "body"]
        details.append({"field": ".".join(location) or "body", "error": str(item.get("msg", ""))})
    return details


def is_malformed_json(exc: ValidationError | RequestValidationError) -> bool:
    return any(item.get("type") in ("json_invalid", "json_type") for item in exc.errors())


def invalid_body_response(exc: ValidationError | RequestValidationError) -> Response:
    if is_malformed_json(exc):
        return error_response(
            400, "malformed_json", "request body is not valid JSON", validation_details(exc)
        )
    return error_response(422, "validation_error", "request body is invalid", validation_details(exc))


async def dashboard_page(request: Request, status: int, code: str, message: str) -> Response | None:
    """On a dashboard page, the dashboard's own error page (``app.state.dashboard_error``), if any."""
    if not request.url.path.startswith("/dashboard"):
        return None
    hook = getattr(request.app.state, "dashboard_error", None)
    page: Response | None = await hook(request, status, code, message) if hook is not None else None
    return page


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(errors.PredictionProviderError)
    async def _service_error(request: Request, exc: errors.PredictionProviderError) -> Response:
        status = status_for(exc)
        if status >= 500:
            log.warning("%s %s failed: %s", request.method, request.url.path, exc.message)
        page = await dashboard_page(request, status, exc.code, exc.message)
        if page is not None:
            for name, value in (headers_for(exc) or {}).items():
                page.headers[name] = value
            return page
        return error_response(status, exc.code, exc.message, exc.details, headers_for(exc))

    @app.exception_handler(RequestValidationError)
    async def _request_validation(request: Request, exc: RequestValidationError) -> Response:
        page = await dashboard_page(request, 422, "validation_error", "; ".join(
            f"{item['field']}: {item['error']}" for item in validation_details(exc)
        ))  # fmt: skip
        return page or invalid_body_response(exc)

    @app.exception_handler(ValidationError)
    async def _body_validation(request: Request, exc: ValidationError) -> Response:
        return invalid_body_response(exc)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        code = getattr(exc, "code", None) or CODE_BY_STATUS.get(exc.status_code, "http_error")
        headers = dict(exc.headers) if exc.headers else None
        page = await dashboard_page(request, exc.status_code, code, str(exc.detail))
        if page is not None:
            return page
        return error_response(exc.status_code, code, str(exc.detail), None, headers)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(500, "internal_error", "internal server error")
