"""Posting money: accounts and transfers, inside the caller's database transaction.

Every transaction that moves money calls :meth:`Journal.lock` first. It takes the journal head's
row lock (PostgreSQL) or SQLite's write lock before anything else is read, so ledger transactions
are serialized: sequence numbers have no gaps, each row's hash chains to the one before, and two
transactions can never deadlock over accounts. Balances change only through conditional
``UPDATE`` statements whose ``WHERE`` clause is the overdraft rule, and the table's CHECK
constraints refuse the same overdraft again should a statement ever skip the rule.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import bindparam, event, insert, select, text, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.util import identity_key

from prediction_provider.clock import Clock
from prediction_provider.db.ledger_models import LedgerAccount, LedgerHead, LedgerTransfer
from prediction_provider.errors import InsufficientFunds, LedgerConflict
from prediction_provider.ledger.money import format_amount

GENESIS_HASH = "0" * 64
RESOLVING_PHASES = frozenset({"post", "void", "expire"})
# Accounts that may go negative: the outside world, from which deposits come.
UNBOUNDED_ACCOUNTS = frozenset({"world"})
FIELDS = (
    "id", "seq", "debit_account_id", "credit_account_id", "amount", "currency", "kind", "phase",
    "pending_id", "timeout_at", "request_id", "actor_user_id", "reason", "created_at",
)  # fmt: skip


# Built once: the group commit of paid predictions runs them thousands of times a second, and
# building a statement costs more than running it.
LOCK_POSTGRESQL = select(LedgerHead.id).where(LedgerHead.id == 1).with_for_update()
LOCK_SQLITE = update(LedgerHead).where(LedgerHead.id == 1).values(seq=LedgerHead.seq)
READ_HEAD = text("SELECT seq, hash FROM ledger_head WHERE id = 1")
WRITE_HEAD = text("UPDATE ledger_head SET seq = :seq, hash = :hash WHERE id = 1")
AVAILABLE = text(
    "SELECT id, credits_posted - debits_posted - debits_pending FROM ledger_accounts WHERE id IN :ids"
).bindparams(bindparam("ids", expanding=True))
# One account's net change in a batch; the WHERE refuses an overdraft of a bounded account.
NET_POSTED = text(
    "UPDATE ledger_accounts SET debits_posted = debits_posted + :debit, "
    "credits_posted = credits_posted + :credit, version = version + 1 "
    "WHERE id = :id "
    "AND (NOT flag_dmnec OR debits_pending + debits_posted + :debit <= credits_posted + :credit)"
)
INSERT_TRANSFERS = insert(LedgerTransfer)


@event.listens_for(LedgerTransfer, "before_update")
@event.listens_for(LedgerTransfer, "before_delete")
def _append_only(*_: object) -> None:
    raise LedgerConflict("ledger transfers are never changed: post a correcting transfer instead")


def owner_of(code: str) -> int | None:
    """``client:7`` → 7; accounts of nobody in particular have none."""
    kind, _, rest = code.partition(":")
    if kind in ("client", "provider", "evaluator") and rest.isdigit():
        return int(rest)
    return None


def row_hash(prev_hash: str, row: dict[str, Any]) -> str:
    canonical = orjson.dumps(
        {name: (row[name].isoformat() if isinstance(row[name], datetime) else row[name]) for name in FIELDS},
        option=orjson.OPT_SORT_KEYS,
    )
    return hashlib.sha256(prev_hash.encode() + canonical).hexdigest()


@dataclass(frozen=True, slots=True)
class Single:
    """A posted transfer to write with :meth:`Journal.singles`."""

    transfer_id: str
    debit: str
    credit: str
    amount: int
    currency: str
    kind: str
    request_id: str | None = None
    actor_user_id: int | None = None
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class Balance:
    """A credit-normal account's view: what is free to spend, what is held, what is settled."""

    posted: int
    held: int

    @property
    def available(self) -> int:
        return self.posted - self.held

    @classmethod
    def of(cls, account: LedgerAccount | None) -> Balance:
        if account is None:
            return cls(0, 0)
        return cls(account.credits_posted - account.debits_posted, account.debits_pending)


