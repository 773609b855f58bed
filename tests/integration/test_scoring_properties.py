"""Scoring reads no bar closing after the clock, as a property: for random bar series (open- or
close-labelled), forecasts made at random bars and a random clock time t, every bar the scorer
reads and every outcome it resolves closed at or before t, and a forecast whose target bar had not
closed by t stays pending."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from prediction_provider.clock import ManualClock
from prediction_provider.config import Settings
from prediction_provider.db import migrate
from prediction_provider.db.models import PredictionRecord
from prediction_provider.db.outcome_models import PredictionScore
from prediction_provider.db.session import Database
from prediction_provider.features.feeders import MemoryFeeder
from prediction_provider.features.point_in_time import PointInTimeFeatures
from prediction_provider.outcomes.scoring import Scorer
from tests.integration.database_fixtures import sqlite_url
from tests.unit.test_point_in_time_properties import bar_frame, returns, spread

HOUR = timedelta(hours=1)


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Database]:
    url = sqlite_url(tmp_path_factory.mktemp("scoring-properties"))
    migrate.upgrade(url)
    database = Database(url)
    yield database
    database.dispose()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), label=st.sampled_from(["open", "close"]))
def test_scoring_as_of_t_reads_no_bar_closing_after_t(
    db: Database, tmp_path: Path, data: st.DataObject, label: str
) -> None:
    count = data.draw(st.integers(40, 90))
    bars = bar_frame(
        data.draw(st.lists(returns, min_size=count, max_size=count)),
        data.draw(st.lists(spread, min_size=count, max_size=count)),
        "2017-03-22 08:00",
    )
    symbol = f"S{uuid.uuid4().hex[:8].upper()}"
    clock = ManualClock(bars.index[0].to_pydatetime())
    features = PointInTimeFeatures(MemoryFeeder({symbol: bars}, "1h"), clock=clock.now, bar_label=label)
    offset = HOUR if label == "open" else timedelta(0)
    closes = [t.to_pydatetime() + offset for t in bars.index]
    made = sorted(set(data.draw(st.lists(st.integers(0, count - 2), min_size=1, max_size=6))))
    horizons = {at: data.draw(st.integers(1, 5)) for at in made}
    ids = []
    with db.session() as session:
        for at in made:
            request_id = str(uuid.uuid4())
            ids.append(request_id)
            session.add(
                PredictionRecord(
                    request_id=request_id, row=0, created_at=closes[at], channel="predict", user_id=None,
                    model_name="m", model_version="1", symbol=symbol, interval="1h", as_of=closes[at],
                    data_as_of=closes[at], horizon=horizons[at], target_time=closes[at] + horizons[at] * HOUR,
                    feature_hash="0" * 64, probabilities={"down": 0.4, "up": 0.6}, value=0.0,
                    answer={}, latency_ms=0.0,
                )
            )  # fmt: skip
    now = closes[0] + timedelta(minutes=data.draw(st.integers(0, (count + 8) * 60)))
    clock.set(now)
    read: list[pd.DataFrame] = []

    def bars_of(sym: str, interval: str | None, until: datetime) -> pd.DataFrame:
        frame = features.closed_bars(sym, until)
        read.append(frame)
        return frame

    Scorer(db, clock, Settings(data_dir=tmp_path, scoring_interval_s=0), bars_of, lambda s: "1h").run()
    assert all(frame.index.max() <= pd.Timestamp(now) for frame in read if len(frame))
    with db.session() as session:
        scores = {
            s.request_id: s
            for s in session.scalars(select(PredictionScore).where(PredictionScore.symbol == symbol))
        }
    for request_id, at in zip(ids, made, strict=True):
        target = closes[at] + horizons[at] * HOUR
        score = scores.get(request_id)
        if score is not None and score.status == "scored":
            assert score.resolved_time is not None
            assert score.resolved_time <= now
            assert score.resolved_time >= target
        if target > now:  # its outcome did not exist at t
            assert score is None
