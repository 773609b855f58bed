"""Request envelope: a request id, the audit trail entry, and security headers on every response."""

from __future__ import annotations

import itertools
import re
import time
import uuid
from typing import Any

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from prediction_provider.db.base import utcnow
from prediction_provider.observability.audit import AuditWriter
from prediction_provider.observability.metrics import HttpMetrics

# Request ids: a random per-process prefix and a counter, unique without a syscall per request
# (uuid4 read /dev/urandom every time, ~30 µs on this machine).
_ID_PREFIX = uuid.uuid4().hex[:12]
_ID_COUNTER = itertools.count(1)


def new_request_id() -> str:
    return f"{_ID_PREFIX}{next(_ID_COUNTER):012x}"


REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{8,64}$")
DOCS_PATHS = ("/docs", "/redoc")
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Strict-Transport-Security": "max-age=63072000; includeSubDomains",
    "Cache-Control": "no-store",
}
API_CSP = "default-src 'none'; frame-ancestors 'none'"
# The interactive docs load Swagger UI and ReDoc from the server itself (api/docs.py), nothing
# from outside. Inline: each page's start-up script and the styles both UIs set; ReDoc runs its
# search index in a worker made from a blob, and Swagger UI's icons are data: images.
DOCS_CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; worker-src 'self' blob:; frame-ancestors 'none'"
)


# The web dashboard: everything from the server itself, no inline script or style (dashboard/).
DASHBOARD_PATH = "/dashboard"
DASHBOARD_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; font-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
# Live streams stay open for minutes: their duration is not a request latency.
STREAM_PATH = "/dashboard/stream"


def csp_for(path: str) -> str:
    if path.startswith(DOCS_PATHS):
        return DOCS_CSP
    if path == DASHBOARD_PATH or path.startswith(DASHBOARD_PATH + "/"):
        return DASHBOARD_CSP
    return API_CSP


class RequestEnvelope:
    """Outermost middleware: nothing inside can skip the audit entry, the headers or the metrics."""

    def __init__(self, app: ASGIApp, metrics: HttpMetrics | None = None) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = self._request_id(scope)
        state: dict[str, Any] = scope.setdefault("state", {})
        state["request_id"] = request_id
        status = 500
        path: str = scope["path"]
        csp = csp_for(path)

        async def send_with_headers(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = MutableHeaders(scope=message)
                headers["X-Request-ID"] = request_id
                headers["Content-Security-Policy"] = csp
                for name, value in SECURITY_HEADERS.items():
                    headers.setdefault(name, value)
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        finally:
            audit = self._audit(scope)
            if audit is not None:
                audit.record(self._entry(scope, state, request_id, status, started))
            if self.metrics is not None and not path.startswith(STREAM_PATH):
                self.metrics.observe(scope, status, time.perf_counter() - started)

    @staticmethod
    def _audit(scope: Scope) -> AuditWriter | None:
        """The app's writer; absent only before the lifespan has built the services."""
        services = getattr(scope["app"].state, "services", None)
        return services.audit if services is not None else None

    @staticmethod
    def _request_id(scope: Scope) -> str:
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                candidate = str(value.decode("latin-1"))
                if REQUEST_ID.match(candidate):
                    return candidate
        return new_request_id()

    @staticmethod
    def _entry(
        scope: Scope, state: dict[str, Any], request_id: str, status: int, started: float
    ) -> dict[str, Any]:
        principal = state.get("principal")
        client = scope.get("client")
        return {
            "at": utcnow(),
            "request_id": request_id,
            "user_id": getattr(principal, "user_id", None),
            "username": getattr(principal, "username", None),
            "role": str(principal.role) if principal is not None else None,
            "method": scope["method"][:8],
            "path": scope["path"][:512],
            "status": status,
            "latency_ms": round((time.perf_counter() - started) * 1000, 3),
            "client_address": client[0][:64] if client else None,
        }
