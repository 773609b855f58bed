"""Wallets, limits, statements, invoices and the journal's reads, on SQLite and PostgreSQL, with a
manual clock: deposits and withdrawals are idempotent by key and never overdraw; "spent" counts
holds not released and nothing else; a statement's closing balance is its opening plus its
entries; a month's invoices are issued once, after the month ends."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from prediction_provider.accounts.principal import Principal
from prediction_provider.accounts.roles import Role
from prediction_provider.clock import ManualClock
from prediction_provider.config import Settings
from prediction_provider.db.session import Database
from prediction_provider.errors import (
    IdempotencyKeyMissing,
    InsufficientFunds,
    InvalidInput,
    LedgerConflict,
    UserNotFound,
)
from prediction_provider.ledger import service as ledger_service
from prediction_provider.ledger.journal import Journal
from prediction_provider.ledger.money import MICROS
from prediction_provider.ledger.service import InvoiceNotFound, LedgerService, PeriodOpen
from tests.integration import test_ledger_checks as world
from tests.integration.test_ledger_checks import START, Market, make_user, report_of

# The same real databases (SQLite and PostgreSQL), clock and market as the ledger check's tests.
database, clock, journal, market = world.database, world.clock, world.journal, world.market

ADMIN = Principal(1, "root", Role.ADMIN, "api_key")


@pytest.fixture
def ledger(database: Database, journal: Journal, clock: ManualClock, tmp_path: Path) -> LedgerService:
    return LedgerService(database, journal, clock, Settings(data_dir=tmp_path))


def test_a_deposit_is_idempotent_by_key(ledger: LedgerService, market: Market) -> None:
    alice = make_user(market.db, "alice")
    first = ledger.deposit(ADMIN, "alice", 5 * MICROS, "USD", "key-1")
    again = ledger.deposit(ADMIN, "alice", 5 * MICROS, "usd", "key-1")
    assert first["transfer_id"] == again["transfer_id"] == f"dep:{alice}:key-1"
    assert (first["replayed"], again["replayed"]) == (False, True)
    assert first["available"] == again["available"] == "5.000000"
    with pytest.raises(LedgerConflict):
        ledger.deposit(ADMIN, "alice", 6 * MICROS, "USD", "key-1")
    with pytest.raises(IdempotencyKeyMissing):
        ledger.deposit(ADMIN, "alice", MICROS, "USD", None)
    with pytest.raises(UserNotFound):
        ledger.deposit(ADMIN, "nobody", MICROS, "USD", "key-2")
    with pytest.raises(InvalidInput):
        ledger.deposit(ADMIN, "alice", MICROS, "XYZ", "key-3")
    long_key = "k" * 255  # keys longer than a transfer id can hold are digested, still per key
    assert ledger.deposit(ADMIN, "alice", MICROS, "USD", long_key)["available"] == "6.000000"
    assert ledger.deposit(ADMIN, "alice", MICROS, "USD", long_key)["replayed"] is True
    assert ledger.wallet(alice, "USD")["posted"] == "6.000000"
    assert report_of(market.db).ok


def test_a_withdrawal_never_takes_held_money(ledger: LedgerService, market: Market) -> None:
    alice = make_user(market.db, "alice")
    ledger.deposit(ADMIN, "alice", 2 * MICROS, "USD", "d")
    market.submit(alice, "r1", 1_500_000)
    with pytest.raises(InsufficientFunds) as refused:
        ledger.withdraw(ADMIN, "alice", 600_000, "USD", "w1")
    assert refused.value.details["available"] == "0.500000"
    moved = ledger.withdraw(ADMIN, "alice", 500_000, "USD", "w1")
    assert (moved["available"], moved["held"], moved["posted"]) == ("0.000000", "1.500000", "1.500000")
    assert ledger.withdraw(ADMIN, "alice", 500_000, "USD", "w1")["replayed"] is True
    with pytest.raises(InsufficientFunds):
        ledger.withdraw(ADMIN, "alice", 1, "USD", "w2")
    assert report_of(market.db).ok


def test_spent_counts_holds_not_released_and_captures_in_the_period(
    ledger: LedgerService, market: Market, clock: ManualClock, database: Database
) -> None:
    alice = make_user(market.db, "alice")
    ledger.deposit(ADMIN, "alice", 10 * MICROS, "USD", "d")
    market.submit(alice, "r1", MICROS)  # yesterday (relative to below), this month
    clock.advance(86_400)
    market.submit(alice, "r2", 2 * MICROS)
    market.complete("r2")  # captured: still spent
    market.submit(alice, "r3", 3 * MICROS)
    market.fail("r3")  # voided: not spent
    market.submit(alice, "r4", 400_000)  # held: spent
    wallet = ledger.wallet(alice)
    assert wallet["spent"] == {"today": "2.400000", "month": "3.400000"}
    assert (wallet["available"], wallet["held"], wallet["posted"]) == ("6.600000", "1.400000", "8.000000")
    day, month = ledger_service.period_starts(clock.now())
    with database.session() as session:
        assert ledger_service.spent(session, alice, "USD", day) == 2_400_000
        assert ledger_service.spent(session, alice, "USD", month) == 3_400_000
        assert ledger_service.spent(session, alice, "EUR", month) == 0
        assert ledger_service.limits(session, alice, "USD") == (None, None)
    clock.set(datetime(2026, 12, 1, tzinfo=UTC))
    assert ledger.wallet(alice)["spent"] == {"today": "0.000000", "month": "0.000000"}


def test_limits_are_set_per_field_and_removed_with_null(
    ledger: LedgerService, market: Market, database: Database
) -> None:
    alice = make_user(market.db, "alice")
    assert ledger.set_limits(alice, "USD", {"daily": 1_500_000})["limits"] == {
        "daily": "1.500000",
        "monthly": None,
    }
    wallet = ledger.set_limits(alice, None, {"monthly": 20 * MICROS})
    assert wallet["limits"] == {"daily": "1.500000", "monthly": "20.000000"}
    assert ledger.set_limits(alice, "USD", {"daily": None})["limits"] == {
        "daily": None,
        "monthly": "20.000000",
    }
    with database.session() as session:
        assert ledger_service.limits(session, alice, "USD") == (None, 20 * MICROS)
        assert ledger_service.limits(session, alice, "EUR") == (None, None)
    with pytest.raises(InvalidInput):
        ledger.set_limits(alice, "USD", {"weekly": 1})


def test_a_statement_closes_at_its_opening_plus_its_entries(
    ledger: LedgerService, market: Market, clock: ManualClock
) -> None:
    alice = make_user(market.db, "alice")
    ledger.deposit(ADMIN, "alice", 10 * MICROS, "USD", "d1")
    market.submit(alice, "r1", 2500)
    market.complete("r1")
    clock.advance(3600)
    middle = clock.now()
    market.submit(alice, "r2", MICROS)
    market.complete("r2")
    market.submit(alice, "r3", 300_000)  # a hold: not an entry
    market.refund(alice, "r2", 100_000)
    ledger.withdraw(ADMIN, "alice", 2 * MICROS, "USD", "w1")

    whole = ledger.statement(alice, "USD", START - timedelta(days=1), None)
    assert whole["opening_balance"] == "0.000000"
    assert [(e["kind"], e["amount"]) for e in whole["entries"]] == [
        ("deposit", "10.000000"), ("capture", "-0.002500"), ("capture", "-1.000000"), ("refund", "0.100000"),
        ("withdrawal", "-2.000000"),
    ]  # fmt: skip
    assert whole["closing_balance"] == whole["entries"][-1]["balance_after"] == ledger.wallet(alice)["posted"]
    later = ledger.statement(alice, "USD", middle, None)
    assert later["opening_balance"] == "9.997500"
    total = Decimal(later["opening_balance"]) + sum(Decimal(e["amount"]) for e in later["entries"])
    assert Decimal(later["closing_balance"]) == total == Decimal("7.097500")
    assert [e["request_id"] for e in later["entries"]] == ["r2", "r2", None]
    earlier = ledger.statement(alice, "USD", START - timedelta(days=1), middle)
    assert earlier["closing_balance"] == later["opening_balance"]
    assert ledger.statement(alice, "EUR", None, None)["entries"] == []
    with pytest.raises(InvalidInput):
        ledger.statement(alice, "USD", middle, middle - timedelta(seconds=1))


def test_a_months_invoices_are_issued_once_after_it_ends(
    ledger: LedgerService, market: Market, clock: ManualClock
) -> None:
    alice, bob = make_user(market.db, "alice"), make_user(market.db, "bob")
    ledger.deposit(ADMIN, "alice", 10 * MICROS, "USD", "d")
    ledger.deposit(ADMIN, "bob", 10 * MICROS, "USD", "d")
    for n in range(3):
        market.submit(alice, f"a{n}", 2500)
        market.complete(f"a{n}")
    market.submit(alice, "a3", MICROS, offer="offer-2", price_id="p-2")
    market.complete("a3")
    market.submit(alice, "a4", 7000)
    market.fail("a4")  # voided: not billed
    market.refund(alice, "a3", 100_000)
    market.submit(bob, "b0", 2500)
    market.complete("b0")
    with pytest.raises(PeriodOpen):
        ledger.finalize("2026-11")
    with pytest.raises(InvalidInput):
        ledger.finalize("2026-13")
    clock.set(datetime(2026, 12, 1, tzinfo=UTC))
    market.submit(alice, "dec", 2500)  # December's: not on November's invoice
    market.complete("dec")

    done = ledger.finalize("2026-11")
    assert done["created"] == 2
    by_client = {invoice["client_id"]: invoice for invoice in done["invoices"]}
    mine = by_client[alice]
    assert mine["number"].startswith("INV-202611-")
    assert len(mine["number"]) == len("INV-202611-000001")
    assert mine["status"] == "finalized"
    lines = sorted(
        (line["offer_id"], line["count"], line["unit_price"], line["amount"]) for line in mine["lines"]
    )
    assert lines == [("offer-1", 3, "0.002500", "0.007500"), ("offer-2", 1, "1.000000", "1.000000")]
    assert (mine["subtotal"], mine["refunds"], mine["total"]) == ("1.007500", "0.100000", "0.907500")
    assert by_client[bob]["total"] == "0.002500"
    again = ledger.finalize("2026-11")
    assert again["created"] == 0
    assert again["invoices"] == done["invoices"]
    assert {invoice["number"] for invoice in done["invoices"]} == {"INV-202611-000001", "INV-202611-000002"}

    page = ledger.invoices(alice)
    assert page["total"] == 1
    assert page["items"][0]["id"] == mine["id"]
    assert ledger.invoices(None)["total"] == 2
    assert ledger.invoice(mine["id"], alice) == mine
    with pytest.raises(InvoiceNotFound):
        ledger.invoice(mine["id"], bob)
    assert report_of(market.db).ok


def test_transfers_filter_by_request_user_and_kind(ledger: LedgerService, market: Market) -> None:
    alice, bob = make_user(market.db, "alice"), make_user(market.db, "bob")
    ledger.deposit(ADMIN, "alice", 10 * MICROS, "USD", "d")
    ledger.deposit(ADMIN, "bob", 10 * MICROS, "USD", "d")
    market.submit(alice, "r1", 2500)
    market.complete("r1")
    by_request = ledger.transfers(request_id="r1")
    assert [item["id"] for item in by_request["items"]] == ["prv:r1", "fee:r1", "cap:r1", "hold:r1"]
    assert by_request["items"][2]["debit_account"] == f"client:{alice}"
    assert by_request["items"][2]["pending_id"] == "hold:r1"
    assert ledger.transfers(user="bob")["total"] == 1
    assert ledger.transfers(user=str(bob))["total"] == 1
    deposits = ledger.transfers(kind="deposit", limit=1, offset=1)
    assert (deposits["total"], len(deposits["items"]), deposits["items"][0]["id"]) == (2, 1, f"dep:{alice}:d")
    assert ledger.transfer("cap:r1")["amount"] == "0.002500"
    with pytest.raises(UserNotFound):
        ledger.transfers(user="nobody")
