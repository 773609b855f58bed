"""Evaluator leases: evaluators claim queued requests, renew the lease by heartbeat, submit a result
or release the request. A claim is a conditional UPDATE that moves the request from pending to
processing and bumps its lease counter, so exactly one evaluator wins a race; the new counter is the
claim's fencing token, and only the newest holder's result is accepted (Q1). A lease that runs out
returns the request to the queue, ``market_max_attempts`` times, then the request fails and its
hold is voided. A result at or after the request's deadline is refused: it could know the outcome.
"""

from __future__ import annotations

import statistics
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from prediction_provider.accounts.principal import Principal
from prediction_provider.clock import Clock
from prediction_provider.config import Settings
from prediction_provider.db.ledger_models import LedgerAccount, LedgerTransfer
from prediction_provider.db.market_models import EvaluatorClaim
from prediction_provider.db.models import PredictionJob, PredictionRecord
from prediction_provider.db.session import Database
from prediction_provider.errors import Conflict, InvalidInput, MarketNotFound, TooLate
from prediction_provider.forecasts.outputs import canonical_sha256, validate_output
from prediction_provider.forecasts.records import evaluator_answer_row
from prediction_provider.jobs.records import TERMINAL, JobStatus, record_event
from prediction_provider.ledger.money import format_amount
from prediction_provider.marketplace.quality import FORMULA as QUALITY_FORMULA
from prediction_provider.marketplace.quality import realized_quality
from prediction_provider.marketplace.settlement import Settlement

EVALUATION = "evaluation"
REASONS = frozenset({"insufficient_resources", "technical_issue", "other"})
WINDOWS = {"7d": 7, "30d": 30, "90d": 90}
BATCH = 200
QUEUE_SCAN = 5000


class AlreadyClaimed(Conflict):
    code = "already_claimed"


class SelfDealing(Conflict):
    code = "self_dealing"


class StaleLease(Conflict):
    code = "stale_lease"


class LeaseExpired(Conflict):
    code = "lease_expired"


class AlreadySubmitted(Conflict):
    code = "already_submitted"


@dataclass(frozen=True, slots=True)
class Released:
    request_status: str  # queued | failed
    attempts: int


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def claim_view(claim: EvaluatorClaim) -> dict[str, Any]:
    return {
        "claim_id": claim.id, "request_id": claim.request_id, "evaluator_id": claim.evaluator_id,
        "lease_token": claim.lease_token, "lease_expires_at": _iso(claim.lease_expires_at),
        "state": claim.state, "reason": claim.reason, "created_at": _iso(claim.created_at),
        "finished_at": _iso(claim.finished_at),
    }  # fmt: skip


def evaluator_fee(job: PredictionJob) -> int:
    return int(((job.parameters or {}).get("breakdown") or {}).get("evaluator", 0))


def job_input(job: PredictionJob) -> dict[str, Any]:
    """What the evaluator computes from: the request's spec and the times that bound it."""
    parameters = job.parameters or {}
    return {
        **(job.input or {}), "model": job.model_name, "model_version": job.model_version,
        "target": parameters.get("target"), "interval": parameters.get("interval"),
        "data_as_of": _iso(job.data_as_of), "target_time": _iso(job.target_time),
        "deadline_at": _iso(job.deadline_at),
    }  # fmt: skip


