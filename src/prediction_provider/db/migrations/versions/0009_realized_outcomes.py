"""Realized outcomes: versioned ``prediction_scores`` (a PostgreSQL trigger refuses DELETE and any
UPDATE but of ``current``), the ``outcome_bars`` they were scored against, and ``scoring_head``.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from prediction_provider.db.base import UTCDateTime

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

SCORES_FUNCTION = """
CREATE OR REPLACE FUNCTION prediction_scores_never_edited() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        RAISE EXCEPTION 'prediction_scores are never deleted';
    END IF;
    IF (to_jsonb(NEW) - 'current') IS DISTINCT FROM (to_jsonb(OLD) - 'current') THEN
        RAISE EXCEPTION 'prediction_scores are never edited: a revision is a new version';
    END IF;
    RETURN NEW;
END;
$$ LANGUAGE plpgsql
"""


def upgrade() -> None:
    op.create_table(
        "prediction_scores",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("request_id", sa.String(36), nullable=False),
        sa.Column("row", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("current", sa.Boolean(), nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("status", sa.String(8), nullable=False),
        sa.Column("model_name", sa.String(256), nullable=False),
        sa.Column("model_version", sa.String(64), nullable=True),
        sa.Column("provider_id", sa.Integer(), nullable=True),
        sa.Column("provider", sa.String(64), nullable=True),
        sa.Column("client_id", sa.Integer(), nullable=True),
        sa.Column("evaluator_id", sa.Integer(), nullable=True),
        sa.Column("job_id", sa.String(36), nullable=True),
        sa.Column("offer_id", sa.String(36), nullable=True),
        sa.Column("price", sa.BigInteger(), nullable=True),
        sa.Column("currency", sa.String(3), nullable=True),
        sa.Column("symbol", sa.String(20), nullable=True),
        sa.Column("interval", sa.String(8), nullable=True),
        sa.Column("horizon", sa.Integer(), nullable=True),
        sa.Column("as_of", UTCDateTime(), nullable=True),
        sa.Column("target_time", UTCDateTime(), nullable=True),
        sa.Column("resolved_time", UTCDateTime(), nullable=True),
        sa.Column("realized_return", sa.Float(), nullable=True),
        sa.Column("realized_log_return", sa.Float(), nullable=True),
        sa.Column("realized_label", sa.String(64), nullable=True),
        sa.Column("bars", sa.JSON(), nullable=False),
        sa.Column("context", sa.JSON(), nullable=False),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.Column("metric_version", sa.String(8), nullable=False),
        sa.Column("eligible", sa.Boolean(), nullable=False),
        sa.Column("ineligible_reason", sa.String(64), nullable=True),
        sa.Column("score_set", sa.String(8), nullable=False),
        sa.Column("outcome_key", sa.String(96), nullable=True),
        sa.Column("recorded_at", UTCDateTime(), nullable=False),
        sa.Column("scored_at", UTCDateTime(), nullable=False),
        sa.UniqueConstraint("request_id", "row", "version"),
    )
    op.create_index(
        "ix_prediction_scores_board", "prediction_scores", ["current", "score_set", "target_time"]
    )
    op.create_index(
        "ix_prediction_scores_model", "prediction_scores", ["model_name", "model_version", "target_time"]
    )
    op.create_index("ix_prediction_scores_job", "prediction_scores", ["job_id"])
    op.create_table(
        "outcome_bars",
        sa.Column("symbol", sa.String(20), primary_key=True),
        sa.Column("interval", sa.String(8), primary_key=True),
        sa.Column("close_time", UTCDateTime(), primary_key=True),
        sa.Column("version", sa.Integer(), primary_key=True),
        sa.Column("close", sa.String(40), nullable=False),
        sa.Column("recorded_at", UTCDateTime(), nullable=False),
    )
    head = op.create_table(
        "scoring_head",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("passes", sa.BigInteger(), nullable=False),
        sa.Column("scored_through", UTCDateTime(), nullable=True),
        sa.Column("updated_at", UTCDateTime(), nullable=True),
    )
    op.bulk_insert(head, [{"id": 1, "passes": 0}])
    if op.get_bind().dialect.name == "postgresql":
        op.execute(SCORES_FUNCTION)
        op.execute(
            "CREATE TRIGGER prediction_scores_never_edited BEFORE UPDATE OR DELETE ON prediction_scores "
            "FOR EACH ROW EXECUTE FUNCTION prediction_scores_never_edited()"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS prediction_scores_never_edited ON prediction_scores")
        op.execute("DROP FUNCTION IF EXISTS prediction_scores_never_edited()")
    for table in ("scoring_head", "outcome_bars", "prediction_scores"):
        op.drop_table(table)
