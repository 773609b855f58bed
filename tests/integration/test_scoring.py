"""The scorer against a real database (SQLite, and PostgreSQL under the same tests): a forecast is
pending until the bar closing at its target time exists by the clock, then scored exactly once
against an independent reference; a corrected bar makes a new score version and keeps the old;
a trading decision's P&L is exact; self-dealing and stale answers are scored but not eligible."""

from __future__ import annotations

import math
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import brier_score_loss, log_loss
from sqlalchemy import func, select, text, update
from sqlalchemy.exc import DBAPIError

from prediction_provider.clock import ManualClock
from prediction_provider.config import Settings
from prediction_provider.db import migrate
from prediction_provider.db.market_models import ModelOwner, WebhookMessage
from prediction_provider.db.models import PredictionJob, PredictionRecord, TradingDecision, User
from prediction_provider.db.outcome_models import PredictionScore
from prediction_provider.db.session import Database
from prediction_provider.outcomes.scoring import Scorer
from tests.integration.database_fixtures import sqlite_url

HOUR = timedelta(hours=1)
FIRST_CLOSE = datetime(2026, 3, 2, 1, 0, tzinfo=UTC)  # a Monday
MODEL = "acme-1h-forecast"


class Bars:
    """Hourly bars indexed by close time; ``closed`` answers only bars closed by ``until``, as
    ``PointInTimeFeatures.closed_bars`` does. ``revise`` corrects one close (a feeder fix)."""

    def __init__(self, count: int = 400, seed: int = 7) -> None:
        rng = np.random.default_rng(seed)
        closes = 1.1 * np.exp(np.cumsum(rng.normal(0, 0.001, count)))
        index = pd.DatetimeIndex([FIRST_CLOSE + n * HOUR for n in range(count)], tz=UTC)
        self.frame = pd.DataFrame({"close": closes}, index=index)
        self.reads: list[datetime] = []

    def closed(self, symbol: str, interval: str | None, until: datetime) -> pd.DataFrame:
        self.reads.append(until)
        return self.frame[self.frame.index <= until]

    def close_at(self, when: datetime) -> float:
        return float(self.frame.loc[pd.Timestamp(when)]["close"])

    def revise(self, when: datetime, close: float) -> None:
        self.frame.loc[pd.Timestamp(when), "close"] = close


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    url = sqlite_url(tmp_path) if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    migrate.upgrade(url)
    database = Database(url)
    yield database
    database.dispose()


def settings_for(tmp_path: Path, **changes: object) -> Settings:
    return Settings(**{"data_dir": tmp_path, "scoring_interval_s": 0, **changes})  # type: ignore[arg-type]


def add_user(db: Database, name: str, role: str = "client") -> int:
    with db.session() as session:
        user = User(username=name, email=f"{name}@example.com", role=role, is_active=True, password_hash="-")
        session.add(user)
        session.flush()
        return user.id


def record_forecast(
    db: Database, user_id: int | None, as_of: datetime, horizon: int, p_up: float, expected: float,
    *, asked_at: datetime | None = None, model: str = MODEL,
) -> tuple[str, int]:  # fmt: skip
    request_id = str(uuid.uuid4())
    with db.session() as session:
        session.add(
            PredictionRecord(
                request_id=request_id, row=0, created_at=asked_at or as_of, channel="predict",
                user_id=user_id,
                model_name=model, model_version="3", symbol="ACME", interval="1h", as_of=asked_at or as_of,
                data_as_of=as_of, horizon=horizon, target_time=as_of + horizon * HOUR, feature_hash="f" * 64,
                label="up" if p_up > 0.5 else "down",
                probabilities={"down": (1 - p_up) * 0.8, "flat": 0.2, "up": p_up * 0.8}, value=expected,
                answer={"interval_80": [expected - 0.002, expected + 0.002]}, latency_ms=1.0,
            )
        )  # fmt: skip
    return request_id, 0


def scorer(db: Database, clock: ManualClock, bars: Bars, tmp_path: Path, **changes: object) -> Scorer:
    return Scorer(db, clock, settings_for(tmp_path, **changes), bars.closed, lambda symbol: "1h")


def scores_of(db: Database, request_id: str) -> list[PredictionScore]:
    with db.session() as session:
        return list(
            session.scalars(
                select(PredictionScore)
                .where(PredictionScore.request_id == request_id)
                .order_by(PredictionScore.version)
            )
        )


