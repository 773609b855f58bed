"""Who is calling, and may they: authentication and permission dependencies.

Credentials: ``X-API-KEY`` or ``Authorization: Bearer <JWT>``; an API key is
also accepted as a bearer token (``Bearer pp_...``), for clients such as
Prometheus that can only send a static bearer credential. Anonymous calls
are served as ``guest`` only when ``PP_REQUIRE_AUTH`` is false, and a key that
is sent is validated all the same. Every authenticated call counts against the
caller's rate limit.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import Depends, Request
from starlette.concurrency import run_in_threadpool

from prediction_provider.accounts.credentials import API_KEY_PREFIX
from prediction_provider.accounts.principal import Principal
from prediction_provider.accounts.roles import Permission, allows
from prediction_provider.api.deps import Services, services_of
from prediction_provider.errors import AuthenticationFailed, PermissionDenied


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def caller_key(principal: Principal, address: str) -> str:
    """Limits apply per user, or per address for anonymous callers."""
    return f"user:{principal.user_id}" if principal.user_id is not None else f"ip:{address}"


async def authenticate(request: Request, services: Services) -> Principal:
    principal: Principal | None = getattr(request.state, "principal", None)
    if principal is None:
        principal = await principal_from_credentials(
            services, request.headers.get("x-api-key"), request.headers.get("authorization"),
            client_address(request),
        )  # fmt: skip
        request.state.principal = principal
    return principal


async def principal_from_credentials(
    services: Services, api_key: str | None, authorization: str | None, address: str
) -> Principal:
    """The caller behind a key or bearer token (any transport), counted against its rate limit."""
    principal: Principal | None
    if api_key:
        principal = await principal_for_key(services, api_key)
    elif authorization:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AuthenticationFailed("use Authorization: Bearer <token>")
        token = token.strip()
        if token.startswith(API_KEY_PREFIX):  # JWTs start with "eyJ", never with the key prefix
            principal = await principal_for_key(services, token)
        else:
            principal = await run_in_threadpool(services.accounts.principal_for_token, token)
    elif not services.settings.require_auth:
        principal = Principal.guest()
    else:
        raise AuthenticationFailed("send an API key in X-API-KEY or a bearer token")
    services.throttle.request(caller_key(principal, address))
    return principal


async def principal_for_key(services: Services, api_key: str) -> Principal:
    """From the cache without I/O when it can; otherwise the database, off the event loop."""
    principal = services.accounts.cached_principal_for_key(api_key)
    if principal is None:
        principal = await run_in_threadpool(services.accounts.principal_for_key, api_key)
    return principal


def require_permission(principal: Principal, permission: Permission) -> Principal:
    # Anonymous callers exist only with PP_REQUIRE_AUTH=false, which opens predictions to them.
    anonymous_prediction = principal.via == "anonymous" and permission is Permission.PREDICT
    if not (anonymous_prediction or allows(principal.role, permission)):
        raise missing_permission(principal, permission)
    return principal


def missing_permission(principal: Principal, *permissions: Permission) -> PermissionDenied:
    """A 403 naming what the route requires and the caller's role, in the message and the details."""
    names = " or ".join(f"`{p.value}`" for p in permissions)
    noun = "permission" if len(permissions) == 1 else "permissions"
    return PermissionDenied(
        f"this route requires the {names} {noun}, which the {principal.role} role lacks",
        {"required_permissions": [p.value for p in permissions], "role": str(principal.role)},
    )


async def authorize(request: Request, permission: Permission) -> Principal:
    return require_permission(await authenticate(request, services_of(request)), permission)


def holding(permission: Permission) -> Callable[[Request], Awaitable[Principal]]:
    """A dependency: the caller, who must hold ``permission``."""

    async def dependency(request: Request) -> Principal:
        return await authorize(request, permission)

    return dependency


Predictor = Annotated[Principal, Depends(holding(Permission.PREDICT))]
ModelReader = Annotated[Principal, Depends(holding(Permission.READ_MODELS))]
ModelManager = Annotated[Principal, Depends(holding(Permission.MANAGE_MODELS))]
UserManager = Annotated[Principal, Depends(holding(Permission.MANAGE_USERS))]
LogReader = Annotated[Principal, Depends(holding(Permission.READ_LOGS))]
UsageReader = Annotated[Principal, Depends(holding(Permission.READ_USAGE))]
MetricsReader = Annotated[Principal, Depends(holding(Permission.READ_METRICS))]
TradingAccountManager = Annotated[Principal, Depends(holding(Permission.MANAGE_TRADING_ACCOUNTS))]
SignalNoiseTuner = Annotated[Principal, Depends(holding(Permission.TUNE_SIGNAL_NOISE))]
ModelOperator = Annotated[Principal, Depends(holding(Permission.OPERATE_MODELS))]
RecordReader = Annotated[Principal, Depends(holding(Permission.READ_RECORDS))]
FaultInjector = Annotated[Principal, Depends(holding(Permission.INJECT_FAULTS))]


async def signed_in(request: Request) -> Principal:
    """Any account holder (not an anonymous guest)."""
    principal = await authenticate(request, services_of(request))
    if principal.user_id is None:
        raise AuthenticationFailed("sign in with an API key or a bearer token")
    return principal


CurrentUser = Annotated[Principal, Depends(signed_in)]


@asynccontextmanager
async def prediction_slot(request: Request) -> AsyncIterator[Principal]:
    """A caller allowed to predict, holding one of its in-flight prediction slots."""
    principal = await authorize(request, Permission.PREDICT)
    with services_of(request).throttle.in_flight(caller_key(principal, client_address(request))):
        yield principal
