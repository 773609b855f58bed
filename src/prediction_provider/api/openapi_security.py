"""What the OpenAPI schema says about credentials, so ``/docs`` can authorize and try routes.

The schema declares the two schemes the server accepts (``X-API-KEY``, and a
bearer token: a JWT from ``auth/login`` or an API key) and gives every
operation its own ``security`` list: both schemes for a protected route, an
empty list for the few public ones named here.

Why the schema is finished here rather than derived by FastAPI from security
dependencies: FastAPI would solve those dependencies on every request (about
20 µs more per request on a 2-core machine, for values the permission
dependencies read from the headers anyway), and the prediction routes, which
``HotRoutes`` calls past FastAPI's dependency solver and which authorize in
their bodies, would need marking by hand all the same. Protected is the
default: a new route is documented as needing credentials unless it is named
in ``PUBLIC_OPERATIONS``, and a test calls every operation without credentials
to check that the schema tells the truth.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI

API_KEY_SCHEME = "ApiKey"
BEARER_SCHEME = "Bearer"
SECURITY_SCHEMES: dict[str, dict[str, Any]] = {
    API_KEY_SCHEME: {
        "type": "apiKey",
        "in": "header",
        "name": "X-API-KEY",
        "description": "An account's API key (`pp_...`), from `POST /api/v1/auth/api-key` or an admin.",
    },
    BEARER_SCHEME: {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": (
            "`Authorization: Bearer <token>`: a JWT from `POST /api/v1/auth/login`, "
            "or an API key (`pp_...`) for clients that can only send a bearer token."
        ),
    },
}
# Either scheme alone is enough: one requirement object per scheme.
CREDENTIALS: list[dict[str, list[str]]] = [{API_KEY_SCHEME: []}, {BEARER_SCHEME: []}]
# Answered without credentials (paths as the schema spells them, without a trailing slash).
PUBLIC_OPERATIONS: frozenset[tuple[str, str]] = frozenset(
    {
        ("get", "/"),
        ("get", "/health"),
        ("get", "/health/live"),
        ("get", "/health/ready"),
        ("get", "/v2"),
        ("get", "/v2/health/live"),
        ("get", "/v2/health/ready"),
        ("get", "/ping"),
        ("get", "/version"),
        # The password in the body is the credential.
        ("post", "/api/v1/auth/login"),
        ("post", "/api/v1/auth/api-key"),
    }
)
HTTP_METHODS = frozenset({"get", "put", "post", "delete", "options", "head", "patch", "trace"})


def document_credentials(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` with the security schemes declared and each operation's requirement set.

    An operation that already states its ``security`` (through ``openapi_extra``) keeps it.
    """
    components = schema.setdefault("components", {})
    components.setdefault("securitySchemes", {}).update(SECURITY_SCHEMES)
    for path, item in schema.get("paths", {}).items():
        public_path = path.rstrip("/") or "/"
        for method, operation in item.items():
            if method not in HTTP_METHODS or "security" in operation:
                continue
            public = (method, public_path) in PUBLIC_OPERATIONS
            operation["security"] = [] if public else [dict(entry) for entry in CREDENTIALS]
    return schema


def install_security_docs(app: FastAPI) -> None:
    """Finish ``app``'s schema with :func:`document_credentials`, once, when it is first built."""
    build: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        cached = app.openapi_schema is not None
        schema = build()
        return schema if cached else document_credentials(schema)

    app.openapi = openapi  # type: ignore[method-assign]
