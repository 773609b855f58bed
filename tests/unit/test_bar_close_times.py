"""Bars are identified by their close time: an open-labelled bar is not read before it has closed,
and nothing closing after the clock is released (the market replay)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from prediction_provider.clock import ManualClock
from prediction_provider.features.feeders import MemoryFeeder
from prediction_provider.features.feeders.samples import SampleFeeder
from prediction_provider.features.pipeline import FEATURE_NAMES, WARMUP_BARS, compute_features
from prediction_provider.features.point_in_time import PointInTimeFeatures

EURUSD = SampleFeeder().bars("EURUSD", "1h").iloc[:800]
HOUR = timedelta(hours=1)
LATE = datetime(2030, 1, 1, tzinfo=UTC)  # a clock past every bar


def store(label: str, clock: ManualClock | None = None) -> PointInTimeFeatures:
    now = (clock or ManualClock(LATE)).now
    return PointInTimeFeatures(MemoryFeeder({"EURUSD": EURUSD}, "1h"), clock=now, bar_label=label)  # type: ignore[arg-type]


def label(position: int) -> datetime:
    when: datetime = EURUSD.index[position].to_pydatetime()
    return when


def test_an_open_labelled_bar_is_read_only_once_it_has_closed() -> None:
    pit = store("open")
    half_way = pit.snapshot("EURUSD", label(500) + timedelta(minutes=30))
    # Bar 500 opened at its label and closes an hour later: half way, bar 499 is the last closed.
    assert half_way.data_as_of == label(499) + HOUR
    training = compute_features(EURUSD)
    assert [half_way.values[name] for name in FEATURE_NAMES] == training.loc[EURUSD.index[499]].tolist()
    assert half_way.age == timedelta(minutes=30)
    at_its_close = pit.snapshot("EURUSD", label(500) + HOUR)
    assert at_its_close.data_as_of == label(500) + HOUR
    assert pit.close_offset("EURUSD") == HOUR


def test_close_labelled_bars_are_known_at_their_label_as_before() -> None:
    pit = store("close")
    half_way = pit.snapshot("EURUSD", label(500) + timedelta(minutes=30))
    assert half_way.data_as_of == label(500)
    assert pit.snapshot("EURUSD").data_as_of == label(len(EURUSD) - 1)
    assert pit.close_offset("EURUSD") == timedelta(0)
    assert pit.bars("EURUSD", label(500)).index[-1] == EURUSD.index[500]


def test_closed_bars_never_reach_past_the_clock() -> None:
    clock = ManualClock(label(600) + timedelta(minutes=10))
    pit = store("open", clock)
    closed = pit.closed_bars("EURUSD")
    assert closed.index.name == "close_time"
    assert str(closed.index.tz) == "UTC"
    assert list(closed.columns) == list(EURUSD.columns)
    # Bar 599 closed at 600's label; bar 600 is still open ten minutes in.
    assert closed.index[-1] == EURUSD.index[599] + HOUR
    assert closed["close"].iloc[-1] == EURUSD["close"].iloc[599]
    assert len(closed) == 600
    # An ``until`` past the clock reads no further; one before it cuts earlier.
    assert closed.equals(pit.closed_bars("EURUSD", LATE))
    assert pit.closed_bars("EURUSD", label(100)).index[-1] == EURUSD.index[99] + HOUR
    after = pit.closed_bars("EURUSD", after=label(590))
    assert after.index[0] == EURUSD.index[590] + HOUR
    assert after.index[-1] == closed.index[-1]
    clock.advance(50 * 60)
    assert pit.closed_bars("EURUSD").index[-1] == EURUSD.index[600] + HOUR


def test_a_time_past_the_clock_reads_no_bar_after_the_clock() -> None:
    clock = ManualClock(label(600) + timedelta(minutes=10))
    pit = store("open", clock)
    assert pit.snapshot("EURUSD", LATE).data_as_of == label(599) + HOUR
    assert pit.bars("EURUSD", LATE).index[-1] == EURUSD.index[599]
    assert pit.bars("EURUSD").index[-1] == EURUSD.index[599]
    latest = pit.snapshot("EURUSD")
    assert latest.as_of == clock.now()
    assert latest.data_as_of == label(599) + HOUR


def test_too_early_names_the_first_usable_close() -> None:
    from prediction_provider.errors import InsufficientHistory

    pit = store("open")
    with pytest.raises(InsufficientHistory) as raised:
        pit.snapshot("EURUSD", label(WARMUP_BARS))  # bar WARMUP_BARS opens then; it has not closed
    assert (label(WARMUP_BARS) + HOUR).isoformat() in raised.value.message


def test_an_unknown_bar_label_is_refused() -> None:
    with pytest.raises(ValueError, match="bar_label"):
        PointInTimeFeatures(MemoryFeeder({}), bar_label="middle")  # type: ignore[arg-type]


def test_the_bar_label_and_market_clock_settings() -> None:
    from pydantic import ValidationError

    from prediction_provider.config import Settings

    settings = Settings.model_validate(
        {"bar_label": "open", "market_clock": "replay", "market_clock_start": "2018-01-08T16:00:00Z"}
    )
    assert settings.market_clock_start == datetime(2018, 1, 8, 16, tzinfo=UTC)
    assert Settings().bar_label == "close"
    assert Settings().market_clock == "off"
    with pytest.raises(ValidationError, match="timezone-aware"):
        Settings.model_validate({"market_clock_start": "2018-01-08T16:00:00"})
    with pytest.raises(ValidationError):
        Settings(market_clock_speed=0)
