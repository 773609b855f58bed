"""The training set of the model-based signal predictors: trades labelled by the oracle.

Each row is one trade opened at the close of a bar: in one direction, with a
target and a stop at some distance, labelled 1 when the oracle's scan finds
the target before the stop within the week. Every usable bar gives, per
direction, the default trade (tp 5, sl 10, cost 5 points) and a few more with
distances drawn log-uniformly from 5 to 2000 points, so the models answer for
the distances clients send, not only the default.

The split is by time: the last bars are the test set. A training trade whose
week reaches into the test bars is left out (its label reads them), and so is
any trade whose week ends past the data (its label would be a guess).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import numpy as np

from prediction_provider.signals.bars import FloatArray, IntArray, PriceBars
from prediction_provider.signals.features import SignalFeatures, distances
from prediction_provider.signals.horizon import WeeklyHorizon
from prediction_provider.signals.levels import Direction, TradeCosts, entry_levels
from prediction_provider.signals.outcomes import target_first

LABEL = "binary_ideal_oracle: target (close) before stop (low/high) within the weekly horizon"


@dataclass(frozen=True, slots=True)
class SignalTrainingConfig:
    max_bars: int | None = None
    extra_trades_per_bar: int = 3
    min_points: float = 5.0
    max_points: float = 2000.0
    test_fraction: float = 0.2
    lightgbm_rounds: int = 100
    mlp_steps: int = 150
    batch_size: int = 256
    learning_rate: float = 5e-3
    seed: int = 7


@dataclass(frozen=True, slots=True, eq=False)
class SignalDataset:
    """Trades in entry-bar order; per bar and geometry, the buy trade comes before the sell trade."""

    rows: FloatArray
    labels: IntArray
    entries: IntArray
    is_test: np.ndarray[Any, np.dtype[np.bool_]]

    def part(self, test: bool) -> tuple[FloatArray, IntArray]:
        chosen = self.is_test if test else ~self.is_test
        return self.rows[chosen], self.labels[chosen]


def oracle_labelled_trades(
    bars: PriceBars, pip_size: Decimal, prediction_horizon: int, config: SignalTrainingConfig
) -> SignalDataset:
    features = SignalFeatures.of(bars)
    horizon = WeeklyHorizon.of(bars, prediction_horizon)
    first, count = features.first_usable, len(bars)
    split = first + int((count - first) * (1 - config.test_fraction))
    random = np.random.default_rng(config.seed)
    low, high = np.log(config.min_points), np.log(config.max_points)
    drawn = np.exp(random.uniform(low, high, size=(count, config.extra_trades_per_bar, 2)))
    entries: list[int] = []
    directions: list[float] = []
    tp_distances: list[float] = []
    sl_distances: list[float] = []
    labels: list[int] = []
    for entry in range(first, count):
        span = horizon.span(entry)
        if span.runs_out or (entry < split <= span.last):
            continue
        price = float(bars.close[entry])
        for tp, sl in [(0.0, 0.0), *drawn[entry].tolist()]:
            for levels in entry_levels(price, tp, sl, TradeCosts(), pip_size):
                tp_distance, sl_distance = distances(levels, price)
                entries.append(entry)
                directions.append(1.0 if levels.direction is Direction.BUY else -1.0)
                tp_distances.append(tp_distance)
                sl_distances.append(sl_distance)
                labels.append(int(target_first(bars, span, levels)))
    entry_array = np.asarray(entries, dtype=np.int64)
    rows = features.rows(
        entry_array, np.asarray(directions), np.asarray(tp_distances), np.asarray(sl_distances)
    )
    finite = np.isfinite(rows).all(axis=1)
    label_array = np.asarray(labels, dtype=np.int64)
    dataset = SignalDataset(
        rows[finite], label_array[finite], entry_array[finite], (entry_array >= split)[finite]
    )
    train_labels, test_labels = dataset.part(False)[1], dataset.part(True)[1]
    if len(train_labels) < 200 or len(test_labels) < 50 or len(set(train_labels.tolist())) < 2:
        raise ValueError(f"too few trades to train on: {len(train_labels)} train, {len(test_labels)} test")
    return dataset


def classification_metrics(probabilities: FloatArray, labels: IntArray) -> dict[str, float]:
    from sklearn.metrics import accuracy_score, log_loss, roc_auc_score

    metrics = {
        "accuracy": float(accuracy_score(labels, probabilities >= 0.5)),
        "log_loss": float(log_loss(labels, probabilities, labels=[0, 1])),
        "positive_rate": float(labels.mean()),
    }
    if len(set(labels.tolist())) == 2:
        metrics["auc"] = float(roc_auc_score(labels, probabilities))
    return metrics
