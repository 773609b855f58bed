"""Drift counters in a real database (SQLite and PostgreSQL): two monitors ("workers") on one
database store exactly the counts one monitor stores for the same rows, and give the same report;
a version without a reference is looked up once and counts nothing; an upload in one worker is
live in the other after a stamp reload; a reset forgets the counts in both."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from sqlalchemy import select

from prediction_provider.clock import ManualClock
from prediction_provider.config import Settings
from prediction_provider.db import migrate
from prediction_provider.db.modelops_models import DriftCount, OpsStamp
from prediction_provider.db.session import Database
from prediction_provider.modelops.drift.gauges import DriftCollector
from prediction_provider.modelops.drift.monitor import DriftMonitor
from prediction_provider.modelops.drift.reference import build_profile
from prediction_provider.serving.registry import ModelRegistry
from tests.integration.database_fixtures import sqlite_url

NAMES = tuple(f"f{i}" for i in range(16))
CLASSES = ("down", "flat", "up")
MODEL = "drift-store-model"
START = datetime(2026, 5, 4, 9, 0, 5, tzinfo=UTC)
RNG = np.random.default_rng(31)


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> ModelRegistry:
    return ModelRegistry(Settings(data_dir=tmp_path_factory.mktemp("drift_mlflow")))


@pytest.fixture
def databases(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], Database]]:
    """Makes migrated databases of the parametrized kind."""
    made: list[Database] = []

    def make() -> Database:
        if request.param == "sqlite":
            folder = tmp_path / f"db{len(made)}"
            folder.mkdir()
            url = sqlite_url(folder)
        else:
            url = request.getfixturevalue("postgres_databases")()
        migrate.upgrade(url)
        made.append(Database(url))
        with made[-1].session() as session:
            if session.get(OpsStamp, 1) is None:
                session.add(OpsStamp(id=1, version=0))
        return made[-1]

    yield make
    for db in made:
        db.dispose()


def profile() -> dict:
    train = RNG.normal(size=(3000, len(NAMES)))
    return build_profile(
        NAMES, train, labels=RNG.integers(0, 3, 3000).tolist(), classes=CLASSES,
        test_matrix=RNG.normal(size=(1200, len(NAMES))), test_probabilities=RNG.dirichlet([1, 1, 1], 1200),
        window_rows=300,
    )  # fmt: skip


def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path, drift_window_rows=300, drift_min_rows=100, drift_slot_s=60)


def traffic(rows: int) -> list[tuple[np.ndarray, list[str], np.ndarray]]:
    """Batches of 1 to 40 rows, f5 often missing, a drift on f3."""
    batches = []
    done = 0
    while done < rows:
        size = min(rows - done, int(RNG.integers(1, 40)))
        matrix = RNG.normal(size=(size, len(NAMES)))
        matrix[:, 3] += 1.0
        matrix[::8, 5] = np.nan  # at least an eighth of the rows
        probabilities = RNG.dirichlet([1, 2, 1], size)
        labels = [CLASSES[i] for i in probabilities.argmax(axis=1)]
        batches.append((matrix, labels, probabilities))
        done += size
    return batches


def observe(monitor: DriftMonitor, batch: tuple[np.ndarray, list[str], np.ndarray]) -> None:
    matrix, labels, probabilities = batch
    monitor.observe(MODEL, "1", NAMES, matrix, CLASSES, labels, probabilities)


def stored(db: Database) -> list[tuple]:
    with db.session() as session:
        rows = session.execute(
            select(DriftCount.slot_start, DriftCount.series, DriftCount.bin, DriftCount.count).order_by(
                DriftCount.slot_start, DriftCount.series, DriftCount.bin
            )
        ).all()
    return [tuple(row) for row in rows]


@pytest.mark.parametrize("databases", ["sqlite", "postgresql"], indirect=True)
def test_two_workers_store_exactly_the_counts_of_one(
    databases: Callable[[], Database], registry: ModelRegistry, tmp_path: Path
) -> None:
    shared, alone = databases(), databases()
    clock = ManualClock(START)
    reference = profile()
    workers = [DriftMonitor(shared, settings(tmp_path), registry, clock) for _ in range(2)]
    single = DriftMonitor(alone, settings(tmp_path), registry, clock)
    workers[0].save_reference(MODEL, "1", reference, "tester")
    single.save_reference(MODEL, "1", reference, "tester")
    for _minute in range(3):  # three slots, flushed after each (the upsert adds to stored rows)
        for index, batch in enumerate(traffic(400)):
            observe(workers[index % 2], batch)
            observe(single, batch)
        for monitor in (*workers, single):
            monitor.flush()
        clock.advance(60)
    assert stored(shared) == stored(alone)
    assert len({slot for slot, *_ in stored(shared)}) == 3
    reports = [monitor.report(MODEL, "1") for monitor in (*workers, single)]
    assert reports[0] == reports[1] == reports[2]
    report = reports[0]
    assert report["window"]["rows"] == 400  # the newest slot alone reaches 300 rows
    drifted = [f["name"] for f in report["features"] if f["status"] == "drift"]
    assert drifted == ["f3", "f5"]  # shifted; missing where training had none
    f5 = next(f for f in report["features"] if f["name"] == "f5")
    assert f5["missing_share"] == pytest.approx(f5["counts"]["bins"][-1] / 400)
    assert report["prediction"]["top_probability"]["rows"] == 400
    history = workers[1].history(MODEL, "1", "f3")
    assert history is not None
    assert [w["rows"] for w in history["windows"]] == [400, 400, 400]


@pytest.mark.parametrize("databases", ["sqlite"], indirect=True)
def test_a_version_without_reference_is_looked_up_once_and_counts_nothing(
    databases: Callable[[], Database],
    registry: ModelRegistry,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    db = databases()
    monitor = DriftMonitor(db, settings(tmp_path), registry, ManualClock(START))
    lookups: list[tuple[str, str]] = []
    original = monitor._lookup

    def counted(model: str, version: str):  # type: ignore[no-untyped-def]
        lookups.append((model, version))
        return original(model, version)

    monkeypatch.setattr(monitor, "_lookup", counted)
    for batch in traffic(100):
        observe(monitor, batch)
    monitor.flush()
    for batch in traffic(100):
        observe(monitor, batch)
    monitor.flush()
    assert lookups == [(MODEL, "1")]
    assert stored(db) == []
    assert monitor.report(MODEL, "1") is None
    assert monitor.errors == 0


@pytest.mark.parametrize("databases", ["sqlite", "postgresql"], indirect=True)
def test_an_upload_and_a_reset_reach_the_other_worker(
    databases: Callable[[], Database], registry: ModelRegistry, tmp_path: Path
) -> None:
    db = databases()
    clock = ManualClock(START)
    first, second = (DriftMonitor(db, settings(tmp_path), registry, clock) for _ in range(2))
    observe(second, traffic(5)[0])
    second.flush()  # second caches the miss
    first.save_reference(MODEL, "1", profile(), "tester")
    with db.session() as session:
        second.reload(session)  # what its stamp follower does within a second
    batches = traffic(300)
    for batch in batches:
        observe(second, batch)
    second.flush()
    assert first.report(MODEL, "1")["window"]["rows"] == 300  # type: ignore[index]
    clock.advance(10)
    first.reset(MODEL, ["1"])
    with db.session() as session:
        second.reload(session)
    assert first.report(MODEL, "1")["window"]["rows"] == 0  # type: ignore[index]
    for batch in traffic(120):  # same slot as before the reset: counted from the reset on
        observe(second, batch)
    second.flush()
    assert first.report(MODEL, "1")["window"]["rows"] == 120  # type: ignore[index]


@pytest.mark.parametrize("databases", ["sqlite"], indirect=True)
def test_class_priors_never_block_and_are_known_after_the_next_flush(
    databases: Callable[[], Database], registry: ModelRegistry, tmp_path: Path
) -> None:
    db = databases()
    writer = DriftMonitor(db, settings(tmp_path), registry, ManualClock(START))
    writer.save_reference(MODEL, "1", profile(), "tester")
    reader = DriftMonitor(db, settings(tmp_path), registry, ManualClock(START))
    assert reader.class_priors(MODEL, "1") is None  # unknown yet: queued, not looked up here
    reader.flush()
    priors = reader.class_priors(MODEL, "1")
    assert priors is not None
    assert set(priors) == set(CLASSES)
    assert sum(priors.values()) == pytest.approx(1.0)


@pytest.mark.parametrize("databases", ["sqlite"], indirect=True)
def test_gauges_show_the_current_window_of_every_active_version(
    databases: Callable[[], Database], registry: ModelRegistry, tmp_path: Path
) -> None:
    db = databases()
    monitor = DriftMonitor(db, settings(tmp_path), registry, ManualClock(START))
    monitor.save_reference(MODEL, "1", profile(), "tester")
    for batch in traffic(350):
        observe(monitor, batch)
    monitor.flush()

    class Services:
        drift = monitor

    metrics = CollectorRegistry()
    metrics.register(DriftCollector(lambda: Services))
    text = generate_latest(metrics).decode()
    assert f'pp_drift_window_rows{{model="{MODEL}",version="1"}} 350.0' in text
    assert f'pp_drift_status{{feature="f3",model="{MODEL}",version="1"}} 2.0' in text
    assert f'pp_drift_status{{feature="f0",model="{MODEL}",version="1"}} 0.0' in text
    assert f'pp_drift_share{{model="{MODEL}",version="1"}} {2 / 16}' in text
    assert 'pp_drift_score{feature="f0",method="psi"' in text
