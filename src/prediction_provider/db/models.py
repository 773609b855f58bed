"""Tables: users, the audit log, prediction jobs, cached bars, trading accounts, positions, decisions and
model serving state, and the record of every answer served."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    Float,
    ForeignKey,
    Index,
    Integer,
    Numeric,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from prediction_provider.db.base import Base, UTCDateTime, utcnow


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    email: Mapped[str] = mapped_column(String(254), unique=True)
    full_name: Mapped[str | None] = mapped_column(String(200), default=None)
    role: Mapped[str] = mapped_column(String(16), index=True)
    is_active: Mapped[bool] = mapped_column(Boolean, default=False)
    password_hash: Mapped[str] = mapped_column(Text)
    # Only a SHA-256 digest of the key is kept; the key itself is shown once.
    api_key_digest: Mapped[str | None] = mapped_column(String(64), unique=True, default=None)
    api_key_created_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    # The last deactivation: keys and JWTs issued until then never work again.
    credentials_revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class DashboardSession(Base):
    """A signed-in browser. Only the SHA-256 of the cookie's value is stored, as with API keys."""

    __tablename__ = "dashboard_sessions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    digest: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # The earlier of the idle and the absolute expiry; moved on (never past the absolute one) on use.
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    address: Mapped[str | None] = mapped_column(String(64), default=None)
    user_agent: Mapped[str | None] = mapped_column(String(256), default=None)
    via: Mapped[str] = mapped_column(String(16))  # "password" or "api_key": how it was signed in


class AuditRecord(Base):
    """One row per request. The application only ever inserts here (see README for the grant)."""

    __tablename__ = "audit_log"
    __table_args__ = (Index("ix_audit_log_at", "at"), Index("ix_audit_log_username_at", "username", "at"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    request_id: Mapped[str] = mapped_column(String(64))
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), default=None)
    username: Mapped[str | None] = mapped_column(String(64), default=None)
    role: Mapped[str | None] = mapped_column(String(16), default=None)
    method: Mapped[str] = mapped_column(String(8))
    path: Mapped[str] = mapped_column(String(512))
    status: Mapped[int] = mapped_column(Integer)
    latency_ms: Mapped[float] = mapped_column(Float)
    client_address: Mapped[str | None] = mapped_column(String(64), default=None)


class PredictionJob(Base):
    """One asynchronous prediction or batch-scoring job. The row, not the broker, is the truth:
    status moves pending -> processing -> completed | failed | cancelled, and only the holder of
    the current ``claim_token`` may finish it, so a redelivered task never completes it twice."""

    __tablename__ = "prediction_jobs"
    __table_args__ = (
        UniqueConstraint("owner_id", "idempotency_key"),
        Index("ix_prediction_jobs_owner_created", "owner_id", "created_at"),
        Index("ix_prediction_jobs_status_created", "status", "created_at"),
        Index("ix_prediction_jobs_kind_status_created", "kind", "status", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    owner_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), default=None)
    owner_username: Mapped[str | None] = mapped_column(String(64), default=None)
    # "rows" (inline input), "dataset" (a file, split into "chunk" children) or "chunk"
    kind: Mapped[str] = mapped_column(String(16))
    parent_id: Mapped[str | None] = mapped_column(
        ForeignKey("prediction_jobs.id", ondelete="CASCADE"), default=None, index=True
    )
    chunk_index: Mapped[int | None] = mapped_column(Integer, default=None)
    chunks_total: Mapped[int | None] = mapped_column(Integer, default=None)
    model_reference: Mapped[str] = mapped_column(String(512))
    model_name: Mapped[str | None] = mapped_column(String(256), default=None)
    model_version: Mapped[str | None] = mapped_column(String(64), default=None)
    input: Mapped[Any | None] = mapped_column(JSON, default=None)
    input_path: Mapped[str | None] = mapped_column(String(1024), default=None)
    input_hash: Mapped[str] = mapped_column(String(64))
    parameters: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    status: Mapped[str] = mapped_column(String(16))
    result: Mapped[Any | None] = mapped_column(JSON, default=None)
    result_files: Mapped[list[str]] = mapped_column(JSON, default=list)
    error: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    idempotency_key: Mapped[str | None] = mapped_column(String(128), default=None)
    # Anonymous submits only: the SHA-256 digest of the job's read token (shown once).
    read_token_digest: Mapped[str | None] = mapped_column(String(64), default=None)
    claim_token: Mapped[str | None] = mapped_column(String(64), default=None)
    worker: Mapped[str | None] = mapped_column(String(128), default=None)
    data_as_of: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    dispatched_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    # A marketplace request is a job with money attached (kind "market"); NULL on other jobs.
    offer_id: Mapped[str | None] = mapped_column(String(36), default=None, index=True)
    price_id: Mapped[str | None] = mapped_column(String(36), default=None)
    quote_id: Mapped[str | None] = mapped_column(String(36), default=None)
    price: Mapped[int | None] = mapped_column(BigInteger, default=None)  # micro-units
    max_cost: Mapped[int | None] = mapped_column(BigInteger, default=None)
    currency: Mapped[str | None] = mapped_column(String(3), default=None)
    execution: Mapped[str | None] = mapped_column(String(12), default=None)  # platform | evaluators
    lease_counter: Mapped[int] = mapped_column(Integer, default=0)
    target_time: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    deadline_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    hold_transfer_id: Mapped[str | None] = mapped_column(String(96), default=None)
    executed_by: Mapped[int | None] = mapped_column(Integer, default=None)  # the evaluator's user id
    webhook_url: Mapped[str | None] = mapped_column(String(2048), default=None)
    result_sha256: Mapped[str | None] = mapped_column(String(64), default=None)


