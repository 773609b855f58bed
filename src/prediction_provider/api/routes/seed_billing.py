"""The seed project's billing API, unchanged, as aliases over the native marketplace and ledger.

Its clients send and read JSON numbers under its own field names; inside, every amount is an int of
micro-units and every sum is computed in ints: a number is made from a ``Decimal`` only in the
answer (``number``), and a number sent in is read through ``parse_amount`` (at most six decimals).

* ``POST /api/v1/provider/pricing {model_name, price_per_request, currency?}`` publishes an offer
  on a model the provider owns, or, when the provider already has an active offer on that model in
  that currency, a new price version of it (the open price closes: ``is_active`` false). A new
  offer serves what the model forecasts: a forecast model's manifest gives its symbol, interval and
  trained horizons, target ``direction``, executed on the platform. A model that is not a forecast
  model (or a different choice) names ``symbols``, ``interval``, ``horizons``, ``target``,
  ``execution`` and ``evaluator_fee`` itself (extensions of the seed body); without symbols it is
  refused (422) rather than offered for symbols it cannot serve.
* Earnings, spend and billing rows are read from the journal: captures (client → escrow), provider
  payouts (escrow → ``provider:{uid}``) and refunds (back to ``client:{uid}``).
* ``POST /api/v1/client/predict`` submits a paid request through ``Marketplace.submit``; the seed's
  clients send no ``Idempotency-Key``, so one is made fresh when it is absent.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import func, select
from sqlalchemy.orm import Session, aliased
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse

from prediction_provider.accounts.principal import Principal
from prediction_provider.accounts.roles import Permission
from prediction_provider.api.auth import holding
from prediction_provider.api.deps import Services, ServicesDep
from prediction_provider.api.query_params import DeclaredQueryOnly, Limit
from prediction_provider.api.routes.market import ERRORS, currency_of, marketplace_of, split_model
from prediction_provider.db.ledger_models import LedgerAccount, LedgerTransfer
from prediction_provider.db.market_models import Offer, OfferPrice
from prediction_provider.db.models import PredictionJob
from prediction_provider.errors import InvalidInput, MarketNotFound
from prediction_provider.forecasts.model import ForecastModel
from prediction_provider.ledger.money import parse_amount
from prediction_provider.marketplace.offers import TARGETS, NewOffer, Priced, Spec
from prediction_provider.marketplace.quality import FORMULA as QUALITY_FORMULA
from prediction_provider.marketplace.quality import realized_quality
from prediction_provider.marketplace.requests import Submission, market_status
from prediction_provider.marketplace.service import Marketplace
from prediction_provider.webhooks.urls import check_webhook_url

router = APIRouter(prefix="/api/v1", tags=["seed billing"])

Provider = Annotated[Principal, Depends(holding(Permission.MANAGE_MODELS))]
Client = Annotated[Principal, Depends(holding(Permission.PREDICT))]
Overseer = Annotated[Principal, Depends(holding(Permission.BILLING_OVERSIGHT))]
SummaryReader = Annotated[Principal, Depends(holding(Permission.READ_BILLING_SUMMARY))]  # operators too
Days = Annotated[int, Query(ge=1, le=3660, description="The window: the last this many days.")]
Currency = Annotated[str | None, Query(max_length=3, description="Default: the server's currency.")]
IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key", max_length=255)]
MICROS = Decimal(1_000_000)


def number(micros: int) -> float:
    """A JSON number from micro-units, at the edge only."""
    return float(Decimal(micros) / MICROS)


# -- bodies ----------------------------------------------------------------------------------------


class PricingSet(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model_name: str = Field(min_length=1, max_length=256, description="name or name@version")
    price_per_request: float | int | str = Field(description="At most six decimals; 0 is free.")
    currency: str | None = Field(default=None, max_length=3)
    # Extensions: a new offer on a model that is not a forecast model names what it serves.
    symbols: list[str] | None = Field(default=None, min_length=1, max_length=200)
    interval: str | None = Field(default=None, max_length=8)
    horizons: list[Annotated[int, Field(ge=1, le=10_000)]] | None = Field(default=None, min_length=1)
    target: str | None = Field(default=None, max_length=16)
    execution: str | None = Field(default=None, max_length=12)
    evaluator_fee: float | int | str | None = None


class SeedPredict(BaseModel):
    """The seed's ``POST /api/v1/client/predict`` body (its unknown keys are ignored, as it did)."""

    model_config = ConfigDict(extra="ignore", protected_namespaces=())

    model_name: str | None = Field(default=None, max_length=256)
    model: str | None = Field(default=None, max_length=256)
    symbol: str | None = Field(default=None, max_length=20)
    ticker: str | None = Field(default=None, max_length=20)
    instrument: str | None = Field(default=None, max_length=20)
    horizon: int | None = Field(default=None, ge=1, le=10_000)
    prediction_horizon: int | None = Field(default=None, ge=1, le=10_000)
    input_data: dict[str, Any] | None = None
    max_cost: float | int | str | None = None
    currency: str | None = Field(default=None, max_length=3)
    priority: str | int | None = None
    notification_webhook: str | None = Field(default=None, max_length=2048)
    offer_id: str | None = Field(default=None, max_length=36)


