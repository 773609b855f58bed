"""Wallets, spending limits, statements, invoices and the journal's admin reads, over the journal.

Every method that moves money runs in one ``db.session()`` transaction that calls
:meth:`Journal.lock` first. Deposits and withdrawals are idempotent through their transfer ids
(``dep:{uid}:{key}``, ``wd:{uid}:{key}``): the same key with the same amount answers the first
transfer again, with another amount it is a 409 ``ledger_conflict`` (L5).

**Spending limits** are enforced from the journal itself, not with the design's ``budget:*``
accounts. :func:`spent` sums what a client committed in a period (holds not voided or expired,
and single-phase charges, created at or after the period's start) and :func:`limits` reads the
caps; the submit transaction calls both *after* :meth:`Journal.lock`. That lock serializes every
transaction that moves money, so between reading "spent" and placing the hold no other
transaction can spend from the same wallet: the check is exact under any concurrency, with no
extra accounts to credit at each period start, no lapse to sweep, and no mid-period
"already spent" posting when a limit changes. A limit set mid-period counts what was already
spent in the period at once, because it is the same query.

Periods are UTC days and months of the app's clock (never ``datetime.now()``).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any
from uuid import uuid4

from sqlalchemy import and_, case, exists, func, or_, select
from sqlalchemy.orm import Session, aliased

from prediction_provider.accounts.principal import Principal
from prediction_provider.clock import Clock
from prediction_provider.config import Settings
from prediction_provider.db.ledger_models import LedgerAccount, LedgerHead, LedgerTransfer
from prediction_provider.db.market_models import Invoice, SpendingLimit
from prediction_provider.db.models import PredictionJob, User
from prediction_provider.db.session import Database
from prediction_provider.errors import (
    Conflict,
    IdempotencyKeyMissing,
    InsufficientFunds,
    InvalidInput,
    MarketNotFound,
    UserNotFound,
)
from prediction_provider.ledger.checks import LedgerReport, check_ledger, consistent_snapshot, trial_balance
from prediction_provider.ledger.journal import Journal
from prediction_provider.ledger.money import format_amount, parse_currency

# What a client commits to pay: holds (until voided or expired) and single-phase charges.
SPENDING_KINDS = ("hold", "charge")
RELEASED_PHASES = ("void", "expire")
# Transfers that change a wallet's posted balance (holds do not, until posted).
POSTED_PHASES = ("single", "post")
BILLED_KINDS = ("capture", "charge")
PERIOD = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")
MAX_KEY_IN_ID = 64


class InvoiceNotFound(MarketNotFound):
    code = "invoice_not_found"


class TransferNotFound(MarketNotFound):
    code = "transfer_not_found"


class PeriodOpen(Conflict):
    """An invoice period that has not ended yet: finalizing it would miss its later charges."""

    code = "period_open"


# -- the two functions the submit transaction calls under the journal lock ----------------------


def client_code(user_id: int) -> str:
    return f"client:{user_id}"


def limits(session: Session, user_id: int, currency: str) -> tuple[int | None, int | None]:
    """``(daily, monthly)`` caps of ``user_id`` in ``currency`` (micro-units; None: no cap)."""
    row = session.get(SpendingLimit, (user_id, currency))
    return (row.daily, row.monthly) if row is not None else (None, None)


def spent(session: Session, user_id: int, currency: str, since: datetime) -> int:
    """Micro-units ``user_id`` committed in ``currency`` from ``since`` on: holds debiting its
    wallet that no void or expiry released (a posted hold is a capture: spent), and single-phase
    charges. Exact when called under :meth:`Journal.lock` (see the module doc)."""
    account = Journal.find(session, client_code(user_id), currency)
    if account is None:
        return 0
    T, R = LedgerTransfer, aliased(LedgerTransfer)
    released = exists().where(R.pending_id == T.id, R.phase.in_(RELEASED_PHASES))
    total = session.scalar(
        select(func.coalesce(func.sum(T.amount), 0)).where(
            T.debit_account_id == account.id,
            T.kind.in_(SPENDING_KINDS),
            T.phase.in_(("single", "pending")),
            T.created_at >= since,
            ~released,
        )
    )
    return int(total or 0)


def period_starts(now: datetime) -> tuple[datetime, datetime]:
    """The UTC day and month ``now`` is in."""
    now = now.astimezone(UTC)
    day = datetime(now.year, now.month, now.day, tzinfo=UTC)
    return day, day.replace(day=1)


def month_bounds(period: str) -> tuple[datetime, datetime]:
    """``"2026-11"`` → [2026-11-01, 2026-12-01) in UTC; 422 for anything else."""
    match = PERIOD.match(period or "")
    if match is None:
        raise InvalidInput("period is a month, YYYY-MM", {"field": "period", "value": period})
    year, month = int(match[1]), int(match[2])
    if not 1970 <= year <= 9998:  # datetime cannot hold year 0, nor the month after 9999-12
        raise InvalidInput("period's year is outside 1970..9998", {"field": "period", "value": period})
    start = datetime(year, month, 1, tzinfo=UTC)
    end = datetime(year + month // 12, month % 12 + 1, 1, tzinfo=UTC)
    return start, end


def key_part(key: str) -> str:
    """An Idempotency-Key as it goes into a transfer id (ids are at most 96 characters)."""
    if len(key) <= MAX_KEY_IN_ID:
        return key
    return "#" + hashlib.sha256(key.encode()).hexdigest()


def require_key(key: str | None) -> str:
    if key is None or not key.strip():
        raise IdempotencyKeyMissing(
            "send an Idempotency-Key header: a retried deposit or withdrawal must not move money twice",
            {"header": "Idempotency-Key"},
        )
    if len(key) > 255 or not key.isascii() or not key.isprintable():
        raise InvalidInput(
            "Idempotency-Key must be 1 to 255 printable ASCII characters", {"header": "Idempotency-Key"}
        )
    return key


class LedgerService:
    def __init__(self, db: Database, journal: Journal, clock: Clock, settings: Settings) -> None:
        self.db = db
        self.journal = journal
        self.clock = clock
        self.settings = settings
        self.currencies = frozenset(settings.currencies)

    def currency(self, value: str | None) -> str:
        return parse_currency(value or self.settings.default_currency, self.currencies)

    # -- deposits and withdrawals -----------------------------------------------------------------

    def deposit(
        self, actor: Principal, username: str, amount: int, currency: str | None, key: str | None
    ) -> dict[str, Any]:
        """Outside money into ``username``'s wallet (world → client). ``replayed``: the key's
        transfer already existed, and nothing moved this time."""
        return self._move(actor, username, amount, currency, require_key(key), "deposit")

    def withdraw(
        self, actor: Principal, username: str, amount: int, currency: str | None, key: str | None
    ) -> dict[str, Any]:
        """Money out of ``username``'s wallet (client → world); 402 ``insufficient_funds`` if it
        would take more than is available (held money included)."""
        return self._move(actor, username, amount, currency, require_key(key), "withdrawal")

    def _move(
        self, actor: Principal, username: str, amount: int, currency_code: str | None, key: str, kind: str
    ) -> dict[str, Any]:
        currency = self.currency(currency_code)
        if amount <= 0:
            raise InvalidInput("amount must be positive", {"field": "amount"})
        with self.db.session() as session:
            self.journal.lock(session)
            user_id = self._user_id(session, username)
            wallet = client_code(user_id)
            prefix = "dep" if kind == "deposit" else "wd"
            transfer_id = f"{prefix}:{user_id}:{key_part(key)}"
            replayed = session.get(LedgerTransfer, transfer_id) is not None
            debit, credit = ("world", wallet) if kind == "deposit" else (wallet, "world")
            try:
                transfer = self.journal.single(
                    session, transfer_id, debit, credit, amount, currency, kind,
                    actor_user_id=actor.user_id, reason=f"{kind} by {actor.username or 'system'}",
                )  # fmt: skip
            except InsufficientFunds as exc:
                balance = self.journal.balance(session, wallet, currency)
                raise InsufficientFunds(
                    f"the wallet has {format_amount(balance.available)} {currency} available; "
                    f"cannot withdraw {format_amount(amount)}",
                    {"available": format_amount(balance.available), "amount": format_amount(amount),
                     "currency": currency},
                ) from exc  # fmt: skip
            balance = self.journal.balance(session, wallet, currency)
            return {
                "transfer_id": transfer.id, "kind": kind, "username": username,
                "amount": format_amount(amount), "currency": currency,
                "available": format_amount(balance.available), "posted": format_amount(balance.posted),
                "held": format_amount(balance.held), "seq": transfer.seq, "replayed": replayed,
            }  # fmt: skip

    @staticmethod
    def _user_id(session: Session, username: str) -> int:
        user_id = session.scalar(select(User.id).where(User.username == username))
        if user_id is None:
            raise UserNotFound(f"no user {username!r}", {"username": username})
        return int(user_id)

    # -- wallets and limits ---------------------------------------------------------------------

    def wallet(self, user_id: int, currency: str | None = None) -> dict[str, Any]:
        currency = self.currency(currency)
        with self.db.session() as session:
            return self._wallet(session, user_id, currency)

    def wallet_of(self, username: str, currency: str | None = None) -> dict[str, Any]:
        """Anyone's wallet, by username (billing oversight)."""
        currency = self.currency(currency)
        with self.db.session() as session:
            return self._wallet(session, self._user_id(session, username), currency)

    def _wallet(self, session: Session, user_id: int, currency: str) -> dict[str, Any]:
        balance = self.journal.balance(session, client_code(user_id), currency)
        daily, monthly = limits(session, user_id, currency)
        day, month = period_starts(self.clock.now())
        return {
            "currency": currency,
            "available": format_amount(balance.available),
            "held": format_amount(balance.held),
            "posted": format_amount(balance.posted),
            "limits": {"daily": _maybe(daily), "monthly": _maybe(monthly)},
            "spent": {
                "today": format_amount(spent(session, user_id, currency, day)),
                "month": format_amount(spent(session, user_id, currency, month)),
            },
        }

    def set_limits(
        self, user_id: int, currency: str | None, changes: dict[str, int | None]
    ) -> dict[str, Any]:
        """Set the daily and/or monthly cap (a key in ``changes``; None: no cap); the others stay.
        Under the journal lock, so a submit sees either the old limits or the new ones."""
        currency = self.currency(currency)
        unknown = set(changes) - {"daily", "monthly"}
        if unknown:
            raise InvalidInput("limits are daily and monthly", {"fields": sorted(unknown)})
        with self.db.session() as session:
            self.journal.lock(session)
            row = session.get(SpendingLimit, (user_id, currency))
            if row is None:
                row = SpendingLimit(user_id=user_id, currency=currency, daily=None, monthly=None)
                session.add(row)
            for name, value in changes.items():
                setattr(row, name, value)
            row.updated_at = self.clock.now()
            session.flush()
            return self._wallet(session, user_id, currency)

    # -- statements ----------------------------------------------------------------------------

    def statement(
        self, user_id: int, currency: str | None, start: datetime | None, end: datetime | None
    ) -> dict[str, Any]:
        """The wallet's posted balance over [start, end): opening + Σ signed entries = closing.
        Holds are not entries (nothing is posted until a capture); captures, charges, deposits,
        withdrawals and refunds are. ``start`` defaults to the current UTC month, ``end`` to none."""
        currency = self.currency(currency)
        now = self.clock.now()
        start = start if start is not None else period_starts(now)[1]
        if end is not None and end < start:
            raise InvalidInput("to is before from", {"field": "to"})
        with self.db.session() as session:
            account = Journal.find(session, client_code(user_id), currency)
            opening, balance, entries = 0, 0, []
            if account is not None:
                T = LedgerTransfer
                signed = case((T.credit_account_id == account.id, T.amount), else_=-T.amount)
                touches = and_(
                    or_(T.debit_account_id == account.id, T.credit_account_id == account.id),
                    T.phase.in_(POSTED_PHASES),
                )
                opening = int(
                    session.scalar(
                        select(func.coalesce(func.sum(signed), 0)).where(touches, T.created_at < start)
                    )
                    or 0
                )
                rows = select(T.id, T.seq, T.created_at, T.kind, signed, T.request_id).where(
                    touches, T.created_at >= start
                )
                if end is not None:
                    rows = rows.where(T.created_at < end)
                balance = opening
                for transfer_id, seq, at, kind, amount, request_id in session.execute(rows.order_by(T.seq)):
                    balance += int(amount)
                    entries.append(
                        {"transfer_id": transfer_id, "seq": seq, "at": at, "kind": kind,
                         "amount": format_amount(int(amount)), "request_id": request_id,
                         "balance_after": format_amount(balance)}
                    )  # fmt: skip
            closing = balance if entries else opening
            return {
                "currency": currency, "from": start, "to": end,
                "opening_balance": format_amount(opening), "closing_balance": format_amount(closing),
                "entries": entries,
            }  # fmt: skip

    # -- the journal, for admins -----------------------------------------------------------------

    def transfers(
        self, *, request_id: str | None = None, user: str | None = None, kind: str | None = None,
        limit: int = 50, offset: int = 0,
    ) -> dict[str, Any]:  # fmt: skip
        """Journal rows, newest first, filtered by request, user (any of their accounts) or kind."""
        T, D, C = LedgerTransfer, aliased(LedgerAccount), aliased(LedgerAccount)
        with self.db.session() as session:
            conditions = []
            if request_id is not None:
                conditions.append(T.request_id == request_id)
            if kind is not None:
                conditions.append(T.kind == kind)
            if user is not None:
                user_id = self._user_id_or_number(session, user)
                conditions.append(or_(D.owner_user_id == user_id, C.owner_user_id == user_id))
            base = (
                select(T, D.code, C.code)
                .join(D, D.id == T.debit_account_id)
                .join(C, C.id == T.credit_account_id)
                .where(*conditions)
            )
            total = session.scalar(select(func.count()).select_from(base.subquery())) or 0
            rows = session.execute(base.order_by(T.seq.desc()).limit(limit).offset(offset))
            items = [transfer_public(transfer, debit, credit) for transfer, debit, credit in rows]
            return {"items": items, "total": int(total), "limit": limit, "offset": offset}

    def transfer(self, transfer_id: str) -> dict[str, Any]:
        T, D, C = LedgerTransfer, aliased(LedgerAccount), aliased(LedgerAccount)
        with self.db.session() as session:
            row = session.execute(
                select(T, D.code, C.code)
                .join(D, D.id == T.debit_account_id)
                .join(C, C.id == T.credit_account_id)
                .where(T.id == transfer_id)
            ).first()
            if row is None:
                raise TransferNotFound(f"no transfer {transfer_id!r}", {"transfer_id": transfer_id})
            return transfer_public(*row)

    def _user_id_or_number(self, session: Session, user: str) -> int:
        user_id = session.scalar(select(User.id).where(User.username == user))
        if user_id is None and user.isdigit():
            user_id = session.scalar(select(User.id).where(User.id == int(user)))
        if user_id is None:
            raise UserNotFound(f"no user {user!r}", {"user": user})
        return int(user_id)

    def earnings(self, provider_id: int, currency: str | None, since: datetime) -> dict[str, Any]:
        """A provider's payouts since ``since`` less the refunds taken back from them, exact: two
        aggregate queries, so a page of it costs the same with a million transfers. The seed's
        ``GET /api/v1/provider/earnings`` answers the same total, as a JSON number."""
        currency = self.currency(currency)
        T, A = LedgerTransfer, LedgerAccount
        code = f"provider:{provider_id}"
        with self.db.session() as session:

            def total(kind: str, side: Any) -> tuple[int, int]:
                row = session.execute(
                    select(func.coalesce(func.sum(T.amount), 0), func.count())
                    .join(A, A.id == side)
                    .where(A.code == code, A.currency == currency, T.kind == kind, T.created_at >= since)
                ).one()
                return int(row[0]), int(row[1])

            paid, payouts = total("payout_provider", T.credit_account_id)
            back, refunds = total("refund", T.debit_account_id)
        return {
            "currency": currency, "since": since, "earned": format_amount(paid - back),
            "paid": format_amount(paid), "refunded": format_amount(back), "payouts": payouts,
            "refunds": refunds,
        }  # fmt: skip

    def check(self) -> LedgerReport:
        with self.db.session() as session:
            consistent_snapshot(session)
            return check_ledger(session)

    def trial_balance(self) -> list[dict[str, Any]]:
        with self.db.session() as session:
            consistent_snapshot(session)
            return trial_balance(session)

    # -- invoices ------------------------------------------------------------------------------

    def finalize(self, period: str) -> dict[str, Any]:
        """One finalized invoice per client and currency with billed activity in ``period`` (a
        month that has ended). Idempotent: a client that already has a non-void invoice for the
        period keeps it, and nothing new is issued for it."""
        start, end = month_bounds(period)
        now = self.clock.now()
        if now < end:
            raise PeriodOpen(
                f"{period} has not ended: finalize it from {end.isoformat()} on",
                {"period": period, "ends_at": end.isoformat()},
            )
        with self.db.session() as session:
            self.journal.lock(session)
            head = session.get(LedgerHead, 1)
            last_seq = head.seq if head is not None else 0
            issued = {
                (invoice.client_id, invoice.currency)
                for invoice in session.scalars(
                    select(Invoice).where(Invoice.period == period, Invoice.status != "void")
                )
            }
            numbered = int(
                session.scalar(select(func.count()).where(Invoice.number.like(f"INV-{start:%Y%m}-%"))) or 0
            )
            created = []
            for client_id, currency, account_id in self._billed_wallets(session, start, end):
                if (client_id, currency) in issued:
                    continue
                lines, subtotal = self._lines(session, account_id, start, end)
                refunds = self._refunds(session, account_id, start, end)
                numbered += 1
                invoice = Invoice(
                    id=str(uuid4()), number=f"INV-{start:%Y%m}-{numbered:06d}", client_id=client_id,
                    currency=currency, period=period, lines=lines, subtotal=subtotal, refunds=refunds,
                    total=subtotal - refunds, status="finalized", last_transfer_seq=last_seq,
                    created_at=now, finalized_at=now,
                )  # fmt: skip
                session.add(invoice)
                created.append(invoice)
            session.flush()
            invoices = session.scalars(
                select(Invoice)
                .where(Invoice.period == period, Invoice.status != "void")
                .order_by(Invoice.number)
            )
            return {
                "period": period, "created": len(created),
                "invoices": [invoice_public(invoice) for invoice in invoices],
            }  # fmt: skip

    @staticmethod
    def _billed_wallets(session: Session, start: datetime, end: datetime) -> Iterable[tuple[int, str, int]]:
        """(client id, currency, wallet account id) of every wallet charged or refunded in the period."""
        T, A = LedgerTransfer, LedgerAccount
        in_period = and_(T.created_at >= start, T.created_at < end)
        billed = or_(
            and_(T.kind.in_(BILLED_KINDS), T.debit_account_id == A.id),
            and_(T.kind == "refund", T.credit_account_id == A.id),
        )
        rows = session.execute(
            select(A.owner_user_id, A.currency, A.id)
            .where(A.code.like("client:%"), A.owner_user_id.is_not(None),
                   exists().where(billed, in_period, T.phase.in_(POSTED_PHASES)))
            .order_by(A.owner_user_id, A.currency)
        )  # fmt: skip
        return [(int(owner or 0), currency, int(account_id)) for owner, currency, account_id in rows]

    @staticmethod
    def _lines(
        session: Session, account_id: int, start: datetime, end: datetime
    ) -> tuple[list[dict[str, Any]], int]:
        """Captures and charges grouped by (offer, price version): model, count, unit price, amount."""
        T, J = LedgerTransfer, PredictionJob
        rows = session.execute(
            select(J.offer_id, J.price_id, func.coalesce(J.model_name, T.reason), T.amount, func.count(),
                   func.sum(T.amount))
            .outerjoin(J, J.id == T.request_id)
            .where(T.debit_account_id == account_id, T.kind.in_(BILLED_KINDS), T.phase.in_(POSTED_PHASES),
                   T.created_at >= start, T.created_at < end)
            .group_by(J.offer_id, J.price_id, func.coalesce(J.model_name, T.reason), T.amount)
        )  # fmt: skip
        lines: list[dict[str, Any]] = [
            {"offer_id": offer_id, "price_id": price_id, "model": model, "count": int(count),
             "unit_price": int(unit), "amount": int(amount)}
            for offer_id, price_id, model, unit, count, amount in rows
        ]  # fmt: skip
        lines.sort(key=lambda line: (str(line["model"]), str(line["offer_id"]), str(line["price_id"]),
                                     line["unit_price"]))  # fmt: skip
        return lines, sum(line["amount"] for line in lines)

    @staticmethod
    def _refunds(session: Session, account_id: int, start: datetime, end: datetime) -> int:
        T = LedgerTransfer
        total = session.scalar(
            select(func.coalesce(func.sum(T.amount), 0)).where(
                T.credit_account_id == account_id,
                T.kind == "refund",
                T.created_at >= start,
                T.created_at < end,
            )
        )
        return int(total or 0)

    def invoices(self, client_id: int | None, limit: int = 50, offset: int = 0) -> dict[str, Any]:
        """A client's invoices (``client_id``), or everyone's (None), newest period first."""
        with self.db.session() as session:
            conditions = [Invoice.client_id == client_id] if client_id is not None else []
            total = session.scalar(select(func.count()).select_from(Invoice).where(*conditions)) or 0
            rows = session.scalars(
                select(Invoice).where(*conditions).order_by(Invoice.period.desc(), Invoice.number)
                .limit(limit).offset(offset)
            )  # fmt: skip
            return {"items": [invoice_public(row) for row in rows], "total": int(total), "limit": limit,
                    "offset": offset}  # fmt: skip

    def invoice(self, invoice_id: str, client_id: int | None) -> dict[str, Any]:
        """One invoice; another client's is 404, as if it did not exist."""
        with self.db.session() as session:
            row = session.get(Invoice, invoice_id)
            if row is None or (client_id is not None and row.client_id != client_id):
                raise InvoiceNotFound(f"no invoice {invoice_id!r}", {"invoice_id": invoice_id})
            return invoice_public(row)


