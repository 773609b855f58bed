"""Offers and their price history, and quotes that lock a price for a few minutes.

A price change is a new ``offer_prices`` row; the old row gets its ``effective_to`` once and is
never changed again, so a quote or a request always names the exact price version it was made at.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from prediction_provider.accounts.principal import Principal
from prediction_provider.accounts.roles import Role
from prediction_provider.clock import Clock
from prediction_provider.db.market_models import ModelOwner, Offer, OfferPrice, Quote
from prediction_provider.db.session import Database
from prediction_provider.errors import Conflict, InvalidInput, MarketNotFound
from prediction_provider.ledger.money import Split, format_amount, split

TARGETS = ("direction", "return", "quantiles", "entry_signal")
EXECUTIONS = ("platform", "evaluators")
ROUTES = ("cheapest", "best")
log = logging.getLogger(__name__)
# (symbol, horizon, target) -> the leaderboard's ranked (model_name, model_version), leader first.
LeaderSource = Callable[[str, int, str], Sequence[tuple[str, str | None]]]


class QuoteExpired(Conflict):
    code = "quote_expired"


class QuoteUsed(Conflict):
    code = "quote_used"


@dataclass(frozen=True, slots=True)
class NewOffer:
    model_name: str
    model_version: str | None
    target: str
    symbols: tuple[str, ...]
    interval: str | None
    horizons: tuple[int, ...]
    price: int
    currency: str
    execution: str
    evaluator_fee: int = 0
    benchmark_opt_in: bool = False


@dataclass(frozen=True, slots=True)
class Priced:
    """An offer at one price version: what a quote or a request is made at."""

    offer: Offer
    price: OfferPrice

    @property
    def split(self) -> Split:
        evaluator_fee = self.offer.evaluator_fee if self.offer.execution == "evaluators" else 0
        return split(self.price.amount, self.price.fee_bps, evaluator_fee)

    def breakdown(self) -> dict[str, int]:
        legs = self.split
        return {"provider": legs.provider, "evaluator": legs.evaluator, "platform_fee": legs.platform_fee}


@dataclass(frozen=True, slots=True)
class Spec:
    """What a client asks an offer: a symbol and a horizon it serves, and optional features."""

    symbol: str
    horizon: int
    features: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"symbol": self.symbol, "horizon": self.horizon}
        if self.features is not None:
            body["features"] = self.features
        return body


@dataclass(frozen=True, slots=True)
class Routed:
    """The offer a route chose, and why (``route_reason`` in the answer)."""

    priced: Priced
    reason: str


def money_view(amount: int) -> str:
    return format_amount(amount)


class OfferBook:
    def __init__(self, db: Database, clock: Clock, fee_bps: int, quote_ttl: timedelta) -> None:
        self.db = db
        self.clock = clock
        self.fee_bps = fee_bps
        self.quote_ttl = quote_ttl
        self.leaders: LeaderSource | None = None  # set by the marketplace when outcomes are scored

    # -- providers -------------------------------------------------------------------------------

    def publish(self, provider: Principal, new: NewOffer) -> Priced:
        """A new offer with its first price; only the model's owner (or an admin) may offer it."""
        if new.target not in TARGETS:
            raise InvalidInput(f"target must be one of {', '.join(TARGETS)}", {"field": "target"})
        if new.execution not in EXECUTIONS:
            raise InvalidInput(f"execution must be one of {', '.join(EXECUTIONS)}", {"field": "execution"})
        if not new.symbols or not new.horizons:
            raise InvalidInput("an offer serves at least one symbol and one horizon", {"field": "symbols"})
        if new.execution == "platform" and new.evaluator_fee:
            raise InvalidInput(
                "only evaluator-executed offers pay an evaluator fee", {"field": "evaluator_fee"}
            )
        split(new.price, self.fee_bps, new.evaluator_fee)  # 422 when the evaluator fee leaves too little
        now = self.clock.now()
        with self.db.session() as session:
            owner = session.get(ModelOwner, new.model_name)
            if provider.role != Role.ADMIN and (owner is None or owner.provider_id != provider.user_id):
                raise MarketNotFound(
                    f"no model {new.model_name!r} of yours: an admin assigns ownership, or upload it",
                    {"model": new.model_name},
                )
            offer = Offer(
                id=str(uuid.uuid4()), provider_id=owner.provider_id if owner else provider.user_id,
                model_name=new.model_name, model_version=new.model_version, target=new.target,
                symbols=list(new.symbols), interval=new.interval, horizons=list(new.horizons),
                execution=new.execution, evaluator_fee=new.evaluator_fee, currency=new.currency,
                active=True, benchmark_opt_in=new.benchmark_opt_in, created_at=now,
            )  # fmt: skip
            session.add(offer)
            session.flush()
            price = self._open_price(session, offer.id, new.price, now)
        return Priced(offer, price)

    def reprice(self, provider: Principal, offer_id: str, amount: int) -> OfferPrice:
        """A new price version; the open one closes now. Quotes and requests keep theirs."""
        now = self.clock.now()
        with self.db.session() as session:
            offer = self._own_offer(session, provider, offer_id)
            split(amount, self.fee_bps, offer.evaluator_fee if offer.execution == "evaluators" else 0)
            session.execute(
                update(OfferPrice)
                .where(OfferPrice.offer_id == offer.id, OfferPrice.effective_to.is_(None))
                .values(effective_to=now)
            )
            return self._open_price(session, offer.id, amount, now)

    def set_benchmark_opt_in(self, provider: Principal, offer_id: str, opt_in: bool) -> Priced:
        """Join or leave the common rounds (free benchmark questions, ``set=common``)."""
        with self.db.session() as session:
            offer = self._own_offer(session, provider, offer_id)
            offer.benchmark_opt_in = opt_in
            session.flush()
            priced = self.current(session, offer.id)
        assert priced is not None
        return priced

    def deactivate(self, provider: Principal, offer_id: str) -> Offer:
        with self.db.session() as session:
            offer = self._own_offer(session, provider, offer_id)
            offer.active = False
            return offer

    def _open_price(self, session: Session, offer_id: str, amount: int, now: datetime) -> OfferPrice:
        price = OfferPrice(
            id=str(uuid.uuid4()), offer_id=offer_id, amount=amount, fee_bps=self.fee_bps,
            effective_from=now, effective_to=None,
        )  # fmt: skip
        session.add(price)
        session.flush()
        return price

    def _own_offer(self, session: Session, provider: Principal, offer_id: str) -> Offer:
        offer = session.get(Offer, offer_id)
        if offer is None or (provider.role != Role.ADMIN and offer.provider_id != provider.user_id):
            raise MarketNotFound(f"no offer {offer_id!r} of yours", {"offer_id": offer_id})
        return offer

    # -- reading ---------------------------------------------------------------------------------

    def prices(self, offer_id: str) -> list[OfferPrice]:
        with self.db.session() as session:
            if session.get(Offer, offer_id) is None:
                raise MarketNotFound(f"no offer {offer_id!r}", {"offer_id": offer_id})
            return list(
                session.scalars(
                    select(OfferPrice)
                    .where(OfferPrice.offer_id == offer_id)
                    .order_by(OfferPrice.effective_from, OfferPrice.id)
                )
            )

    def get(self, offer_id: str) -> Priced:
        with self.db.session() as session:
            priced = self.current(session, offer_id)
        if priced is None:
            raise MarketNotFound(f"no offer {offer_id!r}", {"offer_id": offer_id})
        return priced

    def current(self, session: Session, offer_id: str) -> Priced | None:
        offer = session.get(Offer, offer_id)
        if offer is None:
            return None
        price = session.scalars(
            select(OfferPrice).where(OfferPrice.offer_id == offer_id, OfferPrice.effective_to.is_(None))
        ).first()
        return None if price is None else Priced(offer, price)

    def search(
        self, *, symbol: str | None = None, target: str | None = None, horizon: int | None = None,
        provider_id: int | None = None, active_only: bool = True,
    ) -> list[Priced]:  # fmt: skip
        """Offers with their open price, cheapest first (ties: oldest offer first)."""
        query = select(Offer, OfferPrice).join(
            OfferPrice, (OfferPrice.offer_id == Offer.id) & OfferPrice.effective_to.is_(None)
        )
        if active_only:
            query = query.where(Offer.active.is_(True))
        if target is not None:
            query = query.where(Offer.target == target)
        if provider_id is not None:
            query = query.where(Offer.provider_id == provider_id)
        with self.db.session() as session:
            rows = session.execute(query.order_by(OfferPrice.amount, Offer.created_at, Offer.id)).all()
        found = [Priced(offer, price) for offer, price in rows]
        if symbol is not None:
            found = [p for p in found if symbol.upper() in (s.upper() for s in p.offer.symbols)]
        if horizon is not None:
            found = [p for p in found if horizon in p.offer.horizons]
        return found

    def route(
        self, session: Session, symbol: str, horizon: int, target: str, route: str, currency: str
    ) -> Priced:
        """The offer a request by (symbol, horizon, target) goes to (see :meth:`routed`)."""
        return self.routed(symbol, horizon, target, route, currency).priced

    def routed(self, symbol: str, horizon: int, target: str, route: str, currency: str) -> Routed:
        """``cheapest``: the cheapest matching offer (ties: the oldest). ``best``: the offer whose
        model leads the leaderboard of realized outcomes for this symbol, horizon and target (the
        best-ranked entry that is some matching offer's model; among several such offers, the
        cheapest). With no matching offer ranked yet, or no leaderboard, ``best`` is the cheapest
        and the reason says so: a route never fails for want of scores."""
        if route not in ROUTES:
            raise InvalidInput(f"route must be one of {', '.join(ROUTES)}", {"field": "route"})
        candidates = [
            p
            for p in self.search(symbol=symbol, target=target, horizon=horizon)
            if p.offer.currency == currency
        ]
        if not candidates:
            raise MarketNotFound(
                f"no active {target} offer for {symbol} at horizon {horizon} in {currency}",
                {"symbol": symbol, "horizon": horizon, "target": target, "currency": currency},
            )
        if route == "cheapest":
            return Routed(candidates[0], "cheapest")
        try:
            ranked = [] if self.leaders is None else list(self.leaders(symbol.upper(), horizon, target))
        except Exception:  # the board is advice: an unreadable one routes to the cheapest
            log.warning("route best: the leaderboard could not be read", exc_info=True)
            return Routed(candidates[0], "best: the leaderboard is unavailable, so the cheapest offer")
        for rank, (name, version) in enumerate(ranked, start=1):
            # A pinned offer serves exactly its version; an unpinned one serves the name's champion,
            # whose scores are those of whatever version it served. A pinned match wins over it.
            pinned = [
                p for p in candidates if p.offer.model_name == name and p.offer.model_version == version
            ]
            champion = [p for p in candidates if p.offer.model_name == name and p.offer.model_version is None]
            chosen = pinned or champion
            if chosen:
                key = name if version is None else f"{name}@{version}"
                return Routed(chosen[0], f"best: {key} ranks {rank} on the leaderboard (window 30d)")
        return Routed(
            candidates[0], "best: no matching offer is ranked on the leaderboard yet, so the cheapest offer"
        )

    # -- quotes ----------------------------------------------------------------------------------

    def quote(self, client: Principal, priced: Priced, spec: Spec) -> Quote:
        check_spec(priced.offer, spec)
        now = self.clock.now()
        quote = Quote(
            id=str(uuid.uuid4()), client_id=client.user_id, offer_id=priced.offer.id,
            price_id=priced.price.id, amount=priced.price.amount, breakdown=priced.breakdown(),
            spec=spec.as_dict(), currency=priced.offer.currency, created_at=now,
            expires_at=now + self.quote_ttl, used_by_request_id=None,
        )  # fmt: skip
        with self.db.session() as session:
            session.add(quote)
        return quote

    def redeem(
        self, session: Session, client: Principal, quote_id: str, request_id: str
    ) -> tuple[Quote, Priced]:
        """The quote's offer at the quote's price, marked used by ``request_id`` (in the submit's
        transaction: a refused submit leaves the quote unused)."""
        quote = session.get(Quote, quote_id)
        if quote is None or quote.client_id != client.user_id:
            raise MarketNotFound(f"no quote {quote_id!r} of yours", {"quote_id": quote_id})
        if quote.used_by_request_id is not None:
            raise QuoteUsed(
                "this quote was already used", {"quote_id": quote_id, "request_id": quote.used_by_request_id}
            )
        if self.clock.now() >= quote.expires_at:
            raise QuoteExpired(
                "this quote has expired: ask for a new one",
                {"quote_id": quote_id, "expired_at": quote.expires_at.isoformat()},
            )
        offer = session.get(Offer, quote.offer_id)
        price = session.get(OfferPrice, quote.price_id)
        assert offer is not None
        assert price is not None
        updated = session.execute(
            update(Quote)
            .where(Quote.id == quote_id, Quote.used_by_request_id.is_(None))
            .values(used_by_request_id=request_id)
        )
        if updated.rowcount != 1:  # type: ignore[attr-defined]
            raise QuoteUsed("this quote was already used", {"quote_id": quote_id})
        return quote, Priced(offer, price)


def check_spec(offer: Offer, spec: Spec) -> None:
    if not offer.active:
        raise Conflict("this offer is no longer active", {"offer_id": offer.id})
    if spec.symbol.upper() not in (s.upper() for s in offer.symbols):
        raise InvalidInput(
            f"this offer does not serve {spec.symbol}", {"field": "symbol", "allowed": offer.symbols}
        )
    if spec.horizon not in offer.horizons:
        raise InvalidInput(
            f"this offer does not serve horizon {spec.horizon}",
            {"field": "horizon", "allowed": offer.horizons},
        )
