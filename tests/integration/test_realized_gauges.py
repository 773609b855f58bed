"""The realized-outcome gauges against a real database (SQLite and PostgreSQL): accuracy and Brier
skill per model version and horizon equal an independent scikit-learn / NumPy computation over the
current scored rows of the last 30 days; a pass in another process shows at the next scrape; a
pass of the scorer ``build_scorer`` makes refreshes them by itself."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from prometheus_client import CollectorRegistry
from sklearn.metrics import accuracy_score, brier_score_loss
from sqlalchemy import update

from prediction_provider.clock import Clock, ManualClock
from prediction_provider.config import Settings
from prediction_provider.db import migrate
from prediction_provider.db.models import PredictionRecord
from prediction_provider.db.outcome_models import PredictionScore, ScoringHead
from prediction_provider.db.session import Database
from prediction_provider.features.market_data import load_sample_bars
from prediction_provider.features.market_sources import MarketSources
from prediction_provider.outcomes.factory import build_scorer
from prediction_provider.outcomes.gauges import (
    RealizedCollector,
    latest_realized,
    refresh_realized_gauges,
)
from tests.integration.database_fixtures import sqlite_url

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
GROUPS = (("acme", "1", 1), ("acme", "1", 3), ("acme", "2", 1), ("zenith", None, 1))


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    url = sqlite_url(tmp_path) if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    migrate.upgrade(url)
    database = Database(url)
    yield database
    database.dispose()


@dataclass
class ScoredServices:
    """What the collector reads of an app's services."""

    db: Database
    clock: Clock


def score_row(
    model: str, version: str | None, horizon: int, target: datetime, p: float, y: int, base_rate: float,
    *, current: bool = True, status: str = "scored", source: str = "forecast", request_id: str | None = None,
    row_version: int = 1, direction: bool = True,
) -> PredictionScore:  # fmt: skip
    hit = None if p == 0.5 else int((p > 0.5) == (y == 1))
    metrics: dict[str, Any] = {"return": {"squared_error": 0.0}}
    if direction:
        metrics["direction"] = {"p": p, "y": y, "brier": (p - y) ** 2, "log_loss": 0.0, "hit": hit}
    return PredictionScore(
        request_id=request_id or str(uuid.uuid4()), row=0, version=row_version, current=current,
        source=source, status=status, model_name=model, model_version=version, symbol="ACME",
        interval="1h", horizon=horizon, as_of=target - horizon * timedelta(hours=1), target_time=target,
        metrics=metrics if status == "scored" else {}, context={"base_rate": base_rate},
        metric_version="1", eligible=True, recorded_at=target, scored_at=target,
    )  # fmt: skip


def insert_scores(db: Database, seed: int = 3) -> pd.DataFrame:
    """Scores of the four groups within the window, plus rows the gauges must leave out: older than
    30 days, superseded versions, void scores and scores without a direction metric. Returns the
    rows that count, for the reference computation."""
    rng = np.random.default_rng(seed)
    counted = []
    with db.session() as session:
        for model, version, horizon in GROUPS:
            for n in range(40):
                p = 0.5 if n % 9 == 0 else float(rng.uniform(0.01, 0.99))
                y = int(rng.integers(0, 2))
                base_rate = float(rng.uniform(0.3, 0.7))
                target = NOW - timedelta(hours=int(rng.integers(1, 29 * 24)))
                request_id = str(uuid.uuid4())
                # An older version of the same answer (a revised bar rescored it): not counted.
                session.add(score_row(model, version, horizon, target, 1 - p, 1 - y, base_rate,
                                      current=False, request_id=request_id))  # fmt: skip
                session.add(score_row(model, version, horizon, target, p, y, base_rate,
                                      request_id=request_id, row_version=2))  # fmt: skip
                counted.append((model, version or "", horizon, p, y, base_rate))
            old = NOW - timedelta(days=31)
            session.add(score_row(model, version, horizon, old, 0.99, 0, 0.5))
            session.add(
                score_row(model, version, horizon, NOW - timedelta(hours=2), 0.9, 0, 0.5, status="void")
            )
            session.add(
                score_row(model, version, horizon, NOW - timedelta(hours=3), 0.9, 0, 0.5, direction=False)
            )
    return pd.DataFrame(counted, columns=["model", "version", "horizon", "p", "y", "base_rate"])


