"""The ledger check on a real journal (SQLite, and PostgreSQL where the append-only trigger lives):
a healthy journal passes every check; a row changed behind the journal's back, a missing row, a
stored sum that disagrees with the journal, or a finished request whose hold is still open are
each found and named."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from prediction_provider.clock import ManualClock
from prediction_provider.config import Settings
from prediction_provider.db import migrate
from prediction_provider.db.models import PredictionJob, User
from prediction_provider.db.session import Database
from prediction_provider.ledger.checks import LedgerReport, check_ledger, trial_balance
from prediction_provider.ledger.journal import Journal
from prediction_provider.ledger.money import MICROS, split
from prediction_provider.ledger.service import LedgerService
from tests.integration.database_fixtures import sqlite_url

START = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
USD = "USD"
FEE_BPS = 1000


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    url = sqlite_url(tmp_path) if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    migrate.upgrade(url)
    db = Database(url)
    yield db
    db.dispose()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START)


@pytest.fixture
def journal(clock: ManualClock) -> Journal:
    return Journal(clock)


def make_user(db: Database, name: str, role: str = "client") -> int:
    with db.session() as session:
        user = User(username=name, email=f"{name}@example.com", role=role, is_active=True, password_hash="-")
        session.add(user)
        session.flush()
        return user.id


class Market:
    """Paid requests the way the marketplace makes them: a job row holding its price in escrow,
    then captured and split out of escrow, or voided, in the transaction that finishes it."""

    def __init__(self, db: Database, journal: Journal, clock: ManualClock) -> None:
        self.db, self.journal, self.clock = db, journal, clock
        self.provider = make_user(db, "provider-1", "provider")

    def deposit(self, user_id: int, amount: int, key: str) -> None:
        with self.db.session() as session:
            self.journal.lock(session)
            self.journal.single(
                session, f"dep:{user_id}:{key}", "world", f"client:{user_id}", amount, USD, "deposit"
            )

    def submit(
        self, user_id: int, rid: str, price: int, *, offer: str = "offer-1", price_id: str = "p-1"
    ) -> None:
        with self.db.session() as session:
            self.journal.lock(session)
            hold = self.journal.hold(
                session, f"hold:{rid}", f"client:{user_id}", "escrow", price, USD, "hold",
                self.clock.now() + timedelta(hours=1), request_id=rid,
            )  # fmt: skip
            legs = split(price, FEE_BPS)
            session.add(
                PredictionJob(
                    id=rid, owner_id=user_id, kind="market", model_reference="models:/m/1", model_name="m",
                    input_hash="0" * 64, parameters={"provider_id": self.provider, "breakdown": {
                        "provider": legs.provider, "evaluator": 0, "platform_fee": legs.platform_fee}},
                    status="pending", result_files=[], offer_id=offer, price_id=price_id, price=price,
                    currency=USD, hold_transfer_id=hold.id, created_at=self.clock.now(),
                    updated_at=self.clock.now(),
                )
            )  # fmt: skip

    def complete(self, rid: str) -> None:
        with self.db.session() as session:
            self.journal.lock(session)
            job = session.get(PredictionJob, rid)
            assert job is not None
            self.journal.post(session, f"cap:{rid}", f"hold:{rid}", "capture")
            legs = job.parameters["breakdown"]
            provider = f"provider:{self.provider}"
            for tid, payee, amount, kind in (
                (f"fee:{rid}", "platform:fees", legs["platform_fee"], "fee"),
                (f"prv:{rid}", provider, legs["provider"], "payout_provider"),
            ):
                self.journal.single(session, tid, "escrow", payee, amount, USD, kind, request_id=rid)
            job.status = "completed"

    def fail(self, rid: str, status: str = "failed") -> None:
        with self.db.session() as session:
            self.journal.lock(session)
            self.journal.void(session, f"void:{rid}", f"hold:{rid}", "void")
            job = session.get(PredictionJob, rid)
            assert job is not None
            job.status = status

    def refund(self, user_id: int, rid: str, amount: int) -> None:
        with self.db.session() as session:
            self.journal.lock(session)
            payer, payee = f"provider:{self.provider}", f"client:{user_id}"
            self.journal.single(
                session, f"ref:{rid}:1:prv", payer, payee, amount, USD, "refund", request_id=rid
            )


@pytest.fixture
def market(database: Database, journal: Journal, clock: ManualClock) -> Market:
    return Market(database, journal, clock)


def busy_day(market: Market) -> int:
    """Deposits, requests completed, failed, cancelled and still queued, and a refund."""
    alice = make_user(market.db, "alice")
    market.deposit(alice, 10 * MICROS, "d1")
    for n, price in enumerate((2500, 1_000_000, 333_333, 7)):
        market.submit(alice, f"r{n}", price)
    market.complete("r0")
    market.complete("r1")
    market.fail("r2")
    market.submit(alice, "r4", 50_000)
    market.fail("r4", "cancelled")
    market.refund(alice, "r1", 100_000)
    return alice


def report_of(db: Database) -> LedgerReport:
    with db.session() as session:
        return check_ledger(session)


def failed(report: LedgerReport) -> set[str]:
    return {name for name, passed in report.checks.items() if not passed}


def raw(db: Database, statement: str) -> None:
    with db.engine.begin() as connection:
        connection.execute(text(statement))


def test_a_healthy_journal_passes_every_check(market: Market) -> None:
    busy_day(market)
    report = report_of(market.db)
    assert report.ok, report.violations
    assert failed(report) == set()
    assert report.transfers == report.head_seq == 15
    with market.db.session() as session:
        balances = trial_balance(session)
    assert [row["currency"] for row in balances] == [USD]
    assert balances[0]["posted_difference"] == balances[0]["pending_difference"] == "0.000000"
    assert balances[0]["balanced"] is True
    # r3 is still queued: its price is all escrow holds.
    assert balances[0]["credits_pending"] == "0.000007"


def test_an_empty_ledger_is_healthy(database: Database) -> None:
    report = report_of(database)
    assert report.ok
    assert (report.transfers, report.accounts, report.head_seq) == (0, 0, 0)


def test_a_long_journal_is_streamed_batch_by_batch(market: Market) -> None:
    alice = make_user(market.db, "alice")
    with market.db.session() as session:
        market.journal.lock(session)
        for n in range(250):
            market.journal.single(
                session, f"dep:{alice}:{n}", "world", f"client:{alice}", n + 1, USD, "deposit"
            )
    for n in range(20):
        market.submit(alice, f"r{n}", 1000 + n)
    with market.db.session() as session:
        report = check_ledger(session, batch=7)  # many batches, and a hold in most of them
    assert report.ok, report.violations
    assert report.transfers == 270


@pytest.mark.parametrize("database", ["sqlite"], indirect=True)
def test_a_row_changed_behind_the_journal_is_found(market: Market) -> None:
    alice = busy_day(market)
    raw(market.db, f"UPDATE ledger_transfers SET amount = amount + 1 WHERE id = 'dep:{alice}:d1'")
    report = report_of(market.db)
    assert {"hash_chain", "recompute"} <= failed(report)
    changed = [v for v in report.violations if v["check"] == "hash_chain"]
    assert changed[0]["details"]["transfer_id"] == f"dep:{alice}:d1"


@pytest.mark.parametrize("database", ["sqlite"], indirect=True)
def test_a_rewritten_hash_breaks_the_chain(market: Market) -> None:
    busy_day(market)
    raw(market.db, "UPDATE ledger_transfers SET hash = '" + "f" * 64 + "' WHERE seq = 3")
    report = report_of(market.db)
    assert failed(report) == {"hash_chain"}
    assert {v["details"].get("seq") for v in report.violations} == {3, 4}  # its own hash, and the next link


@pytest.mark.parametrize("database", ["sqlite"], indirect=True)
def test_a_missing_row_is_a_gap(market: Market) -> None:
    busy_day(market)
    raw(market.db, "DELETE FROM ledger_transfers WHERE id = 'fee:r0'")
    report = report_of(market.db)
    assert {"seq_gapless", "hash_chain", "recompute"} <= failed(report)
    gap = next(v for v in report.violations if v["check"] == "seq_gapless")
    assert gap["details"]["expected"] == gap["details"]["seq"] - 1


@pytest.mark.parametrize("database", ["sqlite"], indirect=True)
def test_a_renumbered_last_row_is_a_gap_and_disagrees_with_the_head(market: Market) -> None:
    busy_day(market)
    raw(market.db, "UPDATE ledger_transfers SET seq = 99 WHERE seq = 15")
    report = report_of(market.db)
    assert {"seq_gapless", "hash_chain"} <= failed(report)


def test_a_stored_sum_that_disagrees_with_the_journal_is_found(market: Market) -> None:
    alice = busy_day(market)
    raw(
        market.db,
        f"UPDATE ledger_accounts SET credits_posted = credits_posted + 1 WHERE code = 'client:{alice}'",
    )
    report = report_of(market.db)
    assert failed(report) == {"recompute", "conservation"}
    wrong = next(v for v in report.violations if v["check"] == "recompute")
    assert wrong["details"]["account"] == f"client:{alice}"
    assert wrong["details"]["sums"] == {"credits_posted": {"stored": "10.100001", "journal": "10.100000"}}
    with market.db.session() as session:
        assert trial_balance(session)[0]["posted_difference"] == "-0.000001"


def test_a_finished_request_still_holding_money_fails_clearing(market: Market) -> None:
    busy_day(market)
    with market.db.session() as session:
        job = session.get(PredictionJob, "r3")
        assert job is not None
        job.status = "completed"  # finished without its hold being captured or voided
    report = report_of(market.db)
    assert failed(report) == {"clearing"}
    assert any(v["details"].get("request_id") == "r3" for v in report.violations)


def test_money_left_in_escrow_after_a_capture_fails_clearing(market: Market) -> None:
    alice = make_user(market.db, "alice")
    market.deposit(alice, MICROS, "d1")
    market.submit(alice, "r1", 1000)
    with market.db.session() as session:
        market.journal.lock(session)
        market.journal.post(session, "cap:r1", "hold:r1", "capture")  # captured, but never split
        job = session.get(PredictionJob, "r1")
        assert job is not None
        job.status = "completed"
    report = report_of(market.db)
    assert failed(report) == {"clearing"}
    assert any("posted balance" in v["message"] for v in report.violations)


def test_the_journal_refuses_update_and_delete_on_postgresql(postgres_url: str, tmp_path: Path) -> None:
    """L4 in the database itself: the trigger refuses what the ORM guard would (raw SQL included)."""
    migrate.upgrade(postgres_url)
    db = Database(postgres_url)
    try:
        clock = ManualClock(START)
        market = Market(db, Journal(clock), clock)
        alice = busy_day(market)
        statements: list[Callable[[], None]] = [
            lambda: raw(db, f"UPDATE ledger_transfers SET amount = 1 WHERE id = 'dep:{alice}:d1'"),
            lambda: raw(db, "DELETE FROM ledger_transfers WHERE id = 'fee:r0'"),
            lambda: raw(db, "TRUNCATE ledger_transfers CASCADE"),
        ]
        for statement in statements:
            with pytest.raises(DBAPIError, match="append-only"):
                statement()
        assert report_of(db).ok
    finally:
        db.dispose()


def test_a_check_beside_live_traffic_sees_one_state_of_the_ledger(market: Market, tmp_path: Path) -> None:
    """Deposits commit while checks run: each check reads one snapshot, so none reports a
    transfer that committed between its reads of the accounts and of the journal."""
    alice = make_user(market.db, "alice")
    ledger = LedgerService(market.db, market.journal, market.clock, Settings(data_dir=tmp_path))
    stop = threading.Event()
    written = []

    def traffic() -> None:
        n = 0
        while not stop.is_set() and n < 400:
            market.deposit(alice, n + 1, f"live-{n}")
            written.append(n)
            n += 1

    writer = threading.Thread(target=traffic)
    writer.start()
    try:
        reports = [ledger.check() for _ in range(15)]
    finally:
        stop.set()
        writer.join()
    assert written
    assert [report.violations for report in reports if not report.ok] == []
    assert report_of(market.db).ok
