"""Experiment traffic records on both databases: what a served answer and a shadow's answer store,
how the pair lines up, retention, and keyset paging that never repeats or skips a row."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select

from prediction_provider.db import migrate
from prediction_provider.db.modelops_models import Experiment, ShadowRecord
from prediction_provider.db.models import PredictionRecord
from prediction_provider.db.session import Database
from prediction_provider.errors import ExperimentNotFound, InvalidInput
from prediction_provider.modelops.metrics import OpsMetrics
from prediction_provider.modelops.records import (
    ExperimentRecorder,
    RecordQuery,
    ServedRows,
    ShadowRows,
    read_records,
)
from prediction_provider.modelops.shadow import ShadowPairing, ShadowRunner, ShadowSpec
from prediction_provider.serving.loaders.base import ModelOutput
from tests.integration.database_fixtures import sqlite_url

AT = datetime(2026, 11, 20, 13, tzinfo=UTC)
FEATURES = ("ret_1", "vol_20")
CLASSES = ("down", "up")


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    url = sqlite_url(tmp_path) if request.param == "sqlite" else str(request.getfixturevalue("postgres_url"))
    migrate.upgrade(url)
    return url


@pytest.fixture
def database(store_url: str) -> Iterator[Database]:
    db = Database(store_url)
    yield db
    db.dispose()


@pytest.fixture
def recorder(database: Database) -> Iterator[ExperimentRecorder]:
    made = ExperimentRecorder(database, flush_interval_s=0.05)
    yield made
    made.close()


def add_experiment(db: Database, name: str, retention_days: int | None = None) -> None:
    config = {"record": {"retention_days": retention_days}} if retention_days is not None else {}
    with db.session() as session:
        session.add(
            Experiment(
                id=str(uuid.uuid4()), name=name, model="eurusd-direction", state="running", config=config
            )
        )


def served(request_id: str, **changes: object) -> ServedRows:
    base = ServedRows(
        request_id=request_id,
        channel="batch",
        user_id=None,
        username="test-client",
        experiment="exp-a",
        variant="candidate",
        target="models:/eurusd-direction/2",
        forced=False,
        unit_hash="a" * 32,
        outcome_key="EURUSD:2026-11-20T13:00Z",
        model_name="eurusd-direction",
        model_version="2",
        served_by="primary",
        fallback_reason=None,
        status="ok",
        latency_ms=3.5,
        classes=CLASSES,
        predictions=["up", "down"],
        probabilities=np.array([[0.3, 0.7], [0.6, 0.4]]),
        created_at=AT,
        matrix=np.array([[0.001, 0.02], [-0.002, 0.03]]),
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def stored(db: Database, request_id: str) -> list[PredictionRecord]:
    with db.session() as session:
        return list(
            session.scalars(
                select(PredictionRecord)
                .where(PredictionRecord.request_id == request_id)
                .order_by(PredictionRecord.row)
            )
        )


def test_a_served_batch_is_one_row_per_answered_row_with_its_experiment(
    database: Database, recorder: ExperimentRecorder
) -> None:
    answer = served("req-1")
    recorder.record(answer)
    recorder.flush()

    rows = stored(database, "req-1")
    assert [row.row for row in rows] == [0, 1]
    assert [row.label for row in rows] == ["up", "down"]
    assert rows[0].probabilities == pytest.approx({"down": 0.3, "up": 0.7})
    assert rows[1].answer == {"label": "down"}
    assert rows[0].role == "primary"
    assert rows[0].status == "ok"
    assert rows[0].served_by == "primary"
    assert (rows[0].experiment, rows[0].variant, rows[0].target) == ("exp-a", "candidate", answer.target)
    assert rows[0].unit_hash == "a" * 32
    assert rows[0].outcome_key == answer.outcome_key
    assert rows[0].created_at == AT
    assert rows[0].channel == "batch"
    # The hash of exactly what the model saw; features only when the experiment keeps them.
    assert rows[0].feature_hash == hashlib.sha256(np.array([0.001, 0.02], dtype="<f8").tobytes()).hexdigest()
    assert rows[0].features is None


def test_features_are_stored_when_the_experiment_records_them(
    database: Database, recorder: ExperimentRecorder
) -> None:
    recorder.record(served("req-f", feature_names=FEATURES))
    recorder.flush()
    rows = stored(database, "req-f")
    assert rows[1].features == pytest.approx({"ret_1": -0.002, "vol_20": 0.03})


def test_a_rescued_answer_keeps_the_primary_failure_and_names_its_fallback(
    database: Database, recorder: ExperimentRecorder
) -> None:
    recorder.record(
        served(
            "req-fb",
            status="timeout",
            served_by="fallback:models:/eurusd-direction/1",
            fallback_reason="timeout",
        )
    )
    recorder.flush()
    rows = stored(database, "req-fb")
    assert {(row.status, row.served_by, row.fallback_reason) for row in rows} == {
        ("timeout", "fallback:models:/eurusd-direction/1", "timeout")
    }
    assert [row.label for row in rows] == ["up", "down"]  # what the client was answered


def test_a_regression_answer_is_a_value_and_an_unanswered_request_still_counts_its_rows(
    database: Database, recorder: ExperimentRecorder
) -> None:
    recorder.record(served("req-reg", classes=None, probabilities=None, predictions=[0.25, -0.5]))
    recorder.record(
        served("req-err", status="error", served_by="primary", predictions=[], probabilities=None)
    )
    recorder.flush()

    regression = stored(database, "req-reg")
    assert [(row.label, row.value, row.answer) for row in regression] == [
        (None, 0.25, {"value": 0.25}),
        (None, -0.5, {"value": -0.5}),
    ]
    failed = stored(database, "req-err")
    assert [(row.row, row.status, row.label, row.answer) for row in failed] == [
        (0, "error", None, {"error": "error"}),
        (1, "error", None, {"error": "error"}),
    ]


def test_shadow_answers_pair_with_the_primary_rows_they_shadow(
    database: Database, recorder: ExperimentRecorder
) -> None:
    recorder.record(served("req-s"))
    recorder.record_shadow(
        ShadowRows(
            experiment="exp-a", variant="candidate", shadow_of="shadow", target="models:/eurusd-direction/3",
            request_id="req-s", rows=2, unit_hash="a" * 32, created_at=AT, status="ok", latency_ms=4.0,
            classes=CLASSES, predictions=["up", "up"], probabilities=np.array([[0.4, 0.6], [0.45, 0.55]]),
        )
    )  # fmt: skip
    recorder.record_shadow(
        ShadowRows(
            experiment="exp-a", variant="candidate", shadow_of="control", target="models:/eurusd-direction/1",
            request_id="req-s", rows=2, unit_hash="a" * 32, created_at=AT, status="dropped", latency_ms=None,
        )
    )  # fmt: skip
    recorder.flush()

    with database.session() as session:
        pairs = session.execute(
            select(
                PredictionRecord.row, PredictionRecord.label, ShadowRecord.label, ShadowRecord.probabilities
            )
            .join(
                ShadowRecord,
                (ShadowRecord.request_id == PredictionRecord.request_id)
                & (ShadowRecord.row == PredictionRecord.row),
            )
            .where(PredictionRecord.request_id == "req-s", ShadowRecord.shadow_of == "shadow")
            .order_by(PredictionRecord.row)
        ).all()
        dropped = session.scalars(select(ShadowRecord).where(ShadowRecord.shadow_of == "control")).all()
    assert [(row, mine, theirs) for row, mine, theirs, _ in pairs] == [(0, "up", "up"), (1, "down", "up")]
    assert pairs[1][3] == pytest.approx({"down": 0.45, "up": 0.55})
    assert [(row.row, row.status, row.label, row.latency_ms) for row in dropped] == [
        (0, "dropped", None, None),
        (1, "dropped", None, None),
    ]
    assert {(row.model_name, row.model_version) for row in dropped} == {("eurusd-direction", "1")}


async def test_the_shadow_runner_writes_through_the_recorder(
    database: Database, recorder: ExperimentRecorder
) -> None:
    add_experiment(database, "exp-run")
    runner = ShadowRunner(recorder, OpsMetrics(), 4)

    async def shadow() -> ModelOutput:
        return ModelOutput(["down"], np.array([[0.8, 0.2]]))

    pairing = ShadowPairing("req-run", "control", None, CLASSES, AT, ["up"], np.array([[0.3, 0.7]]))
    runner.submit("exp-run", ShadowSpec("models:/eurusd-direction/3"), shadow, pairing)
    await runner.drain()
    recorder.flush()

    page = read_records(database, RecordQuery("exp-run", role="shadow"))
    assert [(item["request_id"], item["row"], item["label"], item["status"]) for item in page.items] == [
        ("req-run", 0, "down", "ok")
    ]
    assert page.items[0]["model_version"] == "3"
    assert page.items[0]["shadow_of"] == "shadow"
    runner.close()


def test_retention_deletes_only_old_rows_of_the_named_experiments(
    database: Database, recorder: ExperimentRecorder
) -> None:
    now = AT + timedelta(days=40)
    recorder.record(served("old-a", created_at=AT))
    recorder.record(served("new-a", created_at=now - timedelta(days=1)))
    recorder.record(served("old-b", created_at=AT, experiment="exp-b"))
    recorder.record(
        served("old-plain", created_at=AT, experiment=None, variant=None)
    )  # not experiment traffic
    recorder.record_shadow(
        ShadowRows("exp-a", "candidate", "shadow", "models:/m/3", "old-a", 2, None, AT, "timeout", 250.0)
    )
    recorder.flush()

    deleted = recorder.enforce_retention(now, {"exp-a": 30})
    assert deleted == 4  # two primary rows and two shadow rows of old-a
    assert stored(database, "old-a") == []
    assert len(stored(database, "new-a")) == 2
    assert len(stored(database, "old-b")) == 2
    assert len(stored(database, "old-plain")) == 2
    with database.session() as session:
        assert session.scalars(select(ShadowRecord)).all() == []


def test_configured_retention_follows_each_experiments_record_settings(
    database: Database, recorder: ExperimentRecorder
) -> None:
    add_experiment(database, "exp-a", retention_days=7)
    add_experiment(database, "exp-b")  # the default: 30 days
    now = AT + timedelta(days=10)
    recorder.record(served("a", created_at=AT))
    recorder.record(served("b", created_at=AT, experiment="exp-b"))
    recorder.flush()

    assert recorder.enforce_configured_retention(now) == 2
    assert stored(database, "a") == []
    assert len(stored(database, "b")) == 2


def test_pages_walk_every_row_once_newest_first_while_rows_keep_arriving(
    database: Database, recorder: ExperimentRecorder
) -> None:
    add_experiment(database, "exp-a")
    for index in range(7):  # two pairs share a created_at: the request id breaks the tie
        recorder.record(served(f"p{index}", created_at=AT + timedelta(seconds=index // 2)))
    recorder.flush()

    seen: list[tuple[str, int]] = []
    cursor = None
    pages = 0
    while True:
        page = read_records(database, RecordQuery("exp-a", limit=3, cursor=cursor))
        seen.extend((item["request_id"], item["row"]) for item in page.items)
        pages += 1
        if pages == 1:  # newer rows written meanwhile sort before the cursor: no shift, no repeat
            recorder.record(served("late", created_at=AT + timedelta(days=1)))
            recorder.flush()
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    expected = [
        (f"p{index}", row)
        for index in sorted(range(7), key=lambda i: (i // 2, f"p{i}"), reverse=True)
        for row in (1, 0)
    ]
    assert seen == expected
    assert pages == 5  # 14 rows, 3 a page


def test_filters_select_variant_request_and_status(database: Database, recorder: ExperimentRecorder) -> None:
    add_experiment(database, "exp-a")
    recorder.record(served("c1", variant="control"))
    recorder.record(served("k1", variant="candidate", status="error", served_by="prior"))
    recorder.record(served("k2", variant="candidate"))
    recorder.flush()

    def ids(**filters: object) -> set[str]:
        page = read_records(database, RecordQuery("exp-a", **filters))  # type: ignore[arg-type]
        return {item["request_id"] for item in page.items}

    assert ids(variant="control") == {"c1"}
    assert ids(variant="candidate", status="error") == {"k1"}
    assert ids(request_id="k2") == {"k2"}
    assert ids(role="shadow") == set()


def test_unknown_experiments_and_foreign_cursors_are_refused(database: Database) -> None:
    with pytest.raises(ExperimentNotFound):
        read_records(database, RecordQuery("no-such-experiment"))
    add_experiment(database, "exp-a")
    with pytest.raises(InvalidInput):
        read_records(database, RecordQuery("exp-a", cursor="not-a-cursor"))
