"""Prediction jobs in the database: the one authority on a job's state.

Every transition is a conditional ``UPDATE`` (``WHERE status = ... AND
claim_token = ...``), so two workers that both received a job's message (a
redelivery after a crash, a re-dispatch) cannot both run it to completion:
only the holder of the current claim may finish it, and a claim is only taken
from a pending job or from one whose worker stopped reporting (its lease ran
out). Each transition also appends a row to ``prediction_job_events``.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from prediction_provider.accounts.principal import Principal
from prediction_provider.db.base import utcnow
from prediction_provider.db.models import PredictionJob, PredictionJobEvent
from prediction_provider.db.session import Database
from prediction_provider.errors import Conflict, JobNotFound, JobStateConflict
from prediction_provider.jobs.dispatch_bookkeeping import DispatchBookkeeping
from prediction_provider.jobs.records import (
    TERMINAL,
    Claim,
    ClaimRefused,
    JobFilter,
    JobStatus,
    NewJob,
    claimable,
    holding,
    record_event,
)
from prediction_provider.jobs.split_jobs import SplitJobs


class Settlement(Protocol):
    """Money that follows a job to its terminal status, in the same transaction (marketplace)."""

    def lock(self, session: Session) -> None: ...

    def settle(self, session: Session, job_id: str, status: str) -> None: ...


class JobStore(SplitJobs, DispatchBookkeeping):
    def __init__(self, db: Database, lease: timedelta, max_attempts: int) -> None:
        self.db = db
        self.lease = lease
        self.max_attempts = max_attempts
        # Set by the marketplace: a priced job's hold is captured or voided with its last transition.
        self.settlement: Settlement | None = None

    # -- submitting and reading ------------------------------------------------------------------

    def create(
        self, owner: Principal, new: NewJob, on_create: Callable[[Session, PredictionJob], None] | None = None
    ) -> tuple[PredictionJob, bool]:
        """The new job, or the one already made with the same idempotency key (``False``).

        Reusing a key with a different body is refused: it is almost always a client bug.
        """
        if new.idempotency_key is not None:
            existing = self._by_idempotency_key(owner.user_id, new.idempotency_key)
            if existing is not None:
                return self._same_request(existing, new), False
        job = PredictionJob(
            id=str(uuid.uuid4()),
            owner_id=owner.user_id,
            owner_username=owner.username,
            kind=new.kind,
            model_reference=new.model_reference,
            model_name=new.model_name,
            model_version=new.model_version,
            input=new.input,
            input_path=new.input_path,
            input_hash=new.input_hash,
            parameters=new.parameters,
            status=JobStatus.PENDING,
            result_files=[],
            attempts=0,
            progress=0.0,
            idempotency_key=new.idempotency_key,
            data_as_of=new.data_as_of,
            read_token_digest=new.read_token_digest,
        )
        try:
            with self.db.session() as session:
                session.add(job)
                session.flush()
                if on_create is not None:  # e.g. the hold of a paid job: refused, nothing is stored
                    on_create(session, job)
                record_event(session, job.id, JobStatus.PENDING, None, "submitted")
        except IntegrityError:
            # Two submits with one key raced; the other one won.
            existing = self._by_idempotency_key(owner.user_id, new.idempotency_key or "")
            if existing is None:
                raise
            return self._same_request(existing, new), False
        return job, True

    def _by_idempotency_key(self, owner_id: int | None, key: str) -> PredictionJob | None:
        with self.db.session() as session:
            return session.scalars(
                select(PredictionJob).where(_owned_by(owner_id), PredictionJob.idempotency_key == key)
            ).first()

    @staticmethod
    def _same_request(existing: PredictionJob, new: NewJob) -> PredictionJob:
        if existing.input_hash != new.input_hash or existing.model_reference != new.model_reference:
            raise Conflict(
                "this Idempotency-Key was already used for a different request",
                {"job_id": existing.id, "idempotency_key": new.idempotency_key},
            )
        return existing

    def discard(self, job_id: str) -> None:
        """Remove a job that was never handed to a worker (the broker refused it)."""
        with self.db.session() as session:
            job = session.get(PredictionJob, job_id)
            if job is not None and job.status == JobStatus.PENDING and job.attempts == 0:
                session.delete(job)

    def get(self, job_id: str) -> PredictionJob:
        with self.db.session() as session:
            job = session.get(PredictionJob, job_id)
        if job is None:
            raise JobNotFound(f"no prediction job {job_id!r}", {"id": job_id})
        return job

    def replace_read_token(self, job_id: str, digest: str) -> None:
        """Give a job a new read token digest; the earlier token stops working."""
        with self.db.session() as session:
            session.execute(
                update(PredictionJob).where(PredictionJob.id == job_id).values(read_token_digest=digest)
            )

    def events_page(
        self, job_id: str, limit: int, offset: int
    ) -> tuple[list[tuple[PredictionJobEvent, str | None]], int]:
        """A job's transitions in the order they happened, ``limit`` from ``offset``, each with the
        status it left (``None`` for the submit), and how many there are in all."""
        with self.db.session() as session:
            total = session.scalar(
                select(func.count())
                .select_from(PredictionJobEvent)
                .where(PredictionJobEvent.job_id == job_id)
            )
            # One row before the page, for the status its first transition left.
            rows = list(
                session.scalars(
                    select(PredictionJobEvent)
                    .where(PredictionJobEvent.job_id == job_id)
                    .order_by(PredictionJobEvent.id)
                    .offset(max(offset - 1, 0))
                    .limit(limit + (1 if offset > 0 else 0))
                )
            )
        previous = rows.pop(0).status if offset > 0 and rows else None
        page = []
        for event in rows:
            page.append((event, previous))
            previous = event.status
        return page, int(total or 0)

    def events(self, job_id: str) -> list[PredictionJobEvent]:
        with self.db.session() as session:
            return list(
                session.scalars(
                    select(PredictionJobEvent)
                    .where(PredictionJobEvent.job_id == job_id)
                    .order_by(PredictionJobEvent.id)
                )
            )

    def search(self, filters: JobFilter, limit: int, offset: int) -> tuple[list[PredictionJob], int]:
        """Top-level jobs (chunks are internal), newest first, and how many match in all."""
        conditions: list[Any] = [PredictionJob.parent_id.is_(None)]
        if filters.owner_id is not None:
            conditions.append(PredictionJob.owner_id == filters.owner_id)
        if filters.status is not None:
            conditions.append(PredictionJob.status == filters.status)
        if filters.model is not None:
            conditions.append(
                or_(PredictionJob.model_name == filters.model, PredictionJob.model_reference == filters.model)
            )
        if filters.created_after is not None:
            conditions.append(PredictionJob.created_at >= filters.created_after)
        if filters.created_before is not None:
            conditions.append(PredictionJob.created_at < filters.created_before)
        with self.db.session() as session:
            total = session.scalar(select(func.count()).select_from(PredictionJob).where(*conditions)) or 0
            rows = session.scalars(
                select(PredictionJob)
                .where(*conditions)
                .order_by(PredictionJob.created_at.desc(), PredictionJob.id)
                .limit(limit)
                .offset(offset)
            )
            return list(rows), int(total)

    def counts(self) -> dict[str, int]:
        with self.db.session() as session:
            rows = session.execute(
                select(PredictionJob.status, func.count()).group_by(PredictionJob.status)
            ).all()
        counts = {status.value: 0 for status in JobStatus}
        counts.update({str(status): int(count) for status, count in rows})
        return counts

    # -- changes by the owner --------------------------------------------------------------------

    def update_pending(self, job_id: str, changes: dict[str, Any]) -> PredictionJob:
        """Replace input, model or parameters of a job nobody has started."""
        with self.db.session() as session:
            updated = session.execute(
                update(PredictionJob)
                .where(PredictionJob.id == job_id, PredictionJob.status == JobStatus.PENDING)
                .values(**changes, updated_at=utcnow())
            )
            if updated.rowcount == 0:  # type: ignore[attr-defined]
                raise self._state_conflict(session, job_id, "only a pending job can be changed")
            record_event(session, job_id, JobStatus.PENDING, None, "updated")
        return self.get(job_id)

    def cancel(self, job_id: str) -> PredictionJob:
        """Cancel a pending or running job; its chunks go with it. A running worker's result is then
        refused (its claim no longer matches), so a cancelled job never turns completed."""
        now = utcnow()
        with self.db.session() as session:
            if self.settlement is not None:
                self.settlement.lock(session)
            updated = session.execute(
                update(PredictionJob)
                .where(
                    PredictionJob.id == job_id,
                    PredictionJob.status.in_([JobStatus.PENDING, JobStatus.PROCESSING]),
                )
                .values(status=JobStatus.CANCELLED, claim_token=None, finished_at=now, updated_at=now)
            )
            if updated.rowcount == 0:  # type: ignore[attr-defined]
                raise self._state_conflict(session, job_id, "the job has already finished")
            record_event(session, job_id, JobStatus.CANCELLED, None, "cancelled by request")
            if self.settlement is not None:
                self.settlement.settle(session, job_id, JobStatus.CANCELLED)
            session.execute(
                update(PredictionJob)
                .where(PredictionJob.parent_id == job_id, PredictionJob.status.not_in(TERMINAL))
                .values(status=JobStatus.CANCELLED, claim_token=None, finished_at=now, updated_at=now)
            )
        return self.get(job_id)

    @staticmethod
    def _state_conflict(session: Session, job_id: str, message: str) -> Exception:
        status = session.scalar(select(PredictionJob.status).where(PredictionJob.id == job_id))
        if status is None:
            return JobNotFound(f"no prediction job {job_id!r}", {"id": job_id})
        return JobStateConflict(message, {"id": job_id, "status": status})

    # -- workers ---------------------------------------------------------------------------------

    def claim(self, job_id: str, worker: str) -> Claim | ClaimRefused:
        """Take a pending job, or one whose worker's lease ran out, for ``worker``."""
        with self.db.session() as session:
            claim = self._take(session, job_id, worker)
            if claim is not None:
                return claim
            job = session.get(PredictionJob, job_id)
        if job is None:
            return ClaimRefused.MISSING
        if job.status in TERMINAL or job.chunks_total is not None:
            return ClaimRefused.FINISHED
        return ClaimRefused.BUSY

    def claim_next(self, worker: str) -> Claim | None:
        """The oldest claimable job, taken for ``worker``; ``None`` when there is none.

        On PostgreSQL the candidate row is locked with ``SKIP LOCKED``, so workers polling at the
        same time each get a different job instead of racing for the first one.
        """
        candidate = (
            select(PredictionJob.id)
            .where(claimable(utcnow(), self.lease))
            .order_by(PredictionJob.created_at)
            .limit(1)
        )
        if self.db.engine.dialect.name == "postgresql":
            candidate = candidate.with_for_update(skip_locked=True)
        with self.db.session() as session:
            job_id = session.scalar(candidate)
            return None if job_id is None else self._take(session, job_id, worker)

    def _take(self, session: Session, job_id: str, worker: str) -> Claim | None:
        now = utcnow()
        token = secrets.token_hex(16)
        updated = session.execute(
            update(PredictionJob)
            .where(PredictionJob.id == job_id, claimable(now, self.lease))
            .values(
                status=JobStatus.PROCESSING,
                claim_token=token,
                worker=worker,
                attempts=PredictionJob.attempts + 1,
                started_at=func.coalesce(PredictionJob.started_at, now),
                heartbeat_at=now,
                updated_at=now,
            )
        )
        if updated.rowcount != 1:  # type: ignore[attr-defined]
            return None
        record_event(session, job_id, JobStatus.PROCESSING, worker, None)
        job = session.get(PredictionJob, job_id)
        assert job is not None
        return Claim(job, token, worker)

    def lease_remaining(self, job_id: str) -> float:
        """Seconds until a busy job's claim may be taken over (0 when it already may)."""
        job = self.get(job_id)
        if job.heartbeat_at is None:
            return 0.0
        return max(0.0, (job.heartbeat_at + self.lease - utcnow()).total_seconds())

    def heartbeat(self, claim: Claim, progress: float | None = None) -> bool:
        """Report the worker alive; ``False`` when the claim is lost (cancelled, or taken over)."""
        values: dict[str, Any] = {"heartbeat_at": utcnow()}
        if progress is not None:
            values["progress"] = progress
        with self.db.session() as session:
            updated = session.execute(update(PredictionJob).where(*holding(claim)).values(**values))
            return bool(updated.rowcount == 1)  # type: ignore[attr-defined]

    def complete(
        self,
        claim: Claim,
        result: Any,
        *,
        model_name: str | None,
        model_version: str | None,
        result_files: Sequence[str] = (),
        data_as_of: datetime | None = None,
    ) -> bool:
        """Store the result; ``False`` (and nothing stored) when the claim was lost meanwhile.
        ``data_as_of``: the time of the data the result was computed from, when the job read it."""
        values = {
            "result": result,
            "result_files": list(result_files),
            "model_name": model_name,
            "model_version": model_version,
            "progress": 100.0,
        }
        if data_as_of is not None:
            values["data_as_of"] = data_as_of
        return self._finish(claim, JobStatus.COMPLETED, values, None)

    def fail(self, claim: Claim, error: dict[str, Any]) -> bool:
        return self._finish(claim, JobStatus.FAILED, {"error": error}, error.get("message"))

    def release(self, claim: Claim, reason: str) -> bool:
        """Give a job back after a transient error, to be retried; fails it once attempts run out."""
        if claim.job.attempts >= self.max_attempts:
            return self.fail(
                claim,
                {
                    "code": "attempts_exhausted",
                    "message": f"gave up after {claim.job.attempts} attempts: {reason}",
                },
            )
        now = utcnow()
        with self.db.session() as session:
            updated = session.execute(
                update(PredictionJob)
                .where(*holding(claim))
                .values(status=JobStatus.PENDING, claim_token=None, heartbeat_at=None, updated_at=now)
            )
            if updated.rowcount != 1:  # type: ignore[attr-defined]
                return False
            record_event(session, claim.job.id, JobStatus.PENDING, claim.worker, f"released: {reason}")
        return True

    def _finish(self, claim: Claim, status: JobStatus, values: dict[str, Any], detail: str | None) -> bool:
        now = utcnow()
        priced = self.settlement is not None and claim.job.price is not None
        with self.db.session() as session:
            if priced:
                assert self.settlement is not None
                self.settlement.lock(session)  # first: money transactions take the journal lock first
            updated = session.execute(
                update(PredictionJob)
                .where(*holding(claim))
                .values(status=status, claim_token=None, finished_at=now, updated_at=now, **values)
            )
            if updated.rowcount != 1:  # type: ignore[attr-defined]
                return False
            record_event(session, claim.job.id, status, claim.worker, detail)
            if priced:
                assert self.settlement is not None
                self.settlement.settle(session, claim.job.id, status)
        return True

    def recover_orphans(self, worker_prefix: str, is_alive: Callable[[str], bool]) -> list[str]:
        """Put back to pending the jobs that a dead process of this host left ``processing``,
        without waiting for their lease: run at executor start-up after a crash or restart."""
        with self.db.session() as session:
            rows = session.execute(
                select(PredictionJob.id, PredictionJob.worker, PredictionJob.claim_token).where(
                    PredictionJob.status == JobStatus.PROCESSING,
                    PredictionJob.chunks_total.is_(None),
                    PredictionJob.worker.startswith(worker_prefix, autoescape=True),
                )
            ).all()
        recovered = []
        for job_id, worker, token in rows:
            if worker is None or is_alive(worker):
                continue
            with self.db.session() as session:
                updated = session.execute(
                    update(PredictionJob)
                    .where(
                        PredictionJob.id == job_id,
                        PredictionJob.status == JobStatus.PROCESSING,
                        PredictionJob.claim_token == token,
                    )
                    .values(
                        status=JobStatus.PENDING, claim_token=None, heartbeat_at=None, updated_at=utcnow()
                    )
                )
                if updated.rowcount == 1:  # type: ignore[attr-defined]
                    record_event(session, job_id, JobStatus.PENDING, worker, "recovered: its process is gone")
                    recovered.append(job_id)
        return recovered


def _owned_by(owner_id: int | None) -> Any:
    return PredictionJob.owner_id.is_(None) if owner_id is None else PredictionJob.owner_id == owner_id