def test_a_forecast_is_pending_until_its_target_bar_closes_then_scored_against_the_reference(
    db: Database, tmp_path: Path
) -> None:
    bars = Bars()
    as_of = FIRST_CLOSE + 300 * HOUR
    clock = ManualClock(as_of + 30 * timedelta(minutes=1))
    client = add_user(db, "alice")
    request_id, _ = record_forecast(db, client, as_of, 3, 0.7, 0.0004)
    scoring = scorer(db, clock, bars, tmp_path)

    clock.set(as_of + 3 * HOUR - timedelta(seconds=1))  # the target bar has not closed yet
    assert scoring.run().scored == 0
    assert scores_of(db, request_id) == []
    assert all(until <= clock.now() for until in bars.reads)  # no bar read past the clock

    clock.set(as_of + 3 * HOUR)
    report = scoring.run()
    assert report.scored == 1
    [score] = scores_of(db, request_id)
    start, end = bars.close_at(as_of), bars.close_at(as_of + 3 * HOUR)
    r = end / start - 1
    y = 1 if r > 0 else 0
    p = 0.7 * 0.8 / (0.7 * 0.8 + 0.3 * 0.8)  # up given not flat
    assert score.status == "scored"
    assert score.current
    assert score.version == 1
    assert score.realized_return == pytest.approx(r, abs=1e-15)
    assert score.metrics["direction"]["brier"] == pytest.approx(brier_score_loss([y], [p]), abs=1e-12)
    assert score.metrics["direction"]["log_loss"] == pytest.approx(
        log_loss([y], [p], labels=[0, 1]), abs=1e-12
    )
    assert score.metrics["return"]["squared_error"] == pytest.approx(
        (0.0004 - math.log(end / start)) ** 2, abs=1e-12
    )
    assert [bar["role"] for bar in score.bars] == ["as_of", "target"]
    assert all(bar["version"] == 1 for bar in score.bars)
    assert score.eligible, score.ineligible_reason
    # point-in-time base rate: up-moves among the 250 moves ending at as_of
    closes = bars.frame["close"].to_numpy()
    at = 300
    assert score.context["base_rate"] == pytest.approx(
        np.mean(np.diff(closes[at - 250 : at + 1]) > 0), abs=1e-12
    )

    assert scoring.run().scored == 0  # exactly once
    assert len(scores_of(db, request_id)) == 1


