"""Train, evaluate and register the demo direction models.

For each symbol, one registered model ``<symbol>-direction`` gets four versions
(LightGBM, XGBoost, a scikit-learn random forest, and that forest exported to
ONNX). Aliases: ``champion`` and ``challenger`` by test log loss, plus one
alias per framework. The split is by time: the test set is the last bars, and
one bar is left out between them because each label reads the next bar.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from prediction_provider.config import Settings
from prediction_provider.features.market_data import SAMPLE_SERIES, load_sample_bars
from prediction_provider.features.pipeline import (
    DIRECTION_CLASSES,
    FEATURE_NAMES,
    compute_features,
    direction_labels,
)
from prediction_provider.modelops.drift.reference import ARTIFACT, build_profile

log = logging.getLogger(__name__)

FRAMEWORKS = ("lightgbm", "xgboost", "sklearn", "onnx")


@dataclass(frozen=True, slots=True)
class DemoConfig:
    symbols: Sequence[str] = ("EURUSD", "GOOG")
    max_bars: int | None = None
    flat_band: float = 0.25
    test_fraction: float = 0.2
    n_estimators: int = 150
    seed: int = 7


@dataclass(slots=True)
class TrainedVersion:
    framework: str
    version: str
    run_id: str
    metrics: dict[str, float]


@dataclass(slots=True)
class DemoSummary:
    models: dict[str, list[TrainedVersion]] = field(default_factory=dict)
    skipped: bool = False


def registered_name(symbol: str) -> str:
    return f"{symbol.lower()}-direction"


@dataclass(frozen=True, slots=True)
class Dataset:
    x_train: pd.DataFrame
    y_train: np.ndarray[Any, Any]
    x_test: pd.DataFrame
    y_test: np.ndarray[Any, Any]


def build_dataset(bars: pd.DataFrame, config: DemoConfig) -> Dataset:
    features = compute_features(bars)
    labels = direction_labels(bars, config.flat_band).reindex(features.index)
    frame = features.assign(direction=labels).dropna()
    split = int(len(frame) * (1 - config.test_fraction))
    train, test = frame.iloc[: split - 1], frame.iloc[split:]
    if len(train) < 100 or len(test) < 30:
        raise ValueError(f"too few bars to train on: {len(train)} train, {len(test)} test rows")
    return Dataset(
        x_train=train.loc[:, list(FEATURE_NAMES)],
        y_train=train["direction"].to_numpy(dtype=np.int64),
        x_test=test.loc[:, list(FEATURE_NAMES)],
        y_test=test["direction"].to_numpy(dtype=np.int64),
    )


def _metrics(probabilities: np.ndarray[Any, Any], y_true: np.ndarray[Any, Any]) -> dict[str, float]:
    from sklearn.metrics import accuracy_score, log_loss

    predicted = probabilities.argmax(axis=1)
    return {
        "accuracy": float(accuracy_score(y_true, predicted)),
        "log_loss": float(log_loss(y_true, probabilities, labels=list(range(len(DIRECTION_CLASSES))))),
    }


def _fit_lightgbm(data: Dataset, config: DemoConfig) -> tuple[Any, np.ndarray[Any, Any], dict[str, Any]]:
    import lightgbm

    params: dict[str, Any] = {
        "objective": "multiclass",
        "num_class": len(DIRECTION_CLASSES),
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
    train = lightgbm.Dataset(data.x_train, data.y_train, feature_name=list(FEATURE_NAMES))
    booster = lightgbm.train(params, train, num_boost_round=config.n_estimators)
    return (
        booster,
        np.asarray(booster.predict(data.x_test)),
        {**params, "num_boost_round": config.n_estimators},
    )


def _fit_xgboost(data: Dataset, config: DemoConfig) -> tuple[Any, np.ndarray[Any, Any], dict[str, Any]]:
    import xgboost

    params: dict[str, Any] = {
        "objective": "multi:softprob",
        "num_class": len(DIRECTION_CLASSES),
        "eta": 0.05,
        "max_depth": 4,
        "subsample": 0.8,
        "colsample_bytree": 0.8,
        "min_child_weight": 5,
        "seed": config.seed,
        "nthread": 2,
        "eval_metric": "mlogloss",
    }
    train = xgboost.DMatrix(data.x_train, label=data.y_train, feature_names=list(FEATURE_NAMES))
    booster = xgboost.train(params, train, num_boost_round=config.n_estimators)
    test = xgboost.DMatrix(data.x_test, feature_names=list(FEATURE_NAMES))
    return booster, booster.predict(test), {**params, "num_boost_round": config.n_estimators}


def _fit_forest(data: Dataset, config: DemoConfig) -> tuple[Any, np.ndarray[Any, Any], dict[str, Any]]:
    from sklearn.ensemble import RandomForestClassifier

    params: dict[str, Any] = {
        "n_estimators": config.n_estimators,
        "max_depth": 6,
        "min_samples_leaf": 20,
        "random_state": config.seed,
        "n_jobs": 2,
    }
    forest = RandomForestClassifier(**params).fit(data.x_train.to_numpy(), data.y_train)
    return forest, forest.predict_proba(data.x_test.to_numpy()), params


def _forest_to_onnx(forest: Any) -> Any:
    import json

    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType

    onnx_model = to_onnx(
        forest,
        initial_types=[("features", FloatTensorType([None, len(FEATURE_NAMES)]))],
        options={id(forest): {"zipmap": False}},
        target_opset={"": 17, "ai.onnx.ml": 3},
    )
    for key, value in (("feature_names", FEATURE_NAMES), ("class_labels", DIRECTION_CLASSES)):
        entry = onnx_model.metadata_props.add()
        entry.key, entry.value = key, json.dumps(list(value))
    return onnx_model


def already_trained(settings: Settings, symbols: Sequence[str]) -> bool:
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(settings.tracking_uri, settings.mlflow_registry_uri or settings.tracking_uri)
    for symbol in symbols:
        try:
            model = client.get_registered_model(registered_name(symbol))
        except MlflowException:
            return False
        if not {"champion", "challenger", *FRAMEWORKS} <= set(model.aliases or {}):
            return False
    return True


def train_demo_models(
    settings: Settings,
    config: DemoConfig | None = None,
    *,
    force: bool = False,
    progress: Callable[[str], None] | None = None,
) -> DemoSummary:
    """Train and register the demo models; a no-op when they are already registered."""
    config = config or DemoConfig()
    report = progress or (lambda message: log.info("%s", message))
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    _train_decision_models(settings, config, force, report)
    from prediction_provider.signals.training import SignalTrainingConfig, train_signal_models

    signal_config = SignalTrainingConfig(max_bars=config.max_bars, seed=config.seed)
    train_signal_models(settings, signal_config, force=force, progress=report)
    _train_forecast_models(settings, config, force, report)
    if not force and already_trained(settings, config.symbols):
        report("demo models already registered; skipping training")
        return DemoSummary(skipped=True)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    import mlflow

    previous = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    mlflow.set_tracking_uri(settings.tracking_uri)
    mlflow.set_registry_uri(settings.mlflow_registry_uri or settings.tracking_uri)
    try:
        experiment = mlflow.get_experiment_by_name(settings.experiment_name)
        experiment_id = (
            experiment.experiment_id
            if experiment is not None
            else mlflow.create_experiment(
                settings.experiment_name, artifact_location=settings.artifacts_dir.as_uri()
            )
        )
        summary = DemoSummary()
        for symbol in config.symbols:
            summary.models[registered_name(symbol)] = _train_symbol(symbol, config, experiment_id, report)
        return summary
    finally:
        # MLflow's fluent API is process-global: leave it as the caller had it.
        mlflow.set_tracking_uri(previous[0])
        mlflow.set_registry_uri(previous[1])


def _train_forecast_models(
    settings: Settings, config: DemoConfig, force: bool, report: Callable[[str], None]
) -> None:
    """The multi-horizon forecast model of each sample symbol at its own interval (EURUSD 1h for
    1, 3, 6, 12 and 24 bars; GOOG 1d for 1, 5 and 10), registered as ``<symbol>-<interval>-forecast``."""
    from prediction_provider.forecasts.training import (
        ForecastTraining,
        forecast_model_name,
        forecast_registered,
        train_forecast_model,
    )

    training = ForecastTraining(
        config.max_bars, config.n_estimators, config.flat_band, config.test_fraction, config.seed
    )
    for symbol in config.symbols:
        interval = SAMPLE_SERIES[symbol.upper()].interval
        if not force and forecast_registered(settings, forecast_model_name(symbol, interval)):
            continue
        train_forecast_model(
            settings, symbol, interval, load_sample_bars(symbol), source="backtesting", config=training,
            progress=report,
        )  # fmt: skip


def _train_decision_models(
    settings: Settings, config: DemoConfig, force: bool, report: Callable[[str], None]
) -> None:
    """The regime model and specialists behind POST /api/v1/predict (files, not registry entries)."""
    from prediction_provider.trading.training import DecisionTraining, train_decision_models

    training = DecisionTraining(
        config.max_bars, config.n_estimators, config.flat_band, config.test_fraction, config.seed
    )
    train_decision_models(settings.data_dir, config.symbols, training, force=force, progress=report)


def _train_symbol(
    symbol: str, config: DemoConfig, experiment_id: str, report: Callable[[str], None]
) -> list[TrainedVersion]:
    import mlflow
    from mlflow import MlflowClient
    from mlflow.models import infer_signature

    bars = load_sample_bars(symbol)
    if config.max_bars:
        bars = bars.iloc[-config.max_bars :]
    data = build_dataset(bars, config)
    name = registered_name(symbol)
    series = SAMPLE_SERIES[symbol.upper()]
    signature = infer_signature(data.x_test, np.zeros((1, len(DIRECTION_CLASSES))))
    metadata = {"class_labels": list(DIRECTION_CLASSES), "feature_names": list(FEATURE_NAMES)}
    tags = {"symbol": symbol.upper(), "interval": series.interval, "data_source": "backtesting.test"}
    common = {"name": "model", "signature": signature, "metadata": metadata, "registered_model_name": name}

    fitted: dict[str, tuple[Any, np.ndarray[Any, Any], dict[str, Any]]] = {
        "lightgbm": _fit_lightgbm(data, config),
        "xgboost": _fit_xgboost(data, config),
        "sklearn": _fit_forest(data, config),
    }
    forest, _, forest_params = fitted["sklearn"]
    onnx_model = _forest_to_onnx(forest)
    onnx_params = {**forest_params, "exported_from": "sklearn"}
    fitted["onnx"] = (onnx_model, _onnx_probabilities(onnx_model, data.x_test), onnx_params)

    trained = []
    for framework in FRAMEWORKS:
        model, probabilities, params = fitted[framework]
        metrics = _metrics(np.asarray(probabilities), data.y_test)
        with mlflow.start_run(experiment_id=experiment_id, run_name=f"{name}-{framework}") as run:
            mlflow.set_tags(
                {**tags, "framework": framework, "task": "direction", "classes": ",".join(DIRECTION_CLASSES)}
            )
            mlflow.log_params({k: v for k, v in params.items() if k not in ("verbose",)})
            mlflow.log_params(
                {
                    "train_rows": len(data.x_train),
                    "test_rows": len(data.x_test),
                    "flat_band": config.flat_band,
                }
            )
            mlflow.log_metrics(metrics)
            info = _log_model(framework, model, common)
            # The drift monitor's reference: training rows, labels, held-out answers, gain importances.
            mlflow.log_dict(_drift_reference(data, np.asarray(probabilities), framework, fitted), ARTIFACT)
        version = str(info.registered_model_version)
        trained.append(TrainedVersion(framework, version, run.info.run_id, metrics))
        report(
            f"{name} v{version} {framework}: "
            f"accuracy {metrics['accuracy']:.3f}, log loss {metrics['log_loss']:.3f}"
        )

    client = MlflowClient()
    client.update_registered_model(
        name, description=f"Next-bar direction (down/flat/up) of {symbol.upper()} {series.interval} bars"
    )
    for key, value in tags.items():
        client.set_registered_model_tag(name, key, value)
    ranked = sorted(trained, key=lambda t: t.metrics["log_loss"])
    champion = ranked[0]
    # The ONNX version is the forest re-encoded: a challenger must be a different model.
    challenger = next(t for t in ranked[1:] if _family(t.framework) != _family(champion.framework))
    client.set_registered_model_alias(name, "champion", champion.version)
    client.set_registered_model_alias(name, "challenger", challenger.version)
    for entry in trained:
        client.set_registered_model_alias(name, entry.framework, entry.version)
        client.set_model_version_tag(name, entry.version, "framework", entry.framework)
    report(
        f"{name}: champion v{champion.version} ({champion.framework}), "
        f"challenger v{challenger.version} ({challenger.framework})"
    )
    return trained


def _gain_importances(framework: str, fitted: dict[str, tuple[Any, Any, Any]]) -> dict[str, float] | None:
    """Each feature's total gain (LightGBM, XGBoost) or impurity decrease (the forest, and its ONNX copy)."""
    model = fitted["sklearn" if framework == "onnx" else framework][0]
    if framework == "lightgbm":
        gains = model.feature_importance(importance_type="gain")
        return {name: float(gain) for name, gain in zip(model.feature_name(), gains, strict=True)}
    if framework == "xgboost":
        return {name: float(gain) for name, gain in model.get_score(importance_type="gain").items()}
    return {name: float(v) for name, v in zip(FEATURE_NAMES, model.feature_importances_, strict=True)}


