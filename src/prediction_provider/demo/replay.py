"""Where the demo's market replay starts: inside the sample bars, with history behind and bars ahead."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Literal

from prediction_provider.features.feeders.intervals import Interval

if TYPE_CHECKING:
    from prediction_provider.config import Settings

# Enough bars behind the start for every feature window, and a month of hourly bars still to arrive.
REPLAY_LEAD = timedelta(days=30)
REPLAY_SYMBOL = "EURUSD"
REPLAY_INTERVAL = "1h"


def sample_replay_start(bar_label: Literal["open", "close"] = "open") -> datetime:
    """``REPLAY_LEAD`` before the close of the last sample EURUSD hourly bar (labelled ``bar_label``)."""
    from prediction_provider.features.feeders.samples import SampleFeeder

    feeder = SampleFeeder()
    try:
        last: datetime = feeder.bars(REPLAY_SYMBOL, REPLAY_INTERVAL).index[-1].to_pydatetime()
    finally:
        feeder.close()
    close = last + timedelta(seconds=Interval.parse(REPLAY_INTERVAL).seconds) if bar_label == "open" else last
    return close - REPLAY_LEAD


def demo_market_settings(settings: Settings) -> dict[str, object]:
    """What the demo changes in ``settings``: the market replay over open-labelled sample bars and
    the demo traffic, each unless the environment (or the config file) set it."""
    chosen = settings.model_fields_set
    update: dict[str, object] = {}
    if "demo_traffic" not in chosen:
        update["demo_traffic"] = True
    if "bar_label" not in chosen:
        update["bar_label"] = "open"  # the sample bars are labelled by their open time
    if "market_clock" not in chosen:
        update["market_clock"] = "replay"
    replay = update.get("market_clock", settings.market_clock) == "replay"
    if replay and settings.market_clock_start is None:
        bar_label = update.get("bar_label", settings.bar_label)
        update["market_clock_start"] = sample_replay_start("open" if bar_label == "open" else "close")
    return update


def replay_line(settings: Settings) -> str | None:
    """The line the demo prints about its market clock (``None`` when it runs on the system's)."""
    if settings.market_clock == "replay" and settings.market_clock_start is not None:
        start = settings.market_clock_start.isoformat()
        return (
            f"Market replay: starts at {start} at speed {settings.market_clock_speed:g} "
            "(market seconds per wall second); bars are released as they close"
        )
    if settings.market_clock == "manual":
        return "Market clock: manual (POST /api/v1/admin/clock moves it)"
    return None
