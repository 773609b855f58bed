"""``/api/v1/accounts``: trading accounts and positions that decisions are sized and checked against.

Callers with the ``manage_trading_accounts`` permission (clients, providers) open and manage
their own accounts; admins (who may manage users) see and manage every account and may open
one for another user.
An account the caller may not see answers 404, as one that does not exist.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path
from starlette.concurrency import run_in_threadpool

from prediction_provider.api.auth import TradingAccountManager
from prediction_provider.api.decision_schemas import (
    ACCOUNT_NAME,
    SYMBOL,
    AccountChange,
    AccountCreate,
    AccountPage,
    AccountPublic,
    PositionSet,
)
from prediction_provider.api.deps import Services, ServicesDep
from prediction_provider.api.query_params import DeclaredQueryOnly, Limit, Offset
from prediction_provider.api.schemas import ErrorBody
from prediction_provider.errors import PredictionFailed
from prediction_provider.trading.accounts import AccountUpdate, PositionUpdate, TradingAccountService

router = APIRouter(
    prefix="/api/v1/accounts",
    tags=["trading accounts"],
    responses={
        status: {"model": ErrorBody, "description": description}
        for status, description in (
            (403, "Missing permission"),
            (404, "No such account (or not yours)"),
            (409, "Account name taken"),
            (422, "Invalid body"),
        )
    },
)

AccountName = Annotated[str, Path(pattern=ACCOUNT_NAME)]
SymbolPath = Annotated[str, Path(pattern=SYMBOL, description="Upper case, as decisions use it.")]


def accounts_of(services: Services) -> TradingAccountService:
    if services.trading_accounts is None:
        raise PredictionFailed("trading accounts are not configured on this server")
    service: TradingAccountService = services.trading_accounts
    return service


@router.post("", response_model=AccountPublic, status_code=201, summary="Open a trading account")
async def create_account(
    body: AccountCreate, caller: TradingAccountManager, services: ServicesDep
) -> dict[str, Any]:
    return await run_in_threadpool(
        accounts_of(services).create, caller, body.name, body.equity, body.currency, body.owner
    )


@router.get("", response_model=AccountPage, summary="Your trading accounts (an admin's: all), by name")
async def list_accounts(
    caller: TradingAccountManager,
    services: ServicesDep,
    limit: Limit = 50,
    offset: Offset = 0,
    _query: DeclaredQueryOnly = None,
) -> dict[str, Any]:
    items, total = await run_in_threadpool(accounts_of(services).list, caller, limit, offset)
    return {"items": items, "total": total, "limit": limit, "offset": offset}


@router.get("/{name}", response_model=AccountPublic, summary="A trading account with its positions")
async def get_account(
    name: AccountName, caller: TradingAccountManager, services: ServicesDep
) -> dict[str, Any]:
    return await run_in_threadpool(accounts_of(services).get, name, caller)


@router.put("/{name}", response_model=AccountPublic, summary="Set equity and the day's P&L")
async def update_account(
    name: AccountName, body: AccountChange, caller: TradingAccountManager, services: ServicesDep
) -> dict[str, Any]:
    change = AccountUpdate(body.equity, body.day_start_equity, body.realized_pnl_today)
    return await run_in_threadpool(accounts_of(services).update, name, caller, change)


@router.put(
    "/{name}/positions/{symbol}",
    response_model=AccountPublic,
    summary="Create or replace a position (quantity 0 closes it)",
)
async def set_position(
    name: AccountName,
    symbol: SymbolPath,
    body: PositionSet,
    caller: TradingAccountManager,
    services: ServicesDep,
) -> dict[str, Any]:
    change = PositionUpdate(body.quantity, body.average_price, body.market_price, body.sector)
    return await run_in_threadpool(accounts_of(services).set_position, name, symbol, caller, change)


@router.delete("/{name}/positions/{symbol}", response_model=AccountPublic, summary="Close a position")
async def close_position(
    name: AccountName, symbol: SymbolPath, caller: TradingAccountManager, services: ServicesDep
) -> dict[str, Any]:
    return await run_in_threadpool(accounts_of(services).close_position, name, symbol, caller)