# -- pricing -----------------------------------------------------------------------------------------


def pricing_view(offer: Offer, price: OfferPrice, rating: float | None = None) -> dict[str, Any]:
    return {
        "id": price.id, "provider_id": offer.provider_id, "model_name": offer.model_name,
        "price_per_request": number(price.amount), "currency": offer.currency,
        "is_active": bool(offer.active and price.effective_to is None), "offer_id": offer.id,
        "effective_from": price.effective_from.isoformat(),
        "effective_to": None if price.effective_to is None else price.effective_to.isoformat(),
        "performance_rating": rating,
    }  # fmt: skip


def rating_of(market: Marketplace, provider_id: int, model_name: str) -> float | None:
    """The ``performance_rating`` of a provider's model: its realized hit rate (``marketplace.quality``)."""
    with market.db.session() as session:
        return realized_quality(session, provider_id=provider_id, model_name=model_name).value


def pricing_rows(market: Marketplace, provider_id: int | None) -> list[dict[str, Any]]:
    query = select(Offer, OfferPrice).join(OfferPrice, OfferPrice.offer_id == Offer.id)
    if provider_id is not None:
        query = query.where(Offer.provider_id == provider_id)
    with market.db.session() as session:
        rows = session.execute(query.order_by(OfferPrice.effective_from, OfferPrice.id)).all()
        ratings: dict[tuple[int, str], float | None] = {}
        for offer, _ in rows:
            if (offer.provider_id, offer.model_name) not in ratings:
                ratings[(offer.provider_id, offer.model_name)] = realized_quality(
                    session, provider_id=offer.provider_id, model_name=offer.model_name
                ).value
        return [
            pricing_view(offer, price, ratings[(offer.provider_id, offer.model_name)])
            for offer, price in rows
        ]


def own_offer(
    market: Marketplace, provider_id: int, model_name: str, currency: str, execution: str = "platform"
) -> Offer | None:
    """The provider's active offer this price applies to: same model, currency and execution (an
    evaluator-executed offer of the same model is another product, with its own price)."""
    with market.db.session() as session:
        return session.scalars(
            select(Offer)
            .where(
                Offer.provider_id == provider_id,
                Offer.model_name == model_name,
                Offer.currency == currency,
                Offer.execution == execution,
                Offer.active.is_(True),
            )
            .order_by(Offer.created_at, Offer.id)
        ).first()


