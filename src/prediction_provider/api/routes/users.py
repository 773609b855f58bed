"""``/api/v1/users``: a signed-in user's own profile and password.

The password is changed with ``POST /password`` (``current_password``, 204) or, as
the seed project's clients do, ``PUT /password`` (``old_password``, 200 and a message).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from prediction_provider.api.account_schemas import (
    Message,
    PasswordChange,
    ProfileUpdate,
    SeedPasswordChange,
    UserPublic,
)
from prediction_provider.api.auth import CurrentUser
from prediction_provider.api.deps import ServicesDep
from prediction_provider.api.routes.predict import ERROR_RESPONSES
from prediction_provider.api.schemas import ErrorBody
from prediction_provider.errors import RoleChangeForbidden

router = APIRouter(prefix="/api/v1/users", tags=["users"], responses=ERROR_RESPONSES)


async def own_profile_edit(user: CurrentUser, body: ProfileUpdate) -> ProfileUpdate:
    """The edit, refused (403) when it names a role: only an admin changes roles. The caller is
    authenticated first, so a request without credentials is a 401 whatever its body."""
    if "role" in body.model_fields_set:
        raise RoleChangeForbidden(
            "a user cannot change its own role; an admin does, with PUT /api/v1/admin/users/{user_id}",
            {"field": "role", "role": str(user.role)},
        )
    return body


OwnProfileEdit = Annotated[ProfileUpdate, Depends(own_profile_edit)]


@router.get("/profile", response_model=UserPublic, summary="My profile")
async def profile(user: CurrentUser, services: ServicesDep) -> dict[str, Any]:
    return await run_in_threadpool(services.accounts.get, None, user.user_id)


@router.put(
    "/profile",
    response_model=UserPublic,
    responses={403: {"model": ErrorBody, "description": "The edit names a role (role_change_forbidden)"}},
    summary="Edit my e-mail and name",
)
async def update_profile(body: OwnProfileEdit, user: CurrentUser, services: ServicesDep) -> dict[str, Any]:
    assert user.user_id is not None
    return await run_in_threadpool(services.accounts.update_profile, user.user_id, body.email, body.full_name)


@router.post("/password", status_code=204, summary="Change my password")
async def change_password(body: PasswordChange, user: CurrentUser, services: ServicesDep) -> Response:
    assert user.user_id is not None
    await run_in_threadpool(
        services.accounts.change_password, user.user_id, body.current_password, body.new_password
    )
    return Response(status_code=204)


@router.put(
    "/password",
    response_model=Message,
    summary="Change my password (the seed project's body: old_password, new_password)",
)
async def change_password_seed(body: SeedPasswordChange, user: CurrentUser, services: ServicesDep) -> Message:
    assert user.user_id is not None
    await run_in_threadpool(
        services.accounts.change_password, user.user_id, body.old_password, body.new_password
    )
    return Message(message="Password changed successfully")
