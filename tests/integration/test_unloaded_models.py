"""Unloaded model names: stored in the database, followed by every process, refused by the cache."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from prediction_provider.config import Settings
from prediction_provider.db import migrate
from prediction_provider.db.models import ModelServingState
from prediction_provider.db.session import Database
from prediction_provider.errors import ModelUnloaded
from prediction_provider.serving.unloaded import UnloadedModels, follow_unloaded_models
from tests.conftest import MODEL
from tests.integration.database_fixtures import sqlite_url
from tests.integration.test_model_cache import make_cache
from tests.integration.test_throttle import redis_url  # noqa: F401 - fixture

# No background poll within a test: the state changes only when the test changes it.
HOUR = 3600.0


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    url = sqlite_url(tmp_path) if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    migrate.upgrade(url)
    db = Database(url)
    yield db
    db.dispose()


def started(db: Database, redis: str | None = None) -> UnloadedModels:
    state = UnloadedModels(db, HOUR, redis)
    state.start()
    return state


def test_an_unload_outlives_the_process_that_made_it(database: Database) -> None:
    first = started(database)
    first.unload(MODEL, "ops")
    first.unload(MODEL, "ops")  # twice is one row, not a conflict
    assert first.names == {MODEL}
    first.close()
    restarted = started(database)
    assert restarted.names == {MODEL}
    restarted.load(MODEL, "admin")
    assert restarted.names == frozenset()
    restarted.close()
    with database.session() as session:
        (row,) = session.scalars(select(ModelServingState)).all()
    assert (row.model_name, row.state, row.changed_by) == (MODEL, "loaded", "admin")
    assert row.changed_at.tzinfo is not None
    assert started(database).names == frozenset()


def test_another_process_follows_on_its_next_refresh(database: Database) -> None:
    answering, other = started(database), started(database)
    answering.unload(MODEL, None)
    assert answering.names == {MODEL}
    assert other.names == frozenset()  # its own copy, until it reads the table again
    assert other.refresh() == {MODEL}
    answering.load(MODEL, None)
    assert other.refresh() == frozenset()
    answering.close()
    other.close()


def test_through_redis_every_process_follows_at_once(tmp_path: Path, redis_url: str) -> None:  # noqa: F811
    url = sqlite_url(tmp_path)
    migrate.upgrade(url)
    db = Database(url)
    answering, other = started(db, redis_url), started(db, redis_url)
    other.changed.clear()
    answering.unload(MODEL, None)
    assert other.changed.wait(timeout=10), "the other process never heard of the unload"
    assert other.names == {MODEL}
    answering.close()
    other.close()
    db.dispose()


def test_the_cache_refuses_an_unloaded_name_on_every_path(settings: Settings, tmp_path: Path) -> None:
    url = sqlite_url(tmp_path)
    migrate.upgrade(url)
    db = Database(url)
    cache = make_cache(settings)
    state = follow_unloaded_models(cache, db, HOUR, None)
    reference = f"models:/{MODEL}/1"
    cache.get(reference)
    cache.unloaded_names = frozenset({MODEL})  # as between an unload and its eviction
    with pytest.raises(ModelUnloaded):
        cache.peek(reference)  # a hit
    state.unload(MODEL, None)
    assert cache.entries() == []  # evicted: its memory is freed
    for path in (cache.get, cache.resolve):  # a miss, and a job pinning its version
        with pytest.raises(ModelUnloaded) as refused:
            path(reference)
        assert refused.value.code == "model_unloaded"
    with pytest.raises(ModelUnloaded):
        cache.warm(MODEL)
    state.load(MODEL, None)
    assert cache.get(reference).resolved.name == MODEL
    state.close()
    db.dispose()
