"""Tables of realized outcomes: versioned scores of served answers, the bars they were scored
against (versioned, so a feeder's correction is a new version beside the old), and the one row
that serialises scoring passes across workers."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, Float, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from prediction_provider.db.base import Base, UTCDateTime, utcnow


class PredictionScore(Base):
    """One score of one served answer (a ``prediction_records`` row or a trading decision).

    Never edited but for ``current``: a revised bar writes version n+1 (current) and marks version
    n not current; the leaderboard reads current scored rows only, and every version stays readable.
    ``metrics`` holds one entry per target the answer can be judged on (``direction``, ``return``,
    ``quantiles``, ``decision``, ``entry_signal``, ``label``), each with ``metric_version``'s formulas.
    """

    __tablename__ = "prediction_scores"
    __table_args__ = (
        UniqueConstraint("request_id", "row", "version"),
        Index("ix_prediction_scores_board", "current", "score_set", "target_time"),
        Index("ix_prediction_scores_model", "model_name", "model_version", "target_time"),
        Index("ix_prediction_scores_job", "job_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    request_id: Mapped[str] = mapped_column(String(36))
    row: Mapped[int] = mapped_column(Integer)
    version: Mapped[int] = mapped_column(Integer)
    current: Mapped[bool] = mapped_column(Boolean)
    source: Mapped[str] = mapped_column(String(16))  # forecast | market | decision | signal | outcome
    status: Mapped[str] = mapped_column(String(8))  # scored | void
    model_name: Mapped[str] = mapped_column(String(256))
    model_version: Mapped[str | None] = mapped_column(String(64), default=None)
    provider_id: Mapped[int | None] = mapped_column(Integer, default=None)
    provider: Mapped[str | None] = mapped_column(String(64), default=None)
    client_id: Mapped[int | None] = mapped_column(Integer, default=None)
    evaluator_id: Mapped[int | None] = mapped_column(Integer, default=None)
    job_id: Mapped[str | None] = mapped_column(String(36), default=None)
    offer_id: Mapped[str | None] = mapped_column(String(36), default=None)
    price: Mapped[int | None] = mapped_column(BigInteger, default=None)  # micro-units paid
    currency: Mapped[str | None] = mapped_column(String(3), default=None)
    symbol: Mapped[str | None] = mapped_column(String(20), default=None)
    interval: Mapped[str | None] = mapped_column(String(8), default=None)
    horizon: Mapped[int | None] = mapped_column(Integer, default=None)
    as_of: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)  # close of the last bar read
    target_time: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    resolved_time: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)  # close used
    realized_return: Mapped[float | None] = mapped_column(Float, default=None)
    realized_log_return: Mapped[float | None] = mapped_column(Float, default=None)
    realized_label: Mapped[str | None] = mapped_column(String(64), default=None)
    bars: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    context: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    metric_version: Mapped[str] = mapped_column(String(8))
    eligible: Mapped[bool] = mapped_column(Boolean)
    ineligible_reason: Mapped[str | None] = mapped_column(String(64), default=None)
    score_set: Mapped[str] = mapped_column(String(8), default="organic")  # organic | common
    outcome_key: Mapped[str | None] = mapped_column(String(96), default=None)
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime)
    scored_at: Mapped[datetime] = mapped_column(UTCDateTime)


class OutcomeBar(Base):
    """A bar as the scorer read it: (symbol, interval, close time) at a version. A feeder's later
    correction is version n+1; the scores that read version n are rescored, and both stay."""

    __tablename__ = "outcome_bars"

    symbol: Mapped[str] = mapped_column(String(20), primary_key=True)
    interval: Mapped[str] = mapped_column(String(8), primary_key=True)
    close_time: Mapped[datetime] = mapped_column(UTCDateTime, primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    close: Mapped[str] = mapped_column(String(40))  # the close as its exact decimal text
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ScoringHead(Base):
    """Row id=1, locked first by every scoring pass: passes in several workers take turns, so each
    record is scored exactly once, whichever worker (or Celery beat task) gets there first."""

    __tablename__ = "scoring_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    passes: Mapped[int] = mapped_column(BigInteger, default=0)
    scored_through: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
