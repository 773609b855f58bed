"""The point-in-time feature pipeline the demo models are trained with.

Every feature at bar ``t`` reads only bars at or before ``t``: rolling windows,
shifts into the past and adjusted=False exponential averages. Only the label
looks one bar ahead, and it is never a feature.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

DIRECTION_CLASSES = ("down", "flat", "up")


def _log_return(bars: pd.DataFrame, bars_back: int) -> pd.Series:
    return np.log(bars["close"] / bars["close"].shift(bars_back))


def _volatility(bars: pd.DataFrame, window: int) -> pd.Series:
    return _log_return(bars, 1).rolling(window).std()


def _ema(series: pd.Series, span: int) -> pd.Series:
    return series.ewm(span=span, adjust=False).mean()


def _rsi(bars: pd.DataFrame, window: int = 14) -> pd.Series:
    change = bars["close"].diff()
    gain = change.clip(lower=0).ewm(alpha=1 / window, adjust=False).mean()
    loss = (-change.clip(upper=0)).ewm(alpha=1 / window, adjust=False).mean()
    strength = gain / loss.replace(0, np.nan)
    return (100 - 100 / (1 + strength)).fillna(100.0) / 100.0


def _macd(bars: pd.DataFrame) -> pd.Series:
    return (_ema(bars["close"], 12) - _ema(bars["close"], 26)) / bars["close"]


def _macd_signal(bars: pd.DataFrame) -> pd.Series:
    return _ema(_macd(bars), 9)


def _atr(bars: pd.DataFrame, window: int = 14) -> pd.Series:
    previous_close = bars["close"].shift(1)
    true_range = pd.concat(
        [
            bars["high"] - bars["low"],
            (bars["high"] - previous_close).abs(),
            (bars["low"] - previous_close).abs(),
        ],
        axis=1,
    ).max(axis=1)
    return true_range.ewm(alpha=1 / window, adjust=False).mean() / bars["close"]


def _bollinger_pct_b(bars: pd.DataFrame, window: int = 20, width: float = 2.0) -> pd.Series:
    mean = bars["close"].rolling(window).mean()
    spread = bars["close"].rolling(window).std() * width
    return (bars["close"] - (mean - spread)) / (2 * spread).replace(0, np.nan)


def _volume_z(bars: pd.DataFrame, window: int = 20) -> pd.Series:
    mean = bars["volume"].rolling(window).mean()
    std = bars["volume"].rolling(window).std()
    return ((bars["volume"] - mean) / std.replace(0, np.nan)).fillna(0.0)


@dataclass(frozen=True, slots=True)
class Feature:
    name: str
    compute: Callable[[pd.DataFrame], pd.Series]
    description: str


FEATURES: tuple[Feature, ...] = (
    Feature("ret_1", lambda b: _log_return(b, 1), "log return over 1 bar"),
    Feature("ret_5", lambda b: _log_return(b, 5), "log return over 5 bars"),
    Feature("ret_10", lambda b: _log_return(b, 10), "log return over 10 bars"),
    Feature("ret_20", lambda b: _log_return(b, 20), "log return over 20 bars"),
    Feature("vol_10", lambda b: _volatility(b, 10), "std of 1-bar log returns, 10 bars"),
    Feature("vol_20", lambda b: _volatility(b, 20), "std of 1-bar log returns, 20 bars"),
    Feature("rsi_14", _rsi, "Wilder RSI(14), scaled to 0..1"),
    Feature("macd", _macd, "EMA(12) - EMA(26), relative to close"),
    Feature("macd_signal", _macd_signal, "EMA(9) of macd"),
    Feature("macd_hist", lambda b: _macd(b) - _macd_signal(b), "macd - macd_signal"),
    Feature("atr_14", _atr, "Wilder ATR(14), relative to close"),
    Feature("bb_pct_b", _bollinger_pct_b, "Bollinger %b (20 bars, 2 std)"),
    Feature("volume_z_20", _volume_z, "volume z-score over 20 bars"),
    Feature("range_hl", lambda b: (b["high"] - b["low"]) / b["close"], "bar range, relative to close"),
    Feature("body", lambda b: b["close"] / b["open"] - 1, "close over open, minus one"),
    Feature("sma_ratio_20", lambda b: b["close"] / b["close"].rolling(20).mean() - 1, "close over SMA(20)"),
)

FEATURE_NAMES: tuple[str, ...] = tuple(feature.name for feature in FEATURES)

# EWM features need a few windows of history before they stop depending on the first bar.
WARMUP_BARS = 40


def compute_features(bars: pd.DataFrame) -> pd.DataFrame:
    """One row of features per bar; the first ``WARMUP_BARS`` rows are dropped."""
    frame = pd.DataFrame({feature.name: feature.compute(bars) for feature in FEATURES}, index=bars.index)
    return frame.iloc[WARMUP_BARS:].astype("float64")


def direction_labels(bars: pd.DataFrame, flat_band: float) -> pd.Series:
    """Next-bar direction: 0 down, 1 flat, 2 up (see ``DIRECTION_CLASSES``).

    A move is flat when the next bar's log return is within ``flat_band`` times
    the trailing 20-bar volatility, so one setting suits hourly FX and daily
    equities alike. The last bar has no next bar and gets no label.
    """
    next_return = np.log(bars["close"].shift(-1) / bars["close"])
    band = flat_band * _volatility(bars, 20)
    labels = pd.Series(1.0, index=bars.index)
    labels[next_return > band] = 2.0
    labels[next_return < -band] = 0.0
    labels[next_return.isna() | band.isna()] = np.nan
    return labels.rename("direction")
