"""Feeders: the one bar shape, intervals, resampling, range filtering, duplicate and gap checks,
and choosing a plugin by settings."""

from __future__ import annotations

from importlib.metadata import EntryPoint, entry_points
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from prediction_provider.config import Settings
from prediction_provider.errors import (
    FeederUnavailable,
    InvalidInput,
    InvalidMarketData,
    UnknownSymbol,
)
from prediction_provider.features.feeders import (
    FEEDER_GROUP,
    BarFeeder,
    Interval,
    MemoryFeeder,
    feeder_from_settings,
    feeder_plugins,
    find_gaps,
    load_feeder,
    resample_bars,
)
from prediction_provider.features.feeders import registry as feeder_registry
from prediction_provider.features.feeders.csv_files import CsvFeeder
from prediction_provider.features.feeders.frames import normalise_bars, parse_duration
from prediction_provider.features.feeders.samples import SampleFeeder
from prediction_provider.features.market_data import OHLCV_COLUMNS, load_sample_bars


def hourly(start: str, count: int, first_price: float = 1.0) -> pd.DataFrame:
    """``count`` consecutive hourly bars with distinct, easy-to-check values."""
    index = pd.date_range(start, periods=count, freq="h", tz="UTC", name="time")
    base = first_price + np.arange(count) / 100
    return pd.DataFrame(
        {
            "open": base,
            "high": base + 0.5,
            "low": base - 0.5,
            "close": base + 0.1,
            "volume": np.arange(count) + 1.0,
        },
        index=index,
    )


def assert_feeder_shape(bars: pd.DataFrame) -> None:
    assert list(bars.columns) == list(OHLCV_COLUMNS)
    assert all(dtype == np.float64 for dtype in bars.dtypes)
    assert isinstance(bars.index, pd.DatetimeIndex)
    assert str(bars.index.tz) == "UTC"
    assert bars.index.name == "time"
    assert bars.index.is_monotonic_increasing
    assert not bars.index.has_duplicates


# -- intervals ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "canonical", "seconds"),
    [("1h", "1h", 3600), ("60m", "1h", 3600), ("60min", "1h", 3600), ("4H", "4h", 14400),
     ("1d", "1d", 86400), ("24h", "1d", 86400), ("7d", "1w", 604800), ("1wk", "1w", 604800),
     ("15m", "15m", 900), ("90m", "90m", 5400)],
)  # fmt: skip
def test_intervals_parse_to_one_canonical_spelling(text: str, canonical: str, seconds: int) -> None:
    interval = Interval.parse(text)
    assert (interval.text, interval.seconds) == (canonical, seconds)


@pytest.mark.parametrize("text", ["", "h", "0h", "1M", "3M", "1mo", "1y", "fast"])
def test_unknown_or_monthly_intervals_are_refused(text: str) -> None:
    with pytest.raises(InvalidInput) as raised:
        Interval.parse(text)
    assert raised.value.details[0]["field"] == "interval"


def test_an_interval_divides_only_its_multiples() -> None:
    hour = Interval.parse("1h")
    assert hour.divides(Interval.parse("4h"))
    assert hour.divides(Interval.parse("1d"))
    assert not Interval.parse("4h").divides(hour)
    assert not Interval.parse("90m").divides(Interval.parse("1h"))


def test_weekly_buckets_start_on_monday_and_others_on_utc_midnight() -> None:
    wednesday = pd.Timestamp("2017-03-22 13:30", tz="UTC")
    assert Interval.parse("1w").bucket_start(wednesday) == pd.Timestamp("2017-03-20", tz="UTC")
    assert Interval.parse("1d").bucket_start(wednesday) == pd.Timestamp("2017-03-22", tz="UTC")
    assert Interval.parse("4h").bucket_start(wednesday) == pd.Timestamp("2017-03-22 12:00", tz="UTC")


# -- the bar shape and its checks -----------------------------------------------------------------


def test_bars_are_normalised_to_utc_float64_sorted_by_time() -> None:
    raw = hourly("2017-03-22 08:00", 5).iloc[::-1]
    raw.index = raw.index.tz_convert("Europe/Berlin")
    raw = raw.astype({"volume": "int64"})
    bars = normalise_bars(raw, "EURUSD")
    assert_feeder_shape(bars)
    assert bars.index[0] == pd.Timestamp("2017-03-22 08:00", tz="UTC")


def test_a_missing_volume_column_becomes_zero_volume() -> None:
    bars = normalise_bars(hourly("2017-03-22", 3).drop(columns="volume"), "X")
    assert (bars["volume"] == 0.0).all()


def test_duplicate_timestamps_are_an_error_naming_them() -> None:
    raw = pd.concat([hourly("2017-03-22 08:00", 3), hourly("2017-03-22 09:00", 1)])
    with pytest.raises(InvalidMarketData) as raised:
        normalise_bars(raw, "EURUSD")
    assert raised.value.details["duplicates"] == ["2017-03-22T09:00:00+00:00"]
    assert "repeat" in raised.value.message


