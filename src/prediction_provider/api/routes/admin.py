"""``/api/v1/admin``: user management, usage, logs, the audit trail and system state."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from sqlalchemy import func, select, text
from starlette.concurrency import run_in_threadpool

from prediction_provider.api.account_schemas import (
    USERNAME,
    ApiKeyPublic,
    AuditPage,
    RoleName,
    Stats,
    SystemHealth,
    Usage,
    UserCreate,
    UserPage,
    UserPublic,
    UserUpdate,
)
from prediction_provider.api.auth import LogReader, UsageReader, UserManager
from prediction_provider.api.deps import Services, ServicesDep
from prediction_provider.api.query_params import DeclaredQueryOnly, Limit, Offset
from prediction_provider.api.routes.predict import ERROR_RESPONSES
from prediction_provider.db.base import utcnow
from prediction_provider.db.models import AuditRecord, User
from prediction_provider.errors import InvalidInput
from prediction_provider.observability.audit import REJECTED, SERVER_ERROR, query_audit, usage_of

router = APIRouter(prefix="/api/v1/admin", tags=["admin"], responses=ERROR_RESPONSES)

Username = Annotated[str, Path(pattern=USERNAME)]
# Database integers end at 2**63 - 1; a larger id is a client error, not an overflow.
UserId = Annotated[int, Path(ge=1, le=2**63 - 1)]


@router.post("/users", response_model=UserPublic, status_code=201, summary="Create a user")
async def create_user(body: UserCreate, admin: UserManager, services: ServicesDep) -> dict[str, Any]:
    return await run_in_threadpool(
        services.accounts.create_user,
        body.username, body.email, body.password, body.role, body.full_name, body.is_active,
    )  # fmt: skip


@router.get("/users", response_model=UserPage, summary="Users, filtered and paginated")
async def list_users(
    admin: UserManager,
    services: ServicesDep,
    role: RoleName | None = None,
    active: bool | None = None,
    q: Annotated[str | None, Query(max_length=64)] = None,
    limit: Limit = 50,
    offset: Offset = 0,
    _query: DeclaredQueryOnly = None,
) -> dict[str, Any]:
    users, total = await run_in_threadpool(
        lambda: services.accounts.list_users(role, active, q, limit=limit, offset=offset)
    )
    return {"users": users, "total": total, "limit": limit, "offset": offset}


@router.post("/users/{username}/activate", response_model=UserPublic, summary="Activate a user")
async def activate(username: Username, admin: UserManager, services: ServicesDep) -> dict[str, Any]:
    return await run_in_threadpool(services.accounts.set_active, username, True)


@router.post("/users/{username}/deactivate", response_model=UserPublic, summary="Deactivate a user")
async def deactivate(username: Username, admin: UserManager, services: ServicesDep) -> dict[str, Any]:
    return await run_in_threadpool(services.accounts.set_active, username, False)


@router.post(
    "/users/{username}/api-key",
    response_model=ApiKeyPublic,
    status_code=201,
    summary="Issue or rotate a user's API key, without its password (shown once; the old key dies)",
)
async def issue_api_key(username: Username, admin: UserManager, services: ServicesDep) -> dict[str, Any]:
    # The audit trail names both sides: the admin as the caller, the user in the path.
    return await run_in_threadpool(services.accounts.issue_api_key, username)


@router.put("/users/{user_id}", response_model=UserPublic, summary="Edit a user")
async def update_user(
    user_id: UserId, body: UserUpdate, admin: UserManager, services: ServicesDep
) -> dict[str, Any]:
    if admin.user_id == user_id and (body.role not in (None, "admin") or body.is_active is False):
        raise InvalidInput(
            "an admin cannot demote or deactivate itself", {"errors": [{"field": "role", "error": "self"}]}
        )
    return await run_in_threadpool(services.accounts.update_user, user_id, body.model_dump(exclude_none=True))


@router.delete(
    "/users/{user_id}", response_model=UserPublic, summary="Deactivate a user (nothing is deleted)"
)
async def delete_user(user_id: UserId, admin: UserManager, services: ServicesDep) -> dict[str, Any]:
    if admin.user_id == user_id:
        raise InvalidInput(
            "an admin cannot deactivate itself", {"errors": [{"field": "user_id", "error": "self"}]}
        )
    return await run_in_threadpool(services.accounts.update_user, user_id, {"is_active": False})


@router.get("/usage/{username}", response_model=Usage, summary="A user's requests by path")
async def usage(
    username: Username,
    reader: UsageReader,
    services: ServicesDep,
    since: datetime | None = None,
    _query: DeclaredQueryOnly = None,
) -> dict[str, Any]:
    await run_in_threadpool(services.accounts.get, username)
    return await run_in_threadpool(usage_of, services.db, username, since)


@router.get("/audit", response_model=AuditPage, summary="The audit trail, newest first")
async def audit(
    reader: LogReader,
    services: ServicesDep,
    user: Annotated[str | None, Query(max_length=64)] = None,
    path: Annotated[str | None, Query(max_length=512)] = None,
    status: Annotated[int | None, Query(ge=100, le=599)] = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: Limit = 100,
    offset: Offset = 0,
    _query: DeclaredQueryOnly = None,
) -> dict[str, Any]:
    entries, total = await run_in_threadpool(
        lambda: query_audit(services.db, username=user, path=path, status=status, since=since, until=until,
                            limit=limit, offset=offset)
    )  # fmt: skip
    return {"entries": entries, "total": total, "limit": limit, "offset": offset}


@router.get("/logs", response_model=AuditPage, summary="Recent failed requests (status 400 and above)")
async def logs(
    reader: LogReader,
    services: ServicesDep,
    user: Annotated[str | None, Query(max_length=64, description="Only this username's requests.")] = None,
    endpoint: Annotated[str | None, Query(max_length=512, description="Paths starting with this.")] = None,
    hours: Annotated[float | None, Query(gt=0, le=24 * 366, description="Only the last N hours.")] = None,
    min_status: Annotated[int, Query(ge=100, le=599)] = 400,
    limit: Limit = 100,
    offset: Offset = 0,
    _query: DeclaredQueryOnly = None,
) -> dict[str, Any]:
    """The seed's filters (``user``, ``endpoint``, ``hours``) as the audit trail reads them."""
    since = utcnow() - timedelta(hours=hours) if hours is not None else None
    entries, total = await run_in_threadpool(
        lambda: query_audit(services.db, username=user, path=endpoint, min_status=min_status, since=since,
                            limit=limit, offset=offset)
    )  # fmt: skip
    return {"entries": entries, "total": total, "limit": limit, "offset": offset}


