"""The marketplace: offers and prices (providers), quotes and paid requests (clients), refunds and
the manual clock (admins). Parse, authorize, call ``services.marketplace``, shape the answer."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query
from pydantic import AwareDatetime
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse

from prediction_provider.accounts.principal import Principal
from prediction_provider.accounts.roles import Permission, allows
from prediction_provider.api.auth import CurrentUser, holding
from prediction_provider.api.deps import Services, ServicesDep
from prediction_provider.api.market_schemas import (
    ClockSet,
    OfferCreate,
    OfferUpdate,
    PriceChange,
    QuoteCreate,
    RefundCreate,
    RequestCreate,
)
from prediction_provider.api.query_params import DeclaredQueryOnly, Limit, Offset
from prediction_provider.api.schemas import ErrorBody
from prediction_provider.clock import ManualClock
from prediction_provider.db.market_models import Offer, OfferPrice, Quote
from prediction_provider.errors import IdempotencyKeyMissing, InvalidInput, MarketNotFound, PredictionFailed
from prediction_provider.ledger.money import format_amount, parse_amount, parse_currency
from prediction_provider.marketplace.offers import NewOffer, Priced, Spec
from prediction_provider.marketplace.requests import Submission
from prediction_provider.marketplace.service import Marketplace
from prediction_provider.webhooks.urls import check_webhook_url

router = APIRouter(tags=["marketplace"])
ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": description}
    for status, description in (
        (400, "Idempotency-Key missing"),
        (401, "Not signed in"),
        (402, "Over max_cost, over a spending limit, or not enough funds: nothing was stored"),
        (403, "Not allowed"),
        (404, "Unknown offer, quote, request or model"),
        (409, "Quote expired or used, request not cancellable, key in flight"),
        (422, "Invalid request"),
        (429, "Too many open requests"),
    )
}
Provider = Annotated[Principal, Depends(holding(Permission.MANAGE_MODELS))]
Buyer = Annotated[Principal, Depends(holding(Permission.PREDICT))]
Refunder = Annotated[Principal, Depends(holding(Permission.BILLING_OVERSIGHT))]
ClockSetter = Annotated[Principal, Depends(holding(Permission.MANAGE_USERS))]
IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key", max_length=255)]


def marketplace_of(services: Services) -> Marketplace:
    if services.marketplace is None:
        raise PredictionFailed("the marketplace is not configured on this server")
    return services.marketplace


def sees_all(principal: Principal) -> bool:
    return allows(principal.role, Permission.BILLING_OVERSIGHT) or allows(
        principal.role, Permission.READ_ALL_JOBS
    )


def prices_changed(services: Services) -> None:
    """Synchronous paid calls in this process see a new price at once (others within a second)."""
    if services.paid_calls is not None:
        services.paid_calls.tariffs.invalidate()


def currency_of(services: Services, value: str | None) -> str:
    return parse_currency(
        value or services.settings.default_currency, frozenset(services.settings.currencies)
    )


def price_view(price: OfferPrice) -> dict[str, Any]:
    return {
        "price_id": price.id,
        "price": format_amount(price.amount),
        "fee_bps": price.fee_bps,
        "effective_from": price.effective_from.isoformat(),
        "effective_to": None if price.effective_to is None else price.effective_to.isoformat(),
    }


def offer_view(priced: Priced) -> dict[str, Any]:
    offer: Offer = priced.offer
    legs = priced.breakdown()
    return {
        "offer_id": offer.id,
        "provider_id": offer.provider_id,
        "model": offer.model_name,
        "model_version": offer.model_version,
        "target": offer.target,
        "symbols": offer.symbols,
        "interval": offer.interval,
        "horizons": offer.horizons,
        "execution": offer.execution,
        "evaluator_fee": format_amount(offer.evaluator_fee),
        "currency": offer.currency,
        "active": offer.active,
        "benchmark_opt_in": offer.benchmark_opt_in,
        "price_id": priced.price.id,
        "price": format_amount(priced.price.amount),
        "breakdown": {name: format_amount(amount) for name, amount in legs.items()},
        "leaderboard": None,  # filled once realized outcomes are scored
    }


def quote_view(quote: Quote) -> dict[str, Any]:
    return {
        "quote_id": quote.id,
        "offer_id": quote.offer_id,
        "price_id": quote.price_id,
        "price": format_amount(quote.amount),
        "breakdown": {name: format_amount(amount) for name, amount in quote.breakdown.items()},
        "currency": quote.currency,
        "spec": quote.spec,
        "expires_at": quote.expires_at.isoformat(),
    }


def split_model(model: str) -> tuple[str, str | None]:
    name, _, version = model.partition("@")
    if version and not version.isdigit():
        raise InvalidInput("name a model as name or name@version (a version number)", {"field": "model"})
    return name, version or None


# -- offers ----------------------------------------------------------------------------------------


@router.post("/api/v1/market/offers", status_code=201, responses=ERRORS)
async def publish_offer(body: OfferCreate, principal: Provider, services: ServicesDep) -> dict[str, Any]:
    """Offer a model you own at a price per request (sub-cent prices allowed)."""
    market = marketplace_of(services)
    name, version = split_model(body.model)
    resolved = await run_in_threadpool(
        services.cache.resolve, body.model if version is None else f"models:/{name}/{version}"
    )
    if body.execution == "platform" and body.target == "entry_signal":
        raise InvalidInput("entry_signal offers are executed by evaluators", {"field": "execution"})
    new = NewOffer(
        model_name=resolved.name or name,
        model_version=version,
        target=body.target,
        symbols=tuple(s.upper() for s in body.symbols),
        interval=body.interval,
        horizons=tuple(body.horizons),
        price=parse_amount(body.price, "price"),
        currency=currency_of(services, body.currency),
        execution=body.execution,
        evaluator_fee=0 if body.evaluator_fee is None else parse_amount(body.evaluator_fee, "evaluator_fee"),
        benchmark_opt_in=body.benchmark_opt_in,
    )
    priced = await run_in_threadpool(market.offers.publish, principal, new)
    prices_changed(services)
    return offer_view(priced)


@router.get("/api/v1/market/offers", responses=ERRORS)
async def list_offers(
    services: ServicesDep,
    principal: Annotated[Principal, Depends(holding(Permission.READ_MODELS))],
    symbol: Annotated[str | None, Query(max_length=20)] = None,
    target: Annotated[str | None, Query(max_length=16)] = None,
    horizon: Annotated[int | None, Query(ge=1)] = None,
    limit: Limit = 50,
    offset: Offset = 0,
    _query: DeclaredQueryOnly = None,
) -> dict[str, Any]:
    """Active offers with their current price, cheapest first."""
    found = await run_in_threadpool(
        lambda: marketplace_of(services).offers.search(symbol=symbol, target=target, horizon=horizon)
    )
    page = found[offset : offset + limit]
    return {"items": [offer_view(p) for p in page], "total": len(found), "limit": limit, "offset": offset}


@router.get("/api/v1/market/offers/{offer_id}", responses=ERRORS)
async def get_offer(
    offer_id: str,
    services: ServicesDep,
    principal: Annotated[Principal, Depends(holding(Permission.READ_MODELS))],
) -> dict[str, Any]:
    return offer_view(await run_in_threadpool(marketplace_of(services).offers.get, offer_id))


@router.patch("/api/v1/market/offers/{offer_id}", responses=ERRORS)
async def update_offer(
    offer_id: str, body: OfferUpdate, principal: Provider, services: ServicesDep
) -> dict[str, Any]:
    """Join or leave the common rounds (``benchmark_opt_in``): free questions from the platform's
    benchmark account, the same for every opted-in offer, scored as the leaderboard's ``set=common``."""
    market = marketplace_of(services)
    return offer_view(
        await run_in_threadpool(
            market.offers.set_benchmark_opt_in, principal, offer_id, body.benchmark_opt_in
        )
    )


