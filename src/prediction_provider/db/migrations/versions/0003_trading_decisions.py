"""Every answered trading decision, with its model, feature hash and data as-of time.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from prediction_provider.db.base import UTCDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "trading_decisions",
        sa.Column("decision_id", sa.String(length=36), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=True),
        sa.Column("username", sa.String(length=64), nullable=True),
        sa.Column("symbol", sa.String(length=20), nullable=False),
        sa.Column("action", sa.String(length=4), nullable=False),
        sa.Column("confidence", sa.Float(), nullable=False),
        sa.Column("recommended_quantity", sa.Numeric(precision=24, scale=8), nullable=False),
        sa.Column("account_name", sa.String(length=64), nullable=True),
        sa.Column("approved", sa.Boolean(), nullable=False),
        sa.Column("risk_warnings", sa.JSON(), nullable=False),
        sa.Column("risk_checks", sa.JSON(), nullable=False),
        sa.Column("regime_probabilities", sa.JSON(), nullable=False),
        sa.Column("strategy_weights", sa.JSON(), nullable=False),
        sa.Column("strategy", sa.String(length=32), nullable=False),
        sa.Column("model_name", sa.String(length=256), nullable=False),
        sa.Column("model_version", sa.String(length=64), nullable=False),
        sa.Column("feature_hash", sa.String(length=64), nullable=False),
        sa.Column("data_as_of", UTCDateTime(), nullable=False),
        sa.Column("latency_ms", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_trading_decisions_user_id_users"), ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("decision_id", name=op.f("pk_trading_decisions")),
    )
    with op.batch_alter_table("trading_decisions", schema=None) as batch_op:
        batch_op.create_index("ix_trading_decisions_created", ["created_at"], unique=False)
        batch_op.create_index("ix_trading_decisions_symbol_created", ["symbol", "created_at"], unique=False)
        batch_op.create_index("ix_trading_decisions_user_created", ["user_id", "created_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("trading_decisions", schema=None) as batch_op:
        batch_op.drop_index("ix_trading_decisions_user_created")
        batch_op.drop_index("ix_trading_decisions_symbol_created")
        batch_op.drop_index("ix_trading_decisions_created")

    op.drop_table("trading_decisions")
