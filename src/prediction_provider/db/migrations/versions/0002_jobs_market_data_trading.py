"""Prediction jobs and their history, cached market bars, trading accounts and positions.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from prediction_provider.db.base import UTCDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "time_series_data",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("symbol", sa.String(length=20), nullable=False),
        sa.Column("interval", sa.String(length=8), nullable=False),
        sa.Column("time", UTCDateTime(), nullable=False),
        sa.Column("open", sa.Numeric(precision=28, scale=10), nullable=False),
        sa.Column("high", sa.Numeric(precision=28, scale=10), nullable=False),
        sa.Column("low", sa.Numeric(precision=28, scale=10), nullable=False),
        sa.Column("close", sa.Numeric(precision=28, scale=10), nullable=False),
        sa.Column("volume", sa.Numeric(precision=28, scale=8), nullable=False),
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column("ingested_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_time_series_data")),
        sa.UniqueConstraint("symbol", "interval", "time", name=op.f("uq_time_series_data_symbol")),
    )
    op.create_table(
        "prediction_jobs",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("owner_id", sa.Integer(), nullable=True),
        sa.Column("owner_username", sa.String(length=64), nullable=True),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("parent_id", sa.String(length=36), nullable=True),
        sa.Column("chunk_index", sa.Integer(), nullable=True),
        sa.Column("chunks_total", sa.Integer(), nullable=True),
        sa.Column("model_reference", sa.String(length=512), nullable=False),
        sa.Column("model_name", sa.String(length=256), nullable=True),
        sa.Column("model_version", sa.String(length=64), nullable=True),
        sa.Column("input", sa.JSON(), nullable=True),
        sa.Column("input_path", sa.String(length=1024), nullable=True),
        sa.Column("input_hash", sa.String(length=64), nullable=False),
        sa.Column("parameters", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("result", sa.JSON(), nullable=True),
        sa.Column("result_files", sa.JSON(), nullable=False),
        sa.Column("error", sa.JSON(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("progress", sa.Float(), nullable=False),
        sa.Column("idempotency_key", sa.String(length=128), nullable=True),
        sa.Column("claim_token", sa.String(length=64), nullable=True),
        sa.Column("worker", sa.String(length=128), nullable=True),
        sa.Column("data_as_of", UTCDateTime(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.Column("started_at", UTCDateTime(), nullable=True),
        sa.Column("heartbeat_at", UTCDateTime(), nullable=True),
        sa.Column("dispatched_at", UTCDateTime(), nullable=True),
        sa.Column("finished_at", UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["owner_id"], ["users.id"], name=op.f("fk_prediction_jobs_owner_id_users"), ondelete="SET NULL"
        ),
        sa.ForeignKeyConstraint(
            ["parent_id"],
            ["prediction_jobs.id"],
            name=op.f("fk_prediction_jobs_parent_id_prediction_jobs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_prediction_jobs")),
        sa.UniqueConstraint("owner_id", "idempotency_key", name=op.f("uq_prediction_jobs_owner_id")),
    )
    with op.batch_alter_table("prediction_jobs", schema=None) as batch_op:
        batch_op.create_index("ix_prediction_jobs_owner_created", ["owner_id", "created_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_prediction_jobs_parent_id"), ["parent_id"], unique=False)
        batch_op.create_index("ix_prediction_jobs_status_created", ["status", "created_at"], unique=False)

    op.create_table(
        "trading_accounts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("owner_id", sa.Integer(), nullable=True),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("equity", sa.Numeric(precision=24, scale=8), nullable=False),
        sa.Column("day_start_equity", sa.Numeric(precision=24, scale=8), nullable=False),
        sa.Column("realized_pnl_today", sa.Numeric(precision=24, scale=8), nullable=False),
        sa.Column("pnl_date", sa.Date(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["owner_id"], ["users.id"], name=op.f("fk_trading_accounts_owner_id_users"), ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_trading_accounts")),
        sa.UniqueConstraint("name", name=op.f("uq_trading_accounts_name")),
    )
    op.create_table(
        "positions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("symbol", sa.String(length=20), nullable=False),
        sa.Column("sector", sa.String(length=64), nullable=True),
        sa.Column("quantity", sa.Numeric(precision=24, scale=8), nullable=False),
        sa.Column("average_price", sa.Numeric(precision=28, scale=10), nullable=False),
        sa.Column("market_price", sa.Numeric(precision=28, scale=10), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["trading_accounts.id"],
            name=op.f("fk_positions_account_id_trading_accounts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_positions")),
        sa.UniqueConstraint("account_id", "symbol", name=op.f("uq_positions_account_id")),
    )
    op.create_table(
        "prediction_job_events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.String(length=36), nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("worker", sa.String(length=128), nullable=True),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["job_id"],
            ["prediction_jobs.id"],
            name=op.f("fk_prediction_job_events_job_id_prediction_jobs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_prediction_job_events")),
    )
    with op.batch_alter_table("prediction_job_events", schema=None) as batch_op:
        batch_op.create_index("ix_prediction_job_events_job_at", ["job_id", "at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("prediction_job_events", schema=None) as batch_op:
        batch_op.drop_index("ix_prediction_job_events_job_at")

    op.drop_table("prediction_job_events")
    op.drop_table("positions")
    op.drop_table("trading_accounts")
    with op.batch_alter_table("prediction_jobs", schema=None) as batch_op:
        batch_op.drop_index("ix_prediction_jobs_status_created")
        batch_op.drop_index("ix_prediction_jobs_owner_created")
        batch_op.drop_index(batch_op.f("ix_prediction_jobs_parent_id"))

    op.drop_table("prediction_jobs")
    op.drop_table("time_series_data")
