"""``/dashboard/admin``: users, the audit trail and the dashboard's own sessions.

Three sections, one at a time (``section``), each paged by ``offset`` with its filters in the URL.
Each section needs the permission its API twin needs: users and sessions ``MANAGE_USERS`` (admin),
the audit trail ``READ_LOGS`` (operators too). A section the viewer may not see is not offered, and
asking for it answers the 403 page. The actions call the same service methods as the API's admin
routes (``AccountService.set_active``; a deactivation ends the user's dashboard sessions there).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Form, Path, Query, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import RedirectResponse, Response

from prediction_provider.accounts.roles import Permission, allows
from prediction_provider.api.auth import require_permission
from prediction_provider.api.deps import services_of
from prediction_provider.api.query_params import DeclaredQueryOnly, Offset
from prediction_provider.dashboard.nav import ADMIN_PAGE
from prediction_provider.dashboard.render import PAGE_SIZE, ApiCall, Paging, render
from prediction_provider.dashboard.session import Checked, Viewer, page_viewer, safe_next, web_sessions
from prediction_provider.errors import InvalidInput
from prediction_provider.observability.audit import query_audit

router = APIRouter(prefix="/dashboard", include_in_schema=False)
AdminViewer = Annotated[Viewer, Depends(page_viewer(ADMIN_PAGE))]

Section = Literal["users", "audit", "sessions"]
RoleFilter = Literal["", "admin", "operator", "provider", "client", "evaluator", "guest"]
ActiveFilter = Literal["", "true", "false"]
USERNAME_PATTERN = r"^[A-Za-z0-9_.@-]{1,64}$"


@dataclass(frozen=True, slots=True)
class Tab:
    key: str
    title: str
    permission: Permission


TABS: tuple[Tab, ...] = (
    Tab("users", "Users", Permission.MANAGE_USERS),
    Tab("audit", "Audit log", Permission.READ_LOGS),
    Tab("sessions", "Dashboard sessions", Permission.MANAGE_USERS),
)


def tabs_for(viewer: Viewer) -> list[Tab]:
    """The sections this viewer may open: the nav of the page, and the default section."""
    return [tab for tab in TABS if allows(viewer.principal.role, tab.permission)]


def _tab(viewer: Viewer, section: str | None) -> Tab:
    """The section asked for (or the first one offered), refused with the API's own 403."""
    chosen = next((tab for tab in TABS if tab.key == section), None) or tabs_for(viewer)[0]
    require_permission(viewer.principal, chosen.permission)
    return chosen


def _when(field: str, value: str | None) -> datetime | None:
    """A ``datetime-local`` field (or ISO time): naive times are UTC, as every time on the page."""
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise InvalidInput(
            f"{field} is not a date and time", {"errors": [{"field": field, "error": "datetime"}]}
        ) from exc
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed


@router.get("/admin")
async def admin_page(
    request: Request,
    viewer: AdminViewer,
    section: Section | None = None,
    q: Annotated[str | None, Query(max_length=64)] = None,
    role: RoleFilter = "",
    active: ActiveFilter = "",
    user: Annotated[str | None, Query(max_length=64)] = None,
    path: Annotated[str | None, Query(max_length=512)] = None,
    status: Annotated[str | None, Query(pattern=r"^([1-5][0-9][0-9])?$")] = None,
    since: Annotated[str | None, Query(max_length=40)] = None,
    until: Annotated[str | None, Query(max_length=40)] = None,
    offset: Offset = 0,
    _query: DeclaredQueryOnly = None,
) -> Response:
    tab = _tab(viewer, section)
    context: dict[str, Any] = {"tabs": tabs_for(viewer), "section": tab.key}
    if tab.key == "users":
        context.update(await _users(request, q, role, active, offset))
    elif tab.key == "audit":
        context.update(await _audit(request, user, path, status, since, until, offset))
    else:
        context.update(await _sessions(request, offset))
    return render(request, "admin.html", viewer, ADMIN_PAGE, **context)