@router.get("/stats", response_model=Stats, summary="Users and traffic at a glance")
async def stats(reader: LogReader, services: ServicesDep) -> dict[str, Any]:
    return await run_in_threadpool(_stats, services)


def _stats(services: Services) -> dict[str, Any]:
    since = utcnow() - timedelta(hours=24)
    with services.db.session() as session:
        by_role = dict(session.execute(select(User.role, func.count()).group_by(User.role)).all())
        active = session.scalar(select(func.count()).select_from(User).where(User.is_active)) or 0
        recent = select(func.count()).select_from(AuditRecord).where(AuditRecord.at >= since)
        requests = session.scalar(recent) or 0
        server_errors = session.scalar(recent.where(SERVER_ERROR)) or 0
        rejected = session.scalar(recent.where(REJECTED)) or 0
    return {
        "users_by_role": by_role, "active_users": active, "requests_24h": requests,
        "server_errors_24h": server_errors, "rejected_24h": rejected, "cached_models": len(services.cache),
    }  # fmt: skip


@router.get("/system/health", response_model=SystemHealth, summary="Database, registry, Redis, audit queue")
async def system_health(reader: LogReader, services: ServicesDep) -> dict[str, Any]:
    return await run_in_threadpool(_system_health, services)


def _system_health(services: Services) -> dict[str, Any]:
    try:
        with services.db.session() as session:
            session.execute(text("SELECT 1"))
        database = True
    except Exception:  # noqa: BLE001 - any failure means "down"
        database = False
    return {
        "database": database,
        "registry": services.registry.ping(),
        "redis": services.throttle.redis_ok() if services.settings.redis_url else None,
        "cached_models": len(services.cache),
        "audit_queue": services.audit.pending(),
    }
