"""Money routes under ``/api/v1``: wallets (deposits and withdrawals by admins, the client's own
wallet, limits and statement), invoices, and the journal's admin reads (trial balance, the ledger
check, transfers). The journal is append-only: ``PUT``/``DELETE`` on transfers (and on
invoices) answer 405, as every method a path does not serve does.

Parse, authorize, call ``services.ledger``, shape the answer; amounts are decimal strings."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Path, Query, Request
from pydantic import AwareDatetime
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from prediction_provider.accounts.principal import Principal
from prediction_provider.accounts.roles import Permission, allows
from prediction_provider.api.account_schemas import USERNAME
from prediction_provider.api.auth import authenticate, holding, missing_permission
from prediction_provider.api.deps import Services, ServicesDep, services_of
from prediction_provider.api.ledger_schemas import (
    Finalized,
    FinalizeRequest,
    InvoicePage,
    InvoicePublic,
    LedgerCheck,
    LimitsSet,
    Moved,
    Statement,
    TransferPage,
    TransferPublic,
    TrialBalance,
    Wallet,
    WalletMove,
)
from prediction_provider.api.query_params import DeclaredQueryOnly, Limit, Offset
from prediction_provider.api.schemas import ErrorBody
from prediction_provider.errors import AuthenticationFailed, PredictionFailed
from prediction_provider.ledger.money import parse_amount
from prediction_provider.ledger.service import LedgerService

router = APIRouter(prefix="/api/v1", tags=["ledger"])
ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": description}
    for status, description in (
        (400, "Idempotency-Key missing"),
        (401, "Not signed in"),
        (402, "The withdrawal would overdraw the wallet"),
        (403, "Not allowed"),
        (404, "Unknown user, invoice or transfer"),
        (405, "The journal and finalized invoices are never changed"),
        (409, "The key was used for another amount; the period has not ended"),
        (422, "Invalid amount, currency, period or query"),
    )
}
WalletManager = Annotated[Principal, Depends(holding(Permission.MANAGE_WALLETS))]
LedgerReader = Annotated[Principal, Depends(holding(Permission.BILLING_OVERSIGHT))]
IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key")]
Username = Annotated[str, Path(pattern=USERNAME)]
CurrencyQuery = Annotated[
    str | None, Query(min_length=3, max_length=3, description="ISO-4217; default PP_DEFAULT_CURRENCY")
]
REPLAYED = "Idempotency-Replayed"


async def wallet_holder(request: Request) -> Principal:
    """A signed-in account that may spend (``predict``): its own wallet, statement and invoices."""
    principal = await authenticate(request, services_of(request))
    if principal.user_id is None:
        raise AuthenticationFailed("sign in with an API key or a bearer token")
    if not allows(principal.role, Permission.PREDICT):
        raise missing_permission(principal, Permission.PREDICT)
    return principal


WalletHolder = Annotated[Principal, Depends(wallet_holder)]


def ledger_of(services: Services) -> LedgerService:
    if services.ledger is None:
        raise PredictionFailed("the ledger is not configured on this server")
    return services.ledger


def own_id(principal: Principal) -> int:
    assert principal.user_id is not None  # wallet_holder saw to it
    return principal.user_id


# -- wallets ---------------------------------------------------------------------------------------


@router.post(
    "/admin/wallets/{username}/deposits", status_code=201, response_model=Moved, responses=ERRORS,
    summary="Deposit into a wallet (Idempotency-Key required)",
)  # fmt: skip
async def deposit(
    username: Username, body: WalletMove, admin: WalletManager, services: ServicesDep, response: Response,
    key: IdempotencyKey = None,
) -> dict[str, Any]:  # fmt: skip
    """Outside money into the user's wallet. The same Idempotency-Key again moves nothing and
    answers the first transfer (``Idempotency-Replayed: true``); with another amount, 409."""
    amount = parse_amount(body.amount, positive=True)
    moved = await run_in_threadpool(ledger_of(services).deposit, admin, username, amount, body.currency, key)
    return _moved(moved, response)


@router.post(
    "/admin/wallets/{username}/withdrawals", status_code=201, response_model=Moved, responses=ERRORS,
    summary="Withdraw from a wallet (Idempotency-Key required; 402 if it would overdraw)",
)  # fmt: skip
async def withdraw(
    username: Username, body: WalletMove, admin: WalletManager, services: ServicesDep, response: Response,
    key: IdempotencyKey = None,
) -> dict[str, Any]:  # fmt: skip
    """Money out of the user's wallet, never more than is available (held money is not)."""
    amount = parse_amount(body.amount, positive=True)
    moved = await run_in_threadpool(ledger_of(services).withdraw, admin, username, amount, body.currency, key)
    return _moved(moved, response)


def _moved(moved: dict[str, Any], response: Response) -> dict[str, Any]:
    if moved.pop("replayed", False):
        response.headers[REPLAYED] = "true"
    return moved


@router.get("/admin/wallets/{username}", response_model=Wallet, responses=ERRORS, summary="Anyone's wallet")
async def user_wallet(
    username: Username, reader: LedgerReader, services: ServicesDep, currency: CurrencyQuery = None,
    _query: DeclaredQueryOnly = None,
) -> dict[str, Any]:  # fmt: skip
    return await run_in_threadpool(ledger_of(services).wallet_of, username, currency)


@router.get("/wallet", response_model=Wallet, responses=ERRORS, summary="Your wallet")
async def wallet(
    principal: WalletHolder, services: ServicesDep, currency: CurrencyQuery = None,
    _query: DeclaredQueryOnly = None,
) -> dict[str, Any]:  # fmt: skip
    """Available (posted - held), held (requests in flight), posted, your limits, and what you
    spent this UTC day and month (captured or charged, plus still held)."""
    return await run_in_threadpool(ledger_of(services).wallet, own_id(principal), currency)


