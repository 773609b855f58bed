"""Point-in-time features: the vector as of a time, parity with training, freshness, errors and the
cache that new bars invalidate."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pytest

from prediction_provider.api.errors import status_for
from prediction_provider.errors import InsufficientHistory, InvalidInput, UnknownSymbol
from prediction_provider.features.feeders import MemoryFeeder
from prediction_provider.features.feeders.csv_files import CsvFeeder
from prediction_provider.features.feeders.samples import SampleFeeder
from prediction_provider.features.pipeline import FEATURE_NAMES, WARMUP_BARS, compute_features
from prediction_provider.features.point_in_time import LOOKBACK_BARS, FeatureSnapshot, PointInTimeFeatures

FEEDER = SampleFeeder()
EURUSD = FEEDER.bars("EURUSD", "1h")
GOOG = FEEDER.bars("GOOG", "1d")
NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


def features(**options: object) -> PointInTimeFeatures:
    return PointInTimeFeatures(FEEDER, clock=lambda: NOW, **options)  # type: ignore[arg-type]


def at(position: int, bars: pd.DataFrame = EURUSD) -> datetime:
    return bars.index[position].to_pydatetime()


def vector(snapshot: FeatureSnapshot) -> np.ndarray:
    return np.array([snapshot.values[name] for name in FEATURE_NAMES])


@pytest.mark.parametrize(("symbol", "bars"), [("EURUSD", EURUSD), ("GOOG", GOOG)])
def test_snapshots_equal_the_training_rows_of_the_whole_history(symbol: str, bars: pd.DataFrame) -> None:
    """Parity with training: exact while the window is the whole history, within 1e-12 after."""
    pit = features()
    training = compute_features(bars)
    for position in [*range(WARMUP_BARS, WARMUP_BARS + 5), *range(WARMUP_BARS, len(bars), 37), len(bars) - 1]:
        snapshot = pit.snapshot(symbol, at(position, bars))
        expected = training.loc[bars.index[position]].to_numpy()
        if position < LOOKBACK_BARS:
            np.testing.assert_array_equal(vector(snapshot), expected)
        else:
            np.testing.assert_allclose(vector(snapshot), expected, rtol=0, atol=1e-12)
        assert snapshot.bars_used == min(position + 1, LOOKBACK_BARS)


def test_a_snapshot_uses_the_last_bar_at_or_before_the_time_asked() -> None:
    pit = features()
    on_the_bar = pit.snapshot("eurusd", at(1000))
    between = pit.snapshot("EURUSD", at(1000) + timedelta(minutes=59, seconds=59))
    assert list(on_the_bar.values) == list(FEATURE_NAMES)
    assert on_the_bar.symbol == "EURUSD"
    assert on_the_bar.data_as_of == between.data_as_of == at(1000)
    assert on_the_bar.values == between.values
    assert between.age == timedelta(minutes=59, seconds=59)
    berlin = at(1000).astimezone(ZoneInfo("Europe/Berlin"))
    assert pit.snapshot("EURUSD", berlin).as_of == at(1000)
    assert pit.snapshot("EURUSD", pd.Timestamp(at(1000))).data_as_of == at(1000)


def test_without_a_time_the_latest_bar_is_used_and_the_age_shows_how_stale_it_is() -> None:
    latest = features().snapshot("GOOG")
    assert latest.data_as_of == at(len(GOOG) - 1, GOOG)
    assert latest.as_of == NOW
    assert latest.age == NOW - latest.data_as_of


def test_times_before_enough_history_name_the_first_usable_bar() -> None:
    pit = features()
    with pytest.raises(InsufficientHistory) as raised:
        pit.snapshot("EURUSD", at(WARMUP_BARS - 1))
    first_usable = EURUSD.index[WARMUP_BARS].isoformat()
    assert first_usable in raised.value.message
    assert raised.value.details == [
        {"field": "timestamp", "error": f"the first usable EURUSD bar is at {first_usable}"}
    ]
    assert status_for(raised.value) == 422
    with pytest.raises(InsufficientHistory):
        pit.snapshot("EURUSD", datetime(2000, 1, 1, tzinfo=UTC))
    assert pit.snapshot("EURUSD", at(WARMUP_BARS)).bars_used == WARMUP_BARS + 1


def test_unknown_symbols_and_naive_times_are_clear_errors() -> None:
    pit = features()
    with pytest.raises(UnknownSymbol) as raised:
        pit.snapshot("AAPL", NOW)
    assert status_for(raised.value) == 404
    with pytest.raises(InvalidInput, match="timezone-aware"):
        pit.snapshot("EURUSD", datetime(2017, 6, 1, 12))
    with pytest.raises(InvalidInput):
        pit.bars("EURUSD", datetime(2017, 6, 1, 12))


def test_bars_are_the_ones_at_or_before_the_time_and_the_callers_to_keep() -> None:
    pit = features()
    window = pit.bars("EURUSD", at(2000) + timedelta(minutes=30), lookback=100)
    pd.testing.assert_frame_equal(window, EURUSD.iloc[1901:2001])
    window.iloc[:, :] = 0.0
    assert pit.bars("EURUSD", at(2000), lookback=1)["close"].iloc[0] == EURUSD["close"].iloc[2000]
    assert len(pit.bars("EURUSD")) == len(EURUSD)
    with pytest.raises(InsufficientHistory):
        pit.bars("EURUSD", datetime(2000, 1, 1, tzinfo=UTC))


def test_intervals_per_symbol_are_resampled_by_the_feeder() -> None:
    pit = PointInTimeFeatures(FEEDER, interval_for=lambda symbol: "4h" if symbol == "EURUSD" else "1d")
    four_hourly = FEEDER.bars("EURUSD", "4h")
    snapshot = pit.snapshot("EURUSD", at(300, four_hourly) + timedelta(hours=3))
    assert snapshot.data_as_of == at(300, four_hourly)
    np.testing.assert_array_equal(vector(snapshot), compute_features(four_hourly).loc[four_hourly.index[300]])


def test_a_repeated_snapshot_is_served_from_the_bounded_cache() -> None:
    pit = features(cache_size=3)
    first = pit.snapshot("EURUSD", at(1000))
    assert pit.snapshot("EURUSD", at(1000) + timedelta(minutes=10)).values == first.values
    assert (pit.hits, pit.misses) == (1, 1)
    for position in (1001, 1002, 1003):
        pit.snapshot("EURUSD", at(position))
    assert pit.cached_vectors() == 3
    pit.snapshot("EURUSD", at(1000))  # evicted as the least recently used
    assert (pit.hits, pit.misses) == (1, 5)


def test_appending_later_bars_keeps_earlier_vectors_and_moves_the_latest() -> None:
    history = EURUSD.iloc[:600]
    pit = PointInTimeFeatures(MemoryFeeder({"EURUSD": history}), clock=lambda: NOW)
    before = pit.snapshot("EURUSD", at(550))
    assert pit.snapshot("EURUSD").data_as_of == at(599)
    pit.append_bars("EURUSD", EURUSD.iloc[600:610])
    after = pit.snapshot("EURUSD", at(550))
    assert after.values == before.values
    assert pit.hits == 1, "a vector stays valid when later bars arrive"
    latest = pit.snapshot("EURUSD")
    assert latest.data_as_of == at(609)
    # Bar 609 lies past the first LOOKBACK_BARS: the window's start shows in the last float bits.
    np.testing.assert_allclose(
        vector(latest), compute_features(EURUSD.iloc[:610]).iloc[-1], rtol=0, atol=1e-12
    )


def test_a_corrected_bar_invalidates_the_vectors_from_its_time_on() -> None:
    history = EURUSD.iloc[:600]
    pit = PointInTimeFeatures(MemoryFeeder({"EURUSD": history}))
    earlier = pit.snapshot("EURUSD", at(500))
    affected = pit.snapshot("EURUSD", at(560))
    corrected = history.iloc[[520]].copy()
    corrected["close"] *= 1.01
    corrected["high"] = corrected[["high", "close"]].max(axis=1)
    pit.append_bars("EURUSD", corrected)
    assert pit.snapshot("EURUSD", at(500)).values == earlier.values
    changed = pit.snapshot("EURUSD", at(560))
    assert changed.values != affected.values
    fixed_history = pd.concat([history.iloc[:520], corrected, history.iloc[521:]])
    np.testing.assert_allclose(
        vector(changed), compute_features(fixed_history).loc[history.index[560]], rtol=0, atol=1e-12
    )
    assert (pit.hits, pit.misses) == (1, 3)


def test_a_bar_inserted_into_a_hole_invalidates_the_vectors_after_it() -> None:
    holed = EURUSD.iloc[:300].drop(index=EURUSD.index[200])
    pit = PointInTimeFeatures(MemoryFeeder({"EURUSD": holed}))
    later = pit.snapshot("EURUSD", at(250))
    pit.append_bars("EURUSD", EURUSD.iloc[[200]])
    refilled = pit.snapshot("EURUSD", at(250))
    assert refilled.values != later.values
    np.testing.assert_array_equal(
        vector(refilled), compute_features(EURUSD.iloc[:300]).loc[EURUSD.index[250]]
    )


def test_a_symbol_only_ever_streamed_starts_from_its_appended_bars() -> None:
    pit = PointInTimeFeatures(MemoryFeeder({}))
    with pytest.raises(UnknownSymbol):
        pit.snapshot("EURUSD")
    pit.append_bars("EURUSD", EURUSD.iloc[:30])
    with pytest.raises(InsufficientHistory, match="none yet"):
        pit.snapshot("EURUSD")
    pit.append_bars("EURUSD", EURUSD.iloc[30:100])
    np.testing.assert_array_equal(
        vector(pit.snapshot("EURUSD")), compute_features(EURUSD.iloc[:100]).iloc[-1]
    )


def test_history_is_read_once_and_reload_reads_the_feeder_again(tmp_path: Path) -> None:
    path = tmp_path / "EURUSD.csv"
    EURUSD.iloc[:100].to_csv(path)
    pit = PointInTimeFeatures(CsvFeeder(path))
    assert pit.snapshot("EURUSD").data_as_of == at(99)
    EURUSD.iloc[:120].to_csv(path)
    assert pit.snapshot("EURUSD").data_as_of == at(99), "the series is kept once read"
    pit.reload("EURUSD")
    assert pit.cached_vectors() == 0
    assert pit.snapshot("EURUSD").data_as_of == at(119)
