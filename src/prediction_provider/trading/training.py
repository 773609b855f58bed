"""Train the decision models of a symbol: the regime HMM, one specialist per regime, a universal model.

Bars are labelled with the regime the *filtered* HMM posterior favours at each
bar (no look-ahead, as at serving time), and each specialist learns the next
bar's direction on its regime's bars only. The universal model learns on all
of them and stands in for a specialist whose regime had too few bars to train
on. The split is by time, as for the demo models: the last bars are the test
set, one bar left out between, and each model's test metrics go to the manifest.

The manifest also names the bars' source (a feeder spec, ``features.feeders.spec``):
the server reads that symbol's bars from it. Symbols trained without one (the
demo's sample bars) are read from ``PP_FEEDER``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from prediction_provider.errors import InsufficientHistory
from prediction_provider.features.market_data import SAMPLE_SERIES, load_sample_bars
from prediction_provider.features.pipeline import (
    DIRECTION_CLASSES,
    FEATURE_NAMES,
    compute_features,
    direction_labels,
)
from prediction_provider.trading.regime import REGIMES, fit_regime_model
from prediction_provider.trading.specialists import (
    MANIFEST,
    REGIME_FILE,
    UNIVERSAL,
    model_name,
    symbol_dir,
)

log = logging.getLogger(__name__)

MIN_TRAIN_ROWS = 80
# The regime HMM needs 150 observations; the universal model 80 training rows after the 40 warm-up
# bars, the last (unlabelled) bar and the test split.
MIN_BARS = 200


@dataclass(frozen=True, slots=True)
class DecisionTraining:
    max_bars: int | None = None
    n_estimators: int = 150
    flat_band: float = 0.25
    test_fraction: float = 0.2
    seed: int = 7


@dataclass(frozen=True, slots=True)
class TrainingBars:
    """One symbol's bars to train on (a feeder's normalised OHLCV frame), and ``source``: the feeder
    spec the server reads the symbol's bars from (``None``: ``PP_FEEDER``)."""

    symbol: str
    interval: str
    bars: pd.DataFrame
    source: str | None = None


def sample_training_bars(symbol: str) -> TrainingBars:
    """A sample series (``features.market_data``), read at serving time from ``PP_FEEDER``."""
    return TrainingBars(symbol.upper(), SAMPLE_SERIES[symbol.upper()].interval, load_sample_bars(symbol))


def decision_models_exist(data_dir: Path, symbols: Sequence[str]) -> bool:
    return all((symbol_dir(data_dir, symbol) / MANIFEST).is_file() for symbol in symbols)


def train_decision_models(
    data_dir: Path,
    symbols: Sequence[str | TrainingBars],
    config: DecisionTraining,
    *,
    force: bool = False,
    progress: Callable[[str], None] | None = None,
) -> list[Path]:
    """Train and save the decision models of each symbol; skip symbols already trained.

    A name stands for its sample series; ``TrainingBars`` carry any feeder's bars.
    """
    report = progress or (lambda message: log.info("%s", message))
    written = []
    for entry in symbols:
        symbol = entry.symbol if isinstance(entry, TrainingBars) else entry.upper()
        directory = symbol_dir(data_dir, symbol)
        if not force and (directory / MANIFEST).is_file():
            continue
        series = entry if isinstance(entry, TrainingBars) else sample_training_bars(symbol)
        bars = series.bars.iloc[-config.max_bars :] if config.max_bars else series.bars
        written.append(
            train_symbol(symbol, series.interval, bars, directory, config, report, source=series.source)
        )
    return written


