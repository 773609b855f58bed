"""Bodies and answers of the wallet, statement, invoice and ledger routes. Amounts come in as
decimal strings (or JSON numbers, read through their shortest decimal form) and go out as strings
with six decimals ("0.500000"); compare them by decimal value."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

AmountIn = Annotated[
    str | int | float, Field(description='A decimal amount, e.g. "10" or "0.0025" (≤ 6 decimals).')
]
Money = Annotated[str, Field(description='Six decimals, e.g. "0.500000".', examples=["0.500000"])]
Currency = Annotated[str | None, Field(default=None, min_length=3, max_length=3, description="ISO-4217.")]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class WalletMove(Strict):
    amount: AmountIn
    currency: Currency = None


class LimitsSet(Strict):
    """Omitted: unchanged; null: no limit."""

    daily: AmountIn | None = None
    monthly: AmountIn | None = None
    currency: Currency = None


class FinalizeRequest(Strict):
    period: str = Field(pattern=r"^\d{4}-(0[1-9]|1[0-2])$", examples=["2026-11"])


class Moved(BaseModel):
    transfer_id: str
    kind: str
    username: str
    amount: Money
    currency: str
    available: Money
    posted: Money
    held: Money
    seq: int


class Limits(BaseModel):
    daily: Money | None
    monthly: Money | None


class Spent(BaseModel):
    today: Money
    month: Money


class Wallet(BaseModel):
    currency: str
    available: Money = Field(description="posted - held: what a new request may spend")
    held: Money = Field(description="holds of requests still in flight")
    posted: Money = Field(description="the settled balance")
    limits: Limits
    spent: Spent = Field(description="captured or charged + still held, this UTC day and month")


class StatementEntry(BaseModel):
    transfer_id: str
    seq: int
    at: datetime
    kind: str
    amount: Money = Field(description="signed: + into the wallet, - out of it")
    request_id: str | None
    balance_after: Money = Field(description="the wallet's posted balance after this transfer")


class Statement(BaseModel):
    currency: str
    from_: datetime = Field(alias="from")
    to: datetime | None
    opening_balance: Money
    closing_balance: Money = Field(description="opening_balance + Σ entries.amount")
    entries: list[StatementEntry]

    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True)


class InvoiceLine(BaseModel):
    offer_id: str | None
    price_id: str | None
    model: str | None
    count: int
    unit_price: Money
    amount: Money


class InvoicePublic(BaseModel):
    id: str
    number: str = Field(examples=["INV-202611-000001"])
    client_id: int
    currency: str
    period: str
    status: str
    lines: list[InvoiceLine]
    subtotal: Money
    refunds: Money
    total: Money = Field(description="subtotal - refunds")
    last_transfer_seq: int = Field(description="the journal's position when it was finalized")
    created_at: datetime
    finalized_at: datetime | None


class InvoicePage(BaseModel):
    items: list[InvoicePublic]
    total: int
    limit: int
    offset: int


class Finalized(BaseModel):
    period: str
    created: int = Field(description="invoices issued by this call (0 when the period was already done)")
    invoices: list[InvoicePublic]


class TransferPublic(BaseModel):
    id: str
    seq: int
    debit_account: str
    credit_account: str
    amount: Money
    currency: str
    kind: str
    phase: str
    pending_id: str | None
    timeout_at: datetime | None
    request_id: str | None
    actor_user_id: int | None
    reason: str | None
    created_at: datetime
    prev_hash: str
    hash: str


class TransferPage(BaseModel):
    items: list[TransferPublic]
    total: int
    limit: int
    offset: int


class CurrencyBalance(BaseModel):
    currency: str
    accounts: int
    debits_pending: Money
    debits_posted: Money
    credits_pending: Money
    credits_posted: Money
    pending_difference: Money = Field(description='debits - credits pending: "0.000000" when balanced')
    posted_difference: Money = Field(description='debits - credits posted: "0.000000" when balanced')
    balanced: bool


class TrialBalance(BaseModel):
    currencies: list[CurrencyBalance]
    balanced: bool


class Violation(BaseModel):
    check: str
    message: str
    details: dict[str, Any]


class LedgerChecks(BaseModel):
    conservation: bool
    recompute: bool
    bounds: bool
    clearing: bool
    hash_chain: bool
    seq_gapless: bool


class LedgerCheck(BaseModel):
    ok: bool
    checks: LedgerChecks
    violations: list[Violation]
    transfers: int
    accounts: int
    head_seq: int