class Journal:
    def __init__(self, clock: Clock) -> None:
        self.clock = clock

    # -- the lock and the accounts ---------------------------------------------------------------

    def lock(self, session: Session) -> None:
        """Serialize this transaction with every other one that moves money (see the module doc)."""
        if session.bind is not None and session.get_bind().dialect.name == "postgresql":
            session.execute(LOCK_POSTGRESQL)
        else:
            session.execute(LOCK_SQLITE)

    def account(self, session: Session, code: str, currency: str) -> LedgerAccount:
        """The account, opened on first use (call under :meth:`lock`)."""
        account = self.find(session, code, currency)
        if account is None:
            bounded = code.partition(":")[0] not in UNBOUNDED_ACCOUNTS
            account = LedgerAccount(
                code=code, currency=currency, owner_user_id=owner_of(code),
                normal_balance="credit" if bounded else "debit", flag_dmnec=bounded, flag_cmned=False,
                debits_pending=0, debits_posted=0, credits_pending=0, credits_posted=0, version=0,
                created_at=self.clock.now(),
            )  # fmt: skip
            session.add(account)
            session.flush()
        return account

    @staticmethod
    def find(session: Session, code: str, currency: str) -> LedgerAccount | None:
        return session.scalars(
            select(LedgerAccount).where(LedgerAccount.code == code, LedgerAccount.currency == currency)
        ).first()

    def balance(self, session: Session, code: str, currency: str) -> Balance:
        return Balance.of(self.find(session, code, currency))

    # -- transfers ---------------------------------------------------------------------------------

    def single(
        self, session: Session, transfer_id: str, debit: str, credit: str, amount: int, currency: str,
        kind: str, **meta: Any,
    ) -> LedgerTransfer:  # fmt: skip
        """Posted at once: deposits, withdrawals, the legs of a split, refunds."""
        return self._write(session, transfer_id, debit, credit, amount, currency, kind, "single", None, meta)

    def account_ids(
        self, session: Session, keys: set[tuple[str, str]], known: dict[tuple[str, str], int] | None = None
    ) -> dict[tuple[str, str], int]:
        """Ids of the accounts ``(code, currency)``, opening those that do not exist (under
        :meth:`lock`); ``known`` holds ids the caller already has (accounts are never deleted)."""
        ids = {key: known[key] for key in keys if known and key in known}
        missing = keys - ids.keys()
        if missing:
            A = LedgerAccount
            found = session.connection().execute(
                select(A.code, A.currency, A.id).where(A.code.in_({code for code, _ in missing}))
            )
            ids.update(
                {(code, currency): id_ for code, currency, id_ in found if (code, currency) in missing}
            )
            for key in sorted(keys - ids.keys()):
                ids[key] = self.account(session, *key).id
        return ids

    def available_of(self, session: Session, account_ids: list[int]) -> dict[int, int]:
        """Posted credits - posted debits - pending debits, per account, in one query."""
        rows = session.connection().execute(AVAILABLE, {"ids": list(account_ids)})
        return {int(id_): int(available) for id_, available in rows}

    def singles(
        self, session: Session, transfers: list[Single], ids: dict[tuple[str, str], int] | None = None
    ) -> None:
        """Many posted transfers in one go (the paid predictions' group commit), in Core statements
        on the session's connection: one ``UPDATE`` per account with the batch's sum, one multi-row
        ``INSERT``. The caller has checked under :meth:`lock` that every bounded debit account covers
        its share; the conditional update still refuses the batch if one does not. An id already in
        the journal is refused by its primary key (L5), which fails the whole batch."""
        if not transfers:
            return
        keys = {(code, t.currency) for t in transfers for code in (t.debit, t.credit)}
        accounts = self.account_ids(session, keys, ids)
        debits: dict[int, int] = {}
        credits: dict[int, int] = {}
        for t in transfers:
            if t.amount <= 0:
                raise LedgerConflict("a transfer moves a positive amount", {"transfer_id": t.transfer_id})
            debit_id = accounts[(t.debit, t.currency)]
            credit_id = accounts[(t.credit, t.currency)]
            debits[debit_id] = debits.get(debit_id, 0) + t.amount
            credits[credit_id] = credits.get(credit_id, 0) + t.amount
        connection = session.connection()
        # One statement per account, with its net change: a payee may pass on, in the same batch,
        # money it is paid in it.
        for account_id in sorted({*debits, *credits}):
            debit, credit = debits.get(account_id, 0), credits.get(account_id, 0)
            moved = connection.execute(NET_POSTED, {"id": account_id, "debit": debit, "credit": credit})
            if moved.rowcount != 1:
                raise InsufficientFunds(
                    "an account cannot cover its share of the batch", {"account_id": account_id}
                )
        head_seq, head_hash = connection.execute(READ_HEAD).one()
        now = self.clock.now()
        rows = []
        seq, prev = int(head_seq), str(head_hash)
        for t in transfers:
            seq += 1
            row = {
                "id": t.transfer_id, "seq": seq, "debit_account_id": accounts[(t.debit, t.currency)],
                "credit_account_id": accounts[(t.credit, t.currency)], "amount": t.amount,
                "currency": t.currency, "kind": t.kind, "phase": "single", "pending_id": None,
                "timeout_at": None, "request_id": t.request_id, "actor_user_id": t.actor_user_id,
                "reason": t.reason, "created_at": now,
            }  # fmt: skip
            digest = row_hash(prev, row)
            rows.append({**row, "prev_hash": prev, "hash": digest})
            prev = digest
        connection.execute(INSERT_TRANSFERS, rows)
        connection.execute(WRITE_HEAD, {"seq": seq, "hash": prev})
        # The ORM may hold these rows from earlier in the transaction: they changed behind it.
        for account_id in {*debits, *credits}:
            cached = session.identity_map.get(identity_key(LedgerAccount, (account_id,)))
            if cached is not None:
                session.expire(cached)
        head = session.identity_map.get(identity_key(LedgerHead, (1,)))
        if head is not None:
            session.expire(head)
        if ids is not None:
            ids.update(accounts)

    def hold(
        self, session: Session, transfer_id: str, debit: str, credit: str, amount: int, currency: str,
        kind: str, timeout_at: datetime, **meta: Any,
    ) -> LedgerTransfer:  # fmt: skip
        """A pending transfer: the money leaves ``debit``'s available balance but is not yet moved."""
        meta["timeout_at"] = timeout_at.astimezone(UTC)  # hashed as stored: UTC
        return self._write(session, transfer_id, debit, credit, amount, currency, kind, "pending", None, meta)

    def post(
        self, session: Session, transfer_id: str, pending_id: str, kind: str, **meta: Any
    ) -> LedgerTransfer:
        """Settle a hold in full."""
        return self._resolve(session, transfer_id, pending_id, kind, "post", meta)

    def void(
        self, session: Session, transfer_id: str, pending_id: str, kind: str, *, expired: bool = False,
        **meta: Any,
    ) -> LedgerTransfer:  # fmt: skip
        """Release a hold: the money never moves."""
        return self._resolve(session, transfer_id, pending_id, kind, "expire" if expired else "void", meta)

    def is_open(self, session: Session, pending_id: str) -> bool:
        """A hold that exists and is not yet posted, voided or expired."""
        held = session.get(LedgerTransfer, pending_id)
        if held is None or held.phase != "pending":
            return False
        resolution = select(LedgerTransfer.id).where(LedgerTransfer.pending_id == pending_id)
        return session.scalar(resolution) is None

    def _resolve(
        self, session: Session, transfer_id: str, pending_id: str, kind: str, phase: str, meta: dict[str, Any]
    ) -> LedgerTransfer:
        held = session.get(LedgerTransfer, pending_id)
        if held is None or held.phase != "pending":
            raise LedgerConflict(f"no hold {pending_id!r}", {"pending_id": pending_id})
        existing = session.get(LedgerTransfer, transfer_id)
        if existing is None:
            resolved = session.scalars(
                select(LedgerTransfer).where(LedgerTransfer.pending_id == pending_id)
            ).first()
            if resolved is not None:
                raise LedgerConflict(
                    f"hold {pending_id!r} was already resolved ({resolved.phase})",
                    {"pending_id": pending_id, "resolved_by": resolved.id, "phase": resolved.phase},
                )
        meta.setdefault("request_id", held.request_id)
        return self._write(session, transfer_id, "", "", held.amount, held.currency, kind, phase, held, meta)

    def _write(
        self, session: Session, transfer_id: str, debit_code: str, credit_code: str, amount: int,
        currency: str, kind: str, phase: str, held: LedgerTransfer | None, meta: dict[str, Any],
    ) -> LedgerTransfer:  # fmt: skip
        if held is None:
            debit = self.account(session, debit_code, currency)
            credit = self.account(session, credit_code, currency)
            debit_id, credit_id = debit.id, credit.id
        else:
            debit_id, credit_id = held.debit_account_id, held.credit_account_id
        wanted = {
            "debit_account_id": debit_id, "credit_account_id": credit_id, "amount": amount,
            "currency": currency, "kind": kind, "phase": phase,
            "pending_id": held.id if held is not None else None,
        }  # fmt: skip
        existing = session.get(LedgerTransfer, transfer_id)
        if existing is not None:  # a retried step: the same transfer is fine, another is a bug
            differing = [name for name, value in wanted.items() if getattr(existing, name) != value]
            if differing:
                raise LedgerConflict(
                    f"transfer {transfer_id!r} exists with different {', '.join(differing)}",
                    {"transfer_id": transfer_id, "fields": differing},
                )
            return existing
        if amount <= 0:
            raise LedgerConflict("a transfer moves a positive amount", {"transfer_id": transfer_id})
        self._apply(session, debit_id, credit_id, amount, phase)
        head = session.get(LedgerHead, 1, with_for_update=False, populate_existing=True)
        assert head is not None, "the ledger head row is created by migration 0008"
        row = {
            "id": transfer_id, "seq": head.seq + 1, **wanted,
            "timeout_at": meta.get("timeout_at"), "request_id": meta.get("request_id"),
            "actor_user_id": meta.get("actor_user_id"), "reason": meta.get("reason"),
            "created_at": self.clock.now(),
        }  # fmt: skip
        transfer = LedgerTransfer(**row, prev_hash=head.hash, hash=row_hash(head.hash, row))
        session.add(transfer)
        head.seq, head.hash = transfer.seq, transfer.hash
        session.flush()
        return transfer

    def _apply(self, session: Session, debit_id: int, credit_id: int, amount: int, phase: str) -> None:
        """Move the running sums; refuse an overdraft of a bounded account."""
        A = LedgerAccount
        if phase == "single":
            debit_values = {"debits_posted": A.debits_posted + amount}
            credit_values = {"credits_posted": A.credits_posted + amount}
            debit_guard = A.debits_pending + A.debits_posted + amount <= A.credits_posted
        elif phase == "pending":
            debit_values = {"debits_pending": A.debits_pending + amount}
            credit_values = {"credits_pending": A.credits_pending + amount}
            debit_guard = A.debits_pending + A.debits_posted + amount <= A.credits_posted
        elif phase == "post":
            debit_values = {
                "debits_pending": A.debits_pending - amount,
                "debits_posted": A.debits_posted + amount,
            }
            credit_values = {
                "credits_pending": A.credits_pending - amount,
                "credits_posted": A.credits_posted + amount,
            }
            debit_guard = None  # the hold already reserved it
        else:  # void, expire
            debit_values = {"debits_pending": A.debits_pending - amount}
            credit_values = {"credits_pending": A.credits_pending - amount}
            debit_guard = None
        statement = update(A).where(A.id == debit_id)
        if debit_guard is not None:
            statement = statement.where(~A.flag_dmnec | debit_guard)
        if session.execute(statement.values(version=A.version + 1, **debit_values)).rowcount != 1:  # type: ignore[attr-defined]
            account = session.get(LedgerAccount, debit_id, populate_existing=True)
            available = Balance.of(account).available if account is not None else 0
            raise InsufficientFunds(
                f"{account.code if account else debit_id} cannot cover {format_amount(amount)}",
                {"account": account.code if account else None, "available": format_amount(available),
                 "amount": format_amount(amount)},
            )  # fmt: skip
        session.execute(update(A).where(A.id == credit_id).values(version=A.version + 1, **credit_values))
        # Only the two accounts changed behind the ORM's back: expiring everything instead made a
        # transaction of thousands of transfers quadratic.
        for account_id in (debit_id, credit_id):
            cached = session.identity_map.get(identity_key(LedgerAccount, (account_id,)))
            if cached is not None:
                session.expire(cached)
