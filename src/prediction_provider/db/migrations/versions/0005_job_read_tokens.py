"""``prediction_jobs.read_token_digest``: the digest of an anonymous job's read token.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("prediction_jobs") as batch:
        batch.add_column(sa.Column("read_token_digest", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("prediction_jobs") as batch:
        batch.drop_column("read_token_digest")
