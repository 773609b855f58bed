"""The NumPy feature pipeline against the textbook pandas formulas the demo models were first trained
with: the same numbers (to float noise), the same NaN handling, the same labels."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from prediction_provider.features.market_data import load_sample_bars
from prediction_provider.features.pipeline import (
    FEATURE_NAMES,
    WARMUP_BARS,
    BarArrays,
    compute_features,
    direction_labels,
    feature_matrix,
)


def pandas_reference(bars: pd.DataFrame) -> pd.DataFrame:
    close = bars["close"]

    def log_return(n: int) -> pd.Series:
        return np.log(close / close.shift(n))

    def ema(series: pd.Series, span: int) -> pd.Series:
        return series.ewm(span=span, adjust=False).mean()

    change = close.diff()
    gain = change.clip(lower=0).ewm(alpha=1 / 14, adjust=False).mean()
    loss = (-change.clip(upper=0)).ewm(alpha=1 / 14, adjust=False).mean()
    rsi = (100 - 100 / (1 + gain / loss.replace(0, np.nan))).fillna(100.0) / 100.0
    macd = (ema(close, 12) - ema(close, 26)) / close
    signal = ema(macd, 9)
    previous = close.shift(1)
    true_range = pd.concat(
        [bars["high"] - bars["low"], (bars["high"] - previous).abs(), (bars["low"] - previous).abs()], axis=1
    ).max(axis=1)
    mean20, std20 = close.rolling(20).mean(), close.rolling(20).std()
    volume_std = bars["volume"].rolling(20).std()
    frame = pd.DataFrame(
        {
            "ret_1": log_return(1),
            "ret_5": log_return(5),
            "ret_10": log_return(10),
            "ret_20": log_return(20),
            "vol_10": log_return(1).rolling(10).std(),
            "vol_20": log_return(1).rolling(20).std(),
            "rsi_14": rsi,
            "macd": macd,
            "macd_signal": signal,
            "macd_hist": macd - signal,
            "atr_14": true_range.ewm(alpha=1 / 14, adjust=False).mean() / close,
            "bb_pct_b": (close - (mean20 - 2 * std20)) / (4 * std20).replace(0, np.nan),
            "volume_z_20": (
                (bars["volume"] - bars["volume"].rolling(20).mean()) / volume_std.replace(0, np.nan)
            ).fillna(0.0),
            "range_hl": (bars["high"] - bars["low"]) / close,
            "body": close / bars["open"] - 1,
            "sma_ratio_20": close / mean20 - 1,
        }
    )
    return frame.iloc[WARMUP_BARS:]


@pytest.mark.parametrize("symbol", ["EURUSD", "GOOG"])
def test_numpy_features_equal_the_pandas_formulas_on_real_bars(symbol: str) -> None:
    bars = load_sample_bars(symbol)
    ours, reference = compute_features(bars), pandas_reference(bars)
    assert tuple(ours.columns) == FEATURE_NAMES
    pd.testing.assert_index_equal(ours.index, reference.index)
    # pandas' rolling std accumulates rounding along the series (1e-9 on %b after 5000 bars);
    # ours sums each window on its own.
    np.testing.assert_allclose(ours.to_numpy(), reference.to_numpy(), rtol=1e-6, atol=1e-8)


def test_flat_prices_and_volumes_give_the_pandas_nan_and_zero_conventions() -> None:
    index = pd.date_range("2017-03-22", periods=80, freq="h", tz="UTC")
    flat = pd.DataFrame({"open": 1.1, "high": 1.1, "low": 1.1, "close": 1.1, "volume": 500.0}, index=index)
    ours, reference = compute_features(flat), pandas_reference(flat)
    np.testing.assert_array_equal(ours.to_numpy(), reference.to_numpy())
    assert ours["bb_pct_b"].isna().all(), "no band around a flat price"
    assert (ours["volume_z_20"] == 0).all()
    assert (ours["rsi_14"] == 1.0).all()


def test_labels_equal_the_pandas_labels() -> None:
    bars = load_sample_bars("EURUSD")
    next_return = np.log(bars["close"].shift(-1) / bars["close"])
    band = 0.25 * np.log(bars["close"] / bars["close"].shift(1)).rolling(20).std()
    expected = pd.Series(1.0, index=bars.index)
    expected[next_return > band] = 2.0
    expected[next_return < -band] = 0.0
    expected[next_return.isna() | band.isna()] = np.nan
    pd.testing.assert_series_equal(direction_labels(bars, 0.25), expected.rename("direction"))


def test_one_row_costs_one_window_per_rolling_feature_and_gives_the_same_numbers() -> None:
    bars = load_sample_bars("EURUSD").iloc[:600]
    every_row = feature_matrix(BarArrays.from_frame(bars))
    last_row = feature_matrix(BarArrays.from_frame(bars, first_row=len(bars) - 1))
    assert last_row.shape == (1, len(FEATURE_NAMES))
    np.testing.assert_array_equal(last_row[0], every_row[-1])
