"""Resilience configs, breaker controls and chaos rules: stored in the database and followed by
every process through the ops stamp (two ``Resilience``/``Chaos`` objects stand for two workers)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select

from prediction_provider.clock import ManualClock
from prediction_provider.config import Settings
from prediction_provider.db import migrate
from prediction_provider.db.modelops_models import BreakerOverride, ChaosRule, ModelResilience
from prediction_provider.db.session import Database
from prediction_provider.errors import ModelUnavailable, PredictionFailed
from prediction_provider.modelops import stamp
from prediction_provider.modelops.chaos import Chaos, ChaosRuleIn
from prediction_provider.modelops.metrics import OpsMetrics
from prediction_provider.modelops.resilience import Resilience, ResilienceUpdate
from prediction_provider.modelops.stamp import StampFollower
from tests.integration.database_fixtures import sqlite_url

MODEL = "store-model"
SETTINGS = Settings(breaker_window_size=10, breaker_min_calls=2, breaker_open_s=30.0)


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    url = sqlite_url(tmp_path) if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    migrate.upgrade(url)
    db = Database(url)
    yield db
    db.dispose()


class Worker:
    """One process's resilience and chaos, following the stamp (no background thread: the test
    refreshes, as the follower's thread would within a second)."""

    def __init__(
        self, db: Database, chaos_clock: ManualClock | None = None, settings: Settings = SETTINGS
    ) -> None:
        clock = chaos_clock or ManualClock(datetime(2030, 1, 1, tzinfo=UTC))
        self.chaos = Chaos(db, clock, random.Random(1), lambda _: None, flush_interval_s=0)
        self.resilience = Resilience(db, settings, OpsMetrics(), self.chaos)
        self.follower = StampFollower(db, interval_s=0)
        self.follower.register(self.resilience.reload)
        self.follower.register(self.chaos.reload)

    def refresh(self) -> bool:
        return self.follower.refresh()


def stamp_of(db: Database) -> int:
    with db.session() as session:
        return stamp.read(session)


async def fail() -> str:
    raise PredictionFailed("down")


async def answer() -> str:
    return "answer"


def test_a_config_written_by_one_worker_is_followed_by_another(database: Database) -> None:
    writer, reader = Worker(database), Worker(database)
    before = stamp_of(database)
    update = ResilienceUpdate.model_validate(
        {"timeout_ms": 50, "breaker": {"open_s": 5}, "fallback": ["models:/store-model/1", "prior"]}
    )
    with database.session() as session:
        writer.resilience.put_config(session, MODEL, update, "ops")
    assert stamp_of(database) == before + 1
    assert reader.resilience.config(MODEL).timeout_ms == 0  # not yet followed
    assert reader.refresh()
    config = reader.resilience.config(MODEL)
    assert (config.timeout_ms, config.breaker.open_s, config.fallback) == (
        50,
        5,
        ["models:/store-model/1", "prior"],
    )
    assert config.breaker.min_calls == 2  # the settings' default, not stored
    assert reader.resilience.describe(MODEL)["source"] == "model"
    with database.session() as session:
        row = session.get(ModelResilience, MODEL)
        assert row is not None
        assert row.config == {"timeout_ms": 50.0, "breaker": {"open_s": 5.0}, "fallback": update.fallback}
        assert row.updated_by == "ops"
        assert row.updated_at.tzinfo is not None


def test_a_put_replaces_the_stored_config_back_towards_the_defaults(database: Database) -> None:
    worker = Worker(database)
    with database.session() as session:
        worker.resilience.put_config(session, MODEL, ResilienceUpdate(timeout_ms=50, max_inflight=4), "ops")
    with database.session() as session:
        worker.resilience.put_config(session, MODEL, ResilienceUpdate(max_inflight=2), "ops")
    worker.refresh()
    config = worker.resilience.config(MODEL)
    assert (config.timeout_ms, config.max_inflight) == (0, 2)


def test_force_open_applies_in_every_worker_and_force_closed_lifts_it(database: Database) -> None:
    first, second = Worker(database), Worker(database)
    with database.session() as session:
        first.resilience.control(session, MODEL, "3", "force-open", "ops")
    first.refresh()
    second.refresh()
    for worker in (first, second):
        assert worker.resilience.breaker(MODEL, "3").state == "open"
        with pytest.raises(ModelUnavailable) as refused:
            asyncio.run(worker.resilience.call(MODEL, "3", answer))
        assert refused.value.reason == "circuit_open"
    assert asyncio.run(second.resilience.call(MODEL, "2", answer)) == "answer"  # only version 3
    later = Worker(database)  # a process started after the change applies it too
    assert later.resilience.breaker(MODEL, "3").mode == "force_open"
    with database.session() as session:
        first.resilience.control(session, MODEL, "3", "force-closed", "admin")
    second.refresh()
    for _ in range(5):
        with pytest.raises(PredictionFailed):
            asyncio.run(second.resilience.call(MODEL, "3", fail))
    assert second.resilience.breaker(MODEL, "3").state == "closed"  # forced closed: never judged
    with database.session() as session:
        (row,) = session.scalars(select(BreakerOverride)).all()
    assert (row.model, row.version, row.mode, row.updated_by) == (MODEL, "3", "force_closed", "admin")


