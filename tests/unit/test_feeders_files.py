"""CSV and Parquet feeders: column names and order, time formats, timezones, and clear errors."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest

from prediction_provider.errors import FeederUnavailable, InvalidMarketData, UnknownSymbol
from prediction_provider.features.feeders.csv_files import CsvFeeder
from prediction_provider.features.feeders.parquet_files import ParquetFeeder, write_parquet
from prediction_provider.features.feeders.samples import SampleFeeder


def utc(text: str) -> pd.Timestamp:
    return pd.Timestamp(text, tz="UTC")


def write(path: Path, text: str) -> Path:
    path.write_text(text.strip() + "\n")
    return path


DUKASCOPY = """
Gmt time,Open,High,Low,Close,Volume
22.03.2017 08:00:00.000,1.07960,1.08080,1.07930,1.08040,5421.37
22.03.2017 09:00:00.000,1.08040,1.08120,1.07990,1.08010,6120.50
22.03.2017 10:00:00.000,1.08010,1.08060,1.07950,1.07980,4300.00
"""


def test_day_first_times_with_milliseconds_are_read_without_settings(tmp_path: Path) -> None:
    feeder = CsvFeeder(write(tmp_path / "EURUSD.csv", DUKASCOPY))
    bars = feeder.bars("EURUSD", "1h")
    assert list(bars.index) == [utc("2017-03-22 08:00"), utc("2017-03-22 09:00"), utc("2017-03-22 10:00")]
    assert bars.iloc[0].to_dict() == {
        "open": 1.0796,
        "high": 1.0808,
        "low": 1.0793,
        "close": 1.0804,
        "volume": 5421.37,
    }
    assert feeder.symbols() == ("EURUSD",)


def test_iso_times_keep_their_offsets_across_a_summer_time_change(tmp_path: Path) -> None:
    path = write(
        tmp_path / "DAX.csv",
        """
time,open,high,low,close
2017-03-26T00:00:00+01:00,1,2,0.5,1.5
2017-03-26T03:00:00+02:00,1,2,0.5,1.5
2017-03-26T04:00:00+02:00,1,2,0.5,1.5
""",
    )
    bars = CsvFeeder(path).bars("DAX", "1h")
    assert list(bars.index) == [utc("2017-03-25 23:00"), utc("2017-03-26 01:00"), utc("2017-03-26 02:00")]


def test_naive_times_are_read_as_wall_time_in_the_configured_zone(tmp_path: Path) -> None:
    path = write(
        tmp_path / "DAX.csv",
        """
time,open,high,low,close
2017-10-29 01:00:00,1,2,0.5,1.5
2017-10-29 02:00:00,1,2,0.5,1.5
2017-10-29 02:00:00,1,2,0.5,1.5
2017-10-29 03:00:00,1,2,0.5,1.5
""",
    )
    bars = CsvFeeder(path, timezone="Europe/Berlin").bars("DAX", "1h")
    # The autumn hour 02:00 happens twice; the order of the rows tells summer from winter time.
    expected = ["2017-10-28 23:00", "2017-10-29 00:00", "2017-10-29 01:00", "2017-10-29 02:00"]
    assert list(bars.index) == [utc(text) for text in expected]
    with pytest.raises(InvalidMarketData, match="repeat"):  # read as UTC wall time, 02:00 repeats
        CsvFeeder(path).bars("DAX", "1h")


def test_a_skipped_spring_hour_is_an_error_not_a_guess(tmp_path: Path) -> None:
    path = write(tmp_path / "DAX.csv", "time,open,high,low,close\n2017-03-26 02:30:00,1,2,0.5,1.5")
    with pytest.raises(InvalidMarketData, match="Europe/Berlin"):
        CsvFeeder(path, timezone="Europe/Berlin").bars("DAX", "1h")


def test_columns_may_have_any_names_in_any_order(tmp_path: Path) -> None:
    path = write(
        tmp_path / "EURUSD.csv",
        """
CLOSE;LOW;STAMP;HIGH;OPEN
1.5;0.5;2017-03-22 08:00;2;1
1.6;0.6;2017-03-22 09:00;2.1;1.1
""",
    )
    feeder = CsvFeeder(path, delimiter=";", columns={"time": "STAMP"})
    bars = feeder.bars("EURUSD", "1h")
    assert bars.iloc[1].to_dict() == {"open": 1.1, "high": 2.1, "low": 0.6, "close": 1.6, "volume": 0.0}


def test_headerless_files_name_their_columns_in_order(tmp_path: Path) -> None:
    # A MetaTrader history export: date and time in separate columns, no header row.
    path = write(
        tmp_path / "EURUSD.csv",
        """
