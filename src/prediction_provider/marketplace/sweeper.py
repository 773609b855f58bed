"""No held money is left behind: requests past their deadline end, and holds that outlived their
request (or their timeout) are voided. Runs every ``PP_SWEEP_INTERVAL_S`` in each API process and
whenever the manual clock is moved; every step is a conditional update, so sweepers of several
processes (and a cancel or a completion racing them) resolve each request exactly once."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime

from sqlalchemy import and_, exists, select, update
from sqlalchemy.orm import aliased

from prediction_provider.clock import Clock
from prediction_provider.db.ledger_models import LedgerTransfer
from prediction_provider.db.models import PredictionJob
from prediction_provider.db.session import Database
from prediction_provider.jobs.records import TERMINAL, JobStatus, record_event
from prediction_provider.marketplace.settlement import MARKET_KINDS, Settlement

log = logging.getLogger(__name__)
BATCH = 200
Sweep = Callable[[datetime], int]


class Sweeper:
    def __init__(self, db: Database, clock: Clock, settlement: Settlement, interval_s: float) -> None:
        self.db = db
        self.clock = clock
        self.settlement = settlement
        self.interval_s = interval_s
        self.extra: list[tuple[str, Sweep]] = []  # e.g. evaluator leases that ran out
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="market-sweeper", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.sweep()
            except Exception:  # a failed pass is retried next interval
                log.exception("marketplace sweep failed")

    def sweep(self) -> dict[str, int]:
        """One pass at the clock's time; how many requests or holds each step resolved."""
        with self._lock:
            now = self.clock.now()
            counts = {name: sweep(now) for name, sweep in self.extra}
            counts["expired"] = self._end_overdue(now, JobStatus.PENDING, JobStatus.EXPIRED)
            counts["failed_overdue"] = self._end_overdue(now, JobStatus.PROCESSING, JobStatus.FAILED)
            counts["voided"] = self._void_orphan_holds(now)
            return counts

    def _end_overdue(self, now: datetime, status: JobStatus, to: JobStatus) -> int:
        with self.db.session() as session:
            overdue = list(
                session.scalars(
                    select(PredictionJob.id)
                    .where(
                        PredictionJob.kind.in_(MARKET_KINDS),
                        PredictionJob.status == status,
                        PredictionJob.deadline_at <= now,
                    )
                    .limit(BATCH)
                )
            )
        ended = 0
        for job_id in overdue:
            with self.db.session() as session:
                self.settlement.lock(session)
                updated = session.execute(
                    update(PredictionJob)
                    .where(PredictionJob.id == job_id, PredictionJob.status == status)
                    .values(status=to, claim_token=None, finished_at=now, updated_at=now,
                            error={"code": "deadline_passed", "message": "the request's deadline passed"})
                )  # fmt: skip
                if updated.rowcount != 1:  # type: ignore[attr-defined]
                    continue
                record_event(session, job_id, to, None, "deadline passed")
                self.settlement.settle(session, job_id, to)
                ended += 1
        return ended

    def _void_orphan_holds(self, now: datetime) -> int:
        """Holds still open although their request has ended, or past their own timeout."""
        resolution = aliased(LedgerTransfer)
        still_open = ~exists().where(resolution.pending_id == LedgerTransfer.id)
        with self.db.session() as session:
            rows = session.execute(
                select(LedgerTransfer.id, PredictionJob.id, PredictionJob.status, LedgerTransfer.timeout_at)
                .join(PredictionJob, PredictionJob.hold_transfer_id == LedgerTransfer.id)
                .where(
                    LedgerTransfer.phase == "pending",
                    still_open,
                    and_(PredictionJob.status.in_(TERMINAL)) | (LedgerTransfer.timeout_at <= now),
                    PredictionJob.status != JobStatus.COMPLETED,
                )
                .limit(BATCH)
            ).all()
        voided = 0
        for _hold_id, job_id, _status, _timeout in rows:
            with self.db.session() as session:
                self.settlement.lock(session)
                job = session.get(PredictionJob, job_id, populate_existing=True)
                assert job is not None
                if job.status not in TERMINAL:  # its hold timed out: the request ends with it
                    session.execute(
                        update(PredictionJob)
                        .where(PredictionJob.id == job_id, PredictionJob.status == job.status)
                        .values(status=JobStatus.FAILED, claim_token=None, finished_at=now, updated_at=now,
                                error={"code": "hold_expired", "message": "the request's hold timed out"})
                    )  # fmt: skip
                    record_event(session, job_id, JobStatus.FAILED, None, "hold timed out")
                if self.settlement.journal.is_open(session, job.hold_transfer_id or ""):
                    self.settlement.release(session, job, expired=job.status not in TERMINAL)
                    voided += 1
        return voided
