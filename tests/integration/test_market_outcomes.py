"""The marketplace on realized outcomes (issue 19), on SQLite and PostgreSQL: ``route: best`` goes
to the leaderboard's leader (and to the cheapest, saying so, while nothing is ranked); a common
round asks every opted-in offer one free question per symbol and horizon, as of the same data,
exactly once however often it runs, and moves no money; an evaluator's ``quality_score`` and a
provider's rating come from score rows, null before any."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, update

from prediction_provider.db.ledger_models import LedgerTransfer
from prediction_provider.db.market_models import ModelOwner
from prediction_provider.db.models import PredictionJob, User
from prediction_provider.db.outcome_models import PredictionScore, ScoringHead
from prediction_provider.jobs.records import JobStatus
from prediction_provider.marketplace.offers import NewOffer, Priced
from prediction_provider.marketplace.quality import realized_quality
from prediction_provider.marketplace.requests import Submission
from prediction_provider.outcomes import metrics
from prediction_provider.outcomes.service import Outcomes
from tests.integration.market_world import CURRENCY, MODEL, SPEC, START, World, build_world

PRICE, FEE = 500_000, 100_000
LEADER = "market-outcomes-leader"
OTHER = "market-outcomes-other"


@pytest.fixture(params=["sqlite", "postgresql"])
def world(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[World]:
    if request.param == "postgresql":
        url = request.getfixturevalue("postgres_url")
    else:
        url = f"sqlite:///{tmp_path / 'outcomes.db'}"
    built = build_world(url, tmp_path, price=PRICE, evaluator_fee=FEE, max_open_requests=50)
    built.marketplace.outcomes = Outcomes(built.db, built.clock, built.settings)
    with built.db.session() as session:
        for name in (LEADER, OTHER):
            session.add(ModelOwner(model_name=name, provider_id=built.provider.user_id, assigned_by="test",
                                   assigned_at=START))  # fmt: skip
    yield built
    built.close()


def publish(world: World, model: str, price: int, *, symbols: tuple[str, ...] = ("EURUSD",),
            horizons: tuple[int, ...] = (1,), opt_in: bool = False) -> Priced:  # fmt: skip
    return world.marketplace.offers.publish(
        world.provider,
        NewOffer(model, None, "direction", symbols, "1h", horizons, price, CURRENCY, "platform",
                 benchmark_opt_in=opt_in),
    )  # fmt: skip


def score_rows(
    world: World, model: str, p_right: float, n: int, *, offer_id: str | None = None,
    evaluator_id: int | None = None, days: int = 8,
) -> None:  # fmt: skip
    """``n`` current, eligible direction scores of ``model`` over ``days`` distinct days of the last
    month, each saying ``p_right`` for what then happened; the scorer's pass counter moves, as a
    scoring transaction does."""
    now = world.clock.now()
    rows = []
    for i in range(n):
        as_of = now - timedelta(days=1 + i % days, hours=i % 7)
        realized = 0.001 if i % 2 == 0 else -0.002
        p_up = p_right if realized > 0 else 1 - p_right
        rows.append(score_row(model, as_of, {"direction": metrics.direction_metrics(p_up, realized)},
                              offer_id=offer_id, evaluator_id=evaluator_id,
                              provider_id=world.provider.user_id))  # fmt: skip
    insert_scores(world, rows)


def score_row(model: str, as_of: datetime, judged: dict[str, Any], **fields: Any) -> PredictionScore:
    values: dict[str, Any] = {
        "request_id": str(uuid.uuid4()), "row": 0, "version": 1, "current": True, "source": "market",
        "status": "scored", "model_name": model, "model_version": "1", "symbol": "EURUSD",
        "interval": "1h", "horizon": 1, "as_of": as_of, "target_time": as_of + timedelta(hours=1),
        "bars": [], "context": {"base_rate": 0.5, "last_up": True, "periods_per_year": 6048.0},
        "metrics": judged, "metric_version": "1", "eligible": True, "score_set": "organic",
        "recorded_at": as_of, "scored_at": as_of + timedelta(hours=2),
    }  # fmt: skip
    return PredictionScore(**(values | fields))


def insert_scores(world: World, rows: list[PredictionScore]) -> None:
    with world.db.session() as session:
        session.add_all(rows)
        session.execute(update(ScoringHead).where(ScoringHead.id == 1).values(passes=ScoringHead.passes + 1))


def buy_best(world: World, key: str) -> dict[str, Any]:
    job, created = world.marketplace.submit(
        world.client, Submission(SPEC, 10 * PRICE, CURRENCY, target="direction", route="best"), key
    )
    assert created
    return world.marketplace.view(job)


def transfers(world: World) -> int:
    with world.db.session() as session:
        return int(session.scalar(select(func.count()).select_from(LedgerTransfer)) or 0)


def round_jobs(world: World) -> list[PredictionJob]:
    """What the lead's leaderboard reads for a round: the benchmark account's jobs."""
    with world.db.session() as session:
        benchmark = session.scalar(select(User.id).where(User.username == world.settings.benchmark_username))
        return list(session.scalars(select(PredictionJob).where(PredictionJob.owner_id == benchmark)))


# -- route: best -------------------------------------------------------------------------------------


def test_route_best_with_nothing_ranked_goes_to_the_cheapest_and_says_so(world: World) -> None:
    world.deposit(10 * PRICE, str(uuid.uuid4()))
    publish(world, LEADER, 3 * PRICE)
    score_rows(world, LEADER, 0.9, 10)  # scored, but too few to be ranked: provisional
    view = buy_best(world, "best-1")
    assert view["offer_id"] == world.offer_id  # the world's offer is the cheapest
    assert view["route"] == "best"
    assert "no matching offer is ranked" in view["route_reason"]
    assert "cheapest" in view["route_reason"]


def test_route_best_goes_to_the_leaderboard_leader_not_the_cheapest(world: World) -> None:
    world.deposit(10 * PRICE, str(uuid.uuid4()))
    leader = publish(world, LEADER, 3 * PRICE)
    publish(world, OTHER, 2 * PRICE)
    score_rows(world, OTHER, 0.55, 40)
    score_rows(world, LEADER, 0.8, 40)
    score_rows(world, MODEL, 0.45, 40)  # the cheapest offer's model: ranked, last
    view = buy_best(world, "best-2")
    assert view["offer_id"] == leader.offer.id
    assert view["model"] == LEADER
    assert view["route_reason"].startswith(f"best: {LEADER}@1 ranks 1")
    cheapest, created = world.marketplace.submit(
        world.client, Submission(SPEC, 10 * PRICE, CURRENCY, target="direction", route="cheapest"), "cheap-1"
    )
    assert created
    assert cheapest.offer_id == world.offer_id


def test_route_best_skips_a_leader_nobody_offers(world: World) -> None:
    world.deposit(10 * PRICE, str(uuid.uuid4()))
    second = publish(world, OTHER, 2 * PRICE)
    score_rows(world, "a-model-without-offers", 0.9, 40)
    score_rows(world, OTHER, 0.7, 40)
    view = buy_best(world, "best-3")
    assert view["offer_id"] == second.offer.id
    assert view["route_reason"].startswith(f"best: {OTHER}@1 ranks 2")


# -- common rounds -----------------------------------------------------------------------------------


def opted_world(world: World) -> tuple[Priced, Priced]:
    world.marketplace.offers.set_benchmark_opt_in(world.provider, world.offer_id, True)
    wide = publish(world, LEADER, PRICE, symbols=("EURUSD", "GBPUSD"), horizons=(1, 2), opt_in=True)
    publish(world, OTHER, PRICE)  # not opted in: never asked
    return world.marketplace.offers.get(world.offer_id), wide


def test_a_round_asks_each_opted_in_offer_each_question_once_for_free(world: World) -> None:
    evaluated, wide = opted_world(world)
    before = transfers(world)
    report = world.marketplace.rounds.run()
    assert len(report.created) == 1 + 2 * 2
    assert not report.skipped
    jobs = round_jobs(world)
    assert sorted(j.id for j in jobs) == sorted(report.created)
    asked = sorted((j.offer_id, j.input["symbol"], j.input["horizon"]) for j in jobs)
    assert asked == sorted(
        [(evaluated.offer.id, "EURUSD", 1)]
        + [(wide.offer.id, s, h) for s in ("EURUSD", "GBPUSD") for h in (1, 2)]
    )
    assert {j.price for j in jobs} == {0}
    assert {j.hold_transfer_id for j in jobs} == {None}
    assert {j.parameters["round"] for j in jobs} == {report.round_id}
    assert len({j.data_as_of for j in jobs}) == 1  # every question as of the same data
    assert {j.kind for j in jobs} == {"evaluation", "market"}
    assert transfers(world) == before

    again = world.marketplace.rounds.run(report.data_time)
    assert again.created == []
    assert sorted(again.existing) == sorted(report.created)
    assert len(round_jobs(world)) == 5
    assert transfers(world) == before

    with world.db.session() as session:
        benchmark = session.scalar(select(User).where(User.username == world.settings.benchmark_username))
        assert benchmark is not None
        assert benchmark.role == "client"
        assert not benchmark.is_active


def test_two_workers_running_one_round_ask_each_question_once(world: World) -> None:
    opted_world(world)
    world.marketplace.rounds.benchmark()  # both workers find the account
    at = world.clock.now()
    barrier = threading.Barrier(2)
    made: list[list[str]] = []
    lock = threading.Lock()

    def worker() -> None:
        barrier.wait()
        report = world.marketplace.rounds.run(at)
        with lock:
            made.append(report.created)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(len(m) for m in made) == 5
    assert len(round_jobs(world)) == 5


def test_an_evaluator_answering_a_round_question_earns_nothing(world: World) -> None:
    evaluated, _ = opted_world(world)
    before = transfers(world)
    report = world.marketplace.rounds.run()
    job = next(j for j in round_jobs(world) if j.offer_id == evaluated.offer.id)
    leases = world.marketplace.leases
    claim = leases.claim(world.evaluator, job.id)
    paid = leases.result(world.evaluator, claim["claim_id"], claim["lease_token"], {"p_up": 0.7})
    assert paid["request_status"] == "completed"
    assert paid["paid"] == "0.000000"
    assert transfers(world) == before
    assert leases.stats(world.evaluator)["earnings"] == "0.000000"
    assert report.round_id in world.marketplace.view(job)["round"]


def test_a_missed_round_answer_stays_as_an_expired_request(world: World) -> None:
    opted_world(world)
    world.marketplace.rounds.run()
    world.clock.advance(2 * 3600)
    world.marketplace.sweeper.sweep()
    missed = [j for j in round_jobs(world) if j.status in (JobStatus.FAILED, JobStatus.EXPIRED)]
    assert len(missed) == 5
    assert all(j.parameters.get("round") for j in missed)


def test_rounds_run_on_the_schedule_at_utc_midnight_once(world: World) -> None:
    opted_world(world)
    sweeper = world.marketplace.sweeper
    assert sweeper.sweep()["round_requests"] == 0  # START is noon: the first round is at 00:00
    world.clock.set(datetime(2031, 3, 3, 23, 59, 59, tzinfo=START.tzinfo))
    assert sweeper.sweep()["round_requests"] == 0
    world.clock.set(datetime(2031, 3, 4, 0, 0, 30, tzinfo=START.tzinfo))
    assert sweeper.sweep()["round_requests"] == 5
    assert sweeper.sweep()["round_requests"] == 0
    assert {j.parameters["round"] for j in round_jobs(world)} == {"2031-03-04T00:00:00Z"}


# -- quality from realized outcomes ----------------------------------------------------------------


def test_quality_score_is_null_before_any_score_then_the_realized_hit_rate(world: World) -> None:
    leases, evaluator = world.marketplace.leases, world.evaluator
    stats = leases.stats(evaluator)
    assert stats["quality_score"] is None
    assert stats["scored_n"] == 0
    as_of = world.clock.now() - timedelta(days=2)
    up, down, rtn = metrics.direction_metrics, 0.001, metrics.return_metrics
    rows = [
        score_row(MODEL, as_of, {"direction": up(0.8, down)}, evaluator_id=evaluator.user_id),  # hit
        score_row(MODEL, as_of, {"direction": up(0.7, down)}, evaluator_id=evaluator.user_id),  # hit
        score_row(MODEL, as_of, {"direction": up(0.3, -down)}, evaluator_id=evaluator.user_id),  # hit
        score_row(MODEL, as_of, {"direction": up(0.5, down)}, evaluator_id=evaluator.user_id),  # abstains
        score_row(MODEL, as_of, {"return": rtn(0.01, -0.02)}, evaluator_id=evaluator.user_id),  # sign miss
        score_row(MODEL, as_of, {"direction": up(0.2, down)}, evaluator_id=evaluator.user_id),  # miss
        # Not counted: another evaluator's, an ineligible and a superseded score.
        score_row(MODEL, as_of, {"direction": up(0.1, down)}, evaluator_id=world.client.user_id),
        score_row(MODEL, as_of, {"direction": up(0.1, down)}, evaluator_id=evaluator.user_id,
                  eligible=False, ineligible_reason="late"),
        score_row(MODEL, as_of, {"direction": up(0.1, down)}, evaluator_id=evaluator.user_id, current=False),
    ]  # fmt: skip
    insert_scores(world, rows)
    stats = leases.stats(evaluator)
    assert stats["scored_n"] == 5
    assert stats["quality_score"] == pytest.approx(3 / 5)
    assert stats["mean_primary_metric"] == stats["quality_score"]


def test_a_providers_rating_is_its_models_realized_hit_rate(world: World) -> None:
    with world.db.session() as session:
        assert realized_quality(session, provider_id=world.provider.user_id).value is None
    score_rows(world, LEADER, 0.8, 10)  # every answer right
    score_rows(world, OTHER, 0.3, 10)  # every answer wrong
    with world.db.session() as session:
        total = realized_quality(session, provider_id=world.provider.user_id)
        leader = realized_quality(session, provider_id=world.provider.user_id, model_name=LEADER)
    assert (total.value, total.n) == (0.5, 20)
    assert leader.value == 1.0