def new_offer(
    services: Services, body: PricingSet, name: str, version: str | None, price: int, currency: str
) -> NewOffer:
    symbols, interval, horizons = body.symbols, body.interval, body.horizons
    if symbols is None or horizons is None:
        cached = services.cache.get(name if version is None else f"models:/{name}/{version}")
        model = cached.model
        if isinstance(model, ForecastModel):
            manifest = model.manifest
            symbols = symbols or [manifest.symbol]
            interval = interval or manifest.interval
            horizons = horizons or list(manifest.horizons)
    if not symbols or not horizons:
        raise InvalidInput(
            f"{name} is not a forecast model: name the symbols and horizons its offer serves",
            {"field": "symbols"},
        )
    target = body.target or "direction"
    if target not in TARGETS:
        raise InvalidInput(f"target must be one of {', '.join(TARGETS)}", {"field": "target"})
    execution = body.execution or ("evaluators" if target == "entry_signal" else "platform")
    fee = 0 if body.evaluator_fee is None else parse_amount(body.evaluator_fee, "evaluator_fee")
    return NewOffer(
        model_name=name, model_version=version, target=target, symbols=tuple(s.upper() for s in symbols),
        interval=interval, horizons=tuple(horizons), price=price, currency=currency, execution=execution,
        evaluator_fee=fee,
    )  # fmt: skip


@router.post("/provider/pricing", status_code=201, responses=ERRORS, summary="Set a model's price (seed)")
async def set_pricing(body: PricingSet, principal: Provider, services: ServicesDep) -> dict[str, Any]:
    """A new offer on a model you own, or a new price of your offer on it (the old one closes)."""
    market = marketplace_of(services)
    name, version = split_model(body.model_name)
    price = parse_amount(body.price_per_request, "price_per_request")
    currency = currency_of(services, body.currency)
    if principal.user_id is None:
        raise InvalidInput("sign in to set prices", {"field": "credentials"})
    provider_id = principal.user_id

    def make() -> dict[str, Any]:
        offer = own_offer(market, provider_id, name, currency, body.execution or "platform")
        if offer is not None:
            opened = market.offers.reprice(principal, offer.id, price)
            return pricing_view(offer, opened, rating_of(market, provider_id, offer.model_name))
        priced: Priced = market.offers.publish(
            principal, new_offer(services, body, name, version, price, currency)
        )
        return pricing_view(
            priced.offer, priced.price, rating_of(market, provider_id, priced.offer.model_name)
        )

    return await run_in_threadpool(make)


@router.get("/provider/pricing", responses=ERRORS, summary="Your prices (seed)")
async def my_pricing(
    principal: Provider, services: ServicesDep, _query: DeclaredQueryOnly = None
) -> list[dict[str, Any]]:
    """Every price you have set, oldest first; ``is_active`` only for the open ones."""
    market = marketplace_of(services)
    return await run_in_threadpool(
        pricing_rows, market, principal.user_id if principal.user_id is not None else -1
    )


@router.get("/admin/pricing", responses=ERRORS, summary="Everyone's prices (seed)")
async def all_pricing(
    principal: Overseer, services: ServicesDep, _query: DeclaredQueryOnly = None
) -> list[dict[str, Any]]:
    return await run_in_threadpool(pricing_rows, marketplace_of(services), None)


# -- money read from the journal ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Leg:
    transfer: LedgerTransfer
    debit: str
    credit: str


def legs(
    session: Session, kinds: tuple[str, ...], currency: str, since: datetime | None,
    debit: str | None = None, credit: str | None = None,
) -> list[Leg]:  # fmt: skip
    debit_account, credit_account = aliased(LedgerAccount), aliased(LedgerAccount)
    query = (
        select(LedgerTransfer, debit_account.code, credit_account.code)
        .join(debit_account, debit_account.id == LedgerTransfer.debit_account_id)
        .join(credit_account, credit_account.id == LedgerTransfer.credit_account_id)
        .where(LedgerTransfer.kind.in_(kinds), LedgerTransfer.currency == currency)
    )
    if since is not None:
        query = query.where(LedgerTransfer.created_at >= since)
    if debit is not None:
        query = query.where(debit_account.code == debit)
    if credit is not None:
        query = query.where(credit_account.code == credit)
    rows = session.execute(query.order_by(LedgerTransfer.seq)).all()
    return [Leg(transfer, d, c) for transfer, d, c in rows]


