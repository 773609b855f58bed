"""The marketplace and its ledger: accounts, the append-only journal (a trigger forbids UPDATE and
DELETE on PostgreSQL), idempotency keys, model ownership, offers and prices, quotes, evaluator
claims, spending limits, webhooks and invoices; money columns on ``prediction_jobs``.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from prediction_provider.db.base import UTCDateTime

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

JOB_COLUMNS = (
    ("offer_id", sa.String(36)),
    ("price_id", sa.String(36)),
    ("quote_id", sa.String(36)),
    ("price", sa.BigInteger()),
    ("max_cost", sa.BigInteger()),
    ("currency", sa.String(3)),
    ("execution", sa.String(12)),
    ("target_time", UTCDateTime()),
    ("deadline_at", UTCDateTime()),
    ("hold_transfer_id", sa.String(96)),
    ("executed_by", sa.Integer()),
    ("webhook_url", sa.String(2048)),
    ("result_sha256", sa.String(64)),
)

APPEND_ONLY_FUNCTION = """
CREATE OR REPLACE FUNCTION ledger_transfers_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'ledger_transfers is append-only: % refused', TG_OP;
END;
$$ LANGUAGE plpgsql
"""


def upgrade() -> None:
    with op.batch_alter_table("prediction_jobs") as batch:
        for name, type_ in JOB_COLUMNS:
            batch.add_column(sa.Column(name, type_, nullable=True))
        batch.add_column(sa.Column("lease_counter", sa.Integer(), nullable=False, server_default="0"))
        batch.create_index("ix_prediction_jobs_offer_id", ["offer_id"])
        batch.create_index("ix_prediction_jobs_kind_status_created", ["kind", "status", "created_at"])
    with op.batch_alter_table("prediction_jobs") as batch:
        batch.alter_column("lease_counter", server_default=None)

    op.create_table(
        "ledger_accounts",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("code", sa.String(128), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("owner_user_id", sa.Integer(), sa.ForeignKey("users.id", ondelete="SET NULL")),
        sa.Column("normal_balance", sa.String(6), nullable=False),
        sa.Column("flag_dmnec", sa.Boolean(), nullable=False),
        sa.Column("flag_cmned", sa.Boolean(), nullable=False),
        sa.Column("debits_pending", sa.BigInteger(), nullable=False),
        sa.Column("debits_posted", sa.BigInteger(), nullable=False),
        sa.Column("credits_pending", sa.BigInteger(), nullable=False),
        sa.Column("credits_posted", sa.BigInteger(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.UniqueConstraint("code", "currency", name="code_currency"),
        sa.CheckConstraint(
            "debits_pending >= 0 AND debits_posted >= 0 AND credits_pending >= 0 AND credits_posted >= 0",
            name="sums_non_negative",
        ),
        sa.CheckConstraint(
            "NOT flag_dmnec OR debits_pending + debits_posted <= credits_posted", name="debits_within_credits"
        ),
        sa.CheckConstraint(
            "NOT flag_cmned OR credits_pending + credits_posted <= debits_posted",
            name="credits_within_debits",
        ),
    )
    op.create_index("ix_ledger_accounts_owner_user_id", "ledger_accounts", ["owner_user_id"])
    op.create_table(
        "ledger_transfers",
        sa.Column("id", sa.String(96), primary_key=True),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("debit_account_id", sa.Integer(), sa.ForeignKey("ledger_accounts.id"), nullable=False),
        sa.Column("credit_account_id", sa.Integer(), sa.ForeignKey("ledger_accounts.id"), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("kind", sa.String(24), nullable=False),
        sa.Column("phase", sa.String(8), nullable=False),
        sa.Column("pending_id", sa.String(96), nullable=True),
        sa.Column("timeout_at", UTCDateTime(), nullable=True),
        sa.Column("request_id", sa.String(64), nullable=True),
        sa.Column("actor_user_id", sa.Integer(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.UniqueConstraint("seq"),
        sa.UniqueConstraint("pending_id"),
        sa.CheckConstraint("amount > 0", name="amount_positive"),
        sa.CheckConstraint("debit_account_id <> credit_account_id", name="distinct_accounts"),
    )
    op.create_index("ix_ledger_transfers_request", "ledger_transfers", ["request_id"])
    op.create_index("ix_ledger_transfers_debit_seq", "ledger_transfers", ["debit_account_id", "seq"])
    op.create_index("ix_ledger_transfers_credit_seq", "ledger_transfers", ["credit_account_id", "seq"])
    op.create_index(
        "ix_ledger_transfers_debit_created", "ledger_transfers", ["debit_account_id", "created_at"]
    )
    head = op.create_table(
        "ledger_head",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
    )
    op.bulk_insert(head, [{"id": 1, "seq": 0, "hash": "0" * 64}])
    op.create_table(
        "idempotency_keys",
        sa.Column("user_id", sa.Integer(), primary_key=True),
        sa.Column("key", sa.String(255), primary_key=True),
        sa.Column("method", sa.String(8), nullable=False),
        sa.Column("path", sa.String(512), nullable=False),
        sa.Column("body_sha256", sa.String(64), nullable=False),
        sa.Column("state", sa.String(12), nullable=False),
        sa.Column("response_status", sa.Integer(), nullable=True),
        sa.Column("response_body", sa.Text(), nullable=True),
        sa.Column("response_headers", sa.JSON(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_idempotency_keys_expires", "idempotency_keys", ["expires_at"])

    op.create_table(
        "model_owners",
        sa.Column("model_name", sa.String(256), primary_key=True),
        sa.Column("provider_id", sa.Integer(), sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
        sa.Column("assigned_by", sa.String(64), nullable=True),
        sa.Column("assigned_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_model_owners_provider_id", "model_owners", ["provider_id"])
    op.create_table(
        "offers",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("provider_id", sa.Integer(), sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
        sa.Column("model_name", sa.String(256), nullable=False),
        sa.Column("model_version", sa.String(64), nullable=True),
        sa.Column("target", sa.String(16), nullable=False),
        sa.Column("symbols", sa.JSON(), nullable=False),
        sa.Column("interval", sa.String(8), nullable=True),
        sa.Column("horizons", sa.JSON(), nullable=False),
        sa.Column("execution", sa.String(12), nullable=False),
        sa.Column("evaluator_fee", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("benchmark_opt_in", sa.Boolean(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_offers_provider", "offers", ["provider_id"])
    op.create_index("ix_offers_model", "offers", ["model_name"])
    op.create_table(
        "offer_prices",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("offer_id", sa.String(36), sa.ForeignKey("offers.id", ondelete="CASCADE"), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("fee_bps", sa.Integer(), nullable=False),
        sa.Column("effective_from", UTCDateTime(), nullable=False),
        sa.Column("effective_to", UTCDateTime(), nullable=True),
    )
    op.create_index("ix_offer_prices_offer_id", "offer_prices", ["offer_id"])
    op.create_index(
        "ux_offer_prices_open", "offer_prices", ["offer_id"], unique=True,
        sqlite_where=sa.text("effective_to IS NULL"), postgresql_where=sa.text("effective_to IS NULL"),
    )  # fmt: skip
    op.create_table(
        "quotes",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("client_id", sa.Integer(), sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
        sa.Column("offer_id", sa.String(36), sa.ForeignKey("offers.id", ondelete="CASCADE"), nullable=False),
        sa.Column("price_id", sa.String(36), sa.ForeignKey("offer_prices.id"), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("breakdown", sa.JSON(), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.Column("used_by_request_id", sa.String(36), nullable=True),
        sa.UniqueConstraint("used_by_request_id"),
    )
    op.create_index("ix_quotes_client_id", "quotes", ["client_id"])
    op.create_table(
        "evaluator_claims",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column(
            "request_id",
            sa.String(36),
            sa.ForeignKey("prediction_jobs.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column(
            "evaluator_id", sa.Integer(), sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("lease_token", sa.Integer(), nullable=False),
        sa.Column("lease_expires_at", UTCDateTime(), nullable=False),
        sa.Column("state", sa.String(12), nullable=False),
        sa.Column("reason", sa.String(32), nullable=True),
        sa.Column("details", sa.Text(), nullable=True),
        sa.Column("output", sa.JSON(), nullable=True),
        sa.Column("output_sha256", sa.String(64), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("finished_at", UTCDateTime(), nullable=True),
    )
    op.create_index("ix_evaluator_claims_request_id", "evaluator_claims", ["request_id"])
    op.create_index("ix_evaluator_claims_evaluator", "evaluator_claims", ["evaluator_id", "created_at"])
    op.create_index(
        "ux_evaluator_claims_active", "evaluator_claims", ["request_id"], unique=True,
        sqlite_where=sa.text("state = 'active'"), postgresql_where=sa.text("state = 'active'"),
    )  # fmt: skip
    op.create_table(
        "spending_limits",
        sa.Column("user_id", sa.Integer(), sa.ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("currency", sa.String(3), primary_key=True),
        sa.Column("daily", sa.BigInteger(), nullable=True),
        sa.Column("monthly", sa.BigInteger(), nullable=True),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
    )
    op.create_table(
        "webhook_endpoints",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("user_id", sa.Integer(), sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
        sa.Column("url", sa.String(2048), nullable=False),
        sa.Column("secret", sa.String(128), nullable=False),
        sa.Column("events", sa.JSON(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_webhook_endpoints_user_id", "webhook_endpoints", ["user_id"])
    op.create_table(
        "webhook_outbox",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("user_id", sa.Integer(), sa.ForeignKey("users.id", ondelete="SET NULL"), nullable=True),
        sa.Column("endpoint_id", sa.String(36), sa.ForeignKey("webhook_endpoints.id", ondelete="SET NULL")),
        sa.Column("url", sa.String(2048), nullable=False),
        sa.Column("event_type", sa.String(64), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", UTCDateTime(), nullable=False),
        sa.Column("delivered_at", UTCDateTime(), nullable=True),
        sa.Column("dead", sa.Boolean(), nullable=False),
        sa.Column("last_status", sa.Integer(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_webhook_outbox_due", "webhook_outbox", ["delivered_at", "dead", "next_attempt_at"])
    op.create_table(
        "webhook_deliveries",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column(
            "message_id",
            sa.String(40),
            sa.ForeignKey("webhook_outbox.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("duration_ms", sa.Float(), nullable=True),
    )
    op.create_index("ix_webhook_deliveries_message_id", "webhook_deliveries", ["message_id"])
    op.create_table(
        "invoices",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("number", sa.String(32), nullable=False),
        sa.Column("client_id", sa.Integer(), sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("period", sa.String(7), nullable=False),
        sa.Column("lines", sa.JSON(), nullable=False),
        sa.Column("subtotal", sa.BigInteger(), nullable=False),
        sa.Column("refunds", sa.BigInteger(), nullable=False),
        sa.Column("total", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(12), nullable=False),
        sa.Column("last_transfer_seq", sa.BigInteger(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("finalized_at", UTCDateTime(), nullable=True),
        sa.UniqueConstraint("number"),
    )
    op.create_index("ix_invoices_client_period", "invoices", ["client_id", "currency", "period"])

    if op.get_bind().dialect.name == "postgresql":
        op.execute(APPEND_ONLY_FUNCTION)
        op.execute(
            "CREATE TRIGGER ledger_transfers_append_only BEFORE UPDATE OR DELETE OR TRUNCATE "
            "ON ledger_transfers FOR EACH STATEMENT EXECUTE FUNCTION ledger_transfers_append_only()"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS ledger_transfers_append_only ON ledger_transfers")
        op.execute("DROP FUNCTION IF EXISTS ledger_transfers_append_only()")
    for table in (
        "invoices", "webhook_deliveries", "webhook_outbox", "webhook_endpoints", "spending_limits",
        "evaluator_claims", "quotes", "offer_prices", "offers", "model_owners", "idempotency_keys",
        "ledger_head", "ledger_transfers", "ledger_accounts",
    ):  # fmt: skip
        op.drop_table(table)
    with op.batch_alter_table("prediction_jobs") as batch:
        batch.drop_index("ix_prediction_jobs_kind_status_created")
        batch.drop_index("ix_prediction_jobs_offer_id")
        batch.drop_column("lease_counter")
        for name, _ in reversed(JOB_COLUMNS):
            batch.drop_column(name)
