"""The journal on SQLite: holds, one resolution per hold (L6), deterministic transfer ids (L5), no
overdraft (L3), append-only rows (L4), splits that sum to the price (L8), and amounts that
round-trip between micro-units and decimal strings."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from prediction_provider.clock import ManualClock
from prediction_provider.db import migrate
from prediction_provider.db.ledger_models import LedgerHead, LedgerTransfer
from prediction_provider.db.models import User
from prediction_provider.db.session import Database
from prediction_provider.errors import InsufficientFunds, InvalidInput, LedgerConflict
from prediction_provider.ledger.checks import check_ledger
from prediction_provider.ledger.journal import Journal
from prediction_provider.ledger.money import MAX_AMOUNT, MICROS, format_amount, parse_amount, split
from tests.integration.database_fixtures import sqlite_url

START = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
USD = "USD"


@pytest.fixture
def database(tmp_path: Path) -> Iterator[Database]:
    url = sqlite_url(tmp_path)
    migrate.upgrade(url)
    db = Database(url)
    yield db
    db.dispose()


@pytest.fixture
def journal() -> Journal:
    return Journal(ManualClock(START))


@pytest.fixture
def client(database: Database) -> int:
    return make_user(database, "alice")


def make_user(db: Database, name: str) -> int:
    with db.session() as session:
        user = User(
            username=name, email=f"{name}@example.com", role="client", is_active=True, password_hash="-"
        )
        session.add(user)
        session.flush()
        return user.id


def fund(db: Database, journal: Journal, user_id: int, amount: int, key: str = "d1") -> None:
    with db.session() as session:
        journal.lock(session)
        journal.single(session, f"dep:{user_id}:{key}", "world", f"client:{user_id}", amount, USD, "deposit")


def move(db: Database, journal: Journal, tid: str, debit: str, credit: str, amount: int) -> None:
    with db.session() as session:
        journal.lock(session)
        journal.single(session, tid, debit, credit, amount, USD, "transfer")


def transfers(db: Database) -> int:
    with db.session() as session:
        return int(session.scalar(select(func.count()).select_from(LedgerTransfer)) or 0)


def assert_healthy(db: Database, *, holds_without_requests: bool = False) -> None:
    """Every check passes; holds placed here belong to no request, which clearing reports."""
    with db.session() as session:
        report = check_ledger(session)
    failed = {name for name, passed in report.checks.items() if not passed}
    assert failed == ({"clearing"} if holds_without_requests else set()), report.violations


def hold(db: Database, journal: Journal, user_id: int, rid: str, amount: int) -> None:
    with db.session() as session:
        journal.lock(session)
        journal.hold(
            session, f"hold:{rid}", f"client:{user_id}", "escrow", amount, USD, "hold",
            START + timedelta(hours=1), request_id=rid,
        )  # fmt: skip


def test_a_hold_takes_money_out_of_available_until_posted_or_voided(
    database: Database, journal: Journal, client: int
) -> None:
    fund(database, journal, client, 10 * MICROS)
    hold(database, journal, client, "r1", 3 * MICROS)
    hold(database, journal, client, "r2", 2 * MICROS)
    with database.session() as session:
        wallet = journal.balance(session, f"client:{client}", USD)
        assert (wallet.posted, wallet.held, wallet.available) == (10 * MICROS, 5 * MICROS, 5 * MICROS)
        assert journal.is_open(session, "hold:r1")
    with database.session() as session:
        journal.lock(session)
        journal.post(session, "cap:r1", "hold:r1", "capture")
        journal.void(session, "void:r2", "hold:r2", "void")
    with database.session() as session:
        wallet = journal.balance(session, f"client:{client}", USD)
        assert (wallet.posted, wallet.held, wallet.available) == (7 * MICROS, 0, 7 * MICROS)
        escrow = journal.find(session, "escrow", USD)
        assert escrow is not None
        assert (escrow.credits_posted, escrow.credits_pending) == (3 * MICROS, 0)
        assert not journal.is_open(session, "hold:r1")
        assert not journal.is_open(session, "hold:r2")
        capture = session.get(LedgerTransfer, "cap:r1")
        assert capture is not None
        assert capture.request_id == "r1"
        assert capture.pending_id == "hold:r1"
    # The capture stays in escrow here (no split): clearing says so, and nothing else is wrong.
    assert_healthy(database, holds_without_requests=True)


@pytest.mark.parametrize(("first", "second"), [("post", "void"), ("void", "post"), ("void", "expire")])
def test_a_hold_resolves_once(
    database: Database, journal: Journal, client: int, first: str, second: str
) -> None:
    """L6: after a post, void or expiry, any other resolution of the same hold is a conflict."""
    fund(database, journal, client, 5 * MICROS)
    hold(database, journal, client, "r1", MICROS)

    def resolve(how: str) -> None:
        with database.session() as session:
            journal.lock(session)
            if how == "post":
                journal.post(session, "cap:r1", "hold:r1", "capture")
            else:
                journal.void(session, f"{how}:r1", "hold:r1", "void", expired=how == "expire")

    resolve(first)
    before = transfers(database)
    with pytest.raises(LedgerConflict):
        resolve(second)
    assert transfers(database) == before
    resolve(first)  # the same resolution again: answered, nothing new
    assert transfers(database) == before
    with database.session() as session:
        wallet = journal.balance(session, f"client:{client}", USD)
    assert wallet.held == 0
    assert wallet.posted == (4 * MICROS if first == "post" else 5 * MICROS)


def test_a_resent_transfer_with_equal_fields_is_the_same_transfer(
    database: Database, journal: Journal, client: int
) -> None:
    """L5: the id is derived from what the transfer does; resending it moves nothing."""
    fund(database, journal, client, 2 * MICROS, key="k")
    fund(database, journal, client, 2 * MICROS, key="k")
    with database.session() as session:
        assert journal.balance(session, f"client:{client}", USD).posted == 2 * MICROS
        head = session.get(LedgerHead, 1)
        assert head is not None
        assert head.seq == 1
    with pytest.raises(LedgerConflict) as conflict:
        fund(database, journal, client, 3 * MICROS, key="k")
    assert conflict.value.details["fields"] == ["amount"]
    assert transfers(database) == 1
    assert_healthy(database)


def test_an_overdraft_is_refused_and_writes_nothing(
    database: Database, journal: Journal, client: int
) -> None:
    """L3: neither a hold nor a single-phase transfer takes a bounded account below zero."""
    fund(database, journal, client, MICROS)
    hold(database, journal, client, "r1", 600_000)
    with pytest.raises(InsufficientFunds) as refused:
        hold(database, journal, client, "r2", 400_001)
    assert refused.value.details["available"] == "0.400000"
    with pytest.raises(InsufficientFunds):
        move(database, journal, "wd:1", f"client:{client}", "world", 400_001)
    hold(database, journal, client, "r3", 400_000)  # exactly what is left is fine
    with database.session() as session:
        assert journal.balance(session, f"client:{client}", USD).available == 0
        assert session.get(LedgerTransfer, "hold:r2") is None
    assert transfers(database) == 3
    assert_healthy(database, holds_without_requests=True)


def test_a_transfer_moves_a_positive_amount(database: Database, journal: Journal, client: int) -> None:
    with pytest.raises(LedgerConflict):
        move(database, journal, "dep:0", "world", f"client:{client}", 0)


def test_transfers_are_never_updated_or_deleted(database: Database, journal: Journal, client: int) -> None:
    """L4: the ORM refuses to flush a change to a journal row, or its deletion."""
    fund(database, journal, client, MICROS)
    tid = f"dep:{client}:d1"

    def change(session: Session) -> None:
        row = session.get(LedgerTransfer, tid)
        assert row is not None
        row.amount = 2 * MICROS

    def remove(session: Session) -> None:
        session.delete(session.get(LedgerTransfer, tid))

    for edit in (change, remove):
        with database.session() as session:
            edit(session)
            with pytest.raises(LedgerConflict):
                session.flush()
            session.rollback()
    with database.session() as session:
        row = session.get(LedgerTransfer, f"dep:{client}:d1")
        assert row is not None
        assert row.amount == MICROS
    assert_healthy(database)


def test_every_row_chains_to_the_one_before(database: Database, journal: Journal, client: int) -> None:
    fund(database, journal, client, MICROS, key="a")
    fund(database, journal, client, MICROS, key="b")
    with database.session() as session:
        rows = list(session.scalars(select(LedgerTransfer).order_by(LedgerTransfer.seq)))
        head = session.get(LedgerHead, 1)
    assert [row.seq for row in rows] == [1, 2]
    assert rows[0].prev_hash == "0" * 64
    assert rows[1].prev_hash == rows[0].hash
    assert head is not None
    assert head.hash == rows[1].hash


@given(
    price=st.integers(min_value=0, max_value=MAX_AMOUNT),
    fee_bps=st.integers(min_value=0, max_value=10_000),
    evaluator_share=st.floats(min_value=0, max_value=1),
)
def test_the_legs_of_a_split_sum_to_the_price(price: int, fee_bps: int, evaluator_share: float) -> None:
    """L8: provider + evaluator + platform fee = price, with the fee floored and nothing else rounded."""
    fee = price * fee_bps // 10_000
    evaluator_fee = int((price - fee) * evaluator_share)
    legs = split(price, fee_bps, evaluator_fee)
    assert legs.total == legs.provider + legs.evaluator + legs.platform_fee == price
    assert legs.platform_fee == fee
    assert legs.evaluator == evaluator_fee
    assert legs.provider >= 0


def test_an_evaluator_fee_over_what_is_left_is_refused() -> None:
    with pytest.raises(InvalidInput):
        split(1000, 1000, 901)


@given(st.integers(min_value=0, max_value=MAX_AMOUNT))
def test_micro_units_round_trip_through_decimal_strings(micros: int) -> None:
    text = format_amount(micros)
    assert len(text.partition(".")[2]) == 6
    assert parse_amount(text) == micros
    assert Decimal(text) * MICROS == micros


@given(
    st.decimals(min_value=0, max_value=10**9, places=6, allow_nan=False, allow_infinity=False),
    st.sampled_from([str, lambda d: float(str(d))]),
)
def test_decimal_strings_and_json_numbers_parse_exactly(value: Decimal, as_sent: object) -> None:
    sent = as_sent(value)  # type: ignore[operator]
    micros = parse_amount(sent)
    assert Decimal(format_amount(micros)) == Decimal(str(sent))


@pytest.mark.parametrize(
    "bad", ["0.0000001", "-1", "NaN", "Infinity", "abc", "", None, True, 1e-7, float("nan")]
)
def test_amounts_that_would_need_rounding_or_make_no_sense_are_refused(bad: object) -> None:
    with pytest.raises(InvalidInput):
        parse_amount(bad)


def test_a_positive_amount_may_be_required() -> None:
    assert parse_amount("0") == 0
    with pytest.raises(InvalidInput):
        parse_amount("0", positive=True)
    assert parse_amount("0.0025") == 2500
    assert format_amount(-2500) == "-0.002500"
