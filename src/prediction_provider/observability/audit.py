"""The append-only audit trail, written in batches by a background thread.

A request must not wait for a database commit, so entries are queued and
inserted in batches; ``flush`` drains the queue (tests, shutdown) and
``close`` writes whatever is left before the process ends.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import func, insert, select

from prediction_provider.db.models import AuditRecord
from prediction_provider.db.session import Database

log = logging.getLogger(__name__)

MAX_QUEUED = 100_000
BATCH = 500


class AuditWriter:
    def __init__(self, db: Database, flush_interval_s: float = 0.2) -> None:
        self.db = db
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue(MAX_QUEUED)
        self._interval = flush_interval_s
        self._thread = threading.Thread(target=self._run, name="audit-writer", daemon=True)
        self._thread.start()

    def record(self, entry: dict[str, Any]) -> None:
        """Queue one entry; blocks only when the database has fallen far behind."""
        self._queue.put(entry)

    def pending(self) -> int:
        return self._queue.qsize()

    def flush(self) -> None:
        """Return once every entry queued so far is in the database."""
        self._queue.join()

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=30)

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            batch = [first]
            while len(batch) < BATCH:
                try:
                    batch.append(self._queue.get(timeout=self._interval if first is not None else 0))
                except queue.Empty:
                    break
            entries = [entry for entry in batch if entry is not None]
            try:
                if entries:
                    self._write(entries)
            except Exception:
                log.exception("could not write %d audit entries", len(entries))
            finally:
                for _ in batch:
                    self._queue.task_done()
            if any(entry is None for entry in batch):
                return

    def _write(self, entries: Sequence[dict[str, Any]]) -> None:
        with self.db.session() as session:
            session.execute(insert(AuditRecord), list(entries))


AUDIT_FIELDS = (
    "id", "at", "request_id", "user_id", "username", "role", "method", "path", "status", "latency_ms",
    "client_address",
)  # fmt: skip


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
    page: int = 1,
    page_size: int = 100,
) -> tuple[list[dict[str, Any]], int]:
    """Newest first, filtered; ``path`` matches a prefix."""
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
            query.order_by(AuditRecord.at.desc(), AuditRecord.id.desc())
            .offset((page - 1) * page_size)
            .limit(page_size)
        )
        return [as_dict(r) for r in rows], total


def usage_of(db: Database, username: str, since: datetime | None = None) -> dict[str, Any]:
    """Requests by path and status class for one user."""
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
        entry = by_path.setdefault(path, {"requests": 0, "errors": 0, "mean_latency_ms": 0.0})
        entry["mean_latency_ms"] = (entry["mean_latency_ms"] * entry["requests"] + float(latency) * count) / (
            entry["requests"] + count
        )
        entry["requests"] += count
        entry["errors"] += count if status >= 400 else 0
        last_seen = at if last_seen is None or (at is not None and at > last_seen) else last_seen
    return {
        "username": username,
        "requests": sum(e["requests"] for e in by_path.values()),
        "errors": sum(e["errors"] for e in by_path.values()),
        "by_path": by_path,
        "last_seen": last_seen,
    }
