"""Money under real concurrency on PostgreSQL: threads racing through the product's own paths.

* 20 submits against a wallet that covers exactly 10 → 10 accepted, 10 x 402 insufficient_funds,
  balances exact to the micro-unit, the ledger check ok;
* a completion and a cancel racing on one request's hold → exactly one wins (post xor void);
  the journal's own post and void racing on one hold → one wins, the other is a conflict;
* one Idempotency-Key sent from 8 threads → one request, one hold.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from prediction_provider.db.ledger_models import LedgerTransfer
from prediction_provider.db.models import PredictionJob
from prediction_provider.errors import InsufficientFunds, LedgerConflict, RateLimited
from prediction_provider.ledger.checks import check_ledger
from prediction_provider.ledger.journal import Balance
from prediction_provider.marketplace.service import NotCancellable
from tests.integration.market_world import CURRENCY, World, build_world

M = 1_000_000


@pytest.fixture
def world(postgres_url: str, tmp_path: Path) -> Iterator[World]:
    built = build_world(postgres_url, tmp_path, price=1 * M, evaluator_fee=50_000, max_open_requests=100)
    yield built
    built.close()


def race(calls: list[Callable[[], Any]]) -> list[Any]:
    """Run every call at once (a barrier releases them together); each one's result or exception."""
    barrier = threading.Barrier(len(calls))
    results: list[Any] = [None] * len(calls)

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = calls[i]()
        except Exception as exc:
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not any(thread.is_alive() for thread in threads), "a racing thread hung"
    return results


def client_balance(world: World) -> Balance:
    with world.db.session() as session:
        return world.ledger.journal.balance(session, f"client:{world.client.user_id}", CURRENCY)


def assert_ledger_ok(world: World) -> None:
    with world.db.session() as session:
        report = check_ledger(session)
    assert report.ok, report.violations


def test_twenty_submits_against_a_wallet_for_ten(world: World) -> None:
    world.deposit(10 * M, "fund")
    results = race([partial(world.submit, 1 * M, f"race-{i}") for i in range(20)])
    accepted = [r for r in results if isinstance(r, tuple)]
    refused = [r for r in results if isinstance(r, Exception)]
    assert len(accepted) == 10, results
    assert all(created for _, created in accepted)
    assert len({job.id for job, _ in accepted}) == 10
    assert len(refused) == 10, results
    assert all(isinstance(r, InsufficientFunds) for r in refused), refused
    balance = client_balance(world)
    assert (balance.posted, balance.held, balance.available) == (10 * M, 10 * M, 0)
    with world.db.session() as session:
        holds = session.scalar(select(func.count()).where(LedgerTransfer.kind == "hold"))
        jobs = session.scalar(select(func.count()).select_from(PredictionJob))
    assert (holds, jobs) == (10, 10)
    assert_ledger_ok(world)


def test_completion_and_cancel_race_on_one_hold(world: World) -> None:
    world.deposit(20 * M, "fund")
    outcomes = {"completed": 0, "cancelled": 0}
    for i in range(10):
        job, _ = world.submit(1 * M, f"race-{i}")
        rid = job.id
        done, cancelled = race([
            partial(world.complete, rid, world.evaluator.user_id),
            partial(world.marketplace.cancel, world.client, rid, see_all=False),
        ])  # fmt: skip
        with world.db.session() as session:
            status = session.scalar(select(PredictionJob.status).where(PredictionJob.id == job.id))
            resolutions = list(session.scalars(select(LedgerTransfer.phase).where(
                LedgerTransfer.pending_id == job.hold_transfer_id)))  # fmt: skip
        if done is True:
            assert isinstance(cancelled, NotCancellable), cancelled
            assert (status, resolutions) == ("completed", ["post"])
        else:
            assert done is False, done
            assert isinstance(cancelled, PredictionJob), cancelled
            assert cancelled.status == "cancelled"
            assert (status, resolutions) == ("cancelled", ["void"])
        outcomes[str(status)] += 1
    balance = client_balance(world)
    assert balance.held == 0
    assert balance.posted == 20 * M - outcomes["completed"] * M
    assert_ledger_ok(world)


def test_journal_post_and_void_race_on_one_hold(world: World) -> None:
    """Below the marketplace: the journal itself lets one resolution of a hold through."""
    world.deposit(10 * M, "fund")
    journal = world.ledger.journal
    client = f"client:{world.client.user_id}"
    for i in range(10):
        with world.db.session() as session:
            journal.lock(session)
            journal.hold(session, f"hold:raw-{i}", client, "other-escrow", M, CURRENCY, "hold",
                         world.clock.now())  # fmt: skip

        def resolve(phase: str, i: int = i) -> str:
            with world.db.session() as session:
                journal.lock(session)
                if phase == "post":
                    journal.post(session, f"cap:raw-{i}", f"hold:raw-{i}", "capture")
                else:
                    journal.void(session, f"void:raw-{i}", f"hold:raw-{i}", "void")
            return phase

        results = race([lambda: resolve("post"), lambda: resolve("void")])
        winners = [r for r in results if isinstance(r, str)]
        losers = [r for r in results if isinstance(r, Exception)]
        assert len(winners) == 1, results
        assert len(losers) == 1, results
        assert isinstance(losers[0], LedgerConflict), losers
        with world.db.session() as session:
            resolutions = session.scalar(
                select(func.count()).where(LedgerTransfer.pending_id == f"hold:raw-{i}")
            )
        assert resolutions == 1
    assert client_balance(world).held == 0
    assert_ledger_ok(world)


def test_one_key_from_eight_threads_makes_one_request(world: World) -> None:
    world.deposit(10 * M, "fund")
    results = race([lambda: world.submit(1 * M, "the-same-key") for _ in range(8)])
    assert all(isinstance(r, tuple) for r in results), results
    assert len({job.id for job, _ in results}) == 1
    assert sum(1 for _, created in results if created) == 1
    with world.db.session() as session:
        jobs = session.scalar(select(func.count()).select_from(PredictionJob))
        holds = session.scalar(select(func.count()).where(LedgerTransfer.kind == "hold"))
    assert (jobs, holds) == (1, 1)
    balance = client_balance(world)
    assert (balance.held, balance.available) == (1 * M, 9 * M)
    assert_ledger_ok(world)


def test_twenty_submits_against_the_open_request_cap(postgres_url: str, tmp_path: Path) -> None:
    """The cap of 5 open requests holds exactly under concurrency too: 5 accepted, 15 x 429."""
    world = build_world(postgres_url, tmp_path, price=1 * M, evaluator_fee=50_000, max_open_requests=5)
    try:
        world.deposit(10 * M, "fund")
        results = race([partial(world.submit, 1 * M, f"cap-{i}") for i in range(20)])
        assert sum(1 for r in results if isinstance(r, tuple)) == 5, results
        assert sum(1 for r in results if isinstance(r, RateLimited)) == 15, results
        balance = client_balance(world)
        assert (balance.held, balance.available) == (5 * M, 5 * M)
        assert_ledger_ok(world)
    finally:
        world.close()