def test_two_scorers_at_once_score_each_record_exactly_once(db: Database, tmp_path: Path) -> None:
    bars = Bars()
    clock = ManualClock(FIRST_CLOSE + 399 * HOUR)
    client = add_user(db, "bob")
    written = [
        record_forecast(db, client, FIRST_CLOSE + (260 + n) * HOUR, 1 + n % 3, 0.4 + (n % 5) / 10, 0.0)[0]
        for n in range(60)
    ]
    second_db = Database(db.url)
    first, second = scorer(db, clock, bars, tmp_path), scorer(second_db, clock, bars, tmp_path)
    gate = threading.Barrier(2)
    totals: list[int] = []

    def run(one: Scorer) -> None:
        gate.wait()
        totals.append(one.run(limit=25).scored + one.run(limit=25).scored + one.run(limit=25).scored)

    threads = [threading.Thread(target=run, args=(one,)) for one in (first, second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    second_db.dispose()
    with db.session() as session:
        counted = dict(
            session.execute(
                select(PredictionScore.request_id, func.count()).group_by(PredictionScore.request_id)
            ).all()
        )
    assert sorted(counted) == sorted(written)
    assert set(counted.values()) == {1}
    assert sum(totals) == 60


def test_a_revised_bar_makes_a_new_version_and_keeps_the_old(db: Database, tmp_path: Path) -> None:
    bars = Bars()
    as_of = FIRST_CLOSE + 300 * HOUR
    clock = ManualClock(as_of + 2 * HOUR)
    request_id, _ = record_forecast(db, add_user(db, "carol"), as_of, 1, 0.9, 0.001)
    scoring = scorer(db, clock, bars, tmp_path)
    assert scoring.run().scored == 1
    [first] = scores_of(db, request_id)
    target = as_of + HOUR
    start = bars.close_at(as_of)
    bars.revise(target, start * 0.99)  # the feeder corrects the target bar: now a fall
    report = scoring.run()
    assert report.revised_bars == 1
    assert report.rescored == 1
    old, new = scores_of(db, request_id)
    assert (old.version, old.current, new.version, new.current) == (1, False, 2, True)
    assert old.metrics == first.metrics  # the old version is still readable, unchanged
    assert new.realized_return == pytest.approx(-0.01, abs=1e-12)
    assert new.metrics["direction"]["y"] == 0
    assert [bar["version"] for bar in new.bars] == [1, 2]
    assert scoring.run().rescored == 0  # nothing changed since


def test_scores_are_never_edited_on_postgresql(db: Database, tmp_path: Path) -> None:
    if db.url.startswith("sqlite"):
        pytest.skip("the trigger is PostgreSQL's; SQLite has no route that edits scores either")
    bars = Bars()
    as_of = FIRST_CLOSE + 300 * HOUR
    request_id, _ = record_forecast(db, add_user(db, "dave"), as_of, 1, 0.6, 0.0)
    scorer(db, ManualClock(as_of + HOUR), bars, tmp_path).run()
    for statement in (
        update(PredictionScore).where(PredictionScore.request_id == request_id).values(realized_return=0.5),
        text("DELETE FROM prediction_scores"),
    ):
        with pytest.raises(DBAPIError, match="never"), db.session() as session:
            session.execute(statement)
    with db.session() as session:  # marking a version not current is the one change allowed
        session.execute(
            update(PredictionScore).where(PredictionScore.request_id == request_id).values(current=False)
        )


def test_no_bar_within_the_max_delay_makes_the_score_void(db: Database, tmp_path: Path) -> None:
    bars = Bars(count=320)  # the feed stops at bar 319
    as_of = FIRST_CLOSE + 318 * HOUR
    clock = ManualClock(as_of + 2 * HOUR)
    request_id, _ = record_forecast(db, add_user(db, "erin"), as_of, 6, 0.6, 0.0)
    scoring = scorer(db, clock, bars, tmp_path, max_resolve_delay_s=3600 * 24)
    clock.set(as_of + 6 * HOUR + timedelta(hours=23))
    assert scoring.run().void == 0  # still within the delay: pending
    clock.set(as_of + 6 * HOUR + timedelta(hours=24))
    assert scoring.run().void == 1
    [score] = scores_of(db, request_id)
    assert score.status == "void"
    assert not score.eligible
    assert score.ineligible_reason == "no_bar_within_max_delay"


def test_self_dealing_and_stale_answers_are_scored_but_not_eligible(db: Database, tmp_path: Path) -> None:
    bars = Bars()
    as_of = FIRST_CLOSE + 300 * HOUR
    provider, client = add_user(db, "pat", "provider"), add_user(db, "quinn")
    with db.session() as session:
        session.add(ModelOwner(model_name=MODEL, provider_id=provider, assigned_at=as_of))
    own_id, _ = record_forecast(db, provider, as_of, 1, 0.6, 0.0)
    stale_id, _ = record_forecast(db, client, as_of, 1, 0.6, 0.0, asked_at=as_of + timedelta(days=30))
    fair_id, _ = record_forecast(db, client, as_of, 1, 0.6, 0.0)
    scorer(db, ManualClock(as_of + timedelta(days=31)), bars, tmp_path).run()
    [own], [stale], [fair] = scores_of(db, own_id), scores_of(db, stale_id), scores_of(db, fair_id)
    assert (own.eligible, own.ineligible_reason) == (False, "self_dealing_provider")
    assert (stale.eligible, stale.ineligible_reason) == (False, "stale_data")
    assert (fair.eligible, fair.provider, fair.provider_id) == (True, "pat", provider)
    assert own.metrics == fair.metrics  # scored all the same


def test_a_trading_decision_is_scored_on_its_exact_pnl(db: Database, tmp_path: Path) -> None:
    bars = Bars()
    as_of = FIRST_CLOSE + 300 * HOUR
    decision_id = str(uuid.uuid4())
    with db.session() as session:
        session.add(
            TradingDecision(
                decision_id=decision_id, created_at=as_of, user_id=add_user(db, "tess"), symbol="ACME",
                action="buy", confidence=0.7, recommended_quantity=Decimal("1000"), approved=True,
                risk_warnings=[], risk_checks={}, regime_probabilities={}, strategy_weights={},
                strategy="trend", model_name="acme-regime", model_version="1", feature_hash="f" * 64,
                data_as_of=as_of, latency_ms=1.0,
            )
        )  # fmt: skip
    spread, commission = Decimal("0.0001"), Decimal("0.5")
    scoring = scorer(
        db, ManualClock(as_of + 2 * HOUR), bars, tmp_path, decision_horizon_bars=2,
        decision_spread=spread, decision_commission=commission,
    )  # fmt: skip
    assert scoring.run().scored == 1
    [score] = scores_of(db, decision_id)
    entry, exit_ = Decimal(repr(bars.close_at(as_of))), Decimal(repr(bars.close_at(as_of + 2 * HOUR)))
    expected = Decimal("1000") * (exit_ - entry) - Decimal("1000") * spread - 2 * commission
    assert Decimal(score.metrics["decision"]["pnl"]) == expected
    assert score.source == "decision"
    assert score.horizon == 2


def test_a_paid_requests_score_is_announced_to_its_client_in_the_scoring_transaction(
    db: Database, tmp_path: Path
) -> None:
    bars = Bars()
    as_of = FIRST_CLOSE + 300 * HOUR
    client = add_user(db, "uma")
    job_id = str(uuid.uuid4())
    with db.session() as session:
        session.add(
            PredictionJob(
                id=job_id, owner_id=client, kind="market", model_reference=MODEL, model_name=MODEL,
                model_version="3", input={"symbol": "ACME", "horizon": 1}, input_hash="0" * 64,
                parameters={"target": "direction", "interval": "1h"}, status="completed", price=2500,
                currency="USD", data_as_of=as_of, target_time=as_of + HOUR, created_at=as_of,
                finished_at=as_of, webhook_url="https://hooks.example.com/pp",
            )
        )  # fmt: skip
    request_id, _ = record_forecast(db, client, as_of, 1, 0.8, 0.001)
    with db.session() as session:
        session.execute(
            update(PredictionRecord).where(PredictionRecord.request_id == request_id).values(job_id=job_id)
        )
    assert scorer(db, ManualClock(as_of + HOUR), bars, tmp_path).run().scored == 1
    [score] = scores_of(db, request_id)
    assert set(score.metrics) == {"direction"}  # judged on what was bought
    assert score.price == 2500
    with db.session() as session:
        [message] = session.scalars(select(WebhookMessage).where(WebhookMessage.user_id == client)).all()
    assert message.event_type == "prediction_request.scored"
    assert message.url == "https://hooks.example.com/pp"
    assert message.payload["data"]["request_id"] == job_id
    assert message.payload["data"]["metrics"] == score.metrics


def test_the_embedded_scorer_scores_by_itself(db: Database, tmp_path: Path) -> None:
    bars = Bars()
    as_of = FIRST_CLOSE + 300 * HOUR
    request_id, _ = record_forecast(db, add_user(db, "vic"), as_of, 1, 0.6, 0.0)
    scoring = scorer(db, ManualClock(as_of + HOUR), bars, tmp_path, scoring_interval_s=0.01)
    scoring.start()
    try:
        for _ in range(1000):  # waits for the thread, at most ~10 s; no time-based assert
            if scores_of(db, request_id):
                break
            threading.Event().wait(0.01)
    finally:
        scoring.stop()
    assert [score.version for score in scores_of(db, request_id)] == [1]


def test_a_feeder_that_fails_leaves_records_pending_then_void_once_overdue(
    db: Database, tmp_path: Path
) -> None:
    as_of = FIRST_CLOSE + 300 * HOUR
    request_id, _ = record_forecast(db, add_user(db, "wes"), as_of, 1, 0.6, 0.0)

    def broken(symbol: str, interval: str | None, until: datetime) -> pd.DataFrame:
        raise ConnectionError("feeder down")

    clock = ManualClock(as_of + HOUR)
    scoring = Scorer(db, clock, settings_for(tmp_path), broken, lambda symbol: "1h")
    assert scoring.run().pending == 1
    assert scores_of(db, request_id) == []
    clock.set(as_of + HOUR + timedelta(days=7))
    assert scoring.run().void == 1
    [score] = scores_of(db, request_id)
    assert (score.status, score.ineligible_reason) == ("void", "no_bars")