class Leases:
    def __init__(self, db: Database, clock: Clock, settlement: Settlement, settings: Settings) -> None:
        self.db = db
        self.clock = clock
        self.settlement = settlement
        self.settings = settings
        self.lease = timedelta(seconds=settings.lease_s)

    # -- the queue -----------------------------------------------------------------------------------

    def queue(
        self, evaluator: Principal | None = None, *, symbol: str | None = None, target: str | None = None,
        limit: int = 50, offset: int = 0,
    ) -> tuple[list[dict[str, Any]], int]:  # fmt: skip
        """Queued evaluator requests not past their deadline, oldest first, and how many match."""
        now = self.clock.now()
        self.expire_leases(now)
        with self.db.session() as session:
            query = (
                select(PredictionJob)
                .where(
                    PredictionJob.kind == EVALUATION,
                    PredictionJob.status == JobStatus.PENDING,
                    PredictionJob.deadline_at > now,
                )
                .order_by(PredictionJob.created_at, PredictionJob.id)
                .limit(QUEUE_SCAN)
            )
            if evaluator is not None and evaluator.user_id is not None:
                query = query.where(PredictionJob.owner_id != evaluator.user_id)
            jobs = [
                job
                for job in session.scalars(query)
                if (symbol is None or str((job.input or {}).get("symbol", "")).upper() == symbol.upper())
                and (target is None or (job.parameters or {}).get("target") == target)
            ]
            items = [
                {
                    "request_id": job.id,
                    "offer_id": job.offer_id,
                    "model": job.model_name,
                    "model_version": job.model_version,
                    "spec": job.input,
                    "target": (job.parameters or {}).get("target"),
                    "evaluator_fee": format_amount(evaluator_fee(job)),
                    "currency": job.currency,
                    "deadline_at": _iso(job.deadline_at),
                    "target_time": _iso(job.target_time),
                    "attempts": job.attempts,
                }
                for job in jobs[offset : offset + limit]
            ]
            return items, len(jobs)

    # -- claims --------------------------------------------------------------------------------------

    def claim(self, evaluator: Principal, request_id: str | None) -> dict[str, Any]:
        """Claim ``request_id``, or the oldest claimable request; 409 if someone else won it."""
        assert evaluator.user_id is not None
        now = self.clock.now()
        self.expire_leases(now)
        if request_id is not None:
            return self._claim_one(evaluator.user_id, request_id, now)
        for _ in range(20):  # a "next" claim that lost a race tries the next request
            try:
                return self._claim_one(evaluator.user_id, None, now)
            except AlreadyClaimed:
                continue
        raise AlreadyClaimed("every queued request was claimed first: try again", {})

    @staticmethod
    def _next_candidate(session: Session, evaluator_id: int, now: datetime) -> str | None:
        """The oldest claimable request; on PostgreSQL its row stays locked (rows other claimers
        hold are skipped) until this transaction's conditional update commits."""
        query = (
            select(PredictionJob.id)
            .where(
                PredictionJob.kind == EVALUATION,
                PredictionJob.status == JobStatus.PENDING,
                PredictionJob.deadline_at > now,
                PredictionJob.owner_id != evaluator_id,
            )
            .order_by(PredictionJob.created_at, PredictionJob.id)
            .limit(1)
        )
        if session.get_bind().dialect.name == "postgresql":
            query = query.with_for_update(skip_locked=True)
        return session.scalar(query)

    def _claim_one(self, evaluator_id: int, wanted: str | None, now: datetime) -> dict[str, Any]:
        with self.db.session() as session:
            request_id = wanted or self._next_candidate(session, evaluator_id, now)
            if request_id is None:
                raise MarketNotFound("no queued request to claim", {"queue": "empty"})
            job = session.get(PredictionJob, request_id)
            if job is None or job.kind != EVALUATION:
                raise MarketNotFound(
                    "no request executed by evaluators with this id", {"request_id": request_id}
                )
            if job.owner_id == evaluator_id:
                raise SelfDealing("an evaluator may not evaluate its own request", {"request_id": request_id})
            if job.deadline_at is not None and job.deadline_at <= now and job.status == JobStatus.PENDING:
                raise TooLate(
                    "the request's deadline has passed",
                    {"request_id": request_id, "deadline_at": _iso(job.deadline_at)},
                )
            updated = session.execute(
                update(PredictionJob)
                .where(
                    PredictionJob.id == request_id,
                    PredictionJob.status == JobStatus.PENDING,
                    PredictionJob.kind == EVALUATION,
                    PredictionJob.deadline_at > now,
                )
                .values(status=JobStatus.PROCESSING, lease_counter=PredictionJob.lease_counter + 1,
                        heartbeat_at=now, started_at=now, updated_at=now)
                .returning(PredictionJob.lease_counter, PredictionJob.deadline_at)
            ).first()  # fmt: skip
            if updated is None:
                session.rollback()
                current = session.get(PredictionJob, request_id, populate_existing=True)
                status = current.status if current is not None else None
                raise AlreadyClaimed(
                    "the request is not queued: another evaluator claimed it, or it ended",
                    {"request_id": request_id, "status": status},
                )
            token, deadline = int(updated[0]), updated[1]
            assert deadline is not None
            claim = EvaluatorClaim(
                id=str(uuid.uuid4()), request_id=request_id, evaluator_id=evaluator_id, lease_token=token,
                lease_expires_at=min(now + self.lease, deadline), state="active", created_at=now,
            )  # fmt: skip
            session.add(claim)
            record_event(session, request_id, JobStatus.PROCESSING, f"evaluator:{evaluator_id}", "claimed")
            session.flush()
            job = session.get(PredictionJob, request_id, populate_existing=True)
            assert job is not None
            if self.settlement.announce is not None:
                self.settlement.announce(session, job, "prediction_request.claimed")
            return {**claim_view(claim), "input": job_input(job)}

    def _held(
        self, session: Session, evaluator: Principal, claim_id: str
    ) -> tuple[EvaluatorClaim, PredictionJob]:
        claim = session.get(EvaluatorClaim, claim_id, populate_existing=True)
        if claim is None or claim.evaluator_id != evaluator.user_id:
            raise MarketNotFound("no claim of yours with this id", {"claim_id": claim_id})
        job = session.get(PredictionJob, claim.request_id, populate_existing=True)
        assert job is not None
        return claim, job

    @staticmethod
    def _fenced(claim: EvaluatorClaim, job: PredictionJob, token: int, now: datetime) -> None:
        """The fencing rule: an active claim, the request's current token, a lease still running."""
        if token != claim.lease_token or token != job.lease_counter:
            raise StaleLease(
                "the lease token is not the request's current one",
                {"claim_id": claim.id, "lease_token": token, "current": job.lease_counter},
            )
        if claim.state == "expired" or (claim.state == "active" and now >= claim.lease_expires_at):
            raise LeaseExpired(
                "the lease ran out; the request went back to the queue",
                {"claim_id": claim.id, "lease_expires_at": _iso(claim.lease_expires_at)},
            )
        if claim.state != "active" or job.status != JobStatus.PROCESSING:
            raise StaleLease("the claim is no longer active", {"claim_id": claim.id, "state": claim.state})

    def heartbeat(self, evaluator: Principal, claim_id: str, token: int) -> dict[str, Any]:
        now = self.clock.now()
        expired = False
        with self.db.session() as session:
            claim, job = self._held(session, evaluator, claim_id)
            try:
                self._fenced(claim, job, token, now)
            except LeaseExpired:
                expired = claim.state == "active"
                if not expired:
                    raise
            if not expired:
                assert job.deadline_at is not None
                claim.lease_expires_at = min(now + self.lease, job.deadline_at)
                job.heartbeat_at = now
                job.updated_at = now
                return {
                    "claim_id": claim.id,
                    "lease_token": token,
                    "lease_expires_at": _iso(claim.lease_expires_at),
                }
        self.expire_leases(now)
        raise LeaseExpired("the lease ran out; the request went back to the queue", {"claim_id": claim_id})

    def result(self, evaluator: Principal, claim_id: str, token: int, output: Any) -> dict[str, Any]:
        now = self.clock.now()
        with self.db.session() as session:
            claim, job = self._held(session, evaluator, claim_id)
            target = str((job.parameters or {}).get("target"))
        checked = validate_output(target, output)  # 422: nothing changes, the claim stays active
        digest = canonical_sha256(checked)
        with self.db.session() as session:
            self.settlement.lock(session)  # first: this transaction may move money
            claim, job = self._held(session, evaluator, claim_id)
            if claim.state == "submitted":
                if token == claim.lease_token and claim.output_sha256 == digest:
                    return self._paid(job)
                raise AlreadySubmitted(
                    "a different result was already accepted for this claim", {"claim_id": claim_id}
                )
            if job.deadline_at is not None and now >= job.deadline_at:
                error = {"code": "too_late", "message": "the result came after the deadline"}
                failed = self._end(session, claim, job, now, "expired", JobStatus.FAILED, error)
                too_late: TooLate | None = TooLate(
                    "the deadline has passed: a result now could already know the outcome",
                    {"request_id": job.id, "deadline_at": _iso(job.deadline_at), "request_failed": failed},
                )
            else:
                too_late = None
                lapsed = claim.state == "active" and now >= claim.lease_expires_at
                if not lapsed:
                    self._fenced(claim, job, token, now)
                    completed = session.execute(
                        update(PredictionJob)
                        .where(PredictionJob.id == job.id, PredictionJob.status == JobStatus.PROCESSING,
                               PredictionJob.kind == EVALUATION, PredictionJob.lease_counter == token)
                        .values(status=JobStatus.COMPLETED, executed_by=evaluator.user_id,
                                result={"output": checked, "evaluator_id": evaluator.user_id},
                                result_sha256=digest, finished_at=now, updated_at=now, progress=1.0,
                                heartbeat_at=now)
                    )  # fmt: skip
                    if completed.rowcount != 1:  # type: ignore[attr-defined]
                        raise StaleLease("the request moved on", {"claim_id": claim_id})
                    claim.state, claim.output, claim.output_sha256, claim.finished_at = (
                        "submitted", checked, digest, now,
                    )  # fmt: skip
                    record_event(session, job.id, JobStatus.COMPLETED, f"evaluator:{evaluator.user_id}",
                                 "result accepted")  # fmt: skip
                    # One record per answer: scored against the market exactly as a platform answer.
                    answer = evaluator_answer_row(job, checked, evaluator.user_id, now)
                    session.add(PredictionRecord(**answer))
                    session.flush()
                    self.settlement.settle(session, job.id, JobStatus.COMPLETED)
                    return self._paid(job)
        if too_late is not None:
            raise too_late
        self.expire_leases(now)
        raise LeaseExpired(
            "the lease ran out; the request went back to the queue",
            {"claim_id": claim_id, "lease_expires_at": _iso(claim.lease_expires_at)},
        )

    @staticmethod
    def _paid(job: PredictionJob) -> dict[str, Any]:
        return {"request_id": job.id, "request_status": "completed",
                "paid": format_amount(evaluator_fee(job)), "currency": job.currency}  # fmt: skip

    def release(
        self, evaluator: Principal, claim_id: str, token: int, reason: str, details: str | None = None
    ) -> Released:
        if reason not in REASONS:
            raise InvalidInput(
                f"reason is one of {', '.join(sorted(REASONS))}",
                [{"field": "reason", "error": "unknown reason"}],
            )
        now = self.clock.now()
        with self.db.session() as session:
            self.settlement.lock(session)
            claim, job = self._held(session, evaluator, claim_id)
            self._fenced(claim, job, token, now)
            claim.reason, claim.details = reason, details
            error = {"code": "attempts_exhausted", "message": f"released: {reason}"}
            status = self._back_or_fail(session, claim, job, now, "released", error)
            return Released("queued" if status == JobStatus.PENDING else "failed", job.attempts)

    # -- ending a claim ------------------------------------------------------------------------------

    def _back_or_fail(
        self, session: Session, claim: EvaluatorClaim, job: PredictionJob, now: datetime, state: str,
        error: dict[str, Any],
    ) -> str | None:  # fmt: skip
        """End ``claim`` as ``state``; the request goes back to the queue, or fails at max attempts."""
        attempts = job.attempts + 1
        to = JobStatus.PENDING if attempts < self.settings.market_max_attempts else JobStatus.FAILED
        if job.deadline_at is not None and now >= job.deadline_at:
            to = JobStatus.FAILED
        return self._end(session, claim, job, now, state, to, error)

    def _end(
        self, session: Session, claim: EvaluatorClaim, job: PredictionJob, now: datetime, state: str,
        to: JobStatus, error: dict[str, Any],
    ) -> str | None:  # fmt: skip
        """Conditionally move the request on from the claim holding it; the caller holds the lock."""
        values: dict[str, Any] = {"status": to, "attempts": PredictionJob.attempts + 1, "updated_at": now,
                                  "heartbeat_at": None}  # fmt: skip
        if to == JobStatus.FAILED:
            values.update(finished_at=now, error=error)
        moved = session.execute(
            update(PredictionJob)
            .where(PredictionJob.id == job.id, PredictionJob.status == JobStatus.PROCESSING,
                   PredictionJob.lease_counter == claim.lease_token)
            .values(**values)
        )  # fmt: skip
        if claim.state == "active":
            claim.state, claim.finished_at = state, now
        if moved.rowcount != 1:  # type: ignore[attr-defined]
            return None
        record_event(session, job.id, to, f"evaluator:{claim.evaluator_id}", f"claim {state}")
        session.flush()
        if to == JobStatus.FAILED:
            self.settlement.settle(session, job.id, JobStatus.FAILED)
        session.refresh(job)
        return to

    def expire_leases(self, now: datetime) -> int:
        """Active claims whose lease ran out: expired; their request back to the queue, or failed."""
        with self.db.session() as session:
            lapsed = list(
                session.scalars(
                    select(EvaluatorClaim.id)
                    .where(EvaluatorClaim.state == "active", EvaluatorClaim.lease_expires_at <= now)
                    .order_by(EvaluatorClaim.lease_expires_at)
                    .limit(BATCH)
                )
            )
        ended = 0
        for claim_id in lapsed:
            with self.db.session() as session:
                self.settlement.lock(session)
                claim = session.get(EvaluatorClaim, claim_id, populate_existing=True)
                if claim is None or claim.state != "active":
                    continue
                job = session.get(PredictionJob, claim.request_id, populate_existing=True)
                assert job is not None
                self._back_or_fail(session, claim, job, now, "expired",
                                   {"code": "attempts_exhausted", "message": "leases ran out"})  # fmt: skip
                ended += 1
        return ended

    # -- reading -------------------------------------------------------------------------------------

    def claims(
        self, evaluator: Principal, state: str | None, limit: int = 50, offset: int = 0
    ) -> tuple[list[dict[str, Any]], int]:
        self.expire_leases(self.clock.now())
        with self.db.session() as session:
            where = [EvaluatorClaim.evaluator_id == evaluator.user_id]
            if state is not None:
                where.append(EvaluatorClaim.state == state)
            total = session.scalar(select(func.count()).select_from(EvaluatorClaim).where(*where)) or 0
            rows = session.scalars(
                select(EvaluatorClaim).where(*where)
                .order_by(EvaluatorClaim.created_at.desc(), EvaluatorClaim.id).offset(offset).limit(limit)
            )  # fmt: skip
            items = []
            for claim in rows:
                job = session.get(PredictionJob, claim.request_id)
                view = claim_view(claim)
                if job is not None:
                    view["input"] = job_input(job)
                    view["evaluator_fee"] = format_amount(evaluator_fee(job))
                items.append(view)
            return items, int(total)

    def active_claim(self, evaluator: Principal, request_id: str) -> EvaluatorClaim:
        """The caller's newest claim on ``request_id`` (the seed's routes name the request)."""
        with self.db.session() as session:
            claim = session.scalar(
                select(EvaluatorClaim)
                .where(
                    EvaluatorClaim.request_id == request_id, EvaluatorClaim.evaluator_id == evaluator.user_id
                )
                .order_by(EvaluatorClaim.created_at.desc(), EvaluatorClaim.lease_token.desc())
                .limit(1)
            )
            if claim is None:
                raise MarketNotFound("you hold no claim on this request", {"request_id": request_id})
            session.expunge(claim)
            return claim

    def stats(self, evaluator: Principal, window: str = "30d") -> dict[str, Any]:
        """Claims, success, latency and earnings in the window, and ``quality_score``: the realized
        hit rate of the answers this evaluator executed whose target time falls in the window (see
        ``marketplace.quality``: direction hit, return sign hit, signal accuracy over current
        eligible score rows; null until one is scored). ``scored_n`` counts those rows and
        ``mean_primary_metric`` is the same hit rate. Never from the evaluator's own report."""
        if window not in WINDOWS:
            raise InvalidInput(
                "window is 7d, 30d or 90d", [{"field": "query.window", "error": "unknown window"}]
            )
        now = self.clock.now()
        since = now - timedelta(days=WINDOWS[window])
        currency = self.settings.default_currency
        with self.db.session() as session:
            rows = list(
                session.scalars(
                    select(EvaluatorClaim).where(
                        EvaluatorClaim.evaluator_id == evaluator.user_id, EvaluatorClaim.created_at >= since
                    )
                )
            )
            earned = session.scalar(
                select(func.coalesce(func.sum(LedgerTransfer.amount), 0))
                .join(LedgerAccount, LedgerAccount.id == LedgerTransfer.credit_account_id)
                .where(
                    LedgerAccount.code == f"evaluator:{evaluator.user_id}",
                    LedgerAccount.currency == currency,
                    LedgerTransfer.kind == "payout_evaluator",
                    LedgerTransfer.created_at >= since,
                )
            )
            quality = realized_quality(session, evaluator_id=evaluator.user_id, since=since)
        by_state = {
            state: sum(1 for c in rows if c.state == state) for state in ("submitted", "released", "expired")
        }
        latencies = [
            (c.finished_at - c.created_at).total_seconds()
            for c in rows
            if c.state == "submitted" and c.finished_at is not None
        ]
        finished = by_state["submitted"] + by_state["released"] + by_state["expired"]
        return {
            "window": window, "claims": len(rows), "active": sum(1 for c in rows if c.state == "active"),
            "completed": by_state["submitted"], "released": by_state["released"],
            "expired": by_state["expired"],
            "success_rate": None if finished == 0 else by_state["submitted"] / finished,
            "median_latency_s": None if not latencies else statistics.median(latencies),
            "earnings": format_amount(int(earned or 0)), "currency": currency,
            "scored_n": quality.n, "mean_primary_metric": quality.value, "quality_score": quality.value,
            "quality_formula": QUALITY_FORMULA,
        }  # fmt: skip


__all__ = ["TERMINAL", "AlreadyClaimed", "Leases", "Released"]