def test_reset_closes_a_tripped_breaker_in_every_worker_once(database: Database) -> None:
    first, second = Worker(database), Worker(database)
    for _ in range(2):
        with pytest.raises(PredictionFailed):
            asyncio.run(second.resilience.call(MODEL, "1", fail))
    assert second.resilience.breaker(MODEL, "1").state == "open"
    second.refresh()  # nothing changed: still open
    assert second.resilience.breaker(MODEL, "1").state == "open"
    with database.session() as session:
        first.resilience.control(session, MODEL, "1", "reset", "ops")
    assert second.refresh()
    assert second.resilience.breaker(MODEL, "1").state == "closed"
    for _ in range(2):  # it trips again; an unrelated change must not reset it a second time
        with pytest.raises(PredictionFailed):
            asyncio.run(second.resilience.call(MODEL, "1", fail))
    with database.session() as session:
        first.resilience.put_config(session, "another-model", ResilienceUpdate(timeout_ms=5), "ops")
    assert second.refresh()
    assert second.resilience.breaker(MODEL, "1").state == "open"
    with database.session() as session:
        row = session.get(BreakerOverride, (MODEL, "1"))
        assert row is not None
        assert (row.mode, row.reset_seq) == ("none", 1)


def test_a_new_breaker_config_starts_fresh_breakers(database: Database) -> None:
    worker = Worker(database)
    for _ in range(2):
        with pytest.raises(PredictionFailed):
            asyncio.run(worker.resilience.call(MODEL, "1", fail))
    assert worker.resilience.breaker(MODEL, "1").state == "open"
    with database.session() as session:
        worker.resilience.put_config(
            session, MODEL, ResilienceUpdate.model_validate({"breaker": {"min_calls": 5}}), "o"
        )
    worker.refresh()
    breaker = worker.resilience.breaker(MODEL, "1")
    assert (breaker.state, breaker.config.min_calls) == ("closed", 5)


def test_a_timeout_only_change_keeps_the_breakers_state(database: Database) -> None:
    worker = Worker(database)
    for _ in range(2):
        with pytest.raises(PredictionFailed):
            asyncio.run(worker.resilience.call(MODEL, "1", fail))
    with database.session() as session:
        worker.resilience.put_config(session, MODEL, ResilienceUpdate(timeout_ms=100), "ops")
    worker.refresh()
    assert worker.resilience.breaker(MODEL, "1").state == "open"


def test_chaos_rules_reach_every_worker_and_their_hits_add_up(database: Database) -> None:
    patient = Settings(breaker_window_size=10, breaker_min_calls=10)  # no breaker opens here
    first, second = Worker(database, settings=patient), Worker(database, settings=patient)
    before = stamp_of(database)
    with database.session() as session:
        first.chaos.put(session, MODEL, "1", ChaosRuleIn(fail_rate=1.0, ttl_s=60), "admin")
    assert stamp_of(database) == before + 1
    first.refresh()
    second.refresh()
    for worker, calls in ((first, 2), (second, 3)):
        for _ in range(calls):
            with pytest.raises(PredictionFailed, match="chaos"):
                asyncio.run(worker.resilience.call(MODEL, "1", answer))
    first.chaos.flush()
    second.chaos.flush()
    second.chaos.flush()  # nothing new: nothing added
    with database.session() as session:
        row = session.get(ChaosRule, (MODEL, "1"))
        assert row is not None
        assert (row.hits, row.fail_rate, row.created_by) == (5, 1.0, "admin")
        assert row.expires_at.tzinfo is not None
    with database.session() as session:  # replacing a rule restarts its count
        first.chaos.put(session, MODEL, "1", ChaosRuleIn(delay_ms=10, ttl_s=60), "admin")
    with database.session() as session:
        row = session.get(ChaosRule, (MODEL, "1"))
        assert row is not None
        assert (row.hits, row.fail_rate, row.delay_ms) == (0, 0.0, 10)
    with database.session() as session:
        assert first.chaos.delete(session, MODEL, "1")
    with database.session() as session:
        assert not first.chaos.delete(session, MODEL, "1")
        assert first.chaos.list(session) == []
    second.refresh()
    assert asyncio.run(second.resilience.call(MODEL, "1", answer)) == "answer"


def test_a_chaos_rule_lapses_at_its_ttl_on_the_chaos_clock(database: Database) -> None:
    clock = ManualClock(datetime(2030, 1, 1, tzinfo=UTC))
    worker = Worker(database, clock)
    with database.session() as session:
        worker.chaos.put(session, MODEL, "1", ChaosRuleIn(fail_rate=1.0, ttl_s=30), "admin")
    worker.refresh()
    with pytest.raises(PredictionFailed):
        asyncio.run(worker.resilience.call(MODEL, "1", answer))
    clock.advance(30)
    assert asyncio.run(worker.resilience.call(MODEL, "1", answer)) == "answer"