def _maybe(micros: int | None) -> str | None:
    return None if micros is None else format_amount(micros)


def transfer_public(transfer: LedgerTransfer, debit: str, credit: str) -> dict[str, Any]:
    return {
        "id": transfer.id, "seq": transfer.seq, "debit_account": debit, "credit_account": credit,
        "amount": format_amount(transfer.amount), "currency": transfer.currency, "kind": transfer.kind,
        "phase": transfer.phase, "pending_id": transfer.pending_id, "timeout_at": transfer.timeout_at,
        "request_id": transfer.request_id, "actor_user_id": transfer.actor_user_id, "reason": transfer.reason,
        "created_at": transfer.created_at, "prev_hash": transfer.prev_hash, "hash": transfer.hash,
    }  # fmt: skip


def invoice_public(invoice: Invoice) -> dict[str, Any]:
    return {
        "id": invoice.id, "number": invoice.number, "client_id": invoice.client_id,
        "currency": invoice.currency, "period": invoice.period, "status": invoice.status,
        "lines": [
            {**line, "unit_price": format_amount(int(line["unit_price"])),
             "amount": format_amount(int(line["amount"]))}
            for line in invoice.lines
        ],
        "subtotal": format_amount(invoice.subtotal), "refunds": format_amount(invoice.refunds),
        "total": format_amount(invoice.total), "last_transfer_seq": invoice.last_transfer_seq,
        "created_at": invoice.created_at, "finalized_at": invoice.finalized_at,
    }  # fmt: skip