def models_of(session: Session, request_ids: set[str]) -> dict[str, PredictionJob]:
    if not request_ids:
        return {}
    jobs = session.scalars(select(PredictionJob).where(PredictionJob.id.in_(sorted(request_ids))))
    return {job.id: job for job in jobs}


def since_of(services: Services, days: int) -> datetime:
    return marketplace_of(services).clock.now() - timedelta(days=days)


@router.get("/provider/earnings", responses=ERRORS, summary="Your earnings (seed)")
async def earnings(
    principal: Provider, services: ServicesDep, days: Days = 30, currency: Currency = None,
    _query: DeclaredQueryOnly = None,
) -> dict[str, Any]:  # fmt: skip
    """Provider payouts in the window, less the refunds taken back from them, by model, and
    ``performance_rating`` (in total and per model): the realized hit rate of the provider's
    models' answers whose target time falls in the window (``marketplace.quality``; null until one
    is scored), never the provider's own claim."""
    market = marketplace_of(services)
    money = currency_of(services, currency)
    account = f"provider:{principal.user_id}"

    def read() -> dict[str, Any]:
        since = since_of(services, days)
        with market.db.session() as session:
            paid = legs(session, ("payout_provider",), money, since, credit=account)
            back = legs(session, ("refund",), money, since, debit=account)
            jobs = models_of(
                session, {leg.transfer.request_id for leg in paid + back if leg.transfer.request_id}
            )
            rating = realized_quality(session, provider_id=principal.user_id, since=since)
            names = {job.model_name for job in jobs.values() if job.model_name}
            per_model = {
                name: realized_quality(session, provider_id=principal.user_id, model_name=name, since=since)
                for name in names
            }
        by_model: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        for leg, sign in [(leg, 1) for leg in paid] + [(leg, -1) for leg in back]:
            job = jobs.get(leg.transfer.request_id or "")
            row = by_model[(job.model_name if job else None) or "unknown"]
            row[0] += sign * leg.transfer.amount
            row[1] += 1 if sign > 0 else 0
        total = sum(amount for amount, _ in by_model.values())
        return {
            "provider_id": principal.user_id, "period_days": days, "total_earnings": number(total),
            "total_requests": len(paid), "currency": money,
            "performance_rating": rating.value, "scored_n": rating.n, "rating_formula": QUALITY_FORMULA,
            "by_model": [
                {"model_name": name, "earnings": number(amount), "requests": count,
                 "performance_rating": per_model[name].value if name in per_model else None}
                for name, (amount, count) in sorted(by_model.items())
            ],
        }  # fmt: skip

    return await run_in_threadpool(read)


@router.get("/client/spend", responses=ERRORS, summary="Your spend (seed)")
async def spend(
    principal: Client, services: ServicesDep, days: Days = 30, currency: Currency = None,
    _query: DeclaredQueryOnly = None,
) -> dict[str, Any]:  # fmt: skip
    """Charges (captures) of your requests in the window, less the refunds paid back to you."""
    market = marketplace_of(services)
    money = currency_of(services, currency)
    account = f"client:{principal.user_id}"

    def read() -> dict[str, Any]:
        since = since_of(services, days)
        with market.db.session() as session:
            charged = legs(session, ("capture",), money, since, debit=account)
            back = legs(session, ("refund",), money, since, credit=account)
        total = sum(leg.transfer.amount for leg in charged) - sum(leg.transfer.amount for leg in back)
        return {
            "client_id": principal.user_id, "period_days": days, "total_spend": number(total),
            "total_requests": len(charged), "currency": money,
        }  # fmt: skip

    return await run_in_threadpool(read)


