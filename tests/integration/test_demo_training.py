"""Demo training on real bars: registration, aliases, metrics and the time-ordered split."""

from __future__ import annotations

import json
import shlex

import httpx
import pytest
from mlflow import MlflowClient
from typer.testing import CliRunner

from prediction_provider.cli import app, curl_example, forecast_curl_example
from prediction_provider.config import Settings
from prediction_provider.demo.training import FRAMEWORKS, DemoSummary, build_dataset, train_demo_models
from prediction_provider.features.market_data import load_sample_bars
from tests.conftest import TEST_DEMO, LiveServer


def test_each_symbol_gets_four_versions_with_metrics(settings: Settings, demo_summary: DemoSummary) -> None:
    client = MlflowClient(settings.tracking_uri, settings.tracking_uri)
    for name in ("eurusd-direction", "goog-direction"):
        trained = demo_summary.models[name]
        assert [t.framework for t in trained] == list(FRAMEWORKS)
        for version in trained:
            run = client.get_run(version.run_id)
            assert {"accuracy", "log_loss"} <= set(run.data.metrics)
            assert 0 <= run.data.metrics["accuracy"] <= 1
        aliases = client.get_registered_model(name).aliases
        by_version = {t.version: t for t in trained}
        champion, challenger = by_version[str(aliases["champion"])], by_version[str(aliases["challenger"])]
        assert champion.metrics["log_loss"] == min(t.metrics["log_loss"] for t in trained)
        assert {champion.framework, challenger.framework} != {"sklearn", "onnx"}
        assert champion.version != challenger.version


def test_training_again_is_skipped(settings: Settings, demo_summary: DemoSummary) -> None:
    client = MlflowClient(settings.tracking_uri, settings.tracking_uri)
    names = ("eurusd-direction", "eurusd-1h-forecast", "goog-1d-forecast")
    before = [len(client.search_model_versions(f"name = '{name}'")) for name in names]
    again = train_demo_models(settings, TEST_DEMO)
    assert again.skipped
    assert [len(client.search_model_versions(f"name = '{name}'")) for name in names] == before


@pytest.mark.parametrize(
    ("name", "symbol", "interval", "horizons"),
    [("eurusd-1h-forecast", "EURUSD", "1h", "1,3,6,12,24"), ("goog-1d-forecast", "GOOG", "1d", "1,5,10")],
)
def test_the_demo_registers_multi_horizon_forecast_models_with_test_metrics(
    settings: Settings, demo_summary: DemoSummary, name: str, symbol: str, interval: str, horizons: str
) -> None:
    client = MlflowClient(settings.tracking_uri, settings.tracking_uri)
    model = client.get_registered_model(name)
    assert "champion" in model.aliases
    assert {key: model.tags[key] for key in ("pp.kind", "symbol", "interval", "horizons", "source")} == {
        "pp.kind": "forecast", "symbol": symbol, "interval": interval, "horizons": horizons,
        "source": "backtesting",
    }  # fmt: skip
    version = client.get_model_version(name, model.aliases["champion"])
    metrics = client.get_run(version.run_id).data.metrics
    for step in horizons.split(","):
        for metric in ("accuracy", "log_loss", "pinball_loss", "interval_coverage", "quantile_crossing_rate"):
            assert f"h{step}_{metric}" in metrics
        assert 0 <= metrics[f"h{step}_interval_coverage"] <= 1


def test_split_is_ordered_in_time_with_a_gap() -> None:
    bars = load_sample_bars("EURUSD").iloc[-900:]
    data = build_dataset(bars, TEST_DEMO)
    assert data.x_train.index.max() < data.x_test.index.min()
    gap = (
        bars.index.get_indexer([data.x_test.index.min()])[0]
        - bars.index.get_indexer([data.x_train.index.max()])[0]
    )
    assert gap >= 2  # the last training label reads a bar that is not a test bar


def test_models_list_command_shows_the_demo_models(settings: Settings, demo_summary: DemoSummary) -> None:
    result = CliRunner(env={"COLUMNS": "200"}).invoke(
        app, ["models", "list", "--data-dir", str(settings.data_dir)]
    )
    assert result.exit_code == 0, result.output
    assert "eurusd-direction" in result.output
    assert "champion" in result.output


def test_printed_curl_example_works(settings: Settings, live_server: LiveServer, accounts: dict) -> None:
    command = shlex.split(curl_example(settings, "eurusd-direction", accounts["client"].api_key))
    body = json.loads(command[command.index("-d") + 1])
    headers = dict(h.split(": ", 1) for h in (command[i + 1] for i, c in enumerate(command) if c == "-H"))
    response = httpx.post(f"{live_server.url}/predict", json=body, headers=headers)
    assert response.status_code == 200
    assert response.json()["prediction"] in ("down", "flat", "up")


def test_printed_forecast_example_works(settings: Settings, live_server: LiveServer, accounts: dict) -> None:
    command = shlex.split(forecast_curl_example(settings, accounts["client"].api_key))
    body = json.loads(command[command.index("-d") + 1])
    headers = dict(h.split(": ", 1) for h in (command[i + 1] for i, c in enumerate(command) if c == "-H"))
    response = httpx.post(f"{live_server.url}/predict", json=body, headers=headers)
    assert response.status_code == 200, response.text
    assert [step["step"] for step in response.json()["forecasts"]] == [1, 3, 6]