@router.put("/wallet/limits", response_model=Wallet, responses=ERRORS, summary="Set your spending limits")
async def set_limits(body: LimitsSet, principal: WalletHolder, services: ServicesDep) -> dict[str, Any]:
    """``daily`` and ``monthly`` caps: a field left out stays as it was, ``null`` removes the cap.
    A request that would take the period's spending over a cap is refused with 402."""
    changes: dict[str, int | None] = {}
    for name in ("daily", "monthly"):
        if name in body.model_fields_set:
            value = getattr(body, name)
            changes[name] = None if value is None else parse_amount(value, name)
    return await run_in_threadpool(ledger_of(services).set_limits, own_id(principal), body.currency, changes)


@router.get("/wallet/statement", response_model=Statement, responses=ERRORS, summary="Your statement")
async def statement(
    principal: WalletHolder,
    services: ServicesDep,
    from_: Annotated[AwareDatetime | None, Query(alias="from", description="default: this UTC month")] = None,
    to: Annotated[AwareDatetime | None, Query(description="exclusive; default: none")] = None,
    currency: CurrencyQuery = None,
    _query: DeclaredQueryOnly = None,
) -> dict[str, Any]:
    """Posted entries of [from, to): closing_balance = opening_balance + Σ amount, and each
    entry's balance_after is the posted balance after it. Holds are not entries; captures are."""
    return await run_in_threadpool(ledger_of(services).statement, own_id(principal), currency, from_, to)


# -- invoices --------------------------------------------------------------------------------------


def sees_all(principal: Principal) -> bool:
    return allows(principal.role, Permission.BILLING_OVERSIGHT)


@router.get("/invoices", response_model=InvoicePage, responses=ERRORS, summary="Your invoices")
async def invoices(
    principal: WalletHolder, services: ServicesDep, limit: Limit = 50, offset: Offset = 0,
    _query: DeclaredQueryOnly = None,
) -> dict[str, Any]:  # fmt: skip
    """Yours, newest period first (everyone's for billing oversight)."""
    client_id = None if sees_all(principal) else own_id(principal)
    return await run_in_threadpool(ledger_of(services).invoices, client_id, limit, offset)


# Documented rather than declared: an invoice's ``total`` is money, not a list's count, and the
# route walk (tests/e2e/test_list_routes.py) reads a declared ``total`` as a page.
@router.get(
    "/invoices/{invoice_id}", response_model=None, responses={200: {"model": InvoicePublic}, **ERRORS},
    summary="One invoice",
)  # fmt: skip
async def invoice(
    invoice_id: Annotated[str, Path(max_length=36)], principal: WalletHolder, services: ServicesDep
) -> dict[str, Any]:
    """A finalized invoice never changes (PUT and DELETE answer 405); a correction voids it and
    issues a new one."""
    client_id = None if sees_all(principal) else own_id(principal)
    return await run_in_threadpool(ledger_of(services).invoice, invoice_id, client_id)


@router.post(
    "/admin/invoices/finalize", response_model=Finalized, responses=ERRORS,
    summary="Finalize a month's invoices (idempotent per period)",
)  # fmt: skip
async def finalize(body: FinalizeRequest, admin: LedgerReader, services: ServicesDep) -> dict[str, Any]:
    """One invoice per client and currency billed in the month (which must have ended); a
    second call issues nothing new and answers the same invoices."""
    return await run_in_threadpool(ledger_of(services).finalize, body.period)


# -- the journal -----------------------------------------------------------------------------------


@router.get(
    "/admin/ledger/trial-balance", response_model=TrialBalance, responses=ERRORS, summary="Trial balance"
)
async def trial_balance(reader: LedgerReader, services: ServicesDep) -> dict[str, Any]:
    """Per currency, Σ of each of the four sums over every account; debits - credits is
    "0.000000", pending and posted, on a balanced ledger."""
    currencies = await run_in_threadpool(ledger_of(services).trial_balance)
    return {"currencies": currencies, "balanced": all(item["balanced"] for item in currencies)}


@router.get("/admin/ledger/check", response_model=LedgerCheck, responses=ERRORS, summary="Ledger check")
async def check(reader: LedgerReader, services: ServicesDep) -> dict[str, Any]:
    """Recompute every balance from the journal and check conservation, bounds, clearing (escrow
    = Σ price of live requests), the hash chain and the gapless sequence."""
    report = await run_in_threadpool(ledger_of(services).check)
    return report.as_dict()


@router.get(
    "/admin/ledger/transfers", response_model=TransferPage, responses=ERRORS, summary="Journal transfers"
)
async def transfers(
    reader: LedgerReader,
    services: ServicesDep,
    request_id: Annotated[str | None, Query(max_length=64)] = None,
    user: Annotated[str | None, Query(max_length=64, description="a username or user id")] = None,
    kind: Annotated[str | None, Query(max_length=24)] = None,
    limit: Limit = 50,
    offset: Offset = 0,
    _query: DeclaredQueryOnly = None,
) -> dict[str, Any]:
    """Newest first. The journal is append-only: there is no PUT or DELETE (405)."""
    ledger = ledger_of(services)
    return await run_in_threadpool(
        lambda: ledger.transfers(request_id=request_id, user=user, kind=kind, limit=limit, offset=offset)
    )


@router.get(
    "/admin/ledger/transfers/{transfer_id}", response_model=TransferPublic, responses=ERRORS,
    summary="One transfer",
)  # fmt: skip
async def transfer(
    transfer_id: Annotated[str, Path(max_length=96)], reader: LedgerReader, services: ServicesDep
) -> dict[str, Any]:
    return await run_in_threadpool(ledger_of(services).transfer, transfer_id)
