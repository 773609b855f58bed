"""Entry signals recorded and judged against a real database and the real EURUSD signal bars: a
recorded answer is pending until its horizon's last bar has closed by the clock, then scored exactly
once, each side's realized label equal to an independent scan of the bars (stop before target,
close-based); and the judge never reads a bar that closes after the time it judges at."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import select

from prediction_provider.clock import ManualClock
from prediction_provider.config import Settings
from prediction_provider.db import migrate
from prediction_provider.db.models import PredictionRecord
from prediction_provider.db.outcome_models import PredictionScore
from prediction_provider.db.session import Database
from prediction_provider.features.market_data import load_sample_bars
from prediction_provider.forecasts.records import Requester
from prediction_provider.outcomes.scoring import Scorer, candidate_of_record
from prediction_provider.outcomes.signal_outcomes import SignalJudge
from prediction_provider.signals.bars import PriceBars
from prediction_provider.signals.oracle import BinaryIdealOracle, NoiseStream
from prediction_provider.signals.predictor import EntryQuery, EntrySignal
from prediction_provider.signals.records import SignalMarket, SignalRecorder
from tests.integration.database_fixtures import sqlite_url

HOUR = timedelta(hours=1)
PIP = Decimal("0.00001")
TP_POINTS, SL_POINTS = 15, 20  # no costs given: the target gets the 5-point default buffer
# Monday to Thursday of one week inside the sample bars, at ten past a bar's stamp.
ASKED = [datetime(2018, 1, 15, 10, 10, tzinfo=UTC) + n * 17 * HOUR for n in range(6)]


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    url = sqlite_url(tmp_path)
    migrate.upgrade(url)
    database = Database(url)
    yield database
    database.dispose()


@pytest.fixture(scope="module")
def sample() -> pd.DataFrame:
    """The embedded EURUSD hourly bars, stamped by their open time."""
    return load_sample_bars("EURUSD")


def settings_for(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path, scoring_interval_s=0, bar_label="open")


def closed_frame(sample: pd.DataFrame) -> pd.DataFrame:
    """The sample indexed by close time (open-labelled bars close one hour after their stamp)."""
    frame = sample.copy()
    frame.index = frame.index + HOUR
    return frame


def week_end_close(sample: pd.DataFrame, entry_stamp: pd.Timestamp) -> pd.Timestamp:
    """Close time of the first bar after ``entry_stamp`` that closes the trading week: a Friday bar
    stamped at or after 20:00, or a Monday bar after more than a day without bars."""
    stamps = sample.index
    for position in range(stamps.get_loc(entry_stamp) + 1, len(stamps)):
        stamp = stamps[position]
        late_friday = stamp.weekday() == 4 and stamp.hour >= 20
        after_gap = stamp.weekday() == 0 and stamp - stamps[position - 1] > timedelta(days=1)
        if late_friday or after_gap:
            return stamp + HOUR
    raise AssertionError("the sample ends before the week")


def reference_outcome(
    sample: pd.DataFrame, entry_stamp: pd.Timestamp, end_close: pd.Timestamp
) -> dict[str, int]:
    """Scan the bars after the entry bar up to the week's last bar: within a bar the stop is checked
    first (buy: LOW <= SL; sell: HIGH >= SL), then the target on the CLOSE."""
    price = Decimal(repr(float(sample.loc[entry_stamp, "close"])))
    reach = (TP_POINTS + 5) * PIP
    buy_tp, buy_sl = float(price + reach), float(price - SL_POINTS * PIP)
    sell_tp, sell_sl = float(price - reach), float(price + SL_POINTS * PIP)
    after = sample[(sample.index > entry_stamp) & (sample.index + HOUR <= end_close)]
    outcome = {"buy": 0, "sell": 0}
    for side in outcome:
        for _, bar in after.iterrows():
            if side == "buy":
                if bar["low"] <= buy_sl:
                    break
                if bar["close"] >= buy_tp:
                    outcome[side] = 1
                    break
            else:
                if bar["high"] >= sell_sl:
                    break
                if bar["close"] <= sell_tp:
                    outcome[side] = 1
                    break
    return outcome


def noisy_oracle(market: SignalMarket) -> BinaryIdealOracle:
    # Flips three answers in ten, so both hits and misses are scored.
    return BinaryIdealOracle(market.bars, PIP, 30, NoiseStream(0.3, seed=3))


def record_answers(
    db: Database, settings: Settings, market: SignalMarket, clock: ManualClock
) -> list[tuple[datetime, EntrySignal, str]]:
    oracle = noisy_oracle(market)
    recorder = SignalRecorder(db, settings, clock=clock.now, market=lambda: market)
    answered = []
    try:
        for asked in ASKED:
            query = EntryQuery(int(pd.Timestamp(asked).value), TP_POINTS, SL_POINTS)
            signal = oracle.entry(query)
            request_id = recorder.record_entry(
                oracle, query, signal, Requester(None, "tester", "signal"), 0.5
            )
            answered.append((asked, signal, request_id))
        recorder.flush()
    finally:
        recorder.close()
    return answered


def records_of(db: Database) -> dict[str, PredictionRecord]:
    with db.session() as session:
        return {r.request_id: r for r in session.scalars(select(PredictionRecord))}


def scores_of(db: Database) -> list[PredictionScore]:
    with db.session() as session:
        return list(session.scalars(select(PredictionScore)))


def test_a_recorded_entry_signal_is_pending_until_its_week_closes_then_scored_once_against_a_scan(
    db: Database, tmp_path: Path, sample: pd.DataFrame
) -> None:
    settings = settings_for(tmp_path)
    market = SignalMarket.from_settings(settings)
    assert (market.symbol, market.interval) == ("EURUSD", "1h")
    clock = ManualClock(ASKED[-1] + HOUR)
    answered = record_answers(db, settings, market, clock)
    records = records_of(db)
    assert len(records) == len(ASKED)

    closes = closed_frame(sample)
    scorer = Scorer(
        db, clock, settings,
        lambda symbol, interval, until: closes[closes.index <= until], lambda symbol: "1h",
        signal_judge=SignalJudge(settings, market),
    )  # fmt: skip
    expected: dict[str, tuple[dict[str, int], EntrySignal, pd.Timestamp]] = {}
    for asked, signal, request_id in answered:
        record = records[request_id]
        entry_stamp = pd.Timestamp(asked).floor("h")  # ten past: the nearest bar is the one stamped before
        end_close = week_end_close(sample, entry_stamp)
        assert record.channel == "signal"
        assert record.model_name == "binary_ideal_oracle"
        assert (record.symbol, record.interval) == ("EURUSD", "1h")
        assert record.as_of == asked
        assert record.data_as_of == (entry_stamp + HOUR).to_pydatetime()
        assert record.role == "oracle"  # it read a bar closing after the request time, by design
        assert record.target_time == end_close.to_pydatetime()
        assert record.horizon == len(
            sample[(sample.index > entry_stamp) & (sample.index + HOUR <= end_close)]
        )
        expected[request_id] = (reference_outcome(sample, entry_stamp, end_close), signal, end_close)

    week_end = max(end for _, _, end in expected.values())
    clock.set(week_end.to_pydatetime() - timedelta(seconds=1))
    scorer.run()
    assert scores_of(db) == []  # one second before the week's last bar closes: nothing is known

    clock.set(week_end.to_pydatetime())
    report = scorer.run()
    assert report.scored == len(ASKED)
    assert scorer.run().scored == 0  # scored exactly once
    scores = scores_of(db)
    assert len(scores) == len(ASKED)
    realized_sides = set()
    for score in scores:
        reference, signal, end_close = expected[score.request_id]
        realized_sides.update(reference.values())
        assert score.status == "scored"
        assert score.source == "signal"
        assert score.realized_label == f"buy:{reference['buy']},sell:{reference['sell']}"
        assert score.resolved_time == end_close.to_pydatetime()
        judged = score.metrics["entry_signal"]
        assert judged["buy_hit"] == int(signal.buy.binary == reference["buy"])
        assert judged["sell_hit"] == int(signal.sell.binary == reference["sell"])
        assert judged["accuracy"] == (judged["buy_hit"] + judged["sell_hit"]) / 2
        p_one = [a.confidence if a.binary == 1 else 1 - a.confidence for a in (signal.buy, signal.sell)]
        assert judged["brier"] == pytest.approx(
            ((p_one[0] - reference["buy"]) ** 2 + (p_one[1] - reference["sell"]) ** 2) / 2
        )
        assert score.eligible is False  # the oracle never ranks
        assert score.ineligible_reason is not None
    assert realized_sides == {0, 1}  # the week holds both reached and missed targets


class RecordingBars:
    """The judge's bars source, wrapped: what it was asked and what it returned."""

    def __init__(self, market: SignalMarket) -> None:
        self.market = market
        self.returned: list[tuple[datetime, int]] = []  # (now, latest close time returned, ns)

    def __call__(self, now: datetime) -> PriceBars | None:
        bars = self.market.closed_by(now)
        if bars is not None:
            self.returned.append((now, int(bars.times[-1]) + self.market.close_offset_ns))
        return bars