2017.03.22,08:00,1.07960,1.08080,1.07930,1.08040,120
2017.03.22,09:00,1.08040,1.08120,1.07990,1.08010,98
""",
    )
    feeder = CsvFeeder(
        path,
        names=["day", "clock", "o", "h", "l", "c", "ticks"],
        columns={"time": "day+clock", "volume": "ticks"},
        datetime_format="%Y.%m.%d %H:%M",
    )
    bars = feeder.bars("EURUSD", "1h")
    assert list(bars.index) == [utc("2017-03-22 08:00"), utc("2017-03-22 09:00")]
    assert list(bars["volume"]) == [120.0, 98.0]
    assert list(bars["close"]) == [1.0804, 1.0801]


def test_separate_date_and_time_columns_are_joined_by_default(tmp_path: Path) -> None:
    path = write(tmp_path / "X.csv", "Date,Time,Open,High,Low,Close\n2017-03-22,08:00:00,1,2,0.5,1.5")
    assert CsvFeeder(path).bars("X", "1h").index[0] == utc("2017-03-22 08:00")


def test_unix_epoch_times_are_read_when_configured(tmp_path: Path) -> None:
    path = write(tmp_path / "X.csv", "timestamp,open,high,low,close\n1490169600000,1,2,0.5,1.5")
    assert CsvFeeder(path, datetime_format="unix_ms").bars("X", "1h").index[0] == utc("2017-03-22 08:00")


def test_unreadable_times_name_the_expected_format_and_examples(tmp_path: Path) -> None:
    path = write(
        tmp_path / "X.csv",
        "time,open,high,low,close\n22.03.2017 08:00:00.000,1,2,0.5,1.5\nlunchtime,1,2,0.5,1.5",
    )
    with pytest.raises(InvalidMarketData) as raised:
        CsvFeeder(path).bars("X", "1h")
    assert raised.value.details["examples"] == ["lunchtime"]
    assert "%d.%m.%Y %H:%M:%S.%f" in raised.value.details["expected"]


def test_a_file_mixing_offsets_and_naive_times_is_refused(tmp_path: Path) -> None:
    path = write(
        tmp_path / "X.csv",
        "time,open,high,low,close\n2017-03-22T08:00Z,1,2,0.5,1.5\n2017-03-22T09:00,1,2,0.5,1.5",
    )
    with pytest.raises(InvalidMarketData, match="mixes"):
        CsvFeeder(path).bars("X", "1h")


def test_bad_prices_missing_columns_and_repeated_times_are_clear_errors(tmp_path: Path) -> None:
    bad_price = write(tmp_path / "A.csv", "time,open,high,low,close\n2017-03-22 08:00,1,2,0.5,n/a")
    with pytest.raises(InvalidMarketData) as raised:
        CsvFeeder(bad_price).bars("A", "1h")
    assert raised.value.details["rows"] == ["2017-03-22T08:00:00+00:00"]
    no_close = write(tmp_path / "B.csv", "time,open,high,low\n2017-03-22 08:00,1,2,0.5")
    with pytest.raises(InvalidMarketData) as raised:
        CsvFeeder(no_close).bars("B", "1h")
    assert raised.value.details["missing"] == ["close"]
    repeated = write(
        tmp_path / "C.csv", "time,open,high,low,close\n2017-03-22 08:00,1,2,0.5,1\n2017-03-22 08:00,1,2,0.5,1"
    )
    with pytest.raises(InvalidMarketData, match="repeat"):
        CsvFeeder(repeated).bars("C", "1h")
    with pytest.raises(InvalidMarketData, match="no column 'SETTLE'"):
        CsvFeeder(bad_price, columns={"close": "SETTLE"}).bars("A", "1h")
    with pytest.raises(FeederUnavailable, match="unknown bar fields"):
        CsvFeeder(bad_price, columns={"adj_close": "x"})


def test_a_template_serves_one_file_per_symbol_and_nothing_outside_it(tmp_path: Path) -> None:
    (tmp_path / "bars").mkdir()
    write(tmp_path / "bars" / "EURUSD_H1.csv", DUKASCOPY)
    write(tmp_path / "bars" / "GBPUSD_H1.csv", DUKASCOPY)
    write(tmp_path / "SECRET_H1.csv", DUKASCOPY)
    feeder = CsvFeeder(tmp_path / "bars" / "{symbol}_H1.csv")
    assert feeder.symbols() == ("EURUSD", "GBPUSD")
    assert len(feeder.bars("gbpusd", "1h")) == 3
    for symbol in ("USDJPY", "../SECRET", "..\\SECRET"):
        with pytest.raises(UnknownSymbol):
            feeder.bars(symbol, "1h")
    lower = CsvFeeder(tmp_path / "bars" / "{symbol_lower}.csv")
    write(tmp_path / "bars" / "eurusd.csv", DUKASCOPY)
    assert len(lower.bars("EURUSD", "1h")) == 3


def test_a_single_file_holds_only_its_own_symbol(tmp_path: Path) -> None:
    path = write(tmp_path / "prices.csv", DUKASCOPY)
    assert CsvFeeder(path, symbol="EURUSD").symbols() == ("EURUSD",)
    with pytest.raises(UnknownSymbol):
        CsvFeeder(path, symbol="EURUSD").bars("PRICES", "1h")
    assert len(CsvFeeder(path).bars("PRICES", "1h")) == 3


def test_a_changed_file_is_read_again(tmp_path: Path) -> None:
    path = write(tmp_path / "EURUSD.csv", DUKASCOPY)
    feeder = CsvFeeder(path)
    assert len(feeder.bars("EURUSD", "1h")) == 3
    write(path, DUKASCOPY + "22.03.2017 11:00:00.000,1.07980,1.08000,1.07900,1.07950,100.0")
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert feeder.bars("EURUSD", "1h").index[-1] == utc("2017-03-22 11:00")


def test_file_bars_resample_to_coarser_intervals(tmp_path: Path) -> None:
    hourly = SampleFeeder().bars("EURUSD", "1h", "2017-05-01T00:00Z", "2017-05-05T23:00Z")
    path = tmp_path / "EURUSD.csv"
    hourly.rename_axis("DATE_TIME").reset_index().assign(
        DATE_TIME=lambda frame: frame["DATE_TIME"].dt.strftime("%d.%m.%Y %H:%M:%S.000")
    ).to_csv(path, index=False)
    daily = CsvFeeder(path).bars("EURUSD", "1d")
    expected = SampleFeeder().bars("EURUSD", "1d", "2017-05-01T00:00Z", "2017-05-05T00:00Z")
    pd.testing.assert_frame_equal(daily, expected)


# -- Parquet --------------------------------------------------------------------------------------


def test_parquet_round_trips_feeder_bars_exactly(tmp_path: Path) -> None:
    goog = SampleFeeder().bars("GOOG", "1d")
    write_parquet(goog, tmp_path / "GOOG.parquet")
    feeder = ParquetFeeder(tmp_path / "{symbol}.parquet", interval="1d")
    pd.testing.assert_frame_equal(feeder.bars("GOOG", "1d"), goog)
    assert feeder.symbols() == ("GOOG",)
    weekly = feeder.bars("GOOG", "1w", "2012-01-01T00:00Z", "2012-12-31T00:00Z")
    pd.testing.assert_frame_equal(
        weekly, SampleFeeder().bars("GOOG", "1w", "2012-01-01T00:00Z", "2012-12-31T00:00Z")
    )


def test_parquet_reads_naive_timestamp_columns_and_index_times(tmp_path: Path) -> None:
    naive = pd.DataFrame(
        {
            "Datetime": pd.to_datetime(["2017-03-22 09:00", "2017-03-22 10:00"]),
            "PX_OPEN": [1.0, 1.1],
            "PX_HIGH": [2.0, 2.1],
            "PX_LOW": [0.5, 0.6],
            "PX_LAST": [1.5, 1.6],
        }
    )
    naive.to_parquet(tmp_path / "X.parquet")
    feeder = ParquetFeeder(
        tmp_path / "X.parquet",
        columns={"open": "PX_OPEN", "high": "PX_HIGH", "low": "PX_LOW", "close": "PX_LAST"},
        timezone="Europe/Berlin",
    )
    assert list(feeder.bars("X", "1h").index) == [utc("2017-03-22 08:00"), utc("2017-03-22 09:00")]

    indexed = SampleFeeder().bars("EURUSD", "1h").iloc[:5]
    indexed.to_parquet(tmp_path / "Y.parquet")  # times stored as the frame's index
    pd.testing.assert_frame_equal(ParquetFeeder(tmp_path / "Y.parquet").bars("Y", "1h"), indexed)


def test_a_corrupt_parquet_file_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "X.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(InvalidMarketData, match="cannot be read"):
        ParquetFeeder(tmp_path / "X.parquet").bars("X", "1h")
