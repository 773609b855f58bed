"""Money follows a request's status, in the same transaction as the status change.

``JobStore`` calls :meth:`Settlement.lock` before it moves a priced job to a terminal status and
:meth:`Settlement.settle` after, inside one transaction: a completed request's hold is captured and
split (platform fee, evaluator, provider) out of escrow; a failed, cancelled or expired one has its
hold voided. If any leg fails the whole transaction rolls back, status included, so a request is
never half-paid, and the deterministic transfer ids make a retried settlement a no-op.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from prediction_provider.clock import Clock
from prediction_provider.db.ledger_models import LedgerAccount, LedgerTransfer
from prediction_provider.db.models import PredictionJob
from prediction_provider.errors import Conflict, LedgerConflict, PaymentRequired
from prediction_provider.jobs.records import JobStatus
from prediction_provider.ledger.journal import Journal
from prediction_provider.ledger.money import format_amount

MARKET_KINDS = frozenset({"market", "evaluation"})
# What each terminal status announces.
EVENTS = {
    JobStatus.COMPLETED: "prediction_request.completed",
    JobStatus.FAILED: "prediction_request.failed",
    JobStatus.CANCELLED: "prediction_request.cancelled",
    JobStatus.EXPIRED: "prediction_request.expired",
}
Announcer = Callable[[Session, PredictionJob, str], None]


class PayableInsufficient(PaymentRequired):
    code = "payable_insufficient"


class Settlement:
    def __init__(self, journal: Journal, clock: Clock, announce: Announcer | None = None) -> None:
        self.journal = journal
        self.clock = clock
        self.announce = announce

    def lock(self, session: Session) -> None:
        self.journal.lock(session)

    def settle(self, session: Session, job_id: str, status: str) -> None:
        """Capture or void the hold of a request that just became ``status``; other jobs: nothing."""
        job = session.get(PredictionJob, job_id, populate_existing=True)
        if job is None or job.hold_transfer_id is None:  # an unpaid job
            return
        if status == JobStatus.COMPLETED:
            self.capture(session, job)
        elif status in (JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.EXPIRED):
            self.release(session, job, expired=False)
        if self.announce is not None and status in EVENTS:
            self.announce(session, job, EVENTS[JobStatus(status)])

    def capture(self, session: Session, job: PredictionJob) -> None:
        rid, currency = job.id, job.currency or ""
        legs: dict[str, int] = (job.parameters or {}).get("breakdown") or {}
        self.journal.post(session, f"cap:{rid}", job.hold_transfer_id or "", "capture", request_id=rid)
        payouts = (
            (f"fee:{rid}", "platform:fees", "fee", int(legs.get("platform_fee", 0))),
            (f"evp:{rid}", f"evaluator:{job.executed_by}", "payout_evaluator", int(legs.get("evaluator", 0))),
            (
                f"prv:{rid}",
                f"provider:{job.parameters.get('provider_id')}",
                "payout_provider",
                int(legs.get("provider", 0)),
            ),
        )
        paid = 0
        for transfer_id, account, kind, amount in payouts:
            if amount <= 0:
                continue
            if kind == "payout_evaluator" and job.executed_by is None:
                account = "platform:fees"  # nobody evaluated it: the platform keeps the evaluator's share
            self.journal.single(
                session, transfer_id, "escrow", account, amount, currency, kind, request_id=rid
            )
            paid += amount
        if paid != job.price:
            raise LedgerConflict(
                "the legs of the split do not sum to the price", {"price": job.price, "legs": legs}
            )

    def release(self, session: Session, job: PredictionJob, *, expired: bool) -> None:
        """Void the hold unless it was already resolved (the sweeper and a cancel may both get here)."""
        hold = job.hold_transfer_id or ""
        if self.journal.is_open(session, hold):
            kind = "void"
            self.journal.void(session, f"void:{job.id}", hold, kind, expired=expired, request_id=job.id)

    def refund(
        self, session: Session, job: PredictionJob, amount: int | None, reason: str, key: str,
        actor_user_id: int | None,
    ) -> list[LedgerTransfer]:  # fmt: skip
        """Compensating transfers after a capture: each payee gives back its share in proportion,
        never more than was charged in all. The refund's ``key`` names its transfers
        (``ref:{rid}:{key}:{leg}``), so the same refund sent twice moves money once."""
        prefix = f"ref:{job.id}:{key}:"
        earlier = list(session.scalars(select(LedgerTransfer).where(LedgerTransfer.id.startswith(prefix))))
        if earlier:
            return earlier
        if session.get(LedgerTransfer, f"cap:{job.id}") is None:
            raise Conflict("only a completed, charged request can be refunded", {"request_id": job.id})
        refunded = refunded_amount(session, job.id)
        remaining = (job.price or 0) - refunded
        amount = remaining if amount is None else amount
        if amount <= 0 or amount > remaining:
            raise Conflict(
                "a refund is positive and never more than what is left of the charge",
                {"charged": format_amount(job.price or 0), "refunded": format_amount(refunded)},
            )
        legs = list(
            session.scalars(
                select(LedgerTransfer)
                .where(LedgerTransfer.id.in_([f"fee:{job.id}", f"evp:{job.id}", f"prv:{job.id}"]))
                .order_by(LedgerTransfer.seq)
            )
        )
        shares = proportional(amount, [(leg.id.split(":")[0], leg.amount) for leg in legs])
        sources = {leg.id.split(":")[0]: leg.credit_account_id for leg in legs}
        made = []
        for leg, share in shares:
            if share <= 0:
                continue
            source = session.get(LedgerAccount, sources[leg])
            assert source is not None
            try:
                made.append(
                    self.journal.single(
                        session, prefix + leg, source.code, f"client:{job.owner_id}", share,
                        job.currency or "", "refund", request_id=job.id, actor_user_id=actor_user_id,
                        reason=reason,
                    )
                )  # fmt: skip
            except PaymentRequired as exc:
                raise PayableInsufficient(
                    f"{source.code} has already paid out its share: refund from the fees instead",
                    exc.details,
                ) from exc
        return made


def proportional(amount: int, shares: list[tuple[str, int]]) -> list[tuple[str, int]]:
    """Split ``amount`` in proportion to ``shares`` exactly (largest remainders), so it sums."""
    total = sum(share for _, share in shares)
    if total == 0:
        return []
    exact = [(leg, amount * share // total, amount * share % total) for leg, share in shares]
    left = amount - sum(part for _, part, _ in exact)
    order = sorted(range(len(exact)), key=lambda i: (-exact[i][2], i))
    parts = [part for _, part, _ in exact]
    for i in order[:left]:
        parts[i] += 1
    return [(leg, parts[i]) for i, (leg, _, _) in enumerate(exact)]


def refunded_amount(session: Session, request_id: str) -> int:
    return int(
        session.scalar(
            select(func.coalesce(func.sum(LedgerTransfer.amount), 0)).where(
                LedgerTransfer.request_id == request_id, LedgerTransfer.kind == "refund"
            )
        )
        or 0
    )


def money_of(session: Session, job: PredictionJob) -> dict[str, Any]:
    """``{price, held, charged, refunded}`` of a request, read from the journal."""
    price = job.price or 0
    found: set[str] = set()
    if job.hold_transfer_id is not None:
        found = set(
            session.scalars(
                select(LedgerTransfer.id).where(LedgerTransfer.id.in_([f"cap:{job.id}", f"void:{job.id}"]))
            )
        )
    charged = price if f"cap:{job.id}" in found else 0
    voided = price if f"void:{job.id}" in found else 0
    held = price if job.hold_transfer_id is not None and not charged and not voided else 0
    return {
        "price": format_amount(price), "held": format_amount(held), "charged": format_amount(charged),
        "refunded": format_amount(voided + refunded_amount(session, job.id)), "currency": job.currency,
    }  # fmt: skip
