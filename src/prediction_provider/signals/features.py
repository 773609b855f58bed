"""Inputs of the model-based signal predictors: point-in-time bar features plus the trade's geometry.

The bar features are the demo pipeline's (``features.pipeline.compute_features``)
without the volume z-score, since signal CSVs carry no volume. Each is computed
once for every bar: the pipeline is causal (rolling windows, shifts into the
past, unadjusted exponential averages), so the row of bar i computed over the
whole file equals the row computed from bars 0..i alone, and a request reads
exactly the row of its entry bar and nothing later.

One model answers entries and exits in both directions: whether a target at
``tp_distance`` is reached before a stop at ``sl_distance`` (both relative to
P, positive when the level lies on the profitable and the losing side), in
the direction given, within ``bars_remaining`` bars.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from prediction_provider.features.pipeline import FEATURE_NAMES, compute_features
from prediction_provider.signals.bars import FloatArray, IntArray, PriceBars
from prediction_provider.signals.horizon import calendar_bars_remaining
from prediction_provider.signals.levels import Direction, Levels

BAR_FEATURES: tuple[str, ...] = tuple(name for name in FEATURE_NAMES if name != "volume_z_20")
TRADE_FEATURES: tuple[str, ...] = (
    "direction",
    "tp_distance",
    "sl_distance",
    "tp_atr",
    "sl_atr",
    "bars_remaining",
)
SIGNAL_FEATURES: tuple[str, ...] = BAR_FEATURES + TRADE_FEATURES
ATR_COLUMN = BAR_FEATURES.index("atr_14")


def distances(levels: Levels, price: float) -> tuple[float, float]:
    """Target and stop distances from ``price``, relative to it, positive on their usual sides."""
    if price == 0:
        return float("nan"), float("nan")  # no relative distance from a zero price; the models take NaN
    if levels.direction is Direction.BUY:
        return (levels.take_profit - price) / price, (price - levels.stop_loss) / price
    return (price - levels.take_profit) / price, (levels.stop_loss - price) / price


@dataclass(frozen=True, slots=True, eq=False)
class SignalFeatures:
    """Bar features of every bar (NaN before the pipeline's warm-up) and each bar's calendar horizon."""

    bars: PriceBars
    matrix: FloatArray
    horizon: IntArray
    first_usable: int

    @classmethod
    def of(cls, bars: PriceBars) -> SignalFeatures:
        computed = compute_features(bars.frame()).loc[:, list(BAR_FEATURES)]
        matrix = np.full((len(bars), len(BAR_FEATURES)), np.nan)
        if len(computed):
            matrix[len(bars) - len(computed) :] = computed.to_numpy(dtype=np.float64)
        usable = np.flatnonzero(np.isfinite(matrix).all(axis=1))
        first_usable = int(usable[0]) if len(usable) else len(bars)
        horizon = calendar_bars_remaining(bars.times, bars.spacing_ns())
        return cls(bars, np.ascontiguousarray(matrix), horizon, first_usable)

    def rows(
        self,
        entries: IntArray,
        directions: FloatArray,
        tp_distances: FloatArray,
        sl_distances: FloatArray,
    ) -> FloatArray:
        """One model input row per trade: bar ``entries[k]``, direction +1 buy / -1 sell."""
        bar_rows = self.matrix[entries]
        atr = bar_rows[:, ATR_COLUMN]
        safe_atr = np.where(atr > 0, atr, np.nan)
        trade = np.column_stack(
            [
                directions,
                tp_distances,
                sl_distances,
                tp_distances / safe_atr,
                sl_distances / safe_atr,
                self.horizon[entries].astype(np.float64),
            ]
        )
        return np.ascontiguousarray(np.hstack([bar_rows, trade]))

    def trade_rows(self, entry: int, trades: list[tuple[Levels, float]]) -> FloatArray:
        """Rows for a few trades opened at bar ``entry``, each given as (levels, price)."""
        count = len(trades)
        geometry = [distances(levels, price) for levels, price in trades]
        return self.rows(
            np.full(count, entry, dtype=np.int64),
            np.array([1.0 if levels.direction is Direction.BUY else -1.0 for levels, _ in trades]),
            np.array([tp for tp, _ in geometry]),
            np.array([sl for _, sl in geometry]),
        )