def billing_rows(market: Marketplace, client_id: int | None, limit: int) -> list[dict[str, Any]]:
    """Charges, newest first, each with what was refunded of it: the seed's billing records."""
    with market.db.session() as session:
        debit_account = aliased(LedgerAccount)
        query = (
            select(LedgerTransfer, PredictionJob)
            .join(debit_account, debit_account.id == LedgerTransfer.debit_account_id)
            .join(PredictionJob, PredictionJob.id == LedgerTransfer.request_id)
            .where(LedgerTransfer.kind == "capture")
        )
        if client_id is not None:
            query = query.where(debit_account.code == f"client:{client_id}")
        rows = session.execute(query.order_by(LedgerTransfer.seq.desc()).limit(limit)).all()
        ids = [job.id for _, job in rows]
        refunded = dict(
            session.execute(
                select(LedgerTransfer.request_id, func.sum(LedgerTransfer.amount))
                .where(LedgerTransfer.kind == "refund", LedgerTransfer.request_id.in_(ids))
                .group_by(LedgerTransfer.request_id)
            ).all()
        ) if ids else {}  # fmt: skip
    out = []
    for transfer, job in rows:
        back = int(refunded.get(job.id) or 0)
        status = "completed" if back == 0 else "refunded" if back >= transfer.amount else "partially_refunded"
        out.append({
            "id": transfer.id, "request_id": job.id, "client_id": job.owner_id, "model_name": job.model_name,
            "amount": number(transfer.amount), "refunded": number(back), "currency": transfer.currency,
            "status": status, "request_status": market_status(job),
            "created_at": transfer.created_at.isoformat(),
        })  # fmt: skip
    return out


@router.get("/client/billing", responses=ERRORS, summary="Your billing history (seed)")
async def client_billing(
    principal: Client, services: ServicesDep, limit: Limit = 100, _query: DeclaredQueryOnly = None
) -> list[dict[str, Any]]:
    return await run_in_threadpool(
        billing_rows,
        marketplace_of(services),
        principal.user_id if principal.user_id is not None else -1,
        limit,
    )


@router.get("/admin/billing", responses=ERRORS, summary="Every billing record (seed)")
async def admin_billing(
    principal: Overseer, services: ServicesDep, limit: Limit = 100, _query: DeclaredQueryOnly = None
) -> list[dict[str, Any]]:
    return await run_in_threadpool(billing_rows, marketplace_of(services), None, limit)


@router.get("/admin/billing/summary", responses=ERRORS, summary="Billing summary (seed)")
async def admin_billing_summary(
    principal: SummaryReader, services: ServicesDep, days: Days = 30, currency: Currency = None,
    _query: DeclaredQueryOnly = None,
) -> dict[str, Any]:  # fmt: skip
    """Revenue = what clients were charged in the window, less refunds; the platform's own fee
    share is ``platform_fees``."""
    market = marketplace_of(services)
    money = currency_of(services, currency)

    def read() -> dict[str, Any]:
        since = since_of(services, days)
        with market.db.session() as session:
            charged = legs(session, ("capture",), money, since)
            back = legs(session, ("refund",), money, since)
            fees = legs(session, ("fee",), money, since, credit="platform:fees")
            fees_back = legs(session, ("refund",), money, since, debit="platform:fees")
            jobs = models_of(session, {leg.transfer.request_id for leg in charged if leg.transfer.request_id})
            offer_ids = {job.offer_id for job in jobs.values() if job.offer_id}
            providers = set(
                session.scalars(select(Offer.provider_id).where(Offer.id.in_(sorted(offer_ids))))
            ) if offer_ids else set()  # fmt: skip
        total = sum(leg.transfer.amount for leg in charged) - sum(leg.transfer.amount for leg in back)
        fee_total = sum(leg.transfer.amount for leg in fees) - sum(leg.transfer.amount for leg in fees_back)
        return {
            "total_revenue": number(total), "total_transactions": len(charged),
            "unique_clients": len({leg.debit for leg in charged}), "unique_providers": len(providers),
            "period_days": days, "currency": money, "platform_fees": number(fee_total),
        }  # fmt: skip

    return await run_in_threadpool(read)


