"""Train, evaluate and register the multi-horizon forecast model of one symbol and interval.

For every horizon ``h`` (in bars of the interval) the model has a direction
classifier (down / flat / up: the log return over ``h`` bars beyond
``flat_band`` times the trailing 20-bar volatility times sqrt(h)) and LightGBM
quantile regressors of that log return at 0.1 / 0.5 / 0.9. The median is the
``expected_return``; the outer pair is the 80 % interval.

The split is by time: the test rows are the last ``test_fraction`` of the
bars, and the ``h`` rows before them are left out of training, because their
labels read the test period's closes (overlap leakage). Test metrics per
horizon (accuracy, log loss, pinball loss, interval coverage, how often the
raw quantiles crossed) are logged to the MLflow run and kept in the manifest.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from prediction_provider.config import Settings
from prediction_provider.features.feeders.base import normalise_symbol
from prediction_provider.features.pipeline import (
    FEATURE_NAMES,
    WARMUP_BARS,
    compute_features,
    horizon_labels,
)
from prediction_provider.forecasts.model import (
    DIRECTION_CLASSES,
    FLAVOR,
    MANIFEST,
    QUANTILES,
    ForecastManifest,
    HorizonFiles,
)

log = logging.getLogger(__name__)

FEATURE_PIPELINE = "point_in_time/v1"
# The demo's horizons: steps of the series' own interval.
DEFAULT_HORIZONS = {"1h": (1, 3, 6, 12, 24), "1d": (1, 5, 10)}
FALLBACK_HORIZONS = (1, 3, 6)
MIN_TRAIN_ROWS = 200
MIN_TEST_ROWS = 50


@dataclass(frozen=True, slots=True)
class ForecastTraining:
    max_bars: int | None = None
    n_estimators: int = 120
    flat_band: float = 0.25
    test_fraction: float = 0.2
    seed: int = 7


@dataclass(slots=True)
class TrainedForecast:
    name: str
    version: str
    run_id: str
    horizons: tuple[int, ...]
    metrics: dict[int, dict[str, float]] = field(default_factory=dict)


def forecast_model_name(symbol: str, interval: str) -> str:
    return f"{normalise_symbol(symbol).lower()}-{interval}-forecast"


def default_horizons(interval: str) -> tuple[int, ...]:
    return DEFAULT_HORIZONS.get(interval, FALLBACK_HORIZONS)


@dataclass(frozen=True, slots=True)
class HorizonData:
    x_train: np.ndarray[Any, Any]
    direction_train: np.ndarray[Any, Any]
    return_train: np.ndarray[Any, Any]
    x_test: np.ndarray[Any, Any]
    direction_test: np.ndarray[Any, Any]
    return_test: np.ndarray[Any, Any]
    train_times: pd.DatetimeIndex
    test_times: pd.DatetimeIndex


def horizon_data(bars: pd.DataFrame, horizon: int, config: ForecastTraining) -> HorizonData:
    """Rows of features at ``t`` with the labels of ``t + horizon``, split by time with a gap."""
    features = compute_features(bars)
    labels = horizon_labels(bars, config.flat_band, horizon)
    frame = features.join(labels).dropna()
    split = int(len(frame) * (1 - config.test_fraction))
    train, test = frame.iloc[: max(0, split - horizon)], frame.iloc[split:]
    if len(train) < MIN_TRAIN_ROWS or len(test) < MIN_TEST_ROWS:
        raise ValueError(
            f"too few bars to train horizon {horizon}: {len(train)} train and {len(test)} test rows "
            f"(need {MIN_TRAIN_ROWS} and {MIN_TEST_ROWS}; {len(bars)} bars given, "
            f"{WARMUP_BARS} go to warm-up)"
        )
    names = list(FEATURE_NAMES)
    return HorizonData(
        train[names].to_numpy(np.float64),
        train["direction"].to_numpy(np.int64),
        train["log_return"].to_numpy(np.float64),
        test[names].to_numpy(np.float64),
        test["direction"].to_numpy(np.int64),
        test["log_return"].to_numpy(np.float64),
        pd.DatetimeIndex(train.index),
        pd.DatetimeIndex(test.index),
    )


def _common_params(config: ForecastTraining) -> dict[str, Any]:
    return {
        "learning_rate": 0.05,
        "num_leaves": 15,
        "min_data_in_leaf": 40,
        "feature_fraction": 0.8,
        "bagging_fraction": 0.8,
        "bagging_freq": 1,
        "seed": config.seed,
        "num_threads": 2,
        "verbose": -1,
    }


def fit_horizon(data: HorizonData, config: ForecastTraining) -> tuple[Any, list[Any], dict[str, float]]:
    """The direction classifier, the quantile regressors and their test metrics."""
    import lightgbm
    from sklearn.metrics import accuracy_score, log_loss, mean_pinball_loss

    names = list(FEATURE_NAMES)
    params = _common_params(config)
    classifier = lightgbm.train(
        {**params, "objective": "multiclass", "num_class": len(DIRECTION_CLASSES)},
        lightgbm.Dataset(data.x_train, data.direction_train, feature_name=names),
        num_boost_round=config.n_estimators,
    )
    regressors = [
        lightgbm.train(
            {**params, "objective": "quantile", "alpha": alpha},
            lightgbm.Dataset(data.x_train, data.return_train, feature_name=names),
            num_boost_round=config.n_estimators,
        )
        for alpha in QUANTILES
    ]
    probabilities = np.asarray(classifier.predict(data.x_test))
    raw = np.column_stack([np.asarray(model.predict(data.x_test)) for model in regressors])
    ordered = np.sort(raw, axis=1)
    truth = data.return_test
    metrics = {
        "accuracy": float(accuracy_score(data.direction_test, probabilities.argmax(axis=1))),
        "log_loss": float(log_loss(data.direction_test, probabilities, labels=[0, 1, 2])),
        "pinball_loss": float(
            np.mean([mean_pinball_loss(truth, ordered[:, i], alpha=a) for i, a in enumerate(QUANTILES)])
        ),
        "interval_coverage": float(np.mean((truth >= ordered[:, 0]) & (truth <= ordered[:, -1]))),
        "quantile_crossing_rate": float(np.mean(np.any(np.diff(raw, axis=1) < 0, axis=1))),
        "train_rows": float(len(data.x_train)),
        "test_rows": float(len(data.x_test)),
    }
    return classifier, regressors, metrics


def train_forecast_model(
    settings: Settings,
    symbol: str,
    interval: str,
    bars: pd.DataFrame,
    *,
    source: str,
    horizons: Sequence[int] | None = None,
    config: ForecastTraining | None = None,
    progress: Callable[[str], None] | None = None,
) -> TrainedForecast:
    """Fit every horizon on ``bars`` (a feeder's normalised OHLCV frame), log the run and register
    a new version of ``<symbol>-<interval>-forecast`` as its ``champion``."""
    config = config or ForecastTraining()
    report = progress or (lambda message: log.info("%s", message))
    symbol = normalise_symbol(symbol)
    steps = tuple(sorted(set(horizons or default_horizons(interval))))
    if not steps or steps[0] < 1:
        raise ValueError(f"horizons must be positive bar counts, not {list(horizons or [])}")
    if config.max_bars:
        bars = bars.iloc[-config.max_bars :]
    name = forecast_model_name(symbol, interval)
    with tempfile.TemporaryDirectory(prefix="pp-forecast-") as scratch:
        model_dir = Path(scratch) / "model"
        model_dir.mkdir()
        files: dict[int, HorizonFiles] = {}
        metrics: dict[int, dict[str, float]] = {}
        for step in steps:
            classifier, regressors, step_metrics = fit_horizon(horizon_data(bars, step, config), config)
            files[step] = HorizonFiles(
                f"h{step}_direction.txt", tuple(f"h{step}_q{int(q * 100):02d}.txt" for q in QUANTILES)
            )
            classifier.save_model(str(model_dir / files[step].direction))
            for booster, file_name in zip(regressors, files[step].quantiles, strict=True):
                booster.save_model(str(model_dir / file_name))
            metrics[step] = step_metrics
            report(
                f"{name} h={step}: accuracy {step_metrics['accuracy']:.3f}, log loss "
                f"{step_metrics['log_loss']:.3f}, 80% coverage {step_metrics['interval_coverage']:.2f}"
            )
        manifest = ForecastManifest(
            symbol, interval, steps, FEATURE_NAMES, FEATURE_PIPELINE, config.flat_band, source, files
        )
        (model_dir / MANIFEST).write_text(json.dumps(manifest.as_json(), indent=2), encoding="utf-8")
        return _register(settings, name, manifest, model_dir, metrics, bars, config)


def forecast_registered(settings: Settings, name: str) -> bool:
    """True when ``name`` has a champion (what serving it needs)."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(settings.tracking_uri, settings.mlflow_registry_uri or settings.tracking_uri)
    try:
        return "champion" in (client.get_registered_model(name).aliases or {})
    except MlflowException:
        return False


def manifest_tags(manifest: ForecastManifest) -> dict[str, str]:
    """The registry tags a forecast model is found by (``pp.kind=forecast``, symbol, interval)."""
    return {
        "pp.kind": "forecast",
        "symbol": manifest.symbol,
        "interval": manifest.interval,
        "task": "direction,return",
        "horizons": ",".join(str(h) for h in manifest.horizons),
        "flat_band": str(manifest.flat_band),
        "feature_pipeline": manifest.feature_pipeline,
        "source": manifest.source,
    }


def _register(
    settings: Settings,
    name: str,
    manifest: ForecastManifest,
    model_dir: Path,
    metrics: dict[int, dict[str, float]],
    bars: pd.DataFrame,
    config: ForecastTraining,
) -> TrainedForecast:
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    import mlflow
    from mlflow import MlflowClient
    from mlflow.models import Model

    registry_uri = settings.mlflow_registry_uri or settings.tracking_uri
    client = MlflowClient(settings.tracking_uri, registry_uri)
    experiment = client.get_experiment_by_name(settings.experiment_name)
    experiment_id = (
        experiment.experiment_id
        if experiment is not None
        else client.create_experiment(settings.experiment_name, settings.artifacts_dir.as_uri())
    )
    tags = manifest_tags(manifest)
    run = client.create_run(experiment_id, run_name=name, tags={**tags, "framework": "lightgbm"})
    run_id = run.info.run_id
    try:
        mlmodel = Model(run_id=run_id, artifact_path="model", metadata={"feature_names": list(FEATURE_NAMES)})
        mlmodel.add_flavor(FLAVOR, manifest=MANIFEST, format_version=1)
        mlmodel.save(str(model_dir / "MLmodel"))
        params = {
            "n_estimators": config.n_estimators, "flat_band": config.flat_band,
            "test_fraction": config.test_fraction, "seed": config.seed, "bars": len(bars),
            "first_bar": bars.index[0].isoformat(), "last_bar": bars.index[-1].isoformat(),
        }  # fmt: skip
        for key, value in params.items():
            client.log_param(run_id, key, value)
        for step, values in metrics.items():
            for metric, value in values.items():
                client.log_metric(run_id, f"h{step}_{metric}", value)
        client.log_artifacts(run_id, str(model_dir), "model")
        client.set_terminated(run_id)
    except Exception:
        client.set_terminated(run_id, "FAILED")
        raise
    try:
        client.get_registered_model(name)
    except mlflow.exceptions.MlflowException:
        client.create_registered_model(
            name, tags, f"{manifest.symbol} {manifest.interval}: direction and log-return quantiles"
        )
    source_uri = f"{run.info.artifact_uri}/model"
    version = client.create_model_version(name, source_uri, run_id, tags=tags)
    for key, value in tags.items():
        client.set_registered_model_tag(name, key, value)
    client.set_registered_model_alias(name, "champion", version.version)
    return TrainedForecast(name, str(version.version), run_id, manifest.horizons, metrics)