def reference(frame: pd.DataFrame) -> dict[tuple[str, str, str], tuple[float, float]]:
    """Accuracy (scikit-learn, abstentions left out) and Brier skill against the base rate."""
    found = {}
    for (model, version, horizon), group in frame.groupby(["model", "version", "horizon"]):
        decided = group[group["p"] != 0.5]
        accuracy = accuracy_score(decided["y"], (decided["p"] > 0.5).astype(int))
        brier = brier_score_loss(group["y"], group["p"])
        base = float(np.mean((group["base_rate"].to_numpy() - group["y"].to_numpy()) ** 2))
        found[(str(model), str(version), str(horizon))] = (float(accuracy), 1.0 - brier / base)
    return found


def registry_of(db: Database, clock: Clock) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(RealizedCollector(lambda: ScoredServices(db, clock)))
    return registry


def gauge(registry: CollectorRegistry, name: str, model: str, version: str, horizon: str) -> float | None:
    return registry.get_sample_value(name, {"model": model, "version": version, "horizon": horizon})


def test_refresh_sets_accuracy_and_brier_skill_per_model_version_and_horizon(db: Database) -> None:
    counted = insert_scores(db)
    snapshot = refresh_realized_gauges(db, ManualClock(NOW))
    expected = reference(counted)
    assert {(f.model, f.version, str(f.horizon)) for f in snapshot.figures} == set(expected)

    registry = registry_of(db, ManualClock(NOW))
    for (model, version, horizon), (accuracy, skill) in expected.items():
        assert gauge(registry, "pp_realized_accuracy", model, version, horizon) == pytest.approx(
            accuracy, abs=1e-12
        )
        assert gauge(registry, "pp_realized_brier_skill", model, version, horizon) == pytest.approx(
            skill, abs=1e-12
        )
        assert gauge(registry, "pp_realized_records", model, version, horizon) == 40
    # Every score row ever written, superseded versions and void ones included.
    assert registry.get_sample_value("pp_scored_total", {"source": "forecast", "status": "scored"}) == 4 * (
        80 + 2
    )
    assert registry.get_sample_value("pp_scored_total", {"source": "forecast", "status": "void"}) == 4


def test_a_pass_elsewhere_shows_at_the_next_scrape(db: Database) -> None:
    insert_scores(db)
    clock = ManualClock(NOW)
    registry = registry_of(db, clock)
    before = gauge(registry, "pp_realized_records", "acme", "1", "1")
    assert before == 40

    # Another process (a worker's pass) writes a score and takes the scoring head.
    with db.session() as session:
        session.add(score_row("acme", "1", 1, NOW - timedelta(hours=1), 0.8, 1, 0.5))
        session.execute(update(ScoringHead).where(ScoringHead.id == 1).values(passes=ScoringHead.passes + 1))
    assert gauge(registry, "pp_realized_records", "acme", "1", "1") == 41


def test_a_pass_of_the_built_scorer_refreshes_the_gauges(db: Database, tmp_path: Path) -> None:
    bars = load_sample_bars("EURUSD")
    as_of, target = bars.index[400].to_pydatetime(), bars.index[401].to_pydatetime()
    settings = Settings(data_dir=tmp_path, scoring_interval_s=0)  # the sample bars, by close time
    with db.session() as session:
        session.add(
            PredictionRecord(
                request_id=str(uuid.uuid4()), row=0, created_at=as_of, channel="forecast", user_id=None,
                model_name="eurusd-1h-forecast", model_version="1", symbol="EURUSD", interval="1h",
                as_of=as_of, data_as_of=as_of, horizon=1, target_time=target, feature_hash="f" * 64,
                label="up", probabilities={"down": 0.3, "up": 0.7}, value=0.0001,
                answer={"interval_80": [-0.001, 0.001]}, latency_ms=1.0,
            )
        )  # fmt: skip
    clock = ManualClock(target + timedelta(days=1))
    market = MarketSources(settings)
    try:
        scorer = build_scorer(settings, db, clock, market, None)
        assert scorer is not None
        assert scorer.run().scored == 1
    finally:
        market.close()
    snapshot = latest_realized(db)
    assert snapshot is not None
    [figure] = snapshot.figures
    close_as_of, close_target = float(bars["close"].iloc[400]), float(bars["close"].iloc[401])
    assert (figure.model, figure.version, figure.horizon, figure.records) == ("eurusd-1h-forecast", "1", 1, 1)
    assert figure.accuracy == (1.0 if close_target > close_as_of else 0.0)
