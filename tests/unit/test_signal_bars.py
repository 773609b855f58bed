"""Reading the signal predictors' bar files: columns, time formats, order, and exact prices."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from prediction_provider.features.market_data import load_sample_bars
from prediction_provider.signals.bars import PriceBars, read_bars_csv, write_bars_csv


def written(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "bars.csv"
    path.write_text(text)
    return path


def test_columns_may_come_in_any_order_and_case_and_extra_columns_are_ignored(tmp_path: Path) -> None:
    path = written(
        tmp_path,
        " close ,Volume,low,DATE_TIME,High,OPEN\n"
        "1.10005,12,1.09990,22.03.2017 08:00:00.000,1.10010,1.10000\n"
        "1.10015,10,1.10000,22.03.2017 09:00:00.000,1.10020,1.10005\n",
    )
    bars = read_bars_csv(path)
    assert bars.close.tolist() == [1.10005, 1.10015]
    assert bars.high.tolist() == [1.10010, 1.10020]
    assert bars.low.tolist() == [1.09990, 1.10000]
    assert bars.open.tolist() == [1.10000, 1.10005]
    assert bars.timestamp(0) == pd.Timestamp("2017-03-22T08:00:00Z")


@pytest.mark.parametrize(
    "stamps",
    [
        ("22.03.2017 08:00:00.000", "22.03.2017 09:00:00.000"),
        ("22.03.2017 08:00:00", "22.03.2017 09:00:00"),
        ("2017-03-22 08:00:00", "2017-03-22 09:00:00"),
        ("2017-03-22T10:00:00+02:00", "2017-03-22T11:00:00+02:00"),
        ("2017-03-22T08:00:00Z", "2017-03-22T09:00:00Z"),
    ],
    ids=["day-first", "day-first-no-fraction", "iso-naive", "iso-offset", "iso-z"],
)
def test_day_first_and_iso_times_read_as_the_same_utc_instants(
    tmp_path: Path, stamps: tuple[str, str]
) -> None:
    rows = "\n".join(f"{stamp},1.1,1.1,1.1,1.1" for stamp in stamps)
    bars = read_bars_csv(written(tmp_path, f"DATE_TIME,OPEN,HIGH,LOW,CLOSE\n{rows}\n"))
    assert [bars.timestamp(i) for i in range(2)] == [
        pd.Timestamp("2017-03-22T08:00:00Z"),
        pd.Timestamp("2017-03-22T09:00:00Z"),
    ]


def test_rows_out_of_order_are_sorted_by_time(tmp_path: Path) -> None:
    text = "DATE_TIME,OPEN,HIGH,LOW,CLOSE\n22.03.2017 09:00:00.000,2,2,2,2\n22.03.2017 08:00:00.000,1,1,1,1\n"
    assert read_bars_csv(written(tmp_path, text)).close.tolist() == [1.0, 2.0]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("DATE_TIME,OPEN,HIGH,CLOSE\n22.03.2017 08:00:00.000,1,1,1\n", "LOW"),
        ("DATE_TIME,OPEN,HIGH,LOW,CLOSE\n03/22/2017 08:00,1,1,1,1\n", "DD.MM.YYYY"),
        ("DATE_TIME,OPEN,HIGH,LOW,CLOSE\n22.03.2017 08:00:00.000,1,1,x,1\n", "LOW holds a value"),
        ("DATE_TIME,OPEN,HIGH,LOW,CLOSE\n22.03.2017 08:00:00.000,1,1,,1\n", "LOW holds a value"),
        ("DATE_TIME,OPEN,HIGH,LOW,CLOSE\n22.03.2017 08:00:00.000,1,1,inf,1\n", "not a finite number"),
        (
            "DATE_TIME,OPEN,HIGH,LOW,CLOSE\n22.03.2017 08:00:00.000,1,1,1,1\n2017-03-22T08:00:00Z,1,1,1,1\n",
            "DD.MM.YYYY",
        ),
        (
            "DATE_TIME,OPEN,HIGH,LOW,CLOSE\n22.03.2017 08:00:00.000,1,1,1,1\n"
            "22.03.2017 08:00:00.000,2,2,2,2\n",
            "two bars at 2017-03-22T08:00:00",
        ),
    ],
    ids=[
        "missing-column",
        "other-format",
        "text-price",
        "empty-price",
        "infinite",
        "mixed-formats",
        "duplicate",
    ],
)
def test_malformed_files_are_refused_with_the_reason(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        read_bars_csv(written(tmp_path, text))


def test_prices_are_the_floats_nearest_to_the_written_decimals(tmp_path: Path) -> None:
    generator = random.Random(5)
    texts = [f"{generator.uniform(0.5, 2.0):.{generator.randint(1, 17)}f}" for _ in range(3000)]
    rows = "\n".join(
        f"{pd.Timestamp('2017-01-01') + pd.Timedelta(hours=i):%d.%m.%Y %H:%M:%S},{t},{t},{t},{t}"
        for i, t in enumerate(texts)
    )
    bars = read_bars_csv(written(tmp_path, f"DATE_TIME,OPEN,HIGH,LOW,CLOSE\n{rows}\n"))
    assert bars.close.tolist() == [float(text) for text in texts]


def test_the_demo_csv_reads_back_as_exactly_the_sample_bars(tmp_path: Path) -> None:
    sample = load_sample_bars("EURUSD")
    write_bars_csv(sample, tmp_path / "eurusd.csv")
    assert (
        (tmp_path / "eurusd.csv")
        .read_text()
        .startswith("DATE_TIME,OPEN,HIGH,LOW,CLOSE\n19.04.2017 09:00:00.000,")
    )
    again = read_bars_csv(tmp_path / "eurusd.csv")
    direct = PriceBars.from_frame(sample)
    for column in ("times", "open", "high", "low", "close"):
        assert np.array_equal(getattr(again, column), getattr(direct, column)), column


def test_nearest_and_as_of_never_disagree_about_ties_and_edges() -> None:
    hour = 3_600_000_000_000
    bars = PriceBars(
        times=np.array([0, hour, 2 * hour], dtype=np.int64),
        open=np.ones(3),
        high=np.ones(3),
        low=np.ones(3),
        close=np.ones(3),
    )
    assert [bars.nearest(t) for t in (-hour, hour // 2, hour // 2 + 1, 5 * hour)] == [0, 0, 1, 2]
    assert [bars.as_of(t) for t in (-1, 0, hour - 1, hour, 9 * hour)] == [-1, 0, 0, 1, 2]
