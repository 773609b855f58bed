"""Which jobs' Celery messages went out, so that jobs whose message was lost are sent again."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

from sqlalchemy import or_, select, update

from prediction_provider.db.base import utcnow
from prediction_provider.db.models import PredictionJob
from prediction_provider.db.session import Database
from prediction_provider.jobs.records import claimable


class DispatchBookkeeping:
    """``JobStore``'s part for dispatch: when each job's message was last sent."""

    db: Database
    lease: timedelta

    def mark_dispatched(self, job_ids: Sequence[str]) -> None:
        with self.db.session() as session:
            session.execute(
                update(PredictionJob).where(PredictionJob.id.in_(job_ids)).values(dispatched_at=utcnow())
            )

    def undispatched(self, older_than: timedelta, limit: int = 500) -> list[str]:
        """Claimable jobs whose last dispatch (their creation, or the last re-dispatch) is older than
        ``older_than``: their message was lost."""
        cutoff = utcnow() - older_than
        with self.db.session() as session:
            return list(
                session.scalars(
                    select(PredictionJob.id)
                    .where(
                        claimable(utcnow(), self.lease),
                        or_(PredictionJob.dispatched_at.is_(None), PredictionJob.dispatched_at < cutoff),
                        PredictionJob.created_at < cutoff,
                    )
                    .order_by(PredictionJob.created_at)
                    .limit(limit)
                )
            )
