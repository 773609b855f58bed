"""Evaluator leases on a real database (Q1): evaluators racing for one request get one claim;
"next" claims (``FOR UPDATE SKIP LOCKED`` on PostgreSQL) hand each queued request to exactly one
evaluator; a result from the winner completes the request and pays its fee."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from prediction_provider.db.market_models import EvaluatorClaim
from prediction_provider.errors import MarketNotFound
from prediction_provider.marketplace.leases import AlreadyClaimed
from tests.integration.market_world import World, build_world

PRICE, FEE = 500_000, 100_000


@pytest.fixture(params=["sqlite", "postgresql"])
def world(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[World]:
    if request.param == "postgresql":
        url = request.getfixturevalue("postgres_url")
    else:
        url = f"sqlite:///{tmp_path / 'leases.db'}"
    built = build_world(url, tmp_path, price=PRICE, evaluator_fee=FEE, max_open_requests=50)
    yield built
    built.close()


def race(n: int, attempt: Callable[[], dict]) -> tuple[list[dict], list[Exception]]:
    barrier = threading.Barrier(n)
    won: list[dict] = []
    lost: list[Exception] = []
    lock = threading.Lock()

    def run() -> None:
        barrier.wait()
        try:
            result = attempt()
        except (AlreadyClaimed, MarketNotFound) as exc:
            with lock:
                lost.append(exc)
        else:
            with lock:
                won.append(result)

    threads = [threading.Thread(target=run) for _ in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return won, lost


def test_racing_evaluators_get_one_claim_per_request(world: World) -> None:
    world.deposit(10 * PRICE, str(uuid.uuid4()))
    one, _ = world.submit(PRICE, str(uuid.uuid4()))
    leases = world.marketplace.leases
    won, lost = race(12, lambda: leases.claim(world.evaluator, one.id))
    assert len(won) == 1
    assert len(lost) == 11
    assert all(isinstance(exc, AlreadyClaimed) for exc in lost)
    ids = [world.submit(PRICE, str(uuid.uuid4()))[0].id for _ in range(3)]
    taken, empty = race(12, lambda: leases.claim(world.evaluator, None))
    assert sorted(c["request_id"] for c in taken) == sorted(ids)
    assert len(empty) == 9
    with world.db.session() as session:
        active = session.scalar(
            select(func.count()).select_from(EvaluatorClaim).where(EvaluatorClaim.state == "active")
        )
    assert active == 4
    paid = leases.result(world.evaluator, won[0]["claim_id"], won[0]["lease_token"], {"p_up": 0.55})
    assert paid["request_status"] == "completed"
    assert paid["paid"] == "0.100000"
    assert world.accounts()[f"evaluator:{world.evaluator.user_id}"][3] == FEE