@router.delete("/api/v1/market/offers/{offer_id}", responses=ERRORS)
async def deactivate_offer(offer_id: str, principal: Provider, services: ServicesDep) -> dict[str, Any]:
    """Stop selling; the offer and its price history stay readable."""
    offer = await run_in_threadpool(marketplace_of(services).offers.deactivate, principal, offer_id)
    prices_changed(services)
    return {"offer_id": offer.id, "active": offer.active}


@router.post("/api/v1/market/offers/{offer_id}/prices", status_code=201, responses=ERRORS)
async def change_price(
    offer_id: str, body: PriceChange, principal: Provider, services: ServicesDep
) -> dict[str, Any]:
    """A new price version; quotes and requests keep the version they were made at."""
    price = await run_in_threadpool(
        marketplace_of(services).offers.reprice, principal, offer_id, parse_amount(body.price, "price")
    )
    prices_changed(services)
    return price_view(price)


@router.get("/api/v1/market/offers/{offer_id}/prices", responses=ERRORS)
async def price_history(
    offer_id: str,
    services: ServicesDep,
    principal: Annotated[Principal, Depends(holding(Permission.READ_MODELS))],
    limit: Limit = 50,
    offset: Offset = 0,
    _query: DeclaredQueryOnly = None,
) -> dict[str, Any]:
    """Every price the offer has had, oldest first."""
    prices = await run_in_threadpool(marketplace_of(services).offers.prices, offer_id)
    page = prices[offset : offset + limit]
    return {"items": [price_view(p) for p in page], "total": len(prices), "limit": limit, "offset": offset}