@pytest.mark.parametrize(
    ("column", "value"), [("close", np.nan), ("low", 9.0), ("open", 0.0), ("open", -1.0), ("volume", -5.0)]
)
def test_impossible_bars_are_refused_with_their_times(column: str, value: float) -> None:
    raw = hourly("2017-03-22 08:00", 4)
    raw.loc[raw.index[2], column] = value
    with pytest.raises(InvalidMarketData) as raised:
        normalise_bars(raw, "EURUSD")
    assert raised.value.details["rows"] == ["2017-03-22T10:00:00+00:00"]


def test_naive_times_are_refused_rather_than_guessed() -> None:
    raw = hourly("2017-03-22", 3)
    raw.index = raw.index.tz_localize(None)
    with pytest.raises(InvalidMarketData, match="timezone-aware"):
        normalise_bars(raw, "EURUSD")


def test_gaps_longer_than_allowed_are_found_and_weekends_can_be_allowed() -> None:
    eurusd = load_sample_bars("EURUSD")
    weekend_gaps = find_gaps(pd.DatetimeIndex(eurusd.index), pd.Timedelta(hours=2))
    assert weekend_gaps, "hourly FX pauses every weekend"
    assert all(gap.length >= pd.Timedelta(hours=3) for gap in weekend_gaps)
    assert find_gaps(pd.DatetimeIndex(eurusd.index), pd.Timedelta(days=4)) == []
    gap = weekend_gaps[0]
    assert gap.as_dict()["after"] == gap.after.isoformat()


def test_a_feeder_with_max_gap_refuses_a_series_with_a_hole() -> None:
    bars = pd.concat([hourly("2017-03-22 00:00", 5), hourly("2017-03-23 00:00", 5)])
    assert len(MemoryFeeder({"X": bars}).bars("X", "1h")) == 10
    with pytest.raises(InvalidMarketData) as raised:
        MemoryFeeder({"X": bars}, max_gap="6h").bars("X", "1h")
    details = raised.value.details
    assert details["gaps"] == [
        {
            "after": "2017-03-22T04:00:00+00:00",
            "before": "2017-03-23T00:00:00+00:00",
            "length": "0 days 20:00:00",
        }
    ]
    assert len(MemoryFeeder({"X": bars}, max_gap="1d").bars("X", "1h")) == 10


def test_durations_parse_for_max_gap() -> None:
    assert parse_duration("72h") == pd.Timedelta(hours=72)
    assert parse_duration("4d") == pd.Timedelta(days=4)
    assert parse_duration("90min") == pd.Timedelta(minutes=90)
    assert parse_duration(None) is None
    with pytest.raises(InvalidInput):
        parse_duration("soon")


# -- ranges and resampling ------------------------------------------------------------------------


def test_date_ranges_are_inclusive_and_need_timezones() -> None:
    feeder = MemoryFeeder({"X": hourly("2017-03-22 00:00", 24)})
    bars = feeder.bars("x", "1h", "2017-03-22T05:00:00Z", "2017-03-22T07:00:00+00:00")
    assert list(bars.index.hour) == [5, 6, 7]
    assert feeder.bars("X", "1h", start="2017-03-23T00:00Z").empty
    assert_feeder_shape(feeder.bars("X", "1h", start="2017-03-23T00:00Z"))
    with pytest.raises(InvalidInput, match="timezone"):
        feeder.bars("X", "1h", start="2017-03-22 05:00")
    with pytest.raises(InvalidInput, match="after end"):
        feeder.bars("X", "1h", "2017-03-22T07:00Z", "2017-03-22T05:00Z")


def test_resampling_aggregates_ohlcv_into_bars_labelled_by_open_time() -> None:
    hours = hourly("2017-03-22 00:00", 8)
    four = resample_bars(hours, Interval.parse("1h"), Interval.parse("4h"))
    assert list(four.index) == [
        pd.Timestamp("2017-03-22 00:00", tz="UTC"),
        pd.Timestamp("2017-03-22 04:00", tz="UTC"),
    ]
    first = hours.iloc[:4]
    assert four.iloc[0].to_dict() == {
        "open": first["open"].iloc[0],
        "high": first["high"].max(),
        "low": first["low"].min(),
        "close": first["close"].iloc[-1],
        "volume": first["volume"].sum(),
    }


def test_an_unfinished_last_bucket_is_left_out_until_it_completes() -> None:
    hours = hourly("2017-03-22 00:00", 7)  # 00:00..06:00: the 04:00 bucket lacks 07:00
    four = resample_bars(hours, Interval.parse("1h"), Interval.parse("4h"))
    assert list(four.index.hour) == [0]
    assert list(
        resample_bars(hours, Interval.parse("1h"), Interval.parse("4h"), keep_partial=True).index.hour
    ) == [0, 4]


