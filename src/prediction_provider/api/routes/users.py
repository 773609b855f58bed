"""``/api/v1/users``: a signed-in user's own profile and password."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from prediction_provider.api.account_schemas import PasswordChange, ProfileUpdate, UserPublic
from prediction_provider.api.auth import CurrentUser
from prediction_provider.api.deps import ServicesDep
from prediction_provider.api.routes.predict import ERROR_RESPONSES

router = APIRouter(prefix="/api/v1/users", tags=["users"], responses=ERROR_RESPONSES)


@router.get("/profile", response_model=UserPublic, summary="My profile")
async def profile(user: CurrentUser, services: ServicesDep) -> dict[str, Any]:
    return await run_in_threadpool(services.accounts.get, None, user.user_id)


@router.put("/profile", response_model=UserPublic, summary="Edit my e-mail and name")
async def update_profile(body: ProfileUpdate, user: CurrentUser, services: ServicesDep) -> dict[str, Any]:
    assert user.user_id is not None
    return await run_in_threadpool(services.accounts.update_profile, user.user_id, body.email, body.full_name)


@router.post("/password", status_code=204, summary="Change my password")
async def change_password(body: PasswordChange, user: CurrentUser, services: ServicesDep) -> Response:
    assert user.user_id is not None
    await run_in_threadpool(
        services.accounts.change_password, user.user_id, body.current_password, body.new_password
    )
    return Response(status_code=204)