def _split(frame: pd.DataFrame, test_fraction: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    cut = int(len(frame) * (1 - test_fraction))
    return frame.iloc[: cut - 1], frame.iloc[cut:]


def train_symbol(
    symbol: str,
    interval: str,
    bars: pd.DataFrame,
    directory: Path,
    config: DecisionTraining,
    report: Callable[[str], None],
    *,
    source: str | None = None,
) -> Path:
    """Fit everything on ``bars`` and write it to ``directory``; the manifest is written last.

    ``source`` (a feeder spec) is where the server will read the symbol's bars; ``None``: ``PP_FEEDER``.
    """
    if len(bars) < MIN_BARS:
        raise InsufficientHistory(
            f"{symbol} has {len(bars)} {interval} bars; decision models need at least {MIN_BARS}",
            [{"field": "bars", "error": f"{len(bars)} < {MIN_BARS}"}],
        )
    regime_model = fit_regime_model(bars, seed=config.seed)
    regimes = regime_model.regime_per_bar(bars)
    features = compute_features(bars).loc[:, list(FEATURE_NAMES)]
    labels = direction_labels(bars, config.flat_band)
    frame = features.assign(direction=labels, regime=regimes).dropna()
    train, test = _split(frame, config.test_fraction)
    if len(train) < MIN_TRAIN_ROWS:
        raise InsufficientHistory(
            f"{symbol}: only {len(train)} training rows; the universal model needs {MIN_TRAIN_ROWS}",
            [{"field": "bars", "error": f"{len(train)} training rows < {MIN_TRAIN_ROWS}"}],
        )
    directory.mkdir(parents=True, exist_ok=True)
    regime_model.save(directory / REGIME_FILE)

    models: dict[str, dict[str, Any]] = {}
    subsets = {f"{regime}_specialist": regime for regime in REGIMES}
    for strategy, regime in [*subsets.items(), (UNIVERSAL, None)]:
        rows = train if regime is None else train[train["regime"] == regime]
        held_out = test if regime is None else test[test["regime"] == regime]
        name = model_name(symbol, strategy)
        if len(rows) < MIN_TRAIN_ROWS:
            report(f"{name}: only {len(rows)} training bars in the {regime} regime; not trained")
            continue
        booster = _fit(rows, config)
        file_name = f"{strategy}.lgb"
        booster.save_model(str(directory / file_name))
        _write_sidecar(directory / file_name)
        metrics = _metrics(booster, held_out)
        models[strategy] = {"file": file_name, "train_rows": len(rows), "test_rows": len(held_out), **metrics}
        shown = ", ".join(f"{key} {value:.3f}" for key, value in metrics.items())
        report(f"{name}: {len(rows)} training bars{', ' + shown if shown else ''}")

    manifest = {
        "symbol": symbol,
        "interval": interval,
        "source": source,
        "trained_at": datetime.now(UTC).isoformat(),
        "bars": {"first": bars.index[0].isoformat(), "last": bars.index[-1].isoformat(), "count": len(bars)},
        "feature_names": list(FEATURE_NAMES),
        "classes": list(DIRECTION_CLASSES),
        "flat_band": config.flat_band,
        "regime": {
            "file": REGIME_FILE,
            "state_regimes": list(regime_model.state_regimes),
            "training_share": {regime: float((frame["regime"] == regime).mean()) for regime in REGIMES},
        },
        "models": models,
    }
    temporary = directory / (MANIFEST + ".tmp")
    temporary.write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    temporary.replace(directory / MANIFEST)
    return directory


def _fit(rows: pd.DataFrame, config: DecisionTraining) -> Any:
    import lightgbm

    params: dict[str, Any] = {
        "objective": "multiclass",
        "num_class": len(DIRECTION_CLASSES),
        "learning_rate": 0.05,
        "num_leaves": 15,
        "min_data_in_leaf": 20,
        "feature_fraction": 0.8,
        "bagging_fraction": 0.8,
        "bagging_freq": 1,
        "seed": config.seed,
        "num_threads": 2,
        "verbose": -1,
    }
    data = lightgbm.Dataset(
        rows.loc[:, list(FEATURE_NAMES)],
        rows["direction"].to_numpy(np.int64),
        feature_name=list(FEATURE_NAMES),
    )
    return lightgbm.train(params, data, num_boost_round=config.n_estimators)


def _metrics(booster: Any, held_out: pd.DataFrame) -> dict[str, float]:
    if len(held_out) == 0:
        return {}
    from sklearn.metrics import accuracy_score, log_loss

    probabilities = np.asarray(booster.predict(held_out.loc[:, list(FEATURE_NAMES)]))
    truth = held_out["direction"].to_numpy(np.int64)
    return {
        "accuracy": float(accuracy_score(truth, probabilities.argmax(axis=1))),
        "log_loss": float(log_loss(truth, probabilities, labels=list(range(len(DIRECTION_CLASSES))))),
    }


def _write_sidecar(model_file: Path) -> None:
    """Metadata the LightGBM loader reads, so the file is also servable as a ``file://`` model."""
    sidecar = model_file.with_name(model_file.name + ".meta.json")
    sidecar.write_text(
        json.dumps({"class_labels": list(DIRECTION_CLASSES), "feature_names": list(FEATURE_NAMES)}),
        encoding="utf-8",
    )
