"""Tables of the marketplace: model ownership, offers and their price history, quotes, evaluator
claims, spending limits, webhooks (endpoints, the transactional outbox, the delivery log) and
invoices. A marketplace request itself is a ``prediction_jobs`` row with money columns."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from prediction_provider.db.base import Base, UTCDateTime, utcnow


class ModelOwner(Base):
    """Which provider owns a registered model name: only its owner may offer it."""

    __tablename__ = "model_owners"

    model_name: Mapped[str] = mapped_column(String(256), primary_key=True)
    provider_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    assigned_by: Mapped[str | None] = mapped_column(String(64), default=None)
    assigned_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Offer(Base):
    __tablename__ = "offers"
    __table_args__ = (Index("ix_offers_provider", "provider_id"), Index("ix_offers_model", "model_name"))

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    provider_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    model_name: Mapped[str] = mapped_column(String(256))
    model_version: Mapped[str | None] = mapped_column(String(64), default=None)  # None: the champion
    target: Mapped[str] = mapped_column(String(16))  # direction | return | quantiles | entry_signal
    symbols: Mapped[list[str]] = mapped_column(JSON)
    interval: Mapped[str | None] = mapped_column(String(8), default=None)
    horizons: Mapped[list[int]] = mapped_column(JSON)
    execution: Mapped[str] = mapped_column(String(12))  # platform | evaluators
    evaluator_fee: Mapped[int] = mapped_column(BigInteger, default=0)
    currency: Mapped[str] = mapped_column(String(3))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    benchmark_opt_in: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class OfferPrice(Base):
    """A price version. Only ``effective_to`` is ever set, once; a change is a new row."""

    __tablename__ = "offer_prices"
    __table_args__ = (
        Index(
            "ux_offer_prices_open",
            "offer_id",
            unique=True,
            sqlite_where=text("effective_to IS NULL"),
            postgresql_where=text("effective_to IS NULL"),
        ),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    offer_id: Mapped[str] = mapped_column(ForeignKey("offers.id", ondelete="CASCADE"), index=True)
    amount: Mapped[int] = mapped_column(BigInteger)
    fee_bps: Mapped[int] = mapped_column(Integer)
    effective_from: Mapped[datetime] = mapped_column(UTCDateTime)
    effective_to: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)


class Quote(Base):
    __tablename__ = "quotes"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    client_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    offer_id: Mapped[str] = mapped_column(ForeignKey("offers.id", ondelete="CASCADE"))
    price_id: Mapped[str] = mapped_column(ForeignKey("offer_prices.id"))
    amount: Mapped[int] = mapped_column(BigInteger)
    breakdown: Mapped[dict[str, int]] = mapped_column(JSON)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    currency: Mapped[str] = mapped_column(String(3))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    used_by_request_id: Mapped[str | None] = mapped_column(String(36), unique=True, default=None)


class EvaluatorClaim(Base):
    """An evaluator's lease on a request. ``lease_token`` is the request's lease counter when the
    claim was taken (a fencing token): only the newest holder's result is accepted."""

    __tablename__ = "evaluator_claims"
    __table_args__ = (
        Index(
            "ux_evaluator_claims_active",
            "request_id",
            unique=True,
            sqlite_where=text("state = 'active'"),
            postgresql_where=text("state = 'active'"),
        ),
        Index("ix_evaluator_claims_evaluator", "evaluator_id", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    request_id: Mapped[str] = mapped_column(ForeignKey("prediction_jobs.id", ondelete="CASCADE"), index=True)
    evaluator_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    lease_token: Mapped[int] = mapped_column(Integer)
    lease_expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    state: Mapped[str] = mapped_column(String(12))  # active | submitted | released | expired
    reason: Mapped[str | None] = mapped_column(String(32), default=None)
    details: Mapped[str | None] = mapped_column(Text, default=None)
    output: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    output_sha256: Mapped[str | None] = mapped_column(String(64), default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)


class SpendingLimit(Base):
    """A client's daily and monthly caps in one currency (micro-units; NULL: no cap)."""

    __tablename__ = "spending_limits"

    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    currency: Mapped[str] = mapped_column(String(3), primary_key=True)
    daily: Mapped[int | None] = mapped_column(BigInteger, default=None)
    monthly: Mapped[int | None] = mapped_column(BigInteger, default=None)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class WebhookEndpoint(Base):
    __tablename__ = "webhook_endpoints"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    url: Mapped[str] = mapped_column(String(2048))
    secret: Mapped[str] = mapped_column(String(128))  # whsec_<base64>
    events: Mapped[list[str]] = mapped_column(JSON)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class WebhookMessage(Base):
    """The transactional outbox: written in the same transaction as the change it announces, then
    delivered at least once. ``id`` is the ``webhook-id`` header, the same on every retry."""

    __tablename__ = "webhook_outbox"
    __table_args__ = (Index("ix_webhook_outbox_due", "delivered_at", "dead", "next_attempt_at"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), default=None)
    endpoint_id: Mapped[str | None] = mapped_column(
        ForeignKey("webhook_endpoints.id", ondelete="SET NULL"), default=None
    )
    url: Mapped[str] = mapped_column(String(2048))
    event_type: Mapped[str] = mapped_column(String(64))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    dead: Mapped[bool] = mapped_column(Boolean, default=False)
    last_status: Mapped[int | None] = mapped_column(Integer, default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class WebhookDelivery(Base):
    """One delivery attempt: the delivery log."""

    __tablename__ = "webhook_deliveries"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    message_id: Mapped[str] = mapped_column(ForeignKey("webhook_outbox.id", ondelete="CASCADE"), index=True)
    attempt: Mapped[int] = mapped_column(Integer)
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    status_code: Mapped[int | None] = mapped_column(Integer, default=None)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    duration_ms: Mapped[float | None] = mapped_column(Float, default=None)


class Invoice(Base):
    """A client's captures and refunds of one month. Finalized invoices are never changed; a
    correction voids one and issues another."""

    __tablename__ = "invoices"
    __table_args__ = (Index("ix_invoices_client_period", "client_id", "currency", "period"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    number: Mapped[str] = mapped_column(String(32), unique=True)
    client_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    currency: Mapped[str] = mapped_column(String(3))
    period: Mapped[str] = mapped_column(String(7))  # YYYY-MM
    lines: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    subtotal: Mapped[int] = mapped_column(BigInteger)
    refunds: Mapped[int] = mapped_column(BigInteger)
    total: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(12))  # draft | finalized | void
    last_transfer_seq: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    finalized_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
