"""Forecast training: labels, the gap between train and test, and the model format round trip."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from prediction_provider.features.market_data import load_sample_bars
from prediction_provider.features.pipeline import (
    FEATURE_NAMES,
    compute_features,
    direction_labels,
    horizon_labels,
)
from prediction_provider.forecasts.answers import step_offset
from prediction_provider.forecasts.model import MANIFEST, ForecastLoader, ForecastManifest, ForecastModel
from prediction_provider.forecasts.training import ForecastTraining, fit_horizon, horizon_data
from prediction_provider.serving.loaders import open_source

CONFIG = ForecastTraining(max_bars=900, n_estimators=20)


@pytest.fixture(scope="module")
def bars() -> pd.DataFrame:
    return load_sample_bars("EURUSD").iloc[-900:]


def test_horizon_labels_read_the_close_h_bars_later(bars: pd.DataFrame) -> None:
    labels = horizon_labels(bars, 0.25, 6)
    close = bars["close"].to_numpy()
    assert labels["log_return"].iloc[10] == pytest.approx(np.log(close[16] / close[10]), abs=1e-15)
    assert labels["log_return"].iloc[-6:].isna().all()
    assert labels["direction"].iloc[-6:].isna().all()


def test_one_bar_horizon_labels_equal_the_next_bar_direction_labels(bars: pd.DataFrame) -> None:
    pd.testing.assert_series_equal(direction_labels(bars, 0.25), horizon_labels(bars, 0.25, 1)["direction"])


@pytest.mark.parametrize("horizon", [1, 6, 24])
def test_train_rows_end_a_horizon_before_the_test_rows(bars: pd.DataFrame, horizon: int) -> None:
    data = horizon_data(bars, horizon, CONFIG)
    positions = bars.index.get_indexer
    last_train = positions([data.train_times.max()])[0]
    first_test = positions([data.test_times.min()])[0]
    # The last training label reads the close `horizon` bars later: strictly before the test period.
    assert last_train + horizon < first_test


def test_too_few_bars_is_an_error_naming_the_counts(bars: pd.DataFrame) -> None:
    with pytest.raises(ValueError, match="too few bars to train horizon 6"):
        horizon_data(bars.iloc[:150], 6, CONFIG)


def test_fitted_quantiles_report_metrics_of_the_test_rows(bars: pd.DataFrame) -> None:
    _, regressors, metrics = fit_horizon(horizon_data(bars, 3, CONFIG), CONFIG)
    assert len(regressors) == 3
    assert 0.0 <= metrics["interval_coverage"] <= 1.0
    assert metrics["log_loss"] > 0
    assert metrics["pinball_loss"] > 0
    assert metrics["test_rows"] >= 50


def _write_model(directory: Path, bars: pd.DataFrame) -> ForecastManifest:
    from prediction_provider.forecasts.model import HorizonFiles

    files = {}
    for step in (1, 3):
        classifier, regressors, _ = fit_horizon(horizon_data(bars, step, CONFIG), CONFIG)
        files[step] = HorizonFiles(f"h{step}_direction.txt", tuple(f"h{step}_q{i}.txt" for i in range(3)))
        classifier.save_model(str(directory / files[step].direction))
        for booster, name in zip(regressors, files[step].quantiles, strict=True):
            booster.save_model(str(directory / name))
    manifest = ForecastManifest(
        "EURUSD", "1h", (1, 3), FEATURE_NAMES, "point_in_time/v1", 0.25, "backtesting", files
    )
    (directory / MANIFEST).write_text(json.dumps(manifest.as_json()))
    (directory / "MLmodel").write_text(
        "flavors:\n  prediction_provider_forecast:\n    manifest: forecast.json\n    format_version: 1\n"
    )
    return manifest


def test_a_loaded_forecast_model_answers_like_its_boosters(tmp_path: Path, bars: pd.DataFrame) -> None:
    import lightgbm

    manifest = _write_model(tmp_path, bars)
    assert ForecastManifest.from_json(manifest.as_json()) == manifest
    model = ForecastLoader().load(open_source(tmp_path, 1))
    assert isinstance(model, ForecastModel)
    row = compute_features(bars).iloc[-1].to_numpy()
    (one, three) = model.forecast(row, (1, 3))
    direction = lightgbm.Booster(model_file=str(tmp_path / "h3_direction.txt"))
    assert three.probabilities == pytest.approx(direction.predict(row.reshape(1, -1))[0], abs=1e-12)
    expected = sorted(
        float(lightgbm.Booster(model_file=str(tmp_path / f"h3_q{i}.txt")).predict(row.reshape(1, -1))[0])
        for i in range(3)
    )
    assert list(three.quantiles) == pytest.approx(expected, abs=1e-12)
    assert list(one.quantiles) == sorted(one.quantiles)  # never crossing
    model.unload()


def test_a_manifest_pointing_outside_its_directory_is_refused(tmp_path: Path, bars: pd.DataFrame) -> None:
    manifest = _write_model(tmp_path, bars)
    data = manifest.as_json()
    data["files"]["1"]["direction"] = "../../etc/passwd"
    (tmp_path / MANIFEST).write_text(json.dumps(data))
    with pytest.raises(ValueError, match="outside its directory"):
        ForecastLoader().load(open_source(tmp_path, 1))


def test_daily_steps_count_business_days_and_hourly_steps_hours() -> None:
    friday = pd.Timestamp("2010-01-08", tz="UTC")
    assert friday + 1 * step_offset("1d") == pd.Timestamp("2010-01-11", tz="UTC")
    assert friday + 5 * step_offset("1d") == pd.Timestamp("2010-01-15", tz="UTC")
    assert friday + 6 * step_offset("1h") == pd.Timestamp("2010-01-08 06:00", tz="UTC")
