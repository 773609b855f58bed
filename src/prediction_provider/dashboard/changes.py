"""The Overview's "what changed" feed: alias moves, loads and unloads, deactivations, failed jobs.

Each kind is read where it is recorded. Alias moves (``PUT /models/{name}/aliases/{alias}``),
load and unload (``POST /v2/repository/models/{name}/load|unload``) and deactivations
(``POST /api/v1/admin/users/{username}/deactivate``) exist only as audit entries, read with the
admin audit query (``query_audit``, the one behind ``GET /api/v1/admin/audit``); failed jobs come
from the job store's search (``GET /api/v1/predictions?status=failed``). Drift has no alert
record to read (the monitor keeps windows and reports, not alerts), so the feed shows none.

The audit query filters by path prefix only, so each read takes the newest ``SCAN`` entries under
a prefix within ``SINCE`` and keeps the changes among them; the result is cached ``REFRESH_S`` per
process, because the audit table is the largest the dashboard reads.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from prediction_provider.accounts.principal import Principal
from prediction_provider.accounts.roles import Permission, allows
from prediction_provider.api.deps import Services
from prediction_provider.jobs.records import JobFilter, JobStatus
from prediction_provider.observability.audit import query_audit

LATEST = 20
SCAN = 100
SINCE = timedelta(days=7)
REFRESH_S = 10.0

ALIAS = re.compile(r"^/models/(?P<name>[^/]+)/aliases/(?P<alias>[^/]+)$")
LOADING = re.compile(r"^/v2/repository/models/(?P<name>[^/]+)/(?P<action>load|unload)$")
DEACTIVATE = re.compile(r"^/api/v1/admin/users/(?P<username>[^/]+)/deactivate$")


@dataclass(frozen=True, slots=True)
class Change:
    at: datetime
    kind: str  # alias, load, unload, deactivation, failed job
    text: str
    href: str
    link_text: str


def _ok(entry: dict[str, Any]) -> bool:
    return 200 <= int(entry["status"]) < 400


def _audited(services: Services, prefix: str, since: datetime) -> list[dict[str, Any]]:
    rows, _ = query_audit(services.db, path=prefix, since=since, limit=SCAN)
    return [row for row in rows if _ok(row) and row["method"] in ("PUT", "POST")]


def audit_changes(services: Services, since: datetime) -> list[Change]:
    found: list[Change] = []
    for row in _audited(services, "/models/", since):
        if (alias := ALIAS.match(row["path"])) is not None and row["method"] == "PUT":
            name = alias["name"]
            found.append(Change(row["at"], "alias", f"@{alias['alias']} of {name} moved by {row['username']}",
                                f"/dashboard/models/{name}", f"Model {name}"))  # fmt: skip
    for row in _audited(services, "/v2/repository/models/", since):
        if (load := LOADING.match(row["path"])) is not None:
            name, action = load["name"], load["action"]
            found.append(Change(row["at"], action, f"{name} {action}ed by {row['username']}",
                                f"/dashboard/models/{name}", f"Model {name}"))  # fmt: skip
    for row in _audited(services, "/api/v1/admin/users/", since):
        if (user := DEACTIVATE.match(row["path"])) is not None:
            found.append(Change(row["at"], "deactivation", f"user {user['username']} deactivated by "
                                f"{row['username']}", "/dashboard/admin", "Admin: users"))  # fmt: skip
    return found


def failed_jobs(services: Services, principal: Principal) -> list[Change]:
    if services.jobs is None:
        return []
    jobs, _ = services.jobs.service.search(principal, JobFilter(status=JobStatus.FAILED), LATEST, 0)
    return [
        Change(
            job.finished_at or job.updated_at,
            "failed job",
            f"job {job.id[:8]} on {job.model_name or job.model_reference} failed",
            f"/dashboard/jobs/{job.id}",
            f"Job {job.id[:8]}",
        )
        for job in jobs
    ]


def latest_changes(services: Services, principal: Principal) -> list[Change]:
    """The newest ``LATEST`` changes the principal may see, newest first. Blocking (database)."""
    since = datetime.now(UTC) - SINCE
    found = failed_jobs(services, principal)
    if allows(principal.role, Permission.READ_LOGS):
        found += audit_changes(services, since)

    def when(change: Change) -> datetime:
        return change.at if change.at.tzinfo else change.at.replace(tzinfo=UTC)

    return sorted(found, key=when, reverse=True)[:LATEST]


@dataclass(slots=True)
class ChangeFeed:
    """``latest_changes`` at most every ``REFRESH_S`` per scope: one process, every viewer."""

    cached: dict[str, tuple[float, list[Change]]]

    def read(self, scope: str, services: Services, principal: Principal) -> list[Change]:
        now = time.monotonic()
        held = self.cached.get(scope)
        if held is not None and now - held[0] < REFRESH_S:
            return held[1]
        found = latest_changes(services, principal)
        self.cached[scope] = (now, found)
        return found
