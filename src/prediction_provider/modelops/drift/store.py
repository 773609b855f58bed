"""The drift tables: counts added by every process, uploaded references, resets.

Every process adds its deltas with one upsert (``count = count + excluded.count``), rows sorted by
key so that two PostgreSQL writers lock them in the same order. Readers sum slots into windows.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from prediction_provider.db.modelops_models import DriftCount, DriftReference, DriftReset
from prediction_provider.db.session import Database
from prediction_provider.modelops import stamp

CountRow = tuple[str, str, datetime, str, int, int]  # model, version, slot, series, bin, count


class DriftStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    def add_counts(self, rows: Iterable[CountRow]) -> int:
        """Add the deltas in one transaction; how many rows were written."""
        values = [
            {"model": m, "version": v, "slot_start": s, "series": series, "bin": b, "count": c}
            for m, v, s, series, b, c in sorted(rows, key=lambda row: row[:5])
            if c
        ]
        if not values:
            return 0
        insert = postgresql.insert if self.db.engine.dialect.name == "postgresql" else sqlite.insert
        statement = insert(DriftCount)
        statement = statement.on_conflict_do_update(
            index_elements=["model", "version", "slot_start", "series", "bin"],
            set_={"count": DriftCount.count + statement.excluded["count"]},
        )
        with self.db.session() as session:
            session.execute(statement, values)
        return len(values)

    def slot_rows(
        self, model: str, version: str, series: str, since: datetime | None, until: datetime | None = None
    ) -> list[tuple[datetime, int]]:
        """Rows per slot (the counts of one series, every row counts once in it), newest first."""
        query = select(DriftCount.slot_start, func.sum(DriftCount.count)).where(
            DriftCount.model == model, DriftCount.version == version, DriftCount.series == series
        )
        if since is not None:
            query = query.where(DriftCount.slot_start >= since)
        if until is not None:
            query = query.where(DriftCount.slot_start < until)
        query = query.group_by(DriftCount.slot_start).order_by(DriftCount.slot_start.desc())
        with self.db.session() as session:
            return [(slot, int(total)) for slot, total in session.execute(query).all()]

    def sums(
        self, model: str, version: str, start: datetime, end: datetime, series: str | None = None
    ) -> dict[str, dict[int, int]]:
        """Counts by series and bin over the slots in ``[start, end)``."""
        query = select(DriftCount.series, DriftCount.bin, func.sum(DriftCount.count)).where(
            DriftCount.model == model,
            DriftCount.version == version,
            DriftCount.slot_start >= start,
            DriftCount.slot_start < end,
        )
        if series is not None:
            query = query.where(DriftCount.series == series)
        query = query.group_by(DriftCount.series, DriftCount.bin)
        found: dict[str, dict[int, int]] = {}
        with self.db.session() as session:
            for name, bin_, total in session.execute(query).all():
                found.setdefault(name, {})[int(bin_)] = int(total)
        return found

    def active_versions(self, since: datetime) -> list[tuple[str, str]]:
        query = (
            select(DriftCount.model, DriftCount.version)
            .where(DriftCount.slot_start >= since)
            .distinct()
            .order_by(DriftCount.model, DriftCount.version)
        )
        with self.db.session() as session:
            return [(m, v) for m, v in session.execute(query).all()]

    def prune(self, before: datetime) -> int:
        with self.db.session() as session:
            result: Any = session.execute(delete(DriftCount).where(DriftCount.slot_start < before))
            return int(result.rowcount or 0)

    # -- references and resets ------------------------------------------------------------

    def uploaded(self, model: str, version: str) -> DriftReference | None:
        with self.db.session() as session:
            return session.get(DriftReference, (model, version))

    def reset_at(self, model: str, version: str) -> datetime | None:
        with self.db.session() as session:
            row = session.get(DriftReset, (model, version))
            return row.reset_at if row is not None else None

    def save_reference(
        self, model: str, version: str, profile: dict[str, Any], actor: str | None, now: datetime
    ) -> None:
        """Store an upload and reset the version's counts (they were binned on the old edges)."""
        with self.db.session() as session:
            row = session.get(DriftReference, (model, version))
            if row is None:
                session.add(
                    DriftReference(
                        model=model,
                        version=version,
                        profile=profile,
                        source="upload",
                        created_by=actor,
                        created_at=now,
                    )
                )
            else:
                row.profile, row.created_by, row.created_at = profile, actor, now
            self._reset(session, model, version, now)
            stamp.bump(session)

    def reset(self, model: str, versions: Iterable[str], now: datetime) -> None:
        with self.db.session() as session:
            for version in versions:
                self._reset(session, model, version, now)
            stamp.bump(session)

    @staticmethod
    def _reset(session: Session, model: str, version: str, now: datetime) -> None:
        session.execute(delete(DriftCount).where(DriftCount.model == model, DriftCount.version == version))
        row = session.get(DriftReset, (model, version))
        if row is None:
            session.add(DriftReset(model=model, version=version, reset_at=now))
        else:
            row.reset_at = now

    @staticmethod
    def changes(session: Session) -> tuple[dict[tuple[str, str], datetime], dict[tuple[str, str], datetime]]:
        """Every reset time and every upload's time, by (model, version): what a stamp reload compares."""
        resets = {(r.model, r.version): r.reset_at for r in session.scalars(select(DriftReset))}
        uploads = {
            (m, v): at
            for m, v, at in session.execute(
                select(DriftReference.model, DriftReference.version, DriftReference.created_at)
            ).all()
        }
        return resets, uploads
