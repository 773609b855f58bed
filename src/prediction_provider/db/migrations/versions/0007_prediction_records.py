"""``prediction_records``: one row per answer served, with its market context when it has one.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from prediction_provider.db.base import UTCDateTime

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "prediction_records",
        sa.Column("request_id", sa.String(36), primary_key=True),
        sa.Column("row", sa.Integer(), primary_key=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("job_id", sa.String(36), nullable=True),
        sa.Column("user_id", sa.Integer(), sa.ForeignKey("users.id", ondelete="SET NULL"), nullable=True),
        sa.Column("username", sa.String(64), nullable=True),
        sa.Column("model_name", sa.String(256), nullable=False),
        sa.Column("model_version", sa.String(64), nullable=True),
        sa.Column("role", sa.String(8), nullable=False),
        sa.Column("served_by", sa.String(64), nullable=False),
        sa.Column("symbol", sa.String(20), nullable=True),
        sa.Column("interval", sa.String(8), nullable=True),
        sa.Column("as_of", UTCDateTime(), nullable=True),
        sa.Column("data_as_of", UTCDateTime(), nullable=True),
        sa.Column("horizon", sa.Integer(), nullable=True),
        sa.Column("target_time", UTCDateTime(), nullable=True),
        sa.Column("feature_hash", sa.String(64), nullable=False),
        sa.Column("label", sa.String(64), nullable=True),
        sa.Column("probabilities", sa.JSON(), nullable=True),
        sa.Column("value", sa.Float(), nullable=True),
        sa.Column("answer", sa.JSON(), nullable=False),
        sa.Column("latency_ms", sa.Float(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
    )
    op.create_index(
        "ix_prediction_records_market", "prediction_records", ["symbol", "interval", "target_time"]
    )
    op.create_index(
        "ix_prediction_records_model", "prediction_records", ["model_name", "model_version", "created_at"]
    )
    op.create_index("ix_prediction_records_user_created", "prediction_records", ["user_id", "created_at"])
    op.create_index("ix_prediction_records_job", "prediction_records", ["job_id"])
    op.create_index("ix_prediction_records_created", "prediction_records", ["created_at"])


def downgrade() -> None:
    op.drop_table("prediction_records")
