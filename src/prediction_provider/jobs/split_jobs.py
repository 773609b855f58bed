"""Dataset jobs: a claimed parent split into chunk jobs, and finished once its chunks are done."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import aliased

from prediction_provider.db.base import utcnow
from prediction_provider.db.models import PredictionJob
from prediction_provider.db.session import Database
from prediction_provider.jobs.records import TERMINAL, Claim, JobStatus, holding, record_event


class SplitJobs:
    """``JobStore``'s part for split jobs; the parent's state lives in the same table as any job's."""

    db: Database

    def split(self, claim: Claim, chunks: Iterable[dict[str, Any]]) -> list[str] | None:
        """Turn a claimed dataset job into chunk jobs, atomically; ``None`` if the claim was lost.

        The parent stays ``processing`` without a worker (``chunks_total`` set), so no lease
        expiry takes it back; whoever finishes its last chunk finishes it.
        """
        parent = claim.job
        children = [
            PredictionJob(
                id=str(uuid.uuid4()),
                owner_id=parent.owner_id,
                owner_username=parent.owner_username,
                kind="chunk",
                parent_id=parent.id,
                chunk_index=index,
                model_reference=parent.model_reference,
                input_path=parent.input_path,
                input_hash=parent.input_hash,
                parameters={**parent.parameters, **chunk},
                status=JobStatus.PENDING,
                result_files=[],
                attempts=0,
                progress=0.0,
                data_as_of=parent.data_as_of,
            )
            for index, chunk in enumerate(chunks)
        ]
        now = utcnow()
        with self.db.session() as session:
            updated = session.execute(
                update(PredictionJob)
                .where(*holding(claim))
                .values(chunks_total=len(children), claim_token=None, heartbeat_at=now, updated_at=now)
            )
            if updated.rowcount != 1:  # type: ignore[attr-defined]
                return None
            session.add_all(children)
            record_event(
                session, parent.id, JobStatus.PROCESSING, claim.worker, f"split into {len(children)} chunks"
            )
        return [child.id for child in children]

    def chunks(self, parent_id: str) -> list[PredictionJob]:
        with self.db.session() as session:
            return list(
                session.scalars(
                    select(PredictionJob)
                    .where(PredictionJob.parent_id == parent_id)
                    .order_by(PredictionJob.chunk_index)
                )
            )

    def update_parent_progress(self, parent_id: str) -> tuple[int, int]:
        """Completed and total chunks of a split job; its progress is set from them."""
        with self.db.session() as session:
            total = session.scalar(select(PredictionJob.chunks_total).where(PredictionJob.id == parent_id))
            done = session.scalar(
                select(func.count())
                .select_from(PredictionJob)
                .where(PredictionJob.parent_id == parent_id, PredictionJob.status == JobStatus.COMPLETED)
            )
            total, done = int(total or 0), int(done or 0)
            if total:
                session.execute(
                    update(PredictionJob)
                    .where(PredictionJob.id == parent_id, PredictionJob.status == JobStatus.PROCESSING)
                    .values(progress=round(100.0 * done / total, 2), updated_at=utcnow())
                )
        return done, total

    def stalled_parents(self) -> list[tuple[str, int]]:
        """Split jobs whose chunks all completed but which were never finished (their finisher
        crashed between the last chunk and the merge), with their chunk counts."""
        chunk = aliased(PredictionJob)
        done = (
            select(func.count())
            .where(chunk.parent_id == PredictionJob.id, chunk.status == JobStatus.COMPLETED)
            .correlate(PredictionJob)
            .scalar_subquery()
        )
        with self.db.session() as session:
            rows = session.execute(
                select(PredictionJob.id, PredictionJob.chunks_total).where(
                    PredictionJob.status == JobStatus.PROCESSING,
                    PredictionJob.chunks_total.is_not(None),
                    PredictionJob.chunks_total == done,
                )
            ).all()
        return [(job_id, int(total or 0)) for job_id, total in rows]

    def finish_parent(
        self, parent_id: str, status: JobStatus, values: dict[str, Any], worker: str, detail: str | None
    ) -> bool:
        """Finish a split job once; the conditional update makes racing finishers harmless."""
        now = utcnow()
        with self.db.session() as session:
            updated = session.execute(
                update(PredictionJob)
                .where(PredictionJob.id == parent_id, PredictionJob.status == JobStatus.PROCESSING)
                .values(status=status, finished_at=now, updated_at=now, **values)
            )
            if updated.rowcount != 1:  # type: ignore[attr-defined]
                return False
            record_event(session, parent_id, status, worker, detail)
            if status != JobStatus.COMPLETED:
                session.execute(
                    update(PredictionJob)
                    .where(PredictionJob.parent_id == parent_id, PredictionJob.status.not_in(TERMINAL))
                    .values(status=JobStatus.CANCELLED, claim_token=None, finished_at=now, updated_at=now)
                )
        return True