async def _users(request: Request, q: str | None, role: str, active: str, offset: int) -> dict[str, Any]:
    accounts = services_of(request).accounts
    is_active = {"true": True, "false": False}.get(active)
    users, total = await run_in_threadpool(
        lambda: accounts.list_users(role or None, is_active, q or None, limit=PAGE_SIZE, offset=offset)
    )
    query = {"q": q, "role": role, "active": active, "limit": PAGE_SIZE, "offset": offset or None}
    return {
        "users": users, "paging": Paging(offset, total),
        "filters": {"q": q or "", "role": role, "active": active},
        "api_call": ApiCall("/api/v1/admin/users", query),
    }  # fmt: skip


async def _audit(
    request: Request,
    user: str | None,
    path: str | None,
    status: str | None,
    since: str | None,
    until: str | None,
    offset: int,
) -> dict[str, Any]:
    db = services_of(request).db
    start, end = _when("since", since), _when("until", until)
    code = int(status) if status else None
    entries, total = await run_in_threadpool(
        lambda: query_audit(db, username=user or None, path=path or None, status=code, since=start,
                            until=end, limit=PAGE_SIZE, offset=offset)
    )  # fmt: skip
    query = {
        "user": user, "path": path, "status": code,
        "since": start.isoformat() if start else None, "until": end.isoformat() if end else None,
        "limit": PAGE_SIZE, "offset": offset or None,
    }  # fmt: skip
    return {
        "entries": entries, "paging": Paging(offset, total),
        "filters": {"user": user or "", "path": path or "", "status": status or "", "since": since or "",
                    "until": until or ""},
        "api_call": ApiCall("/api/v1/admin/audit", query),
    }  # fmt: skip


async def _sessions(request: Request, offset: int) -> dict[str, Any]:
    sessions = web_sessions(request)
    rows, total = await run_in_threadpool(lambda: sessions.active(limit=PAGE_SIZE, offset=offset))
    # The dashboard's sessions have no public API (they are the dashboard's own credential): the
    # nearest API view is the users list, whose deactivate ends them too.
    return {"sessions": rows, "paging": Paging(offset, total), "api_call": ApiCall("/api/v1/admin/users")}


def _back(target: str) -> RedirectResponse:
    """303 back to where the form was, on this page only."""
    safe = safe_next(target)
    return RedirectResponse(safe if safe.startswith(ADMIN_PAGE.path) else ADMIN_PAGE.path, status_code=303)


@router.post("/admin/users/{username}/{action}")
async def set_user_active(
    viewer: Checked,
    request: Request,
    username: Annotated[str, Path(pattern=USERNAME_PATTERN)],
    action: Literal["activate", "deactivate"],
    back: Annotated[str, Form(max_length=1024)] = "",
) -> Response:
    """Activate or deactivate, as ``POST /api/v1/admin/users/{username}/(de)activate`` does."""
    require_permission(viewer.principal, Permission.MANAGE_USERS)
    if action == "deactivate" and username == viewer.username:
        raise InvalidInput(
            "an admin cannot deactivate itself", {"errors": [{"field": "username", "error": "self"}]}
        )
    accounts = services_of(request).accounts
    await run_in_threadpool(accounts.set_active, username, action == "activate")
    return _back(back or f"{ADMIN_PAGE.path}?section=users")


@router.post("/admin/sessions/{session_id}/revoke")
async def revoke_session(
    viewer: Checked,
    request: Request,
    session_id: Annotated[int, Path(ge=1, le=2**63 - 1)],
    back: Annotated[str, Form(max_length=1024)] = "",
) -> Response:
    """End one dashboard session; its next page or stream tick lands on the sign-in page."""
    require_permission(viewer.principal, Permission.MANAGE_USERS)
    await run_in_threadpool(web_sessions(request).revoke, session_id)
    return _back(back or f"{ADMIN_PAGE.path}?section=sessions")
