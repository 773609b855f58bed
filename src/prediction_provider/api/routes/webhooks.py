"""``/api/v1/webhooks``: a user's signed webhook endpoints and the delivery log of their messages.

Any signed-in user manages their own endpoints; admins (who may manage users) also read and re-arm
everyone's messages. Deliveries are signed with Standard Webhooks headers (see the README's
"Webhooks" section): an endpoint's secret is shown once, when it is created; per-request
``webhook_url``s are signed with the user's default secret, ``GET /api/v1/webhooks/secret``.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from prediction_provider.accounts.principal import Principal
from prediction_provider.accounts.roles import Permission, allows
from prediction_provider.api.auth import CurrentUser
from prediction_provider.api.deps import Services, ServicesDep
from prediction_provider.api.query_params import DeclaredQueryOnly, Limit, Offset
from prediction_provider.api.schemas import ErrorBody
from prediction_provider.errors import AuthenticationFailed, PredictionFailed
from prediction_provider.webhooks import endpoints
from prediction_provider.webhooks.outbox import WebhookDispatcher

router = APIRouter(
    prefix="/api/v1/webhooks",
    tags=["webhooks"],
    responses={
        status: {"model": ErrorBody, "description": description}
        for status, description in (
            (401, "Not signed in"),
            (404, "No such endpoint or message (or not yours)"),
            (409, "Too many endpoints, or the message was already delivered"),
            (422, "Invalid body, unknown event or refused URL"),
        )
    },
)

ResourceId = Annotated[str, Path(min_length=1, max_length=40, pattern=r"^[A-Za-z0-9_]+$")]


class WebhookCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(min_length=1, max_length=2048, description="http(s); no credentials.")
    events: list[str] = Field(
        default_factory=lambda: ["*"],
        max_length=50,
        description="Event names (prediction_request.completed, wallet.low_balance, ...), "
        "a family (prediction_request.*) or * for all.",
    )


class WebhookPublic(BaseModel):
    id: str
    url: str
    events: list[str]
    active: bool
    created_at: str


class WebhookCreated(WebhookPublic):
    secret: str = Field(description="whsec_...: shown only in this answer; verify signatures with it.")


class WebhookPage(BaseModel):
    items: list[WebhookPublic]
    total: int
    limit: int
    offset: int


class DefaultSecret(BaseModel):
    secret: str = Field(description="Signs deliveries to your requests' own webhook_url.")


class DeliveryAttempt(BaseModel):
    attempt: int
    at: str
    status_code: int | None
    error: str | None
    duration_ms: float | None


class MessagePublic(BaseModel):
    id: str = Field(description="The webhook-id header, the same on every attempt.")
    event_type: str
    endpoint_id: str | None
    url: str
    status: str = Field(description="pending, delivered or dead.")
    attempts: int
    next_attempt_at: str | None
    delivered_at: str | None
    last_status: int | None
    created_at: str
    payload: dict[str, Any]
    deliveries: list[DeliveryAttempt]


class MessagePage(BaseModel):
    items: list[MessagePublic]
    total: int
    limit: int
    offset: int


def dispatcher_of(services: Services) -> WebhookDispatcher:
    if services.webhooks is None:
        raise PredictionFailed("webhooks are not configured on this server")
    dispatcher: WebhookDispatcher = services.webhooks
    return dispatcher


def user_id_of(caller: Principal) -> int:
    if caller.user_id is None:  # CurrentUser is a signed-in account; kept for the type checker
        raise AuthenticationFailed("sign in with an API key or a bearer token")
    return caller.user_id


def scope_of(caller: Principal) -> int | None:
    """Whose messages the caller sees: their own, or everyone's for an admin."""
    return None if allows(caller.role, Permission.MANAGE_USERS) else user_id_of(caller)


@router.post("", response_model=WebhookCreated, status_code=201, summary="Add a webhook endpoint")
async def create_webhook(body: WebhookCreate, caller: CurrentUser, services: ServicesDep) -> dict[str, Any]:
    dispatcher = dispatcher_of(services)
    return await run_in_threadpool(
        endpoints.create_endpoint, services.db, dispatcher.clock, user_id_of(caller), body.url, body.events,
        allow_private=dispatcher.allow_private,
    )  # fmt: skip


@router.get("", response_model=WebhookPage, summary="Your webhook endpoints (secrets are not shown)")
async def list_webhooks(
    caller: CurrentUser,
    services: ServicesDep,
    limit: Limit = 50,
    offset: Offset = 0,
    _query: DeclaredQueryOnly = None,
) -> dict[str, Any]:
    items, total = await run_in_threadpool(
        endpoints.list_endpoints, services.db, user_id_of(caller), limit, offset
    )
    return {"items": items, "total": total, "limit": limit, "offset": offset}


@router.get("/secret", response_model=DefaultSecret, summary="Your default secret (per-request webhook_url)")
async def default_secret(caller: CurrentUser, services: ServicesDep) -> dict[str, str]:
    return {"secret": dispatcher_of(services).user_secret(user_id_of(caller))}


@router.get("/deliveries", response_model=MessagePage, summary="Your webhook messages with their attempts")
async def list_deliveries(
    caller: CurrentUser,
    services: ServicesDep,
    limit: Limit = 50,
    offset: Offset = 0,
    _query: DeclaredQueryOnly = None,
) -> dict[str, Any]:
    items, total = await run_in_threadpool(
        endpoints.list_deliveries, services.db, scope_of(caller), limit, offset
    )
    return {"items": items, "total": total, "limit": limit, "offset": offset}


@router.post(
    "/deliveries/{message_id}/retry", response_model=MessagePublic, summary="Send a failed message again now"
)
async def retry_delivery(
    message_id: ResourceId, caller: CurrentUser, services: ServicesDep
) -> dict[str, Any]:
    clock = dispatcher_of(services).clock
    return await run_in_threadpool(endpoints.retry_message, services.db, clock, message_id, scope_of(caller))


@router.delete("/{endpoint_id}", response_model=WebhookPublic, summary="Remove a webhook endpoint")
async def delete_webhook(
    endpoint_id: ResourceId, caller: CurrentUser, services: ServicesDep
) -> dict[str, Any]:
    return await run_in_threadpool(endpoints.delete_endpoint, services.db, user_id_of(caller), endpoint_id)
