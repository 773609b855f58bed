"""Model operations: experiments and their transitions, resilience settings, breaker controls,
chaos rules, ensembles, drift references and counters, the ops stamp, leader leases; experiment
columns on ``prediction_records``.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from prediction_provider.db.base import UTCDateTime

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def record_columns() -> tuple[sa.Column[object], ...]:
    """New each call: a Column belongs to the one table it is added to."""
    return (
        sa.Column("experiment", sa.String(128), nullable=True),
        sa.Column("variant", sa.String(64), nullable=True),
        sa.Column("target", sa.String(300), nullable=True),
        sa.Column("forced", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("unit_hash", sa.String(64), nullable=True),
        sa.Column("outcome_key", sa.String(128), nullable=True),
        sa.Column("fallback_reason", sa.String(16), nullable=True),
        sa.Column("features", sa.JSON(), nullable=True),
    )


def upgrade() -> None:
    op.create_table(
        "model_ops_stamp",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("version", sa.BigInteger(), nullable=False),
    )
    op.execute("INSERT INTO model_ops_stamp (id, version) VALUES (1, 0)")
    op.create_table(
        "experiments",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("name", sa.String(128), nullable=False, unique=True),
        sa.Column("model", sa.String(256), nullable=False),
        sa.Column("state", sa.String(24), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("resolved", sa.JSON(), nullable=False),
        sa.Column("weights", sa.JSON(), nullable=False),
        sa.Column("step", sa.Integer(), nullable=True),
        sa.Column("step_started_at", UTCDateTime(), nullable=True),
        sa.Column("evaluations", sa.JSON(), nullable=False),
        sa.Column("created_by", sa.String(64), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.Column("started_at", UTCDateTime(), nullable=True),
        sa.Column("ended_at", UTCDateTime(), nullable=True),
    )
    op.create_index("ix_experiments_model_state", "experiments", ["model", "state"])
    op.create_table(
        "experiment_transitions",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column(
            "experiment_id",
            sa.String(36),
            sa.ForeignKey("experiments.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("from_state", sa.String(24), nullable=True),
        sa.Column("to_state", sa.String(24), nullable=False),
        sa.Column("reason", sa.String(256), nullable=False),
        sa.Column("actor", sa.String(64), nullable=True),
        sa.Column("detail", sa.JSON(), nullable=True),
        sa.Column("at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_experiment_transitions_experiment", "experiment_transitions", ["experiment_id", "id"])
    op.create_table(
        "model_resilience",
        sa.Column("model", sa.String(256), primary_key=True),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("updated_by", sa.String(64), nullable=True),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
    )
    op.create_table(
        "breaker_overrides",
        sa.Column("model", sa.String(256), primary_key=True),
        sa.Column("version", sa.String(64), primary_key=True),
        sa.Column("mode", sa.String(16), nullable=False),
        sa.Column("reset_seq", sa.Integer(), nullable=False),
        sa.Column("updated_by", sa.String(64), nullable=True),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
    )
    op.create_table(
        "chaos_rules",
        sa.Column("model", sa.String(256), primary_key=True),
        sa.Column("version", sa.String(64), primary_key=True),
        sa.Column("fail_rate", sa.Float(), nullable=False),
        sa.Column("delay_ms", sa.Integer(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.Column("hits", sa.BigInteger(), nullable=False),
        sa.Column("created_by", sa.String(64), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
    )
    op.create_table(
        "ensembles",
        sa.Column("name", sa.String(256), primary_key=True),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("created_by", sa.String(64), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
    )
    op.create_table(
        "drift_references",
        sa.Column("model", sa.String(256), primary_key=True),
        sa.Column("version", sa.String(64), primary_key=True),
        sa.Column("profile", sa.JSON(), nullable=False),
        sa.Column("source", sa.String(32), nullable=False),
        sa.Column("created_by", sa.String(64), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("reset_at", UTCDateTime(), nullable=True),
    )
    op.create_table(
        "drift_counts",
        sa.Column("model", sa.String(256), primary_key=True),
        sa.Column("version", sa.String(64), primary_key=True),
        sa.Column("slot_start", UTCDateTime(), primary_key=True),
        sa.Column("series", sa.String(200), primary_key=True),
        sa.Column("bin", sa.Integer(), primary_key=True),
        sa.Column("count", sa.BigInteger(), nullable=False),
    )
    op.create_table(
        "drift_resets",
        sa.Column("model", sa.String(256), primary_key=True),
        sa.Column("version", sa.String(64), primary_key=True),
        sa.Column("reset_at", UTCDateTime(), nullable=False),
    )
    op.create_table(
        "shadow_records",
        sa.Column("request_id", sa.String(36), primary_key=True),
        sa.Column("row", sa.Integer(), primary_key=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("experiment", sa.String(128), nullable=False),
        sa.Column("variant", sa.String(64), nullable=True),
        sa.Column("shadow_of", sa.String(16), primary_key=True),
        sa.Column("target", sa.String(300), nullable=False),
        sa.Column("model_name", sa.String(256), nullable=False),
        sa.Column("model_version", sa.String(64), nullable=True),
        sa.Column("label", sa.String(64), nullable=True),
        sa.Column("probabilities", sa.JSON(), nullable=True),
        sa.Column("value", sa.Float(), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("latency_ms", sa.Float(), nullable=True),
        sa.Column("unit_hash", sa.String(64), nullable=True),
    )
    op.create_index("ix_shadow_records_experiment", "shadow_records", ["experiment", "created_at"])
    op.create_table(
        "leader_leases",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("holder", sa.String(64), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
    )
    with op.batch_alter_table("prediction_records") as batch:
        for column in record_columns():
            batch.add_column(column)
    op.create_index(
        "ix_prediction_records_experiment", "prediction_records", ["experiment", "variant", "created_at"]
    )


def downgrade() -> None:
    op.drop_index("ix_prediction_records_experiment", table_name="prediction_records")
    with op.batch_alter_table("prediction_records") as batch:
        for column in record_columns():
            batch.drop_column(column.name)
    for table in (
        "leader_leases",
        "shadow_records",
        "drift_resets",
        "drift_counts",
        "drift_references",
        "ensembles",
        "chaos_rules",
        "breaker_overrides",
        "model_resilience",
        "experiment_transitions",
        "experiments",
        "model_ops_stamp",
    ):
        op.drop_table(table)
