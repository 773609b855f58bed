"""Tables of model operations: experiments and their transitions, per-model resilience settings,
operator breaker controls, test-only chaos rules, ensembles, drift references and the mergeable
drift counters, the stamp every worker polls to see a change within a second, and leader leases.

Everything a worker acts on lives here rather than in process memory, so every worker serves the
same experiment split, the same forced breaker state and the same chaos rule."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Float, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from prediction_provider.db.base import Base, UTCDateTime, utcnow


class OpsStamp(Base):
    """One row (id=1): bumped in the transaction of every change to the tables below. Workers
    compare it at least once a second and reload what they cache when it moved."""

    __tablename__ = "model_ops_stamp"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version: Mapped[int] = mapped_column(BigInteger, default=0)


class Experiment(Base):
    """A split of one model's default traffic between variants (A/B), with an optional shadow and
    an optional canary rollout. ``config`` is the validated request; ``resolved`` pins each
    variant's target to a version when the experiment starts; ``weights`` are basis points."""

    __tablename__ = "experiments"
    __table_args__ = (Index("ix_experiments_model_state", "model", "state"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    model: Mapped[str] = mapped_column(String(256))
    state: Mapped[str] = mapped_column(
        String(24)
    )  # draft|running|paused|awaiting_promotion|promoted|rolled_back|stopped
    config: Mapped[dict[str, Any]] = mapped_column(JSON)
    resolved: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    weights: Mapped[dict[str, int]] = mapped_column(JSON, default=dict)
    step: Mapped[int | None] = mapped_column(Integer, default=None)  # rollout step index
    step_started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    evaluations: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # in the current step
    created_by: Mapped[str | None] = mapped_column(String(64), default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)


class ExperimentTransition(Base):
    """Every state change of an experiment: who, from, to, why. Never edited."""

    __tablename__ = "experiment_transitions"
    __table_args__ = (Index("ix_experiment_transitions_experiment", "experiment_id", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    experiment_id: Mapped[str] = mapped_column(ForeignKey("experiments.id", ondelete="CASCADE"))
    from_state: Mapped[str | None] = mapped_column(String(24), default=None)
    to_state: Mapped[str] = mapped_column(String(24))
    reason: Mapped[str] = mapped_column(String(256))
    actor: Mapped[str | None] = mapped_column(String(64), default=None)  # None: the rollout controller
    detail: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ModelResilience(Base):
    """A model's timeout, bulkhead, breaker and fallback chain (``PUT /models/{name}/resilience``);
    models without a row use the settings' defaults."""

    __tablename__ = "model_resilience"

    model: Mapped[str] = mapped_column(String(256), primary_key=True)
    config: Mapped[dict[str, Any]] = mapped_column(JSON)
    updated_by: Mapped[str | None] = mapped_column(String(64), default=None)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class BreakerOverride(Base):
    """An operator's control of one version's breaker in every worker: ``mode`` force_open,
    force_closed or none; ``reset_seq`` grows by one per reset, and a worker that sees a larger
    value than it last applied resets its breaker."""

    __tablename__ = "breaker_overrides"

    model: Mapped[str] = mapped_column(String(256), primary_key=True)
    version: Mapped[str] = mapped_column(String(64), primary_key=True)
    mode: Mapped[str] = mapped_column(String(16), default="none")
    reset_seq: Mapped[int] = mapped_column(Integer, default=0)
    updated_by: Mapped[str | None] = mapped_column(String(64), default=None)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ChaosRule(Base):
    """Test-only fault injection (``PP_CHAOS=1``): calls to this version fail with ``fail_rate``
    and are delayed by ``delay_ms`` until ``expires_at``; ``hits`` counts calls that reached it."""

    __tablename__ = "chaos_rules"

    model: Mapped[str] = mapped_column(String(256), primary_key=True)
    version: Mapped[str] = mapped_column(String(64), primary_key=True)
    fail_rate: Mapped[float] = mapped_column(Float, default=0.0)
    delay_ms: Mapped[int] = mapped_column(Integer, default=0)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    hits: Mapped[int] = mapped_column(BigInteger, default=0)
    created_by: Mapped[str | None] = mapped_column(String(64), default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Ensemble(Base):
    """A named combination of registered model versions, served by name like a model."""

    __tablename__ = "ensembles"

    name: Mapped[str] = mapped_column(String(256), primary_key=True)
    config: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_by: Mapped[str | None] = mapped_column(String(64), default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class DriftReference(Base):
    """An uploaded reference profile of one model version (training logs its own as the MLflow
    artifact ``drift_reference.json``; an upload here takes precedence over it)."""

    __tablename__ = "drift_references"

    model: Mapped[str] = mapped_column(String(256), primary_key=True)
    version: Mapped[str] = mapped_column(String(64), primary_key=True)
    profile: Mapped[dict[str, Any]] = mapped_column(JSON)
    source: Mapped[str] = mapped_column(String(32))  # upload
    created_by: Mapped[str | None] = mapped_column(String(64), default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    reset_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)


class DriftCount(Base):
    """Live rows binned on a version's reference edges: one counter per (slot, series, bin).

    Every worker adds its deltas (``count = count + excluded.count``), so the sum over workers is
    exact whatever their number, and readers sum slots into windows. ``series`` is a feature name,
    ``prediction:label`` or ``prediction:proba:<class>``; the bin ``-1`` counts missing values."""

    __tablename__ = "drift_counts"

    model: Mapped[str] = mapped_column(String(256), primary_key=True)
    version: Mapped[str] = mapped_column(String(64), primary_key=True)
    slot_start: Mapped[datetime] = mapped_column(UTCDateTime, primary_key=True)
    series: Mapped[str] = mapped_column(String(200), primary_key=True)
    bin: Mapped[int] = mapped_column(Integer, primary_key=True)
    count: Mapped[int] = mapped_column(BigInteger, default=0)


class DriftReset(Base):
    """``POST /models/{name}/drift/reset``: slots before ``reset_at`` are ignored by readers."""

    __tablename__ = "drift_resets"

    model: Mapped[str] = mapped_column(String(256), primary_key=True)
    version: Mapped[str] = mapped_column(String(64), primary_key=True)
    reset_at: Mapped[datetime] = mapped_column(UTCDateTime)


class ShadowRecord(Base):
    """A shadow's answer to the same validated row a primary answered: keyed like the primary's
    ``prediction_records`` row, so a pair is a join on ``(request_id, row)``. Kept apart from
    ``prediction_records`` because a shadow is never served, billed or scored on its own."""

    __tablename__ = "shadow_records"
    __table_args__ = (Index("ix_shadow_records_experiment", "experiment", "created_at"),)

    request_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    row: Mapped[int] = mapped_column(Integer, primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    experiment: Mapped[str] = mapped_column(String(128))
    variant: Mapped[str | None] = mapped_column(String(64), default=None)  # the primary's variant
    shadow_of: Mapped[str] = mapped_column(String(16), primary_key=True)  # shadow | control
    target: Mapped[str] = mapped_column(String(300))
    model_name: Mapped[str] = mapped_column(String(256))
    model_version: Mapped[str | None] = mapped_column(String(64), default=None)
    label: Mapped[str | None] = mapped_column(String(64), default=None)
    probabilities: Mapped[dict[str, float] | None] = mapped_column(JSON, default=None)
    value: Mapped[float | None] = mapped_column(Float, default=None)
    status: Mapped[str] = mapped_column(String(16))  # ok | error | timeout | dropped
    latency_ms: Mapped[float | None] = mapped_column(Float, default=None)
    unit_hash: Mapped[str | None] = mapped_column(String(64), default=None)


class LeaderLease(Base):
    """One named job (the rollout controller) runs in one process at a time: the holder renews
    ``expires_at``; another process takes the row only once it has expired."""

    __tablename__ = "leader_leases"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str] = mapped_column(String(64))
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
