"""The marketplace as the API sees it: offers, quotes, paid requests, refunds and the sweeper,
wired to the job store (money follows job status) and the job dispatcher (platform execution)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

import pandas as pd

from prediction_provider.accounts.principal import Principal
from prediction_provider.clock import Clock
from prediction_provider.config import Settings
from prediction_provider.db.models import PredictionJob
from prediction_provider.db.session import Database
from prediction_provider.errors import Conflict, PredictionFailed
from prediction_provider.features.market_sources import MarketSources
from prediction_provider.forecasts.answers import step_offset
from prediction_provider.forecasts.service import ForecastRequest, ForecastService
from prediction_provider.jobs.records import JobStatus
from prediction_provider.jobs.store import JobStore
from prediction_provider.ledger.journal import Journal
from prediction_provider.ledger.money import format_amount
from prediction_provider.marketplace.leases import Leases
from prediction_provider.marketplace.offers import OfferBook, Priced, Spec
from prediction_provider.marketplace.requests import RequestBook, Submission, market_status, model_reference
from prediction_provider.marketplace.rounds import CommonRounds
from prediction_provider.marketplace.settlement import Announcer, Settlement, money_of
from prediction_provider.marketplace.sweeper import Sweeper
from prediction_provider.outcomes.service import BoardQuery, Outcomes, score_summary

log = logging.getLogger(__name__)
Dispatch = Callable[[Sequence[str]], None]


class NotCancellable(Conflict):
    code = "not_cancellable"


class Marketplace:
    def __init__(
        self, settings: Settings, db: Database, clock: Clock, journal: Journal,
        forecasts: ForecastService | None, market: MarketSources | None, announce: Announcer | None = None,
    ) -> None:  # fmt: skip
        self.settings = settings
        self.db = db
        self.clock = clock
        self.journal = journal
        self.forecasts = forecasts
        self.market = market
        self.offers = OfferBook(db, clock, settings.platform_fee_bps, timedelta(seconds=settings.quote_ttl_s))
        self.settlement = Settlement(journal, clock, announce)
        self.requests = RequestBook(db, clock, journal, self.offers, settings, self._times_of, announce)
        self.sweeper = Sweeper(db, clock, self.settlement, settings.sweep_interval_s)
        self.leases = Leases(db, clock, self.settlement, settings)
        self.sweeper.extra.append(("leases_expired", self.leases.expire_leases))
        self.rounds = CommonRounds(db, clock, settings, self.offers, self.requests, self._dispatch_new)
        self.sweeper.extra.append(("round_requests", self.rounds.due))
        self.store: JobStore | None = None
        self.dispatch: Dispatch | None = None
        # The leaderboard ``route: best`` follows; set after construction (``app.build_services``).
        self.outcomes: Outcomes | None = None
        self.offers.leaders = self._leaders

    def attach(self, store: JobStore, dispatch: Dispatch | None) -> None:
        """Let money follow the jobs of ``store``, and hand platform requests to ``dispatch``."""
        store.settlement = self.settlement
        self.store = store
        self.dispatch = dispatch

    def start(self) -> None:
        self.sweeper.start()

    def close(self) -> None:
        self.sweeper.stop()

    # -- requests --------------------------------------------------------------------------------

    def submit(self, client: Principal, submission: Submission, key: str) -> tuple[PredictionJob, bool]:
        job, created = self.requests.submit(client, submission, key)
        if created:
            self._dispatch_new(job)
        return job, created

    def _dispatch_new(self, job: PredictionJob) -> None:
        """Hand a new platform-executed request to the job runtime (evaluators take theirs)."""
        if job.kind == "market" and self.dispatch is not None:
            # A lost message is harmless: the executor polls for pending jobs, Celery re-dispatches.
            try:
                self.dispatch([job.id])
            except Exception:  # the request stays queued: executors poll, Celery re-dispatches
                log.warning("could not dispatch marketplace request %s now", job.id, exc_info=True)

    def _leaders(self, symbol: str, horizon: int, target: str) -> list[tuple[str, str | None]]:
        """The ranked models of the 30-day organic leaderboard for (symbol, horizon, target), leader
        first; empty without outcomes."""
        if self.outcomes is None:
            return []
        board = self.outcomes.leaderboard(
            BoardQuery(target=target, horizon=horizon, symbol=symbol, window="30d", group="model")
        )
        ranked = sorted(
            (e for e in board.get("entries", []) if e.get("rank") is not None), key=lambda e: e["rank"]
        )
        return [(str(e["model_name"]), e.get("model_version")) for e in ranked if e.get("model_name")]

    def cancel(self, principal: Principal, request_id: str, *, see_all: bool) -> PredictionJob:
        job = self.requests.get(principal, request_id, see_all=see_all)
        if job.status != JobStatus.PENDING or self.store is None:
            raise NotCancellable(
                f"only a queued request can be cancelled; this one is {market_status(job)}",
                {"request_id": request_id, "status": market_status(job)},
            )
        try:
            return self.store.cancel(request_id)
        except Conflict as exc:
            raise NotCancellable("the request has already finished", {"request_id": request_id}) from exc

    def refund(
        self, actor: Principal, request_id: str, amount: int | None, reason: str, key: str
    ) -> dict[str, Any]:
        with self.db.session() as session:
            self.journal.lock(session)
            job = session.get(PredictionJob, request_id)
            if job is None or job.price is None:
                raise Conflict("no charged marketplace request with this id", {"request_id": request_id})
            made = self.settlement.refund(session, job, amount, reason, key, actor.user_id)
            return {"request_id": request_id, "transfers": [t.id for t in made],
                    "refunded": sum(t.amount for t in made), "money": money_of(session, job)}  # fmt: skip

    def view(self, job: PredictionJob) -> dict[str, Any]:
        with self.db.session() as session:
            money = money_of(session, job)
            score = score_summary(session, job.id) if job.status == "completed" else None
        return {
            "request_id": job.id, "status": market_status(job), "offer_id": job.offer_id,
            "price_id": job.price_id, "quote_id": job.quote_id, "model": job.model_name,
            "model_version": job.model_version, "execution": job.execution,
            "spec": job.input, "target": (job.parameters or {}).get("target"),
            "max_cost": job.max_cost, "money": money, "data_as_of": _iso(job.data_as_of),
            "target_time": _iso(job.target_time), "deadline_at": _iso(job.deadline_at),
            "historical": bool((job.parameters or {}).get("historical")),
            "attempts": job.attempts, "result": job.result, "error": job.error,
            "created_at": _iso(job.created_at), "finished_at": _iso(job.finished_at),
            "route": (job.parameters or {}).get("route"),
            "route_reason": (job.parameters or {}).get("route_reason"),
            "round": (job.parameters or {}).get("round"),
            "score": score,
        }  # fmt: skip

    # -- market context --------------------------------------------------------------------------

    def _times_of(self, priced: Priced, spec: Spec, now: datetime) -> tuple[datetime, datetime]:
        """The last bar known now and the time ``horizon`` bars after it."""
        offer = priced.offer
        interval = offer.interval or "1h"
        if self.forecasts is not None:
            try:
                request = ForecastRequest(
                    spec.symbol, offer.interval, (spec.horizon,), None, now,
                    model_reference(offer.model_name, offer.model_version),
                )  # fmt: skip
                _, interval, _ = self.forecasts.check(request)
                data_as_of = self.forecasts.data_as_of(request)
                return data_as_of, _after(data_as_of, interval, spec.horizon)
            except PredictionFailed:
                raise
            except Exception:
                if self.market is None:
                    raise
        if self.market is None:
            raise PredictionFailed("no market data is configured on this server")
        snapshot = self.market.for_symbol(spec.symbol, interval, None).snapshot(spec.symbol, now)
        return snapshot.data_as_of, _after(snapshot.data_as_of, interval, spec.horizon)


def _after(data_as_of: datetime, interval: str, horizon: int) -> datetime:
    offset = step_offset(interval)
    # The data_as_of bar closes one step after it opens; the target is ``horizon`` closes later.
    target: datetime = (pd.Timestamp(data_as_of) + (horizon + 1) * offset).to_pydatetime()
    return target


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def market_announcer(clock: Clock, settings: Settings) -> Announcer | None:
    """Announce a request's change through the webhook outbox, in the change's own transaction."""
    try:
        from prediction_provider.webhooks import outbox
    except ImportError:  # pragma: no cover - the webhooks package ships with the marketplace
        return None

    def announce(session: Any, job: PredictionJob, event_type: str) -> None:
        if job.owner_id is None:
            return
        if event_type == "wallet.low_balance":
            balance = Journal(clock).balance(session, f"client:{job.owner_id}", job.currency or "")
            outbox.announce(
                session, clock=clock, user_id=job.owner_id, event_type=event_type,
                data={"currency": job.currency, "available": format_amount(balance.available),
                      "held": format_amount(balance.held), "threshold": str(settings.low_balance),
                      "request_id": job.id},
            )  # fmt: skip
            return
        data = {
            "request_id": job.id, "status": market_status(job), "money": money_of(session, job),
            "result": job.result,
        }  # fmt: skip
        outbox.announce(
            session, clock=clock, user_id=job.owner_id, event_type=event_type, data=data,
            webhook_url=job.webhook_url,
        )  # fmt: skip

    return announce
