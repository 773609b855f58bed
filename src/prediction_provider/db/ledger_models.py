"""Tables where money lives: ledger accounts, the append-only transfer journal, its head, and the
idempotency keys every state-changing route shares. Amounts are BIGINT micro-units (10⁻⁶ of the
currency); nothing here is ever a float."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from prediction_provider.db.base import Base, UTCDateTime, utcnow


class LedgerAccount(Base):
    """One account per (code, currency). The four running sums are a cache of the journal that the
    ledger check recomputes; the CHECKs make the database itself refuse an overdraft."""

    __tablename__ = "ledger_accounts"
    __table_args__ = (
        UniqueConstraint("code", "currency", name="code_currency"),
        CheckConstraint(
            "debits_pending >= 0 AND debits_posted >= 0 AND credits_pending >= 0 AND credits_posted >= 0",
            name="sums_non_negative",
        ),
        CheckConstraint(
            "NOT flag_dmnec OR debits_pending + debits_posted <= credits_posted", name="debits_within_credits"
        ),
        CheckConstraint(
            "NOT flag_cmned OR credits_pending + credits_posted <= debits_posted",
            name="credits_within_debits",
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    code: Mapped[str] = mapped_column(String(128))
    currency: Mapped[str] = mapped_column(String(3))
    owner_user_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), default=None, index=True
    )
    normal_balance: Mapped[str] = mapped_column(String(6))  # debit | credit
    flag_dmnec: Mapped[bool] = mapped_column(Boolean, default=False)  # debits must not exceed credits
    flag_cmned: Mapped[bool] = mapped_column(Boolean, default=False)  # credits must not exceed debits
    debits_pending: Mapped[int] = mapped_column(BigInteger, default=0)
    debits_posted: Mapped[int] = mapped_column(BigInteger, default=0)
    credits_pending: Mapped[int] = mapped_column(BigInteger, default=0)
    credits_posted: Mapped[int] = mapped_column(BigInteger, default=0)
    version: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class LedgerTransfer(Base):
    """One journal row. Never updated or deleted (an ORM guard, and a trigger on PostgreSQL); a
    correction is a new transfer. ``seq`` is gapless and ``hash`` chains every row to the one before.
    ``id`` is derived from what the transfer does (``cap:{request}``), so a retried step cannot post
    the same money twice."""

    __tablename__ = "ledger_transfers"
    __table_args__ = (
        CheckConstraint("amount > 0", name="amount_positive"),
        CheckConstraint("debit_account_id <> credit_account_id", name="distinct_accounts"),
        Index("ix_ledger_transfers_request", "request_id"),
        Index("ix_ledger_transfers_debit_seq", "debit_account_id", "seq"),
        Index("ix_ledger_transfers_credit_seq", "credit_account_id", "seq"),
        Index("ix_ledger_transfers_debit_created", "debit_account_id", "created_at"),  # spending limits
    )

    id: Mapped[str] = mapped_column(String(96), primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, unique=True)
    debit_account_id: Mapped[int] = mapped_column(ForeignKey("ledger_accounts.id"))
    credit_account_id: Mapped[int] = mapped_column(ForeignKey("ledger_accounts.id"))
    amount: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    kind: Mapped[str] = mapped_column(String(24))
    phase: Mapped[str] = mapped_column(String(8))  # single | pending | post | void | expire
    # The pending transfer a post, void or expiry resolves: at most one resolution each.
    pending_id: Mapped[str | None] = mapped_column(String(96), unique=True, default=None)
    timeout_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    request_id: Mapped[str | None] = mapped_column(String(64), default=None)
    actor_user_id: Mapped[int | None] = mapped_column(Integer, default=None)
    reason: Mapped[str | None] = mapped_column(Text, default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class LedgerHead(Base):
    """The journal's last sequence number and hash, one row: every ledger transaction updates it
    last, which numbers transfers without gaps and orders the hash chain."""

    __tablename__ = "ledger_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, default=0)
    hash: Mapped[str] = mapped_column(String(64))


class IdempotencyKey(Base):
    """The first answer to a keyed request, replayed to every retry for 24 h."""

    __tablename__ = "idempotency_keys"
    __table_args__ = (Index("ix_idempotency_keys_expires", "expires_at"),)

    user_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    method: Mapped[str] = mapped_column(String(8))
    path: Mapped[str] = mapped_column(String(512))
    body_sha256: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(12))  # in_progress | done
    response_status: Mapped[int | None] = mapped_column(Integer, default=None)
    response_body: Mapped[str | None] = mapped_column(Text, default=None)
    response_headers: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
