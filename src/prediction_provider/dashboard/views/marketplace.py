"""The marketplace page: a client's wallet and spend, a provider's offers and earnings, an evaluator's
queue, and for billing oversight the journal with its balance check.

Each panel is there only when the viewer holds the permission its API route asks for, and it reads
what that route reads, for the same user: a client's wallet is ``/api/v1/wallet`` (its own, never
another's), offers are the viewer's own unless it oversees billing. Money stays the ledger's
decimal strings end to end; nothing on this page passes through a float.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from prediction_provider.accounts.roles import Permission, allows
from prediction_provider.api.deps import Services, services_of
from prediction_provider.api.query_params import DeclaredQueryOnly
from prediction_provider.api.routes.market import offer_view
from prediction_provider.dashboard.nav import MARKETPLACE
from prediction_provider.dashboard.render import PAGE_SIZE, ApiCall, Paging, render
from prediction_provider.dashboard.session import Viewer, page_viewer
from prediction_provider.errors import PredictionFailed

router = APIRouter(prefix="/dashboard", include_in_schema=False)
Marketplace = Annotated[Viewer, Depends(page_viewer(MARKETPLACE))]
Offset = Annotated[int, Query(ge=0, le=1_000_000)]
EARNINGS_DAYS = 30


@dataclass(frozen=True, slots=True)
class Panels:
    """Which panels a role gets: the permission of each panel's API route."""

    wallet: bool
    offers: bool
    queue: bool
    ledger: bool

    @classmethod
    def of(cls, viewer: Viewer) -> Panels:
        role = viewer.principal.role
        return cls(
            wallet=allows(role, Permission.PREDICT),
            offers=allows(role, Permission.MANAGE_MODELS),
            queue=allows(role, Permission.EVALUATE),
            ledger=allows(role, Permission.BILLING_OVERSIGHT),
        )


def _need(services: Services, name: str) -> Any:
    found = getattr(services, name)
    if found is None:
        raise PredictionFailed(f"the {name} is not configured on this server")
    return found


def _wallet(services: Services, viewer: Viewer) -> dict[str, Any]:
    return {
        "wallet": _need(services, "ledger").wallet(viewer.user_id),
        "wallet_api": ApiCall("/api/v1/wallet"),
    }


def _offers(services: Services, viewer: Viewer, all_offers: bool) -> dict[str, Any]:
    market = _need(services, "marketplace")
    owner = None if all_offers else viewer.user_id
    found = market.offers.search(provider_id=owner)
    since = market.clock.now() - timedelta(days=EARNINGS_DAYS)
    return {
        "offers": [offer_view(priced) for priced in found[:PAGE_SIZE]],
        "offers_total": len(found),
        "offers_api": ApiCall("/api/v1/admin/pricing" if all_offers else "/api/v1/provider/pricing"),
        "earnings": _need(services, "ledger").earnings(viewer.user_id, None, since),
        "earnings_days": EARNINGS_DAYS,
        "earnings_api": ApiCall("/api/v1/provider/earnings", {"days": EARNINGS_DAYS}),
    }


def _queue(services: Services, viewer: Viewer, offset: int) -> dict[str, Any]:
    leases = _need(services, "marketplace").leases
    items, total = leases.queue(viewer.principal, limit=PAGE_SIZE, offset=offset)
    return {
        "queue": items,
        "queue_paging": Paging(offset, total),
        "queue_api": ApiCall("/api/v1/evaluator/queue", {"limit": PAGE_SIZE, "offset": offset or None}),
    }


def _ledger(services: Services, offset: int) -> dict[str, Any]:
    ledger = _need(services, "ledger")
    currencies = ledger.trial_balance()
    page = ledger.transfers(limit=PAGE_SIZE, offset=offset)
    return {
        "trial": currencies,
        "balanced": all(item["balanced"] for item in currencies),
        "trial_api": ApiCall("/api/v1/admin/ledger/trial-balance"),
        "check_api": ApiCall("/api/v1/admin/ledger/check"),
        "transfers": page["items"],
        "ledger_paging": Paging(offset, int(page["total"])),
        "ledger_api": ApiCall(
            "/api/v1/admin/ledger/transfers", {"limit": PAGE_SIZE, "offset": offset or None}
        ),
    }


@router.get("/marketplace")
async def marketplace_page(
    request: Request,
    viewer: Marketplace,
    offset: Offset = 0,
    queue_offset: Offset = 0,
    _query: DeclaredQueryOnly = None,
) -> Response:
    """``offset`` pages the journal (billing oversight), ``queue_offset`` the evaluator queue."""
    services = services_of(request)
    panels = Panels.of(viewer)

    def build() -> dict[str, Any]:
        context: dict[str, Any] = {"panels": panels}
        if panels.wallet:
            context.update(_wallet(services, viewer))
        if panels.offers:
            context.update(_offers(services, viewer, all_offers=panels.ledger))
        if panels.queue:
            context.update(_queue(services, viewer, queue_offset))
        if panels.ledger:
            context.update(_ledger(services, offset))
        return context

    context = await run_in_threadpool(build)
    return render(request, "marketplace.html", viewer, MARKETPLACE, **context)
