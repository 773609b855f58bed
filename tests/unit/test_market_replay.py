"""The market replay: a clock that runs from a start at a speed, and bars released as it passes their
close, so the latest-bar snapshot moves forward bar by bar. Driven by fake wall time, never sleeps."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from prediction_provider.clock import ManualClock, ReplayClock, SystemClock, clock_from_settings
from prediction_provider.config import Settings
from prediction_provider.demo.replay import (
    REPLAY_LEAD,
    demo_market_settings,
    replay_line,
    sample_replay_start,
)
from prediction_provider.features.feeders.samples import SampleFeeder
from prediction_provider.features.market_sources import MarketSources

START = datetime(2018, 1, 8, 16, 0, tzinfo=UTC)
EURUSD = SampleFeeder().bars("EURUSD", "1h")
HOUR = timedelta(hours=1)


class FakeWall:
    """Wall seconds that move only when told."""

    def __init__(self) -> None:
        self.seconds = 1000.0

    def __call__(self) -> float:
        return self.seconds


def test_a_replay_clock_runs_from_its_start_at_its_speed() -> None:
    wall = FakeWall()
    clock = ReplayClock(START, speed=60, wall=wall)
    assert clock.now() == START
    assert clock.manual is False
    wall.seconds += 1.5
    assert clock.now() == START + timedelta(seconds=90)
    wall.seconds += 60
    assert clock.now() == START + timedelta(seconds=90 + 3600)


def test_a_replay_clock_never_goes_back() -> None:
    wall = FakeWall()
    clock = ReplayClock(START, speed=3600, wall=wall)
    wall.seconds += 2
    ahead = clock.now()
    wall.seconds -= 1  # a wall function read out of order
    assert clock.now() == ahead
    wall.seconds -= 10  # before the start
    assert clock.now() == ahead


def test_a_replay_clock_refuses_naive_starts_and_bad_speeds() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        ReplayClock(datetime(2018, 1, 8), 60)
    for speed in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="speed"):
            ReplayClock(START, speed)


def test_the_settings_pick_the_clock() -> None:
    replay = clock_from_settings(
        Settings(market_clock="replay", market_clock_start=START, market_clock_speed=120)
    )
    assert isinstance(replay, ReplayClock)
    assert (replay.start, replay.speed) == (START, 120.0)
    manual = clock_from_settings(Settings(market_clock="manual", market_clock_start=START))
    assert isinstance(manual, ManualClock)
    assert manual.now() == START
    # PP_CLOCK=manual still gives the manual clock POST /api/v1/admin/clock drives.
    assert isinstance(clock_from_settings(Settings(clock="manual", clock_start=START)), ManualClock)
    assert isinstance(clock_from_settings(Settings()), SystemClock)


def test_a_replay_starts_by_default_a_month_before_the_last_sample_bar_closes() -> None:
    last_close = EURUSD.index[-1].to_pydatetime() + HOUR  # the sample bars are open-labelled
    assert sample_replay_start("open") == last_close - REPLAY_LEAD
    replay = clock_from_settings(Settings(market_clock="replay", bar_label="open"))
    assert isinstance(replay, ReplayClock)
    assert replay.start == last_close - REPLAY_LEAD
    assert EURUSD.index[0] < replay.start - timedelta(days=30)  # history behind it


def test_the_demo_runs_on_the_replay_unless_the_environment_says_otherwise(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("PP_MARKET_CLOCK", "PP_BAR_LABEL", "PP_DEMO_TRAFFIC", "PP_MARKET_CLOCK_START"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings()
    demo = settings.model_copy(update=demo_market_settings(settings))
    assert (demo.market_clock, demo.bar_label, demo.demo_traffic) == ("replay", "open", True)
    assert demo.market_clock_start == sample_replay_start("open")
    line = replay_line(demo)
    assert line is not None
    assert demo.market_clock_start.isoformat() in line
    assert "speed 60" in line
    monkeypatch.setenv("PP_MARKET_CLOCK", "off")
    monkeypatch.setenv("PP_BAR_LABEL", "close")
    chosen = Settings()
    assert demo_market_settings(chosen) == {"demo_traffic": True}


def test_a_manual_clock_releases_bars_one_by_one() -> None:
    clock = ManualClock(EURUSD.index[1000].to_pydatetime() + timedelta(minutes=5))
    market = MarketSources(Settings(bar_label="open"), clock=clock.now)
    pit = market.for_symbol("EURUSD", "1h")
    pit.append_bars("EURUSD", EURUSD)  # the store reads these bars whatever PP_FEEDER says
    seen = [pit.snapshot("EURUSD").data_as_of]
    assert seen[0] == EURUSD.index[999].to_pydatetime() + HOUR
    for _ in range(5):
        clock.advance(30 * 60)
        assert pit.snapshot("EURUSD").data_as_of == seen[-1]  # half an hour: nothing new has closed
        clock.advance(30 * 60)
        seen.append(pit.snapshot("EURUSD").data_as_of)
    expected = [EURUSD.index[999 + step].to_pydatetime() + HOUR for step in range(6)]
    assert seen == expected
    assert pit.closed_bars("EURUSD").index[-1] == seen[-1]
    market.close()


def test_market_sources_pass_the_bar_label_and_the_clock_to_every_store() -> None:
    clock = ManualClock(START)
    market = MarketSources(Settings(bar_label="open"), clock=clock.now)
    pit = market.for_symbol("EURUSD", "1h")
    assert pit.bar_label == "open"
    assert pit.close_offset("EURUSD") == HOUR
    assert pit.snapshot("EURUSD").as_of == START
    market.close()