# -- quotes and requests -----------------------------------------------------------------------------


def spec_of(body: QuoteCreate, priced: Priced | None = None) -> Spec:
    symbol = body.symbol or (priced.offer.symbols[0] if priced and len(priced.offer.symbols) == 1 else None)
    horizon = body.horizon or (
        priced.offer.horizons[0] if priced and len(priced.offer.horizons) == 1 else None
    )
    if symbol is None or horizon is None:
        raise InvalidInput(
            "name the symbol and the horizon", {"field": "symbol" if symbol is None else "horizon"}
        )
    return Spec(symbol.upper(), horizon, body.features)


@router.post("/api/v1/market/quotes", status_code=201, responses=ERRORS)
async def quote(body: QuoteCreate, principal: Buyer, services: ServicesDep) -> dict[str, Any]:
    """Lock today's price for a few minutes (``PP_QUOTE_TTL_S``). A quote holds no money."""
    market = marketplace_of(services)
    if principal.user_id is None:
        raise InvalidInput("sign in to get a quote", {"field": "credentials"})

    def make() -> dict[str, Any]:
        reason = None
        if body.offer_id is not None:
            priced = market.offers.get(body.offer_id)
        else:
            spec = spec_of(body)
            if body.target is None:
                raise InvalidInput(
                    "name an offer_id, or a target with symbol and horizon", {"field": "target"}
                )
            routed = market.offers.routed(
                spec.symbol, spec.horizon, body.target, body.route, currency_of(services, body.currency)
            )
            priced, reason = routed.priced, routed.reason
        view = quote_view(market.offers.quote(principal, priced, spec_of(body, priced)))
        return view if reason is None else {**view, "route": body.route, "route_reason": reason}

    return await run_in_threadpool(make)


@router.post("/api/v1/market/requests", status_code=201, responses=ERRORS)
async def submit_request(
    body: RequestCreate, principal: Buyer, services: ServicesDep, idempotency_key: IdempotencyKey = None
) -> JSONResponse:
    """Buy one prediction. One transaction: price, ``max_cost``, limits, balance, hold, request;
    anything refused (402, 409, 422, 429) stores nothing. ``Idempotency-Key`` is required."""
    if not idempotency_key:
        raise IdempotencyKeyMissing(
            "send an Idempotency-Key header with every paid request", {"header": "Idempotency-Key"}
        )
    market = marketplace_of(services)
    if body.webhook_url is not None:
        check_webhook_url(
            body.webhook_url, allow_private=services.settings.webhook_allow_private, field="webhook_url"
        )

    def make() -> tuple[dict[str, Any], bool]:
        priced = None
        if body.offer_id is not None and body.quote_id is None:
            priced = market.offers.get(body.offer_id)
        spec = Spec("", 0) if body.quote_id is not None else spec_of(body, priced)
        submission = Submission(
            spec=spec,
            max_cost=parse_amount(body.max_cost, "max_cost"),
            currency=currency_of(services, body.currency),
            quote_id=body.quote_id,
            offer_id=body.offer_id,
            target=body.target,
            route=body.route,
            webhook_url=body.webhook_url,
            priority=body.priority,
        )
        job, created = market.submit(principal, submission, idempotency_key)
        view = market.view(job)
        return {**view, "price": view["money"]["price"], "held": view["money"]["held"]}, created

    view, created = await run_in_threadpool(make)
    return JSONResponse(view, status_code=201 if created else 200)


