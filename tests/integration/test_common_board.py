"""The common set's leaderboard: a model that leaves a round's question unanswered is scored on
it anyway, as a coin flip the first time and as the worst baseline after, so skipping rounds can
never lift its rank."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from prediction_provider.clock import ManualClock
from prediction_provider.config import Settings
from prediction_provider.db import migrate
from prediction_provider.db.models import PredictionJob, User
from prediction_provider.db.outcome_models import PredictionScore
from prediction_provider.db.session import Database
from prediction_provider.outcomes.service import BoardQuery, Outcomes
from tests.integration.database_fixtures import sqlite_url

START = datetime(2026, 3, 2, 0, 0, tzinfo=UTC)


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    url = sqlite_url(tmp_path)
    migrate.upgrade(url)
    database = Database(url)
    yield database
    database.dispose()


def test_missed_round_answers_score_coin_flip_then_the_worst_baseline(db: Database, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, scoring_interval_s=0)
    with db.session() as session:
        bench = User(username=settings.benchmark_username, email="b@example.com", role="client",
                     is_active=False, password_hash="-")  # fmt: skip
        session.add(bench)
        session.flush()
        for day in range(2):
            as_of = START + timedelta(days=day)
            target = as_of + timedelta(hours=1)
            realized = 0.002  # up: y = 1
            context = {"base_rate": 0.3, "last_up": False, "periods_per_year": 6048.0}
            session.add(
                PredictionScore(
                    request_id=str(uuid.uuid4()), row=0, version=1, current=True, source="market",
                    status="scored", model_name="answers", model_version="1", symbol="EURUSD",
                    interval="1h", horizon=1, as_of=as_of, target_time=target, resolved_time=target,
                    realized_return=realized, bars=[], context=context,
                    metrics={"direction": {"p": 0.7, "y": 1, "brier": 0.09, "log_loss": 0.35, "hit": 1}},
                    metric_version="1", eligible=True, score_set="common",
                    outcome_key=f"EURUSD|1h|{target.isoformat()}", recorded_at=as_of, scored_at=target,
                )
            )  # fmt: skip
            session.add(
                PredictionJob(
                    id=str(uuid.uuid4()), owner_id=bench.id, kind="market", model_reference="skips",
                    model_name="skips", model_version="1", input={"symbol": "EURUSD", "horizon": 1},
                    input_hash="0" * 64, parameters={"target": "direction", "interval": "1h",
                                                     "round": f"2026-03-0{2 + day}T00:00:00Z"},
                    status="expired", data_as_of=as_of, target_time=target, created_at=as_of,
                )
            )  # fmt: skip
    board = Outcomes(db, ManualClock(START + timedelta(days=3)), settings).leaderboard(
        BoardQuery(target="direction", window="all", score_set="common", min_n=1, min_days=1)
    )
    entries = {entry["key"]: entry for entry in board["entries"] + board["provisional"]}
    skipped = entries["skips@1"]
    assert skipped["n"] == 2
    # first miss: p = 0.5 -> 0.25; second: the worst of coin flip 0.25, base rate (0.3 - 1)^2 = 0.49,
    # persistence (0.4 - 1)^2 = 0.36 -> 0.49
    assert skipped["brier"] == pytest.approx((0.25 + 0.49) / 2, abs=1e-12)
    assert entries["answers@1"]["brier"] == pytest.approx(0.09, abs=1e-12)
    assert entries["answers@1"]["rank"] == 1