def test_resampling_skips_closed_markets_and_a_range_reads_whole_buckets() -> None:
    eurusd = SampleFeeder()
    daily = eurusd.bars("EURUSD", "1d")
    assert_feeder_shape(daily)
    assert not (daily.index.day_of_week == 5).any(), "no FX trading on Saturdays"
    # Asking from 09:00 must not yield a bucket cut short: the 08:00 4h bar starts before the range.
    four = eurusd.bars("EURUSD", "4h", "2017-05-02T09:00Z", "2017-05-02T23:00Z")
    assert list(four.index.hour) == [12, 16, 20]
    hours = eurusd.bars("EURUSD", "1h", "2017-05-02T12:00Z", "2017-05-02T15:00Z")
    assert four.iloc[0]["high"] == hours["high"].max()
    assert four.iloc[0]["open"] == hours["open"].iloc[0]


def test_finer_bars_than_the_source_holds_are_refused() -> None:
    with pytest.raises(InvalidInput, match="cannot be built"):
        SampleFeeder().bars("GOOG", "1h")


# -- the embedded sample feeder -------------------------------------------------------------------


def test_the_sample_feeder_serves_real_eurusd_hourly_and_goog_daily_bars() -> None:
    feeder = SampleFeeder()
    assert feeder.symbols() == ("EURUSD", "GOOG")
    assert (feeder.default_interval("EURUSD"), feeder.default_interval("goog")) == ("1h", "1d")
    eurusd = feeder.bars("EURUSD", "1h")
    assert_feeder_shape(eurusd)
    assert len(eurusd) == 5000
    pd.testing.assert_frame_equal(eurusd, normalise_bars(load_sample_bars("EURUSD"), "EURUSD"))
    with pytest.raises(UnknownSymbol) as raised:
        feeder.bars("AAPL", "1d")
    assert raised.value.details == {"symbol": "AAPL", "available": ["EURUSD", "GOOG"]}


def test_a_returned_frame_is_the_callers_to_change() -> None:
    feeder = SampleFeeder()
    first = feeder.bars("GOOG", "1d")
    first.iloc[:, :] = 1.0
    assert feeder.bars("GOOG", "1d")["close"].iloc[0] != 1.0


# -- plugins --------------------------------------------------------------------------------------


def test_every_built_in_feeder_is_an_entry_point_plugin() -> None:
    names = {entry_point.name for entry_point in entry_points(group=FEEDER_GROUP)}
    assert {"backtesting", "csv", "parquet", "database", "yfinance"} <= names
    for name, entry_point in feeder_plugins().items():
        if name in {"backtesting", "csv", "parquet", "database", "yfinance"}:
            loaded = entry_point.load()
            assert issubclass(loaded, BarFeeder)
            assert loaded.name == name


def test_the_default_feeder_is_the_embedded_sample_bars(tmp_path: Path) -> None:
    feeder = feeder_from_settings(Settings(data_dir=tmp_path))
    assert isinstance(feeder, SampleFeeder)


def test_settings_choose_and_configure_the_csv_feeder(tmp_path: Path) -> None:
    path = tmp_path / "EURUSD.csv"
    path.write_text("DATE_TIME,OPEN,HIGH,LOW,CLOSE\n22.03.2017 08:00:00.000,1.1,1.2,1.0,1.15\n")
    settings = Settings(
        data_dir=tmp_path, feeder="csv", feeder_path=str(path), feeder_timezone="Europe/Berlin"
    )
    feeder = feeder_from_settings(settings)
    assert isinstance(feeder, CsvFeeder)
    assert feeder.bars("EURUSD", "1h").index[0] == pd.Timestamp("2017-03-22 07:00", tz="UTC")


def test_column_maps_come_from_the_environment_as_pairs(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PP_FEEDER_COLUMNS", "time=Date+Time, open=O")
    monkeypatch.setenv("PP_FEEDER_CSV_NAMES", "Date,Time,O,H,L,C")
    settings = Settings(data_dir=tmp_path)
    assert settings.feeder_columns == {"time": "Date+Time", "open": "O"}
    assert settings.feeder_csv_names == ["Date", "Time", "O", "H", "L", "C"]


def test_a_plugin_without_from_settings_is_unavailable_not_a_crash(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    code_only = EntryPoint(
        name="memory", value="prediction_provider.features.feeders.base:MemoryFeeder", group=FEEDER_GROUP
    )
    monkeypatch.setattr(feeder_registry, "feeder_plugins", lambda: {"memory": code_only})
    with pytest.raises(FeederUnavailable, match="MemoryFeeder has no from_settings"):
        load_feeder("memory", Settings(data_dir=tmp_path))


def test_unknown_or_incomplete_feeder_settings_say_what_is_missing(tmp_path: Path) -> None:
    with pytest.raises(FeederUnavailable) as raised:
        load_feeder("nope", Settings(data_dir=tmp_path))
    assert "backtesting" in raised.value.details["available"]
    with pytest.raises(FeederUnavailable, match="PP_FEEDER_PATH"):
        feeder_from_settings(Settings(data_dir=tmp_path, feeder="parquet"))
    with pytest.raises(FeederUnavailable, match="timezone"):
        CsvFeeder(tmp_path / "x.csv", timezone="Mars/Olympus")