class PredictionJobEvent(Base):
    """Append-only history of a job's transitions: who moved it where, when."""

    __tablename__ = "prediction_job_events"
    __table_args__ = (Index("ix_prediction_job_events_job_at", "job_id", "at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("prediction_jobs.id", ondelete="CASCADE"))
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    status: Mapped[str] = mapped_column(String(16))
    worker: Mapped[str | None] = mapped_column(String(128), default=None)
    detail: Mapped[str | None] = mapped_column(Text, default=None)


class TimeSeriesBar(Base):
    """Cached OHLCV bars, one row per symbol, interval and bar open time (UTC)."""

    __tablename__ = "time_series_data"
    __table_args__ = (UniqueConstraint("symbol", "interval", "time"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    symbol: Mapped[str] = mapped_column(String(20))
    interval: Mapped[str] = mapped_column(String(8))
    time: Mapped[datetime] = mapped_column(UTCDateTime)
    open: Mapped[Decimal] = mapped_column(Numeric(28, 10))
    high: Mapped[Decimal] = mapped_column(Numeric(28, 10))
    low: Mapped[Decimal] = mapped_column(Numeric(28, 10))
    close: Mapped[Decimal] = mapped_column(Numeric(28, 10))
    volume: Mapped[Decimal] = mapped_column(Numeric(28, 8))
    source: Mapped[str] = mapped_column(String(32))
    ingested_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class TradingAccount(Base):
    """A trading account the risk checks read: equity and the day's P&L, exact decimals."""

    __tablename__ = "trading_accounts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    owner_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), default=None)
    currency: Mapped[str] = mapped_column(String(3), default="USD")
    equity: Mapped[Decimal] = mapped_column(Numeric(24, 8))
    day_start_equity: Mapped[Decimal] = mapped_column(Numeric(24, 8))
    realized_pnl_today: Mapped[Decimal] = mapped_column(Numeric(24, 8), default=Decimal(0))
    pnl_date: Mapped[date] = mapped_column(Date)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class Position(Base):
    """An open position of a trading account; quantity is signed (negative = short)."""

    __tablename__ = "positions"
    __table_args__ = (UniqueConstraint("account_id", "symbol"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("trading_accounts.id", ondelete="CASCADE"))
    symbol: Mapped[str] = mapped_column(String(20))
    sector: Mapped[str | None] = mapped_column(String(64), default=None)
    quantity: Mapped[Decimal] = mapped_column(Numeric(24, 8))
    average_price: Mapped[Decimal] = mapped_column(Numeric(28, 10))
    market_price: Mapped[Decimal] = mapped_column(Numeric(28, 10))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class TradingDecision(Base):
    """One answered trading decision (approved or refused by the risk checks), with what it was made
    from: the model, a SHA-256 of the features it saw and the last bar they read. Append-only."""

    __tablename__ = "trading_decisions"
    __table_args__ = (
        Index("ix_trading_decisions_user_created", "user_id", "created_at"),
        Index("ix_trading_decisions_symbol_created", "symbol", "created_at"),
        Index("ix_trading_decisions_created", "created_at"),
    )

    decision_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), default=None)
    username: Mapped[str | None] = mapped_column(String(64), default=None)
    symbol: Mapped[str] = mapped_column(String(20))
    action: Mapped[str] = mapped_column(String(4))
    confidence: Mapped[float] = mapped_column(Float)
    recommended_quantity: Mapped[Decimal] = mapped_column(Numeric(24, 8))
    account_name: Mapped[str | None] = mapped_column(String(64), default=None)
    approved: Mapped[bool] = mapped_column(Boolean)
    risk_warnings: Mapped[list[str]] = mapped_column(JSON)
    risk_checks: Mapped[dict[str, Any]] = mapped_column(JSON)
    regime_probabilities: Mapped[dict[str, float]] = mapped_column(JSON)
    strategy_weights: Mapped[dict[str, float]] = mapped_column(JSON)
    strategy: Mapped[str] = mapped_column(String(32))
    model_name: Mapped[str] = mapped_column(String(256))
    model_version: Mapped[str] = mapped_column(String(64))
    feature_hash: Mapped[str] = mapped_column(String(64))
    data_as_of: Mapped[datetime] = mapped_column(UTCDateTime)
    latency_ms: Mapped[float] = mapped_column(Float)


class ModelServingState(Base):
    """The last repository action on a model name (all its versions): ``unloaded`` or ``loaded``.

    Every worker process reads this table, so an unload answered by one worker holds in all of
    them and across restarts; a name without a row was never unloaded."""

    __tablename__ = "model_serving_state"

    model_name: Mapped[str] = mapped_column(String(256), primary_key=True)
    state: Mapped[str] = mapped_column(String(16))
    changed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    changed_by: Mapped[str | None] = mapped_column(String(64), default=None)


class PredictionRecord(Base):
    """One answer served, one row per answered row or forecast step: who asked, which model and
    version answered, what it saw (feature hash, data as-of) and said, and, for forecasts, the market
    context it is later scored against (symbol, interval, as-of, horizon, target time). Append-only;
    written off the request path by ``forecasts.records.PredictionRecorder``."""

    __tablename__ = "prediction_records"
    __table_args__ = (
        Index("ix_prediction_records_market", "symbol", "interval", "target_time"),
        Index("ix_prediction_records_model", "model_name", "model_version", "created_at"),
        Index("ix_prediction_records_user_created", "user_id", "created_at"),
        Index("ix_prediction_records_job", "job_id"),
        Index("ix_prediction_records_created", "created_at"),
        Index("ix_prediction_records_experiment", "experiment", "variant", "created_at"),
    )

    request_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    row: Mapped[int] = mapped_column(Integer, primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    channel: Mapped[str] = mapped_column(String(16))  # predict | batch | job
    job_id: Mapped[str | None] = mapped_column(String(36), default=None)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), default=None)
    username: Mapped[str | None] = mapped_column(String(64), default=None)
    model_name: Mapped[str] = mapped_column(String(256))
    model_version: Mapped[str | None] = mapped_column(String(64), default=None)
    role: Mapped[str] = mapped_column(String(8), default="primary")  # primary | shadow
    served_by: Mapped[str] = mapped_column(String(64), default="primary")
    symbol: Mapped[str | None] = mapped_column(String(20), default=None)
    interval: Mapped[str | None] = mapped_column(String(8), default=None)
    as_of: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    data_as_of: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    horizon: Mapped[int | None] = mapped_column(Integer, default=None)
    target_time: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    feature_hash: Mapped[str] = mapped_column(String(64))
    label: Mapped[str | None] = mapped_column(String(64), default=None)
    probabilities: Mapped[dict[str, float] | None] = mapped_column(JSON, default=None)
    value: Mapped[float | None] = mapped_column(Float, default=None)
    answer: Mapped[dict[str, Any]] = mapped_column(JSON)
    latency_ms: Mapped[float] = mapped_column(Float)
    status: Mapped[str] = mapped_column(String(16), default="ok")
    # Experiment traffic (migration 0010): which experiment and variant answered, what target and
    # whether the variant was forced; the unit is kept only as an HMAC (raw keys are never stored).
    experiment: Mapped[str | None] = mapped_column(String(128), default=None)
    variant: Mapped[str | None] = mapped_column(String(64), default=None)
    target: Mapped[str | None] = mapped_column(String(300), default=None)
    forced: Mapped[bool] = mapped_column(Boolean, default=False)
    unit_hash: Mapped[str | None] = mapped_column(String(64), default=None)
    outcome_key: Mapped[str | None] = mapped_column(String(128), default=None)
    fallback_reason: Mapped[str | None] = mapped_column(String(16), default=None)
    features: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)


# The ledger's and the marketplace's tables live beside these; importing them registers them.
from prediction_provider.db import ledger_models as ledger_models  # noqa: E402
from prediction_provider.db import market_models as market_models  # noqa: E402
from prediction_provider.db import modelops_models as modelops_models  # noqa: E402
from prediction_provider.db import outcome_models as outcome_models  # noqa: E402
