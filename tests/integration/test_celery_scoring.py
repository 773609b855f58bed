"""Scoring in scale-out, on the real brokers: Celery workers run ``prediction_provider.score_due``
passes against PostgreSQL, two at once, and every due record is scored exactly once against the
sample EURUSD bars the workers' feeder serves. ``celery beat`` schedules that task every
``PP_SCORING_INTERVAL_S`` on the workers' queue."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path

import pandas as pd
import pytest
from celery import Celery
from sqlalchemy import func, select

from prediction_provider.clock import SystemClock
from prediction_provider.config import Settings
from prediction_provider.db import migrate
from prediction_provider.db.models import PredictionRecord
from prediction_provider.db.outcome_models import PredictionScore
from prediction_provider.db.session import Database
from prediction_provider.features.market_data import load_sample_bars
from prediction_provider.jobs.celery_app import SCORE_TASK_NAME, make_celery
from prediction_provider.outcomes.scoring import Scorer
from tests.integration.database_fixtures import services_required, sqlite_url
from tests.integration.test_celery_jobs import BROKERS, Workers, _reachable

RESULTS_URL = "redis://127.0.0.1:6379/2"  # the test reads the two passes' reports from here
RECORDS = 240
pytestmark = pytest.mark.scale_out


@pytest.fixture(scope="module", params=sorted(BROKERS))
def broker_url(request: pytest.FixtureRequest) -> str:
    url, address = BROKERS[request.param]
    for name, reachable in ((request.param, _reachable(address)), ("redis", _reachable(("127.0.0.1", 6379)))):
        if not reachable:
            if services_required():
                pytest.fail(f"{name} is required (CI or PP_REQUIRE_SERVICES=1) but unreachable")
            pytest.skip(f"{name} unreachable")
    return url


@pytest.fixture(scope="module")
def scoring_settings(broker_url: str, settings: Settings, postgres_databases: Callable[[], str]) -> Settings:
    url = postgres_databases()
    migrate.upgrade(url)
    return settings.model_copy(
        update={
            "database_url": url,
            "job_backend": "celery",
            "broker_url": broker_url,
            "job_queue": f"test-scoring-{uuid.uuid4().hex[:8]}",
            "job_time_limit_seconds": 120,
            "warm_models": [],
            "grpc_enabled": False,
            "scoring_interval_s": 0,  # only the tasks this test sends score
        }
    )


@pytest.fixture(scope="module")
def workers(scoring_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workers]:
    started = Workers(scoring_settings, tmp_path_factory.mktemp("scoring-workers"))
    # Celery reads a result backend from the environment: the passes' reports come back to the test.
    started.env["CELERY_RESULT_BACKEND"] = RESULTS_URL
    started.start(2)
    try:
        yield started
    finally:
        started.stop()


def sample_closes() -> pd.Series:
    """The sample EURUSD hourly closes as the default feeder serves them (labelled by close time)."""
    bars = load_sample_bars("EURUSD")
    index = pd.DatetimeIndex(bars.index)
    index = index.tz_localize("UTC") if index.tz is None else index.tz_convert("UTC")
    return pd.Series(bars["close"].to_numpy(dtype=float), index=index).sort_index()


def record_due_forecasts(db: Database, closes: pd.Series) -> dict[tuple[str, int], tuple[datetime, datetime]]:
    """RECORDS forecasts made at real bar closes about a later real bar close: all due long ago."""
    made: dict[tuple[str, int], tuple[datetime, datetime]] = {}
    times = list(closes.index)
    with db.session() as session:
        for n in range(RECORDS):
            position = 300 + 7 * n
            horizon = 1 + n % 3
            as_of, target = times[position].to_pydatetime(), times[position + horizon].to_pydatetime()
            p_up = 0.3 + 0.4 * (n % 5) / 4
            request_id = str(uuid.uuid4())
            session.add(
                PredictionRecord(
                    request_id=request_id, row=0, created_at=as_of, channel="forecast", user_id=None,
                    model_name="eurusd-1h-forecast", model_version="1", symbol="EURUSD", interval="1h",
                    as_of=as_of, data_as_of=as_of, horizon=horizon, target_time=target, feature_hash="f" * 64,
                    label="up" if p_up > 0.5 else "down",
                    probabilities={"down": 1 - p_up, "up": p_up}, value=0.0001,
                    answer={"interval_80": [-0.001, 0.001]}, latency_ms=1.0,
                )
            )  # fmt: skip
            made[(request_id, 0)] = (as_of, target)
    return made


def test_two_concurrent_score_due_tasks_score_every_record_exactly_once(
    scoring_settings: Settings, workers: Workers
) -> None:
    db = Database(scoring_settings.database)
    client = Celery(
        "scoring-test", broker=scoring_settings.broker_url, backend=RESULTS_URL, set_as_current=False
    )
    try:
        closes = sample_closes()
        made = record_due_forecasts(db, closes)
        queue = scoring_settings.job_queue
        sent = [client.send_task(SCORE_TASK_NAME, queue=queue) for _ in range(2)]
        try:
            reports = [result.get(timeout=240) for result in sent]
        except Exception as exc:
            raise AssertionError(f"score_due did not answer: {exc!r}\n{workers.logs()}") from exc

        with db.session() as session:
            per_record = dict(
                session.execute(
                    select(PredictionScore.request_id, func.count()).group_by(PredictionScore.request_id)
                ).all()
            )
            scores = {(s.request_id, s.row): s for s in session.scalars(select(PredictionScore))}
        assert per_record == {request_id: 1 for request_id, _ in made}
        assert sum(report["scored"] for report in reports) == RECORDS
        assert all(report["void"] == 0 for report in reports)
        for key, (as_of, target) in made.items():
            score = scores[key]
            # Scored against the sample bars the worker's feeder served, at the recorded close times.
            expected = float(closes[target]) / float(closes[as_of]) - 1.0
            assert score.status == "scored"
            assert score.resolved_time == target
            assert score.realized_return == pytest.approx(expected, abs=1e-15)

        again = client.send_task(SCORE_TASK_NAME, queue=queue).get(timeout=120)
        assert again["scored"] == 0
        assert again["skipped"] == 0
    finally:
        client.close()
        db.dispose()


def test_beat_schedules_score_due_every_scoring_interval_on_the_workers_queue(settings: Settings) -> None:
    configured = settings.model_copy(
        update={
            "broker_url": "redis://127.0.0.1:6379/0",
            "scoring_interval_s": 45.0,
            "job_queue": "scoring-q",
        }
    )
    entries = make_celery(configured).conf.beat_schedule
    assert [entry["task"] for entry in entries.values()] == [SCORE_TASK_NAME]
    [entry] = entries.values()
    assert entry["schedule"] == 45.0
    assert entry["options"]["queue"] == "scoring-q"
    off = configured.model_copy(update={"scoring_interval_s": 0})
    assert make_celery(off).conf.beat_schedule == {}


def test_scoring_embedded_off_leaves_the_passes_to_beat(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PP_SCORING_EMBEDDED", "false")
    settings = Settings(data_dir=tmp_path, scoring_interval_s=5)
    assert settings.scoring_embedded is False
    db = Database(sqlite_url(tmp_path))
    scorer = Scorer(db, SystemClock(), settings, lambda *_: pd.DataFrame(), lambda _: "1h")
    before = {thread.ident for thread in threading.enumerate()}
    scorer.start()  # the API process's start-up: no scoring thread of its own
    try:
        assert {thread.ident for thread in threading.enumerate()} == before
    finally:
        scorer.stop()
        db.dispose()
