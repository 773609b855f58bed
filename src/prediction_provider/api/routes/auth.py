"""``/api/v1/auth``: tokens and API keys from a username and password.

Only failed password checks are counted (see ``Throttle.login_attempt``): an account that is
inactive has had its password verified, so it is refused (403) without counting as a guess.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from prediction_provider.api.account_schemas import ApiKeyPublic, Credentials, TokenPublic
from prediction_provider.api.auth import CurrentUser, client_address
from prediction_provider.api.deps import ServicesDep
from prediction_provider.api.routes.predict import ERROR_RESPONSES

router = APIRouter(prefix="/api/v1/auth", tags=["auth"], responses=ERROR_RESPONSES)


@router.post("/login", response_model=TokenPublic, summary="A JWT for the bearer scheme")
async def login(body: Credentials, request: Request, services: ServicesDep) -> dict[str, Any]:
    with services.throttle.login_attempt(body.username, client_address(request)):
        return await run_in_threadpool(services.accounts.login, body.username, body.password)


@router.post(
    "/api-key",
    response_model=ApiKeyPublic,
    status_code=201,
    summary="A new API key from username and password; an older key is revoked (`replaced`)",
)
async def first_api_key(body: Credentials, request: Request, services: ServicesDep) -> dict[str, Any]:
    with services.throttle.login_attempt(body.username, client_address(request)):
        return await run_in_threadpool(services.accounts.api_key_from_password, body.username, body.password)


@router.post(
    "/regenerate-key", response_model=ApiKeyPublic, summary="A new API key; the old one stops working"
)
async def regenerate_key(user: CurrentUser, services: ServicesDep) -> dict[str, Any]:
    assert user.user_id is not None
    return await run_in_threadpool(services.accounts.regenerate_api_key, user.user_id)
