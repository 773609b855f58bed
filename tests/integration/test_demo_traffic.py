"""The built-in demo traffic over the demo models: one latest-bar forecast (and decision) per newly
closed bar as a manual clock releases the sample bars, none while no bar closes. No sleeps."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pandas as pd
import pytest

from prediction_provider.clock import ManualClock
from prediction_provider.demo.replay import sample_replay_start
from prediction_provider.demo.traffic import TRAFFIC_CHANNEL, TRAFFIC_USERNAME, DemoTraffic, demo_traffic
from prediction_provider.errors import UserNotFound
from prediction_provider.features.feeders.samples import SampleFeeder
from prediction_provider.features.market_sources import MarketSources
from prediction_provider.forecasts.records import Requester
from prediction_provider.forecasts.service import ForecastService
from prediction_provider.trading.decisions import DecisionService
from prediction_provider.trading.factory import ManifestMarkets
from tests.conftest import LiveServer

HOUR = timedelta(hours=1)
EURUSD = SampleFeeder().bars("EURUSD", "1h")


def next_close(after: pd.Timestamp) -> pd.Timestamp:
    """The close of the first open-labelled EURUSD bar closing after ``after``."""
    closes = EURUSD.index + HOUR
    return closes[closes > after][0]


@pytest.fixture
def replay(live_server: LiveServer) -> Iterator[tuple[DemoTraffic, ManualClock, MarketSources]]:
    """The demo's models and sample bars on a manual market clock at the demo's replay start."""
    services = live_server.services
    clock = ManualClock(sample_replay_start("open"))
    market = MarketSources(services.settings.model_copy(update={"bar_label": "open"}), clock=clock.now)
    forecasts = ForecastService(
        services.forecasts.cache, services.forecasts.catalog, market, None, clock=clock.now
    )
    models = services.decisions.models
    decisions = DecisionService(
        models, ManifestMarkets(models, market), services.decisions.accounts, services.settings
    )
    traffic = DemoTraffic(forecasts, Requester(None, TRAFFIC_USERNAME, TRAFFIC_CHANNEL), decisions=decisions)
    yield traffic, clock, market
    traffic.stop()
    market.close()


def test_one_forecast_per_newly_closed_bar_and_none_between(
    replay: tuple[DemoTraffic, ManualClock, MarketSources],
) -> None:
    traffic, clock, _ = replay
    first = traffic.tick()
    # The first look asks about the latest closed bar of every served symbol.
    assert sorted((answer.symbol, answer.interval) for answer in first) == [("EURUSD", "1h"), ("GOOG", "1d")]
    eurusd = next(answer for answer in first if answer.symbol == "EURUSD")
    assert eurusd.data_as_of <= clock.now()
    assert eurusd.data_as_of == (EURUSD.index + HOUR)[EURUSD.index + HOUR <= clock.now()][-1]
    assert traffic.tick() == []  # no bar closed

    made = traffic.forecasts_made
    closed = eurusd.data_as_of
    for _ in range(4):
        upcoming = next_close(pd.Timestamp(closed))
        clock.set((upcoming - timedelta(minutes=1)).to_pydatetime())
        assert traffic.tick() == [], "a bar that has not closed is not released"
        clock.set(upcoming.to_pydatetime())
        answers = traffic.tick()
        assert [(answer.symbol, answer.data_as_of) for answer in answers] == [("EURUSD", upcoming)]
        forecast = answers[0].forecast
        assert forecast.data_as_of == upcoming
        # Target close = data_as_of close + h intervals: the close time of the bar h ahead.
        assert [step.target_time for step in forecast.steps] == [
            upcoming + step.step * HOUR for step in forecast.steps
        ]
        decision = answers[0].decision
        assert decision is not None
        assert decision.data_as_of == upcoming
        closed = upcoming
    assert traffic.forecasts_made == made + 4 == len(first) + 4
    # Both demo symbols are traded too: a decision with every forecast.
    assert traffic.decisions_made == traffic.forecasts_made


def test_the_traffic_thread_stops_when_asked(replay: tuple[DemoTraffic, ManualClock, MarketSources]) -> None:
    traffic, _, _ = replay
    traffic.start()
    thread = traffic._thread
    assert thread is not None
    assert thread.is_alive()
    traffic.stop()
    assert not thread.is_alive()
    assert traffic._thread is None


def test_the_served_traffic_asks_as_the_demo_client_or_as_itself(live_server: LiveServer) -> None:
    traffic = demo_traffic(live_server.services)
    assert traffic is not None
    try:
        client = live_server.services.accounts.get("demo-client")
    except UserNotFound:
        assert traffic.requester == Requester(None, TRAFFIC_USERNAME, TRAFFIC_CHANNEL)
    else:
        assert traffic.requester == Requester(client["id"], "demo-client", TRAFFIC_CHANNEL)
