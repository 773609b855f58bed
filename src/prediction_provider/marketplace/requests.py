"""Paid requests: a ``prediction_jobs`` row with money attached.

Submit is one transaction: the price is resolved (quote, offer or route), ``max_cost``, the open
request cap, the spending limits and the balance are checked, the hold is placed, the job row and
its ``queued`` event are written. Anything refused raises before commit, so a refused submit
writes nothing. The job's own ``UNIQUE(owner_id, idempotency_key)`` makes a retried submit (after
a lost response, or a crash between commit and answer) return the first request, never a second.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from prediction_provider.accounts.principal import Principal
from prediction_provider.clock import Clock
from prediction_provider.config import Settings
from prediction_provider.db.market_models import Quote
from prediction_provider.db.models import PredictionJob
from prediction_provider.db.session import Database
from prediction_provider.errors import (
    Conflict,
    InsufficientFunds,
    InvalidInput,
    MarketNotFound,
    MaxCostExceeded,
    RateLimited,
    SpendingLimitExceeded,
)
from prediction_provider.jobs.records import TERMINAL, JobStatus, input_digest, record_event
from prediction_provider.ledger import service as ledger_service
from prediction_provider.ledger.journal import Journal
from prediction_provider.ledger.money import format_amount, parse_amount
from prediction_provider.marketplace.offers import OfferBook, Priced, Spec, check_spec
from prediction_provider.marketplace.settlement import MARKET_KINDS, Announcer

# How a request's job status reads in the marketplace's words.
MARKET_STATUS = {
    JobStatus.PENDING: "queued",
    JobStatus.COMPLETED: "completed",
    JobStatus.FAILED: "failed",
    JobStatus.CANCELLED: "cancelled",
    JobStatus.EXPIRED: "expired",
}


def model_reference(name: str, version: str | None) -> str:
    """The registry reference of an offer's model: a pinned version, else the name's champion."""
    return name if version is None else f"models:/{name}/{version}"


def market_status(job: PredictionJob) -> str:
    if job.status == JobStatus.PROCESSING:
        return "claimed" if job.execution == "evaluators" else "running"
    return MARKET_STATUS.get(JobStatus(job.status), job.status)


@dataclass(frozen=True, slots=True)
class Submission:
    spec: Spec
    max_cost: int
    currency: str
    quote_id: str | None = None
    offer_id: str | None = None
    target: str | None = None
    route: str | None = None
    webhook_url: str | None = None
    priority: str | None = None
    route_reason: str | None = None  # set once a route chose the offer (``offer_id`` then pinned)


@dataclass(frozen=True, slots=True)
class MarketTimes:
    """When the request's data ends, what it forecasts, and when a result stops being accepted."""

    data_as_of: datetime
    target_time: datetime
    deadline_at: datetime
    historical: bool  # the target time had already passed: the outcome is in the recorded bars


TimesOf = Callable[[Priced, Spec, datetime], tuple[datetime, datetime]]