def _drift_reference(
    data: Dataset, probabilities: np.ndarray[Any, Any], framework: str, fitted: dict[str, Any]
) -> dict[str, Any]:
    importances = _gain_importances(framework, fitted)
    return build_profile(
        FEATURE_NAMES,
        data.x_train.to_numpy(np.float64),
        labels=data.y_train.tolist(),
        classes=DIRECTION_CLASSES,
        test_matrix=data.x_test.to_numpy(np.float64),
        test_probabilities=probabilities,
        importances={name: importances.get(name, 0.0) for name in FEATURE_NAMES} if importances else None,
    )


def _family(framework: str) -> str:
    return "sklearn" if framework == "onnx" else framework


def _onnx_probabilities(onnx_model: Any, features: pd.DataFrame) -> np.ndarray[Any, Any]:
    import onnxruntime

    session = onnxruntime.InferenceSession(onnx_model.SerializeToString(), providers=["CPUExecutionProvider"])
    (probabilities,) = session.run(["probabilities"], {"features": features.to_numpy(np.float32)})
    return np.asarray(probabilities)


def _log_model(framework: str, model: Any, common: dict[str, Any]) -> Any:
    import mlflow

    if framework == "lightgbm":
        return mlflow.lightgbm.log_model(model, pip_requirements=["lightgbm"], **common)
    if framework == "xgboost":
        return mlflow.xgboost.log_model(model, model_format="json", pip_requirements=["xgboost"], **common)
    if framework == "sklearn":
        return mlflow.sklearn.log_model(
            model,
            serialization_format="skops",
            skops_trusted_types=["sklearn.tree._tree.Tree"],
            pip_requirements=["scikit-learn", "skops"],
            **common,
        )
    return mlflow.onnx.log_model(model, pip_requirements=["onnx", "onnxruntime"], **common)
