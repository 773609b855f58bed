"""Trading accounts and their positions, stored with exact decimals; what the risk checks read.

An account belongs to the user who created it (or to whom an admin created it
for). Only its owner and callers who may manage users see or change it; anyone
else is told it does not exist, so account names cannot be probed. Every
operation runs in one transaction.

The day's P&L rolls over at midnight UTC: an account last touched on an
earlier day reads with the day's starting equity at its current equity and no
realised P&L, and is stored that way on its next change.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from prediction_provider.accounts.principal import Principal
from prediction_provider.accounts.roles import Permission, allows
from prediction_provider.db.models import Position, TradingAccount, User
from prediction_provider.db.session import Database
from prediction_provider.errors import Conflict, InvalidInput, PermissionDenied, TradingAccountNotFound
from prediction_provider.trading.risk import AccountState, PositionState

MAX_REMEMBERED_ACCOUNTS = 10_000


def plain(amount: Decimal) -> str:
    """An exact decimal as plain digits, without trailing zeros or exponent: ``10000``, ``0.5``."""
    text = format(amount.normalize(), "f")
    return "0" if text in ("-0", "") else text


def may_manage_any(principal: Principal) -> bool:
    """Who manages users manages their trading accounts too."""
    return allows(principal.role, Permission.MANAGE_USERS)


def _may_see(owner_id: int | None, principal: Principal) -> bool:
    owned = principal.user_id is not None and owner_id == principal.user_id
    return owned or may_manage_any(principal)


@dataclass(frozen=True, slots=True)
class _Remembered:
    owner_id: int | None
    pnl_date: date
    state: AccountState  # as stored, before any day roll-over
    expires_at: float


@dataclass(frozen=True, slots=True)
class PositionUpdate:
    quantity: Decimal
    average_price: Decimal
    market_price: Decimal
    sector: str | None = None


@dataclass(frozen=True, slots=True)
class AccountUpdate:
    equity: Decimal | None = None
    day_start_equity: Decimal | None = None
    realized_pnl_today: Decimal | None = None


class TradingAccountService:
    def __init__(
        self, db: Database, clock: Callable[[], datetime] | None = None, cache_seconds: float = 0.0
    ) -> None:
        self.db = db
        self._clock = clock or (lambda: datetime.now(UTC))
        self.cache_seconds = cache_seconds
        self._states: OrderedDict[str, _Remembered] = OrderedDict()
        self._writes = 0  # bumped by every change, so a read racing a write is not remembered
        self._lock = threading.Lock()

    def _today(self) -> date:
        return self._clock().astimezone(UTC).date()

    # -- reads -----------------------------------------------------------------------

    def _find(self, session: Session, name: str, principal: Principal) -> TradingAccount:
        account = session.scalar(select(TradingAccount).where(TradingAccount.name == name))
        if account is None or not _may_see(account.owner_id, principal):
            raise TradingAccountNotFound(f"no trading account {name!r}", {"account": name})
        return account

    def _visible(self, session: Session, name: str, principal: Principal) -> TradingAccount:
        """The account for a write, if the caller may see it, with the day rolled over."""
        account = self._find(session, name, principal)
        self._roll_day(account)
        return account

    def _read(self, session: Session, name: str, principal: Principal) -> TradingAccount:
        """The account for a read: detached first, so the day's roll-over is shown but not stored."""
        account = self._find(session, name, principal)
        session.expunge(account)
        self._roll_day(account)
        return account

    def _roll_day(self, account: TradingAccount) -> None:
        today = self._today()
        if account.pnl_date < today:
            account.day_start_equity = account.equity
            account.realized_pnl_today = Decimal(0)
            account.pnl_date = today

    def get(self, name: str, principal: Principal) -> dict[str, Any]:
        with self.db.session() as session:
            return self._public(session, self._read(session, name, principal))

    def list(self, principal: Principal, limit: int, offset: int) -> tuple[list[dict[str, Any]], int]:
        """The caller's accounts (an admin's: every one) by name, ``limit`` from ``offset``, and how
        many there are in all."""
        with self.db.session() as session:
            query = select(TradingAccount)
            if not may_manage_any(principal):
                query = query.where(TradingAccount.owner_id == principal.user_id)
            total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
            accounts = list(session.scalars(query.order_by(TradingAccount.name).limit(limit).offset(offset)))
            for account in accounts:
                session.expunge(account)
                self._roll_day(account)
            return [self._public(session, account) for account in accounts], int(total)

    def state(self, name: str, principal: Principal) -> AccountState:
        """What the risk checks need, in one read; remembered for ``cache_seconds``."""
        with self._lock:
            writes_before = self._writes
        with self.db.session() as session:
            account = self._find(session, name, principal)
            session.expunge(account)
            positions = session.scalars(select(Position).where(Position.account_id == account.id))
            stored = AccountState(
                name=account.name,
                equity=account.equity,
                day_start_equity=account.day_start_equity,
                realized_pnl_today=account.realized_pnl_today,
                positions=tuple(
                    PositionState(p.symbol, p.sector, p.quantity, p.market_price) for p in positions
                ),
            )
        expires_at = time.monotonic() + self.cache_seconds
        remembered = _Remembered(account.owner_id, account.pnl_date, stored, expires_at)
        if self.cache_seconds > 0:
            with self._lock:
                if self._writes == writes_before:
                    self._states[name] = remembered
                    self._states.move_to_end(name)
                    while len(self._states) > MAX_REMEMBERED_ACCOUNTS:
                        self._states.popitem(last=False)
        return self._rolled(remembered)

    def cached_state(self, name: str, principal: Principal) -> AccountState | None:
        """The remembered state, without I/O; None when there is none (or the caller may not see
        it, which ``state`` then reports)."""
        with self._lock:
            remembered = self._states.get(name)
        if remembered is None or remembered.expires_at < time.monotonic():
            return None
        if not _may_see(remembered.owner_id, principal):
            return None
        return self._rolled(remembered)

    def _rolled(self, remembered: _Remembered) -> AccountState:
        if remembered.pnl_date < self._today():
            state = remembered.state
            return replace(state, day_start_equity=state.equity, realized_pnl_today=Decimal(0))
        return remembered.state

    def _forget(self, name: str) -> None:
        with self._lock:
            self._writes += 1
            self._states.pop(name, None)

    # -- writes ----------------------------------------------------------------------

    @contextmanager
    def _change(self, name: str) -> Iterator[Session]:
        """A write transaction; the account's remembered state is dropped once it has ended."""
        try:
            with self.db.session() as session:
                yield session
        finally:
            self._forget(name)

    def create(
        self,
        principal: Principal,
        name: str,
        equity: Decimal,
        currency: str = "USD",
        owner: str | None = None,
    ) -> dict[str, Any]:
        if principal.user_id is None:
            raise PermissionDenied("sign in to open a trading account")
        with self.db.session() as session:
            owner_id = principal.user_id
            if owner is not None and owner != principal.username:
                if not may_manage_any(principal):
                    raise PermissionDenied(
                        "opening an account for another user requires the `manage_users` permission, "
                        f"which the {principal.role} role lacks",
                        {
                            "required_permissions": [Permission.MANAGE_USERS.value],
                            "role": str(principal.role),
                        },
                    )
                owner_id = self._user_id(session, owner)
            account = TradingAccount(
                name=name,
                owner_id=owner_id,
                currency=currency,
                equity=equity,
                day_start_equity=equity,
                realized_pnl_today=Decimal(0),
                pnl_date=self._today(),
            )
            session.add(account)
            try:
                session.flush()
            except IntegrityError as exc:
                raise Conflict(f"trading account {name!r} already exists", {"account": name}) from exc
            return self._public(session, account)

    def _user_id(self, session: Session, username: str) -> int:
        user_id = session.scalar(select(User.id).where(User.username == username))
        if user_id is None:
            raise InvalidInput("no such owner", [{"field": "owner", "error": f"no user {username!r}"}])
        return int(user_id)

    def update(self, name: str, principal: Principal, change: AccountUpdate) -> dict[str, Any]:
        with self._change(name) as session:
            account = self._visible(session, name, principal)
            if change.equity is not None:
                account.equity = change.equity
            if change.day_start_equity is not None:
                account.day_start_equity = change.day_start_equity
            if change.realized_pnl_today is not None:
                account.realized_pnl_today = change.realized_pnl_today
            session.flush()
            return self._public(session, account)

    def set_position(
        self, name: str, symbol: str, principal: Principal, change: PositionUpdate
    ) -> dict[str, Any]:
        """Create, replace or (with quantity 0) close the account's position in ``symbol``."""
        with self._change(name) as session:
            account = self._visible(session, name, principal)
            position = session.scalar(
                select(Position).where(Position.account_id == account.id, Position.symbol == symbol)
            )
            if change.quantity == 0:
                if position is not None:
                    session.delete(position)
            elif position is None:
                session.add(
                    Position(
                        account_id=account.id, symbol=symbol, sector=change.sector, quantity=change.quantity,
                        average_price=change.average_price, market_price=change.market_price,
                    )
                )  # fmt: skip
            else:
                position.quantity = change.quantity
                position.average_price = change.average_price
                position.market_price = change.market_price
                position.sector = change.sector if change.sector is not None else position.sector
            session.flush()
            return self._public(session, account)

    def close_position(self, name: str, symbol: str, principal: Principal) -> dict[str, Any]:
        with self._change(name) as session:
            account = self._visible(session, name, principal)
            position = session.scalar(
                select(Position).where(Position.account_id == account.id, Position.symbol == symbol)
            )
            if position is None:
                raise TradingAccountNotFound(
                    f"account {name!r} holds no {symbol} position", {"account": name, "symbol": symbol}
                )
            session.delete(position)
            session.flush()
            return self._public(session, account)

    # -- shaping ---------------------------------------------------------------------

    def _public(self, session: Session, account: TradingAccount) -> dict[str, Any]:
        positions = list(
            session.scalars(
                select(Position).where(Position.account_id == account.id).order_by(Position.symbol)
            )
        )
        owner = session.scalar(select(User.username).where(User.id == account.owner_id))
        gross = sum((abs(p.quantity * p.market_price) for p in positions), Decimal(0))
        return {
            "name": account.name,
            "owner": owner,
            "currency": account.currency,
            "equity": plain(account.equity),
            "day_start_equity": plain(account.day_start_equity),
            "realized_pnl_today": plain(account.realized_pnl_today),
            "pnl_date": account.pnl_date,
            "gross_exposure": plain(gross),
            "leverage": plain(round(gross / account.equity, 6)) if account.equity > 0 else None,
            "positions": [
                {
                    "symbol": p.symbol,
                    "sector": p.sector,
                    "quantity": plain(p.quantity),
                    "average_price": plain(p.average_price),
                    "market_price": plain(p.market_price),
                    "market_value": plain(p.quantity * p.market_price),
                    "unrealized_pnl": plain(p.quantity * (p.market_price - p.average_price)),
                }
                for p in positions
            ],
            "created_at": account.created_at,
            "updated_at": account.updated_at,
        }