def perturbed_after(market: SignalMarket, now: datetime) -> SignalMarket:
    """The same market with every bar closing after ``now`` replaced by wild prices: a judge that
    read any of them would see every stop and target hit at once."""
    late = market.close_ns > int(pd.Timestamp(now).value)
    bars = market.bars

    def wild(column: np.ndarray, factor: float) -> np.ndarray:
        return np.where(late, column * factor, column)

    changed = PriceBars(
        bars.times, wild(bars.open, 1.0), wild(bars.high, 1.5), wild(bars.low, 0.5), wild(bars.close, 0.7)
    )
    return SignalMarket(changed, market.symbol, "open", 30, market.pip_size)


def test_the_judge_reads_no_bar_closing_after_now(db: Database, tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    market = SignalMarket.from_settings(settings)
    clock = ManualClock(ASKED[-1] + HOUR)
    record_answers(db, settings, market, clock)
    candidates = [candidate_of_record(r) for r in records_of(db).values()]
    source = RecordingBars(market)
    judge = SignalJudge(settings, market, closed_bars=source)
    rng = np.random.default_rng(11)
    start = pd.Timestamp(ASKED[0])
    offsets = rng.integers(0, 14 * 24 * 60, size=40)  # any minute of the two weeks after the first ask
    moments = [(start + pd.Timedelta(minutes=int(m))).to_pydatetime() for m in offsets]
    outcomes = 0
    for now in moments:
        unaware = SignalJudge(settings, perturbed_after(market, now))
        for candidate in candidates:
            judged = judge(candidate, now)
            assert judged == unaware(candidate, now)  # bars closing after now change nothing
            outcomes += judged is not None
    assert source.returned, "the judge read bars"
    assert all(latest <= int(pd.Timestamp(now).value) for now, latest in source.returned)
    assert 0 < outcomes < len(moments) * len(candidates)  # some moments before, some after the week


def test_a_signal_whose_week_runs_past_the_data_is_void_after_the_resolve_delay(
    db: Database, tmp_path: Path
) -> None:
    settings = settings_for(tmp_path)
    market = SignalMarket.from_settings(settings)
    assert market.close_time(len(market.bars) - 1) == datetime(2018, 2, 7, 16, 0, tzinfo=UTC)  # a Wednesday
    clock = ManualClock(datetime(2018, 2, 6, 9, 30, tzinfo=UTC))
    recorder = SignalRecorder(db, settings, clock=clock.now, market=lambda: market)
    oracle = noisy_oracle(market)
    query = EntryQuery(int(pd.Timestamp("2018-02-06T09:05:00Z").value), TP_POINTS, SL_POINTS)
    recorder.record_entry(oracle, query, oracle.entry(query), Requester(None, None, "signal"), 0.1)
    recorder.close()
    (record,) = records_of(db).values()
    # The calendar's week end: Friday 20:00 is the stamp of the week's last bar, which closes at 21:00.
    assert record.target_time == datetime(2018, 2, 9, 21, 0, tzinfo=UTC)
    judge = SignalJudge(settings, market)
    candidate = candidate_of_record(record)
    assert judge(candidate, record.target_time + timedelta(days=6)) is None  # the bars may yet come
    void = judge(candidate, record.target_time + timedelta(days=7, seconds=1))
    assert void is not None
    assert (void["status"], void["reason"]) == ("void", "no_bars")
