"""The demo's feature pipeline: real bars in, no look-ahead out."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from prediction_provider.features.market_data import load_sample_bars
from prediction_provider.features.pipeline import (
    FEATURE_NAMES,
    WARMUP_BARS,
    compute_features,
    direction_labels,
)


@pytest.fixture(scope="module")
def goog() -> pd.DataFrame:
    return load_sample_bars("GOOG").iloc[:400]


def test_sample_bars_are_real_utc_ohlcv() -> None:
    for symbol, count in (("EURUSD", 5000), ("GOOG", 2148)):
        bars = load_sample_bars(symbol)
        assert list(bars.columns) == ["open", "high", "low", "close", "volume"]
        assert str(bars.index.tz) == "UTC"
        assert bars.index.is_monotonic_increasing
        assert len(bars) == count
        assert (bars["high"] >= bars["low"]).all()
    with pytest.raises(KeyError):
        load_sample_bars("NOPE")


def test_sixteen_finite_features_after_warmup(goog: pd.DataFrame) -> None:
    features = compute_features(goog)
    assert tuple(features.columns) == FEATURE_NAMES
    assert len(FEATURE_NAMES) == 16
    assert len(features) == len(goog) - WARMUP_BARS
    assert np.isfinite(features.to_numpy()).all()
    assert features["rsi_14"].between(0, 1).all()


@settings(max_examples=25, deadline=None)
@given(
    cut=st.integers(min_value=WARMUP_BARS + 1, max_value=399),
    shock=st.floats(min_value=0.5, max_value=2.0),
)
def test_features_as_of_t_ignore_later_bars(goog: pd.DataFrame, cut: int, shock: float) -> None:
    """Altering every bar after ``t`` must leave every feature up to ``t`` unchanged."""
    altered = goog.copy()
    altered.iloc[cut:, :4] *= shock
    altered.iloc[cut:, 4] *= shock * 3
    original = compute_features(goog).loc[: goog.index[cut - 1]]
    changed = compute_features(altered).loc[: goog.index[cut - 1]]
    truncated = compute_features(goog.iloc[:cut])
    pd.testing.assert_frame_equal(original, changed)
    pd.testing.assert_frame_equal(original, truncated)


def test_labels_read_only_the_next_bar(goog: pd.DataFrame) -> None:
    labels = direction_labels(goog, flat_band=0.25)
    assert set(labels.dropna().unique()) == {0.0, 1.0, 2.0}
    assert np.isnan(labels.iloc[-1])
    next_return = np.log(goog["close"].shift(-1) / goog["close"])
    up = labels == 2.0
    down = labels == 0.0
    assert (next_return[up] > 0).all()
    assert (next_return[down] < 0).all()


def test_a_wider_flat_band_gives_more_flat_labels(goog: pd.DataFrame) -> None:
    narrow = (direction_labels(goog, 0.1) == 1.0).sum()
    wide = (direction_labels(goog, 1.0) == 1.0).sum()
    assert wide > narrow