# -- the seed's paid request --------------------------------------------------------------------------


def seed_offer(
    market: Marketplace, model: str, currency: str, symbol: str | None, horizon: int | None
) -> Priced:
    """The cheapest active offer on ``model`` (name or name@version) that serves the request."""
    name, version = split_model(model)
    found = [
        p for p in market.offers.search(symbol=symbol, horizon=horizon)
        if p.offer.model_name == name and p.offer.currency == currency
        and (version is None or p.offer.model_version == version)
    ]  # fmt: skip
    if not found:
        raise MarketNotFound(
            f"no active offer on {model!r} in {currency}" + (f" for {symbol}" if symbol else ""),
            {"model_name": model, "currency": currency},
        )
    return found[0]


@router.post("/client/predict", status_code=201, responses=ERRORS, summary="Buy a prediction (seed)")
async def client_predict(
    body: SeedPredict, principal: Client, services: ServicesDep, idempotency_key: IdempotencyKey = None
) -> JSONResponse:
    """A paid request in the seed's shape: 402 over ``max_cost`` or without the funds, 429 at
    ``PP_MAX_OPEN_REQUESTS`` open requests; nothing is stored when refused."""
    market = marketplace_of(services)
    model = body.model_name or body.model
    if model is None and body.offer_id is None:
        raise InvalidInput("name the model (model_name)", {"field": "model_name"})
    currency = currency_of(services, body.currency)
    symbol = body.symbol or body.ticker or body.instrument
    horizon = body.horizon or body.prediction_horizon
    key = idempotency_key or f"seed:{uuid.uuid4()}"
    if body.notification_webhook is not None:
        check_webhook_url(
            body.notification_webhook, allow_private=services.settings.webhook_allow_private,
            field="notification_webhook",
        )  # fmt: skip

    def make() -> tuple[dict[str, Any], bool]:
        priced = (
            market.offers.get(body.offer_id) if body.offer_id is not None
            else seed_offer(market, model or "", currency, symbol, horizon)
        )  # fmt: skip
        offer = priced.offer
        chosen_symbol = (symbol or (offer.symbols[0] if len(offer.symbols) == 1 else "")).upper()
        chosen_horizon = horizon or (offer.horizons[0] if len(offer.horizons) == 1 else 0)
        if not chosen_symbol or not chosen_horizon:
            raise InvalidInput(
                "name the symbol and the horizon", {"field": "symbol" if not chosen_symbol else "horizon"}
            )
        max_cost = priced.price.amount if body.max_cost is None else parse_amount(body.max_cost, "max_cost")
        submission = Submission(
            spec=Spec(chosen_symbol, chosen_horizon, body.input_data), max_cost=max_cost, currency=currency,
            offer_id=offer.id, webhook_url=body.notification_webhook,
            priority=None if body.priority is None else str(body.priority),
        )  # fmt: skip
        job, created = market.submit(principal, submission, key)
        return {
            "id": job.id, "request_id": job.id, "status": market_status(job), "model_name": job.model_name,
            "symbol": chosen_symbol, "horizon": chosen_horizon, "priority": body.priority,
            "max_cost": number(job.max_cost or 0), "cost": number(job.price or 0), "currency": job.currency,
            "notification_webhook": job.webhook_url, "offer_id": job.offer_id,
            "created_at": job.created_at.isoformat(),
        }, created  # fmt: skip

    view, created = await run_in_threadpool(make)
    return JSONResponse(view, status_code=201 if created else 200)