@router.get("/api/v1/market/requests", responses=ERRORS)
async def list_requests(
    principal: CurrentUser,
    services: ServicesDep,
    status: Annotated[str | None, Query(max_length=16)] = None,
    from_: Annotated[AwareDatetime | None, Query(alias="from")] = None,
    to: AwareDatetime | None = None,
    limit: Limit = 50,
    offset: Offset = 0,
    _query: DeclaredQueryOnly = None,
) -> dict[str, Any]:
    """Your requests, newest first (admins: everyone's)."""
    market = marketplace_of(services)
    owner = None if sees_all(principal) else principal.user_id

    def page() -> dict[str, Any]:
        rows, total = market.requests.search(owner, status, from_, to, limit, offset)
        return {"items": [market.view(job) for job in rows], "total": total, "limit": limit, "offset": offset}

    return await run_in_threadpool(page)


@router.get("/api/v1/market/requests/{request_id}", responses=ERRORS)
async def get_request(request_id: str, principal: CurrentUser, services: ServicesDep) -> dict[str, Any]:
    market = marketplace_of(services)

    def read() -> dict[str, Any]:
        return market.view(market.requests.get(principal, request_id, see_all=sees_all(principal)))

    return await run_in_threadpool(read)


@router.delete("/api/v1/market/requests/{request_id}", responses=ERRORS)
async def cancel_request(request_id: str, principal: CurrentUser, services: ServicesDep) -> dict[str, Any]:
    """Cancel a queued request: its hold is voided, it costs nothing."""
    market = marketplace_of(services)

    def cancel() -> dict[str, Any]:
        job = market.cancel(principal, request_id, see_all=sees_all(principal))
        view = market.view(job)
        return {**view, "refunded": view["money"]["refunded"]}

    return await run_in_threadpool(cancel)


# -- admins ------------------------------------------------------------------------------------------


@router.post("/api/v1/admin/refunds", status_code=201, responses=ERRORS)
async def refund(
    body: RefundCreate, principal: Refunder, services: ServicesDep, idempotency_key: IdempotencyKey = None
) -> dict[str, Any]:
    """Give back all or part of a charge: new transfers that reverse the split in proportion."""
    if not idempotency_key:
        raise IdempotencyKeyMissing(
            "send an Idempotency-Key header with every refund", {"header": "Idempotency-Key"}
        )
    amount = None if body.amount is None else parse_amount(body.amount, "amount", positive=True)
    done = await run_in_threadpool(
        marketplace_of(services).refund, principal, body.request_id, amount, body.reason, idempotency_key
    )
    return {**done, "refunded": format_amount(done["refunded"])}


@router.post("/api/v1/admin/clock", responses=ERRORS)
async def set_clock(body: ClockSet, principal: ClockSetter, services: ServicesDep) -> dict[str, Any]:
    """Only with ``PP_CLOCK=manual`` (404 otherwise): move the clock, then sweep at the new time,
    so every deadline, lease, quote expiry and hold timeout is tested without waiting."""
    clock = services.clock
    if not isinstance(clock, ManualClock):
        raise MarketNotFound(
            "the clock is the system's: set PP_CLOCK=manual to drive it", {"clock": "system"}
        )
    try:
        if body.now is not None:
            clock.set(body.now)
        if body.advance_s is not None:
            clock.advance(body.advance_s)
    except ValueError as exc:
        raise InvalidInput(str(exc), {"field": "now"}) from exc
    swept = await run_in_threadpool(services.marketplace.sweeper.sweep) if services.marketplace else {}
    return {"now": clock.now().isoformat(), "swept": swept}


@router.get("/api/v1/admin/clock", responses=ERRORS)
async def read_clock(principal: ClockSetter, services: ServicesDep) -> dict[str, Any]:
    clock = services.clock
    return {"now": (clock.now() if clock else None), "manual": bool(clock and clock.manual)}
