"""Precomputed predictions: lookups from memory, and a changed file swapped in whole."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest

from prediction_provider.errors import InvalidInput, PrecomputedNotFound
from prediction_provider.jobs.precomputed import CHECK_INTERVAL_SECONDS, PrecomputedPredictions


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def write(path: Path, predictions: dict[str, str], mtime_ns: int) -> None:
    frame = pd.DataFrame(
        {"key": list(predictions), "prediction": list(predictions.values()), "proba_up": 0.5}
    )
    frame.to_parquet(path)
    os.utime(path, ns=(mtime_ns, mtime_ns))


def test_a_key_is_served_and_an_unknown_key_is_not_found(tmp_path: Path) -> None:
    path = tmp_path / "p.parquet"
    write(path, {"2024-01-01T00:00:00+00:00": "up", "b": "down"}, 1_000_000_000)
    store = PrecomputedPredictions(path, "key", Clock())
    assert store.lookup("2024-01-01T00:00:00+00:00") == {"prediction": "up", "proba_up": 0.5}
    assert store.size() == 2
    with pytest.raises(PrecomputedNotFound):
        store.lookup("missing")


def test_a_changed_file_is_reloaded_after_the_check_interval(tmp_path: Path) -> None:
    path = tmp_path / "p.parquet"
    write(path, {"a": "up"}, 1_000_000_000)
    clock = Clock()
    store = PrecomputedPredictions(path, "key", clock)
    assert store.lookup("a")["prediction"] == "up"
    write(path, {"a": "down", "c": "flat"}, 2_000_000_000)
    assert store.lookup("a")["prediction"] == "up"  # within the interval the file is not even looked at
    clock.now += CHECK_INTERVAL_SECONDS
    assert store.lookup("a")["prediction"] == "down"
    assert store.lookup("c")["prediction"] == "flat"
    assert store.reloads == 2
    clock.now += CHECK_INTERVAL_SECONDS
    store.lookup("a")
    assert store.reloads == 2  # unchanged file, no reload


def test_a_missing_file_or_key_column_is_reported(tmp_path: Path) -> None:
    with pytest.raises(PrecomputedNotFound):
        PrecomputedPredictions(tmp_path / "absent.parquet", "key", Clock()).lookup("a")
    path = tmp_path / "p.parquet"
    pd.DataFrame({"id": ["a"], "prediction": ["up"]}).to_parquet(path)
    with pytest.raises(InvalidInput):
        PrecomputedPredictions(path, "key", Clock()).lookup("a")


@pytest.mark.parametrize(
    "asked",
    [
        "2018-01-22 04:00:00",
        "2018-01-22T04:00:00",
        "2018-01-22T04:00:00Z",
        "2018-01-22T04:00:00+00:00",
        "2018-01-22T05:00:00+01:00",
        "2018-01-22T04:00:00.000Z",
        "2018-01-22T04:00Z",
    ],
)
def test_a_time_key_is_found_by_any_iso_8601_spelling_of_its_instant(tmp_path: Path, asked: str) -> None:
    text_keys = tmp_path / "text.parquet"
    write(text_keys, {"2018-01-22 04:00:00": "up", "2018-01-22 05:00:00": "down"}, 1_000_000_000)
    time_keys = tmp_path / "times.parquet"
    frame = pd.DataFrame({"time": pd.to_datetime(["2018-01-22 04:00:00", "2018-01-22 05:00:00"], utc=True)})
    frame.assign(prediction=["up", "down"]).to_parquet(time_keys)
    for store in (
        PrecomputedPredictions(text_keys, "key", Clock()),
        PrecomputedPredictions(time_keys, "time", Clock()),
    ):
        assert store.lookup(asked)["prediction"] == "up"


def test_keys_that_are_not_times_are_never_read_as_times(tmp_path: Path) -> None:
    path = tmp_path / "p.parquet"
    write(path, {"2018-01-22": "up", "20180122": "down", "2018-01-22 04:00:00": "flat"}, 1_000_000_000)
    store = PrecomputedPredictions(path, "key", Clock())
    assert store.lookup("2018-01-22")["prediction"] == "up"
    assert store.lookup("20180122")["prediction"] == "down"
    for other in (
        "2018-01-22T04:00:01Z",
        "2018-01-22T04:00:00+01:00",
        "2018-01-22T00:00:00Z",
        "2018-02-31T04:00:00Z",
    ):
        with pytest.raises(PrecomputedNotFound):
            store.lookup(other)
