"""The database feeder on SQLite and on the real PostgreSQL: exact storage, upserts, and caching
another feeder by fetching only what the table does not yet hold."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import select

from prediction_provider.config import Settings
from prediction_provider.db import migrate
from prediction_provider.db.models import TimeSeriesBar
from prediction_provider.db.session import Database
from prediction_provider.errors import InvalidInput, UnknownSymbol
from prediction_provider.features.feeders import MemoryFeeder, feeder_from_settings
from prediction_provider.features.feeders.base import TimeBound
from prediction_provider.features.feeders.database import DatabaseFeeder, session_bars
from prediction_provider.features.feeders.samples import SampleFeeder
from tests.integration.database_fixtures import sqlite_url

EURUSD = SampleFeeder().bars("EURUSD", "1h")


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    url = sqlite_url(tmp_path) if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    migrate.upgrade(url)
    database = Database(url)
    try:
        yield database
    finally:
        database.dispose()


class CountingFeeder(MemoryFeeder):
    """The in-memory feeder, noting every range asked of it."""

    def __init__(self, frames: dict[str, pd.DataFrame], interval: str = "1h") -> None:
        super().__init__(frames, interval)
        self.asked: list[tuple[TimeBound, TimeBound]] = []

    def bars(
        self, symbol: str, interval: str, start: TimeBound = None, end: TimeBound = None
    ) -> pd.DataFrame:
        self.asked.append((start, end))
        return super().bars(symbol, interval, start, end)


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 1, 5, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def utc(text: str) -> pd.Timestamp:
    return pd.Timestamp(text, tz="UTC")


def test_stored_bars_come_back_exactly_and_are_kept_as_decimals(database: Database) -> None:
    feeder = DatabaseFeeder(database)
    goog = SampleFeeder().bars("GOOG", "1d")
    assert feeder.store("EURUSD", "1h", EURUSD, "backtesting") == len(EURUSD)
    feeder.store("GOOG", "1d", goog, "backtesting")
    pd.testing.assert_frame_equal(feeder.bars("EURUSD", "1h"), EURUSD)
    pd.testing.assert_frame_equal(feeder.bars("GOOG", "1d"), goog)
    with database.session() as session:
        first = session.scalars(select(TimeSeriesBar).where(TimeSeriesBar.symbol == "EURUSD").limit(1)).one()
        assert first.time == EURUSD.index[0].to_pydatetime()
        assert first.source == "backtesting"
        if database.engine.dialect.name == "postgresql":
            assert first.open == Decimal(repr(float(EURUSD["open"].iloc[0])))
            assert isinstance(first.open, Decimal)


def test_storing_the_same_bars_again_updates_them_instead_of_duplicating(database: Database) -> None:
    feeder = DatabaseFeeder(database)
    feeder.store("EURUSD", "1h", EURUSD.iloc[:100], "first")
    corrected = EURUSD.iloc[50:150].copy()
    corrected["close"] = corrected["close"] + 0.0001
    feeder.store("EURUSD", "1h", corrected, "second")
    with database.session() as session:
        assert session_bars(session, "EURUSD", "1h") == 150
    stored = feeder.bars("EURUSD", "1h")
    assert stored["close"].iloc[60] == pytest.approx(EURUSD["close"].iloc[60] + 0.0001, abs=1e-12)
    assert stored["close"].iloc[10] == EURUSD["close"].iloc[10]


def test_the_table_alone_serves_what_it_holds_and_resamples_it(database: Database) -> None:
    feeder = DatabaseFeeder(database)
    feeder.store("EURUSD", "1h", EURUSD, "backtesting")
    assert feeder.symbols() == ("EURUSD",)
    assert feeder.default_interval("EURUSD") == "1h"
    four = feeder.bars("EURUSD", "4h", "2017-05-02T00:00Z", "2017-05-03T00:00Z")
    expected = SampleFeeder().bars("EURUSD", "4h", "2017-05-02T00:00Z", "2017-05-03T00:00Z")
    pd.testing.assert_frame_equal(four, expected)
    with pytest.raises(UnknownSymbol):
        feeder.bars("GOOG", "1d")
    with pytest.raises(InvalidInput, match="cannot be built"):
        feeder.bars("EURUSD", "15m")
    assert feeder.forget("EURUSD") == len(EURUSD)
    with pytest.raises(UnknownSymbol):
        feeder.bars("EURUSD", "1h")


def test_as_a_cache_it_fetches_each_span_once(database: Database) -> None:
    upstream = CountingFeeder({"EURUSD": EURUSD})
    cache = DatabaseFeeder(database, upstream, clock=Clock())
    first = cache.bars("EURUSD", "1h", "2017-06-01T00:00Z", "2017-06-10T00:00Z")
    pd.testing.assert_frame_equal(first, EURUSD.loc["2017-06-01":"2017-06-10 00:00"])
    assert len(upstream.asked) == 1
    again = cache.bars("EURUSD", "1h", "2017-06-02T00:00Z", "2017-06-09T00:00Z")
    assert len(upstream.asked) == 1, "a covered range is served from the table"
    pd.testing.assert_frame_equal(again, EURUSD.loc["2017-06-02":"2017-06-09 00:00"])

    later = cache.bars("EURUSD", "1h", "2017-06-05T00:00Z", "2017-06-20T00:00Z")
    assert upstream.asked[-1] == (utc("2017-06-10"), utc("2017-06-20"))
    pd.testing.assert_frame_equal(later, EURUSD.loc["2017-06-05":"2017-06-20 00:00"])
    earlier = cache.bars("EURUSD", "1h", "2017-05-25T00:00Z", "2017-06-03T00:00Z")
    assert upstream.asked[-1] == (utc("2017-05-25"), utc("2017-06-01"))
    pd.testing.assert_frame_equal(earlier, EURUSD.loc["2017-05-25":"2017-06-03 00:00"])
    assert len(upstream.asked) == 3
    with database.session() as session:
        assert session_bars(session, "EURUSD", "1h") == len(EURUSD.loc["2017-05-25":"2017-06-20 00:00"])


def test_open_ended_requests_ask_the_upstream_again_only_after_the_refresh_time(database: Database) -> None:
    clock = Clock()
    stream = CountingFeeder({"EURUSD": EURUSD.iloc[:100]})
    cache = DatabaseFeeder(database, stream, clock=clock, refresh=timedelta(minutes=1))
    pd.testing.assert_frame_equal(cache.bars("EURUSD", "1h"), EURUSD.iloc[:100])
    cache.bars("EURUSD", "1h")
    assert len(stream.asked) == 1

    newer = CountingFeeder({"EURUSD": EURUSD.iloc[:120]})
    cache.upstream = newer
    clock.now += timedelta(seconds=59)
    assert len(cache.bars("EURUSD", "1h")) == 100
    clock.now += timedelta(seconds=1)
    pd.testing.assert_frame_equal(cache.bars("EURUSD", "1h"), EURUSD.iloc[:120])
    # Only what follows the last stored bar is asked for, that bar included (it may have been forming).
    assert newer.asked == [(EURUSD.index[99], None)]


def test_a_new_process_finds_what_another_stored_and_asks_only_beyond_it(database: Database) -> None:
    DatabaseFeeder(database, CountingFeeder({"EURUSD": EURUSD})).bars(
        "EURUSD", "1h", "2017-06-01T00:00Z", "2017-06-02T00:00Z"
    )
    upstream = CountingFeeder({"EURUSD": EURUSD})
    restarted = DatabaseFeeder(database, upstream, clock=Clock())
    restarted.bars("EURUSD", "1h", "2017-06-01T00:00Z", "2017-06-02T00:00Z")
    assert upstream.asked == []
    everything = restarted.bars("EURUSD", "1h")
    pd.testing.assert_frame_equal(everything, EURUSD)
    assert upstream.asked == [(None, utc("2017-06-01")), (utc("2017-06-02"), None)]


def test_an_unknown_symbol_upstream_stores_nothing(database: Database) -> None:
    cache = DatabaseFeeder(database, CountingFeeder({"EURUSD": EURUSD}))
    with pytest.raises(UnknownSymbol):
        cache.bars("GBPUSD", "1h")
    with database.session() as session:
        assert session_bars(session, "GBPUSD", "1h") == 0


def test_settings_put_the_table_in_front_of_the_sample_bars(database: Database, tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path, database_url=database.url, feeder="database", feeder_upstream="backtesting"
    )
    feeder = feeder_from_settings(settings)
    try:
        assert isinstance(feeder, DatabaseFeeder)
        goog = feeder.bars("GOOG", "1d")
        pd.testing.assert_frame_equal(goog, SampleFeeder().bars("GOOG", "1d"))
        assert feeder.default_interval("GOOG") == "1d"
        with database.session() as session:
            assert session_bars(session, "GOOG", "1d") == len(goog)
    finally:
        feeder.close()
