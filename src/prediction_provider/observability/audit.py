"""The append-only audit trail, written in batches by a background thread.

A request must not wait for a database commit, so entries are queued and
inserted in batches (``db.batch_writer``); ``flush`` drains the queue (tests,
shutdown) and ``close`` writes whatever is left before the process ends.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import func, select

from prediction_provider.db.batch_writer import BatchWriter
from prediction_provider.db.models import AuditRecord
from prediction_provider.db.session import Database


class AuditWriter(BatchWriter[dict[str, Any]]):
    """Audit entries are ``audit_log`` rows as they are."""

    def __init__(self, db: Database, flush_interval_s: float = 0.2) -> None:
        super().__init__(db, AuditRecord, dict, name="audit-writer", flush_interval_s=flush_interval_s)


AUDIT_FIELDS = (
    "id", "at", "request_id", "user_id", "username", "role", "method", "path", "status", "latency_ms",
    "client_address",
)  # fmt: skip


# The one split of failures, for usage (in Python) and stats (in SQL): ours to fix, or refused.
SERVER_ERROR_STATUSES = range(500, 600)
REJECTED_STATUSES = range(400, 500)
SERVER_ERROR = AuditRecord.status.between(500, 599)
REJECTED = AuditRecord.status.between(400, 499)


def is_server_error(status: int) -> bool:
    return status in SERVER_ERROR_STATUSES


def is_rejected(status: int) -> bool:
    return status in REJECTED_STATUSES


def as_dict(record: AuditRecord) -> dict[str, Any]:
    return {field: getattr(record, field) for field in AUDIT_FIELDS}


def query_audit(
    db: Database,
    *,
    username: str | None = None,
    path: str | None = None,
    status: int | None = None,
    min_status: int | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 100,
    offset: int = 0,
) -> tuple[list[dict[str, Any]], int]:
    """Newest first, filtered, ``limit`` entries from ``offset``, and how many match in all;
    ``path`` matches a prefix."""
    query = select(AuditRecord)
    if username:
        query = query.where(AuditRecord.username == username)
    if path:
        query = query.where(AuditRecord.path.startswith(path, autoescape=True))
    if status is not None:
        query = query.where(AuditRecord.status == status)
    if min_status is not None:
        query = query.where(AuditRecord.status >= min_status)
    if since is not None:
        query = query.where(AuditRecord.at >= since)
    if until is not None:
        query = query.where(AuditRecord.at < until)
    with db.session() as session:
        total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
        rows = session.scalars(
            query.order_by(AuditRecord.at.desc(), AuditRecord.id.desc()).offset(offset).limit(limit)
        )
        return [as_dict(r) for r in rows], total


def usage_of(db: Database, username: str, since: datetime | None = None) -> dict[str, Any]:
    """Requests by path for one user, with the failures split as ``/admin/stats`` splits them:
    ``server_errors`` (status 500 and above: ours to fix) and ``rejected`` (400 to 499: the
    request was refused, e.g. bad input, no permission, a rate limit)."""
    query = select(AuditRecord.path, AuditRecord.status, func.count(), func.avg(AuditRecord.latency_ms),
                   func.max(AuditRecord.at)).where(AuditRecord.username == username)  # fmt: skip
    if since is not None:
        query = query.where(AuditRecord.at >= since)
    query = query.group_by(AuditRecord.path, AuditRecord.status)
    with db.session() as session:
        rows = session.execute(query).all()
    by_path: dict[str, dict[str, Any]] = {}
    last_seen = None
    for path, status, count, latency, at in rows:
        entry = by_path.setdefault(
            path, {"requests": 0, "server_errors": 0, "rejected": 0, "mean_latency_ms": 0.0}
        )
        entry["mean_latency_ms"] = (entry["mean_latency_ms"] * entry["requests"] + float(latency) * count) / (
            entry["requests"] + count
        )
        entry["requests"] += count
        entry["server_errors"] += count if is_server_error(status) else 0
        entry["rejected"] += count if is_rejected(status) else 0
        last_seen = at if last_seen is None or (at is not None and at > last_seen) else last_seen
    return {
        "username": username,
        "requests": sum(e["requests"] for e in by_path.values()),
        "server_errors": sum(e["server_errors"] for e in by_path.values()),
        "rejected": sum(e["rejected"] for e in by_path.values()),
        "by_path": by_path,
        "last_seen": last_seen,
    }