class RequestBook:
    def __init__(
        self,
        db: Database,
        clock: Clock,
        journal: Journal,
        offers: OfferBook,
        settings: Settings,
        times_of: TimesOf,
        announce: Announcer | None = None,
    ) -> None:
        self.db = db
        self.clock = clock
        self.journal = journal
        self.offers = offers
        self.settings = settings
        self.times_of = times_of  # (priced, spec, now) -> (data_as_of, target_time); reads bars
        self.announce = announce

    def times(self, priced: Priced, spec: Spec, at: datetime | None = None) -> MarketTimes:
        """The request's times as of ``at`` (default: the clock now)."""
        now = self.clock.now() if at is None else at
        data_as_of, target_time = self.times_of(priced, spec, now)
        deadline = target_time - timedelta(seconds=self.settings.result_margin_s)
        historical = deadline <= now
        if historical:
            deadline = now + timedelta(seconds=self.settings.request_ttl_s)
        return MarketTimes(data_as_of, target_time, deadline, historical)

    def submit(self, client: Principal, submission: Submission, key: str) -> tuple[PredictionJob, bool]:
        """The new request (``True``), or the one this key already made (``False``)."""
        if client.user_id is None:
            raise InvalidInput("sign in to buy predictions", {"field": "credentials"})
        submission = self._with_quoted_spec(client, submission)
        existing = self._by_key(client.user_id, key)
        if existing is not None:
            return self._same(existing, submission), False
        submission = self._routed(submission)
        # Reading bars is slow and needs no lock: done before the transaction, from the offer now
        # open (a quote's offer is the same offer; its price is re-read under the lock).
        preview = self._preview(client, submission)
        times = self.times(preview, submission.spec)
        request_id = str(uuid.uuid4())
        try:
            with self.db.session() as session:
                self.journal.lock(session)
                job = self._submit_locked(session, client, submission, key, request_id, times)
        except IntegrityError:
            existing = self._by_key(client.user_id, key)
            if existing is None:
                raise
            return self._same(existing, submission), False
        return job, True

    def _with_quoted_spec(self, client: Principal, submission: Submission) -> Submission:
        """A request by quote asks what the quote was for."""
        if submission.quote_id is None:
            return submission
        with self.db.session() as session:
            quote = session.get(Quote, submission.quote_id)
        if quote is None or quote.client_id != client.user_id:
            raise MarketNotFound(
                f"no quote {submission.quote_id!r} of yours", {"quote_id": submission.quote_id}
            )
        return replace(submission, spec=Spec(**quote.spec), currency=quote.currency)

    def _routed(self, submission: Submission) -> Submission:
        """A request by route names its offer from here on: the route (``best`` reads the
        leaderboard, which is slow) is chosen once, before the journal lock, and said in the answer."""
        if submission.quote_id is not None or submission.offer_id is not None or submission.target is None:
            return submission
        spec = submission.spec
        routed = self.offers.routed(
            spec.symbol, spec.horizon, submission.target, submission.route or "cheapest", submission.currency
        )
        return replace(submission, offer_id=routed.priced.offer.id, route_reason=routed.reason)

    def _preview(self, client: Principal, submission: Submission) -> Priced:
        with self.db.session() as session:
            return self._resolve(session, client, submission, None)

    def _resolve(
        self, session: Session, client: Principal, submission: Submission, request_id: str | None
    ) -> Priced:
        spec = submission.spec
        if submission.quote_id is not None:
            if request_id is None:  # the preview: read the quote without using it
                quote = session.get(Quote, submission.quote_id)
                if quote is None or quote.client_id != client.user_id:
                    raise MarketNotFound(
                        f"no quote {submission.quote_id!r} of yours", {"quote_id": submission.quote_id}
                    )
                priced = self.offers.current(session, quote.offer_id)
                if priced is None:
                    raise MarketNotFound("the quote's offer is gone", {"quote_id": submission.quote_id})
            else:
                quote, priced = self.offers.redeem(session, client, submission.quote_id, request_id)
                if quote.spec != spec.as_dict():
                    raise InvalidInput(
                        "the request asks something other than its quote", {"field": "quote_id"}
                    )
        elif submission.offer_id is not None:
            priced = self.offers.current(session, submission.offer_id)
            if priced is None:
                raise MarketNotFound(f"no offer {submission.offer_id!r}", {"offer_id": submission.offer_id})
        else:
            if submission.target is None:
                raise InvalidInput("name a quote_id, an offer_id, or a target and route", {"field": "target"})
            priced = self.offers.route(
                session,
                spec.symbol,
                spec.horizon,
                submission.target,
                submission.route or "cheapest",
                submission.currency,
            )
        check_spec(priced.offer, spec)
        return priced

    def _submit_locked(
        self,
        session: Session,
        client: Principal,
        submission: Submission,
        key: str,
        request_id: str,
        times: MarketTimes,
    ) -> PredictionJob:
        assert client.user_id is not None
        priced = self._resolve(session, client, submission, request_id)
        offer, price = priced.offer, priced.price.amount
        currency = offer.currency
        if price > submission.max_cost:
            raise MaxCostExceeded(
                f"the price {format_amount(price)} exceeds max_cost {format_amount(submission.max_cost)}",
                {"price": format_amount(price), "max_cost": format_amount(submission.max_cost)},
            )
        open_requests = session.scalar(
            select(func.count())
            .select_from(PredictionJob)
            .where(
                PredictionJob.owner_id == client.user_id,
                PredictionJob.kind.in_(MARKET_KINDS),
                PredictionJob.status.not_in(TERMINAL),
            )
        )
        if int(open_requests or 0) >= self.settings.max_open_requests:
            raise RateLimited(
                f"{open_requests} requests are open: wait for one to finish",
                5,
                {"open_requests": int(open_requests or 0), "limit": self.settings.max_open_requests},
            )
        self._check_limits(session, client.user_id, currency, price)
        try:
            hold = self.journal.hold(
                session,
                f"hold:{request_id}",
                f"client:{client.user_id}",
                "escrow",
                price,
                currency,
                "hold",
                times.deadline_at + timedelta(seconds=self.settings.hold_grace_s),
                request_id=request_id,
                actor_user_id=client.user_id,
            )
        except InsufficientFunds as exc:
            available = self.journal.balance(session, f"client:{client.user_id}", currency).available
            raise InsufficientFunds(
                f"the wallet holds {format_amount(available)} {currency}; "
                f"the price is {format_amount(price)}",
                {"price": format_amount(price), "available": format_amount(available), "currency": currency},
            ) from exc
        after = self.journal.balance(session, f"client:{client.user_id}", currency).available
        extra: dict[str, Any] = {"priority": submission.priority, "max_cost": submission.max_cost}
        if submission.route_reason is not None:
            extra.update(route=submission.route or "cheapest", route_reason=submission.route_reason)
        job = self._new_job(
            client, priced, submission.spec, key, request_id, times, extra,
            price=price, max_cost=submission.max_cost, hold_transfer_id=hold.id,
            quote_id=submission.quote_id, webhook_url=submission.webhook_url,
        )  # fmt: skip
        session.add(job)
        session.flush()
        record_event(session, job.id, JobStatus.PENDING, None, f"queued at {format_amount(price)} {currency}")
        if self.announce is not None:
            self.announce(session, job, "prediction_request.queued")
            threshold = parse_amount(self.settings.low_balance, "low_balance")
            if after < threshold <= after + price:  # this submit took the wallet below it
                self.announce(session, job, "wallet.low_balance")
        return job

    def submit_round(
        self, owner: Principal, priced: Priced, spec: Spec, key: str, round_id: str, at: datetime
    ) -> tuple[PredictionJob, bool]:
        """A common round's question (``owner`` is the benchmark account): a request at price 0,
        with no hold and no ledger transfer, as of the data known at ``at`` (every question of a
        round shares it), marked ``parameters["round"]``. Executed like any request; completing it
        moves no money (``Settlement.settle`` skips a job without a hold), so an evaluator earns
        nothing on it. Idempotent by ``key``: the new request (``True``) or the one it made."""
        assert owner.user_id is not None
        existing = self._by_key(owner.user_id, key)
        if existing is not None:
            return existing, False
        check_spec(priced.offer, spec)
        times = self.times(priced, spec, at)
        request_id = str(uuid.uuid4())
        try:
            with self.db.session() as session:
                job = self._new_job(
                    owner, priced, spec, key, request_id, times, {"round": round_id},
                    price=0, max_cost=0, hold_transfer_id=None, zero_split=True,
                )  # fmt: skip
                session.add(job)
                session.flush()
                record_event(session, job.id, JobStatus.PENDING, None, f"queued by common round {round_id}")
        except IntegrityError:
            existing = self._by_key(owner.user_id, key)
            if existing is None:
                raise
            return existing, False
        return job, True

    def _new_job(
        self, client: Principal, priced: Priced, spec: Spec, key: str, request_id: str,
        times: MarketTimes, extra: dict[str, Any], *, price: int, max_cost: int,
        hold_transfer_id: str | None, quote_id: str | None = None, webhook_url: str | None = None,
        zero_split: bool = False,
    ) -> PredictionJob:  # fmt: skip
        """The ``prediction_jobs`` row of a request (not yet added to a session)."""
        offer = priced.offer
        payload = {"offer_id": offer.id, **spec.as_dict(), "symbol": spec.symbol.upper()}
        breakdown = {"provider": 0, "evaluator": 0, "platform_fee": 0} if zero_split else priced.breakdown()
        now = self.clock.now()
        return PredictionJob(
            id=request_id,
            owner_id=client.user_id,
            owner_username=client.username,
            kind="evaluation" if offer.execution == "evaluators" else "market",
            model_reference=model_reference(offer.model_name, offer.model_version),
            model_name=offer.model_name,
            model_version=offer.model_version,
            input=payload,
            input_hash=input_digest(payload),
            parameters={
                "shape": "market",
                "target": offer.target,
                "interval": offer.interval,
                "provider_id": offer.provider_id,
                "breakdown": breakdown,
                "historical": times.historical,
                **extra,
            },
            status=JobStatus.PENDING,
            result_files=[],
            attempts=0,
            progress=0.0,
            idempotency_key=key,
            data_as_of=times.data_as_of,
            offer_id=offer.id,
            price_id=None if zero_split else priced.price.id,
            quote_id=quote_id,
            price=price,
            max_cost=max_cost,
            currency=offer.currency,
            execution=offer.execution,
            lease_counter=0,
            target_time=times.target_time,
            deadline_at=times.deadline_at,
            hold_transfer_id=hold_transfer_id,
            webhook_url=webhook_url,
            created_at=now,
            updated_at=now,
        )

    def _check_limits(self, session: Session, user_id: int, currency: str, price: int) -> None:
        """Exact under concurrency: the journal lock is held, so nobody else spends meanwhile."""
        daily, monthly = ledger_service.limits(session, user_id, currency)
        now = self.clock.now()
        day = datetime(now.year, now.month, now.day, tzinfo=UTC)
        for name, limit, since in (("daily", daily, day), ("monthly", monthly, day.replace(day=1))):
            if limit is None:
                continue
            spent = ledger_service.spent(session, user_id, currency, since)
            if spent + price > limit:
                raise SpendingLimitExceeded(
                    f"the {name} spending limit {format_amount(limit)} would be exceeded",
                    {
                        "limit": format_amount(limit),
                        "spent": format_amount(spent),
                        "price": format_amount(price),
                        "period": name,
                    },
                )

    def _by_key(self, owner_id: int, key: str) -> PredictionJob | None:
        with self.db.session() as session:
            return session.scalars(
                select(PredictionJob).where(
                    PredictionJob.owner_id == owner_id, PredictionJob.idempotency_key == key
                )
            ).first()

    @staticmethod
    def _same(existing: PredictionJob, submission: Submission) -> PredictionJob:
        asked = existing.input or {}
        if existing.kind not in MARKET_KINDS or (
            asked.get("symbol") != submission.spec.symbol.upper()
            or asked.get("horizon") != submission.spec.horizon
        ):
            raise Conflict(
                "this Idempotency-Key was already used for a different request",
                {"request_id": existing.id},
            )
        return existing

    # -- reading and cancelling ------------------------------------------------------------------

    def get(self, principal: Principal, request_id: str, *, see_all: bool) -> PredictionJob:
        with self.db.session() as session:
            job = session.get(PredictionJob, request_id)
        if job is None or job.kind not in MARKET_KINDS or (not see_all and job.owner_id != principal.user_id):
            raise MarketNotFound(f"no marketplace request {request_id!r}", {"request_id": request_id})
        return job

    def search(
        self,
        owner_id: int | None,
        status: str | None,
        since: datetime | None,
        until: datetime | None,
        limit: int,
        offset: int,
    ) -> tuple[list[PredictionJob], int]:
        conditions: list[Any] = [PredictionJob.kind.in_(MARKET_KINDS)]
        if owner_id is not None:
            conditions.append(PredictionJob.owner_id == owner_id)
        if status is not None:
            job_status = {v: k for k, v in MARKET_STATUS.items()}.get(status)
            if job_status is None and status not in ("claimed", "running"):
                raise InvalidInput(f"unknown status {status!r}", {"field": "status"})
            conditions.append(PredictionJob.status == (job_status or JobStatus.PROCESSING))
        if since is not None:
            conditions.append(PredictionJob.created_at >= since)
        if until is not None:
            conditions.append(PredictionJob.created_at < until)
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
