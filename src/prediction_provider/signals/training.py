"""Train the model-based signal predictors on the oracle's answers (run by the demo).

The training set is ``signals.dataset``'s; the bars are those the predictors
serve from (``model_signals.signal_bars``), the last ``max_bars`` of them. The
demo also writes the embedded EURUSD bars as an oracle CSV, the file to point
``PP_ORACLE_CSV`` at. The models go under ``data_dir/models/signals`` with a
card each (``signals.artifacts``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from prediction_provider.config import Settings
from prediction_provider.signals.artifacts import (
    LIGHTGBM_FILE,
    MC_DROPOUT_FILE,
    read_card,
    signal_models_dir,
    write_card,
)
from prediction_provider.signals.bars import write_bars_csv
from prediction_provider.signals.dataset import (
    LABEL,
    SignalDataset,
    SignalTrainingConfig,
    classification_metrics,
    oracle_labelled_trades,
)
from prediction_provider.signals.features import SIGNAL_FEATURES
from prediction_provider.signals.mc_dropout import DROPOUT_RATE, HIDDEN_LAYERS
from prediction_provider.signals.model_signals import DEMO_SYMBOL, signal_bars

log = logging.getLogger(__name__)

__all__ = ["SignalTrainingConfig", "SignalTrainingSummary", "train_signal_models"]


@dataclass(slots=True)
class SignalTrainingSummary:
    oracle_csv: Path
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    skipped: bool = False


def fit_lightgbm(data: SignalDataset, config: SignalTrainingConfig) -> tuple[Any, dict[str, float]]:
    import lightgbm

    params: dict[str, Any] = {
        "objective": "binary",
        "learning_rate": 0.05,
        "num_leaves": 15,
        "min_data_in_leaf": 40,
        "feature_fraction": 0.9,
        "bagging_fraction": 0.8,
        "bagging_freq": 1,
        "seed": config.seed,
        # A few thousand rows: a second thread only spin-waits, and on a busy machine it costs seconds.
        "num_threads": 1,
        "verbose": -1,
    }
    x_train, y_train = data.part(False)
    train = lightgbm.Dataset(x_train, y_train, feature_name=list(SIGNAL_FEATURES))
    booster = lightgbm.train(params, train, num_boost_round=config.lightgbm_rounds)
    x_test, y_test = data.part(True)
    return booster, classification_metrics(np.asarray(booster.predict(x_test)), y_test)


def torch_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("torch") is not None


def demo_oracle_csv(settings: Settings) -> Path:
    return (settings.data_dir / "oracle" / f"{DEMO_SYMBOL}_1h.csv").resolve()


def train_signal_models(
    settings: Settings,
    config: SignalTrainingConfig | None = None,
    *,
    force: bool = False,
    progress: Callable[[str], None] | None = None,
) -> SignalTrainingSummary:
    """Write the demo oracle CSV and train the signal models; a no-op for what already exists.

    The mc_dropout model is trained only when PyTorch is installed.
    """
    config = config or SignalTrainingConfig()
    report = progress or (lambda message: log.info("%s", message))
    summary = SignalTrainingSummary(demo_oracle_csv(settings))
    if force or not summary.oracle_csv.is_file():
        from prediction_provider.features.market_data import load_sample_bars

        write_bars_csv(load_sample_bars(DEMO_SYMBOL), summary.oracle_csv)
    directory = signal_models_dir(settings)
    wanted = [LIGHTGBM_FILE, *([MC_DROPOUT_FILE] if torch_available() else [])]
    missing = [name for name in wanted if force or read_card(directory / name) is None]
    if not missing:
        summary.skipped = True
        return summary
    bars = signal_bars(settings)
    if config.max_bars:
        bars = bars.tail(config.max_bars)
    data = oracle_labelled_trades(bars, settings.pip_size, settings.prediction_horizon, config)
    directory.mkdir(parents=True, exist_ok=True)
    card = {
        "features": list(SIGNAL_FEATURES),
        "label": LABEL,
        "bars": len(bars),
        "first_bar": bars.timestamp(0).isoformat(),
        "last_bar": bars.timestamp(len(bars) - 1).isoformat(),
        "pip_size": str(settings.pip_size),
        "train_rows": int((~data.is_test).sum()),
        "test_rows": int(data.is_test.sum()),
        "seed": config.seed,
        "trained_at": datetime.now(UTC).isoformat(),
    }
    if LIGHTGBM_FILE in missing:
        booster, metrics = fit_lightgbm(data, config)
        path = directory / LIGHTGBM_FILE
        partial = path.with_name(f".{path.name}.partial")
        booster.save_model(str(partial))
        os.replace(partial, path)
        write_card(path, {**card, "predictor": "lightgbm", "metrics": metrics})
        summary.metrics["lightgbm"] = metrics
    if MC_DROPOUT_FILE in missing:
        import torch

        from prediction_provider.signals.mc_training import fit_mc_dropout

        layers, standardizer, metrics = fit_mc_dropout(data, config)
        path = directory / MC_DROPOUT_FILE
        partial = path.with_name(f".{path.name}.partial")
        torch.save(layers.state_dict(), partial)
        os.replace(partial, path)
        write_card(
            path,
            {
                **card,
                "predictor": "mc_dropout",
                "metrics": metrics,
                "hidden": list(HIDDEN_LAYERS),
                "dropout": DROPOUT_RATE,
                "input_mean": standardizer.mean.tolist(),
                "input_std": standardizer.std.tolist(),
            },
        )
        summary.metrics["mc_dropout"] = metrics
    for name, metrics in summary.metrics.items():
        described = ", ".join(f"{key} {value:.3f}" for key, value in sorted(metrics.items()))
        report(
            f"signal model {name}: {described} ({card['train_rows']} train, {card['test_rows']} test trades)"
        )
    return summary
