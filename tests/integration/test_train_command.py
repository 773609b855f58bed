"""``prediction-provider train`` on a symbol the demo knows nothing of (real GOOG bars relabelled ACME,
read from a CSV file under the data roots): the registered forecast model, the decision manifest naming
its source, a server deciding on ACME from that file, and one-line errors with exit code 2."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import httpx
import pandas as pd
import pytest
from typer.testing import CliRunner

from prediction_provider.app import account_service
from prediction_provider.cli import app
from prediction_provider.config import Settings
from prediction_provider.features.market_data import load_sample_bars
from prediction_provider.trading.specialists import MANIFEST, symbol_dir
from tests.conftest import TEST_JWT_SECRET, LiveServer

ROWS = 900


@dataclass(frozen=True)
class Trained:
    data_dir: Path
    csv: Path
    bars: pd.DataFrame
    output: str


def write_csv(path: Path, bars: pd.DataFrame) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    bars.rename_axis("time").reset_index().to_csv(path, index=False)
    return path


def train(data_dir: Path, *args: str) -> tuple[int, str, str]:
    result = CliRunner(env={"COLUMNS": "200"}).invoke(
        app, ["train", "--interval", "1d", "--data-dir", str(data_dir), *args]
    )
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    data_dir = tmp_path_factory.mktemp("train_command")
    bars = load_sample_bars("GOOG").iloc[-ROWS:]
    csv = write_csv(data_dir / "datasets" / "acme.csv", bars)
    code, out, err = train(data_dir, "--symbol", "ACME", "--source", "csv:acme.csv", "--horizons", "1,5")
    assert code == 0, out + err
    return Trained(data_dir, csv, bars, out)


def test_train_registers_the_forecast_model_with_its_source_and_prints_its_test_metrics(
    trained: Trained,
) -> None:
    from mlflow import MlflowClient

    settings = Settings(data_dir=trained.data_dir)
    client = MlflowClient(settings.tracking_uri, settings.tracking_uri)
    champion = client.get_model_version_by_alias("acme-1d-forecast", "champion")
    assert champion.tags["pp.kind"] == "forecast"
    assert champion.tags["symbol"] == "ACME"
    assert champion.tags["interval"] == "1d"
    assert champion.tags["horizons"] == "1,5"
    assert champion.tags["source"] == f"csv:{trained.csv.resolve()}"
    assert f"read {ROWS} ACME 1d bars from csv:{trained.csv.resolve()}" in trained.output
    assert "acme-1d-forecast version 1: test metrics per horizon" in trained.output
    table_rows = [line for line in trained.output.splitlines() if line.startswith("│")]
    assert [row.split("│")[1].strip() for row in table_rows] == ["1", "5"]


def test_train_writes_decision_models_whose_manifest_names_the_bars_source(trained: Trained) -> None:
    manifest = json.loads((symbol_dir(trained.data_dir, "ACME") / MANIFEST).read_text())
    assert manifest["symbol"] == "ACME"
    assert manifest["interval"] == "1d"
    assert manifest["source"] == f"csv:{trained.csv.resolve()}"
    assert manifest["bars"]["count"] == ROWS
    assert "universal" in manifest["models"]


@pytest.fixture(scope="module")
def server(trained: Trained) -> Iterator[tuple[LiveServer, dict[str, str]]]:
    settings = Settings(data_dir=trained.data_dir, jwt_secret=TEST_JWT_SECRET, grpc_enabled=False)
    accounts = account_service(settings)
    user = accounts.create_user("acme-trader", "acme@example.com", "acme-password-123", "client", active=True)
    key = accounts.regenerate_api_key(user["id"])["api_key"]
    accounts.db.dispose()
    with LiveServer(settings) as live:
        yield live, {"X-API-KEY": key}


def test_a_server_decides_on_the_trained_symbol_from_the_bars_it_was_trained_on(
    trained: Trained, server: tuple[LiveServer, dict[str, str]]
) -> None:
    live, headers = server
    with httpx.Client(base_url=live.url, headers=headers, timeout=30) as http:
        response = http.post("/api/v1/predict", json={"symbol": "ACME"})
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["symbol"] == "ACME"
        assert body["action"] in ("BUY", "SELL", "HOLD")
        # The latest bar of the CSV file, not of any PP_FEEDER series.
        assert datetime.fromisoformat(body["metadata"]["data_as_of"]) == trained.bars.index[-1]
        as_of = trained.bars.index[-100].isoformat()
        earlier = http.post("/api/v1/predict", json={"symbol": "ACME", "timestamp": as_of})
        assert earlier.status_code == 200, earlier.text
        assert datetime.fromisoformat(earlier.json()["metadata"]["data_as_of"]) == trained.bars.index[-100]


def test_a_symbol_without_decision_models_is_told_how_to_train_it(
    server: tuple[LiveServer, dict[str, str]],
) -> None:
    live, headers = server
    with httpx.Client(base_url=live.url, headers=headers, timeout=30) as http:
        response = http.post("/api/v1/predict", json={"symbol": "EURUSD"})
    assert response.status_code == 404, response.text
    error = response.json()["error"]
    assert error["code"] == "unknown_symbol"
    assert "prediction-provider train --symbol EURUSD --interval" in error["message"]
    assert error["details"]["available"] == ["ACME"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--symbol", "ACME", "--source", "bloomberg:acme.csv"], "no feeder plugin named 'bloomberg'"),
        (["--symbol", "ACME", "--source", "csv"], "csv needs a path"),
        (["--symbol", "ACME", "--source", "csv:/etc/hosts"], "outside the data roots"),
        (["--symbol", "ZETA", "--source", "csv:acme.csv"], "no market data for ZETA (available: ACME)"),
        (["--symbol", "TINY", "--source", "csv:tiny.csv"], "has 120 1d bars of TINY; training needs"),
        (["--symbol", "ACME", "--source", "csv:acme.csv"], "ACME has decision models"),
        (["--symbol", "ACME", "--source", "csv:acme.csv", "--force", "--horizons", "0"], "--horizons takes"),
    ],
)
def test_mistakes_end_with_one_line_and_exit_code_2(trained: Trained, args: list[str], message: str) -> None:
    write_csv(trained.data_dir / "datasets" / "tiny.csv", trained.bars.iloc[:120])
    before = sorted(path.name for path in (trained.data_dir / "models" / "decisions").iterdir())
    code, _, err = train(trained.data_dir, *args)
    assert code == 2
    assert err.startswith("error: "), err
    assert err.count("\n") == 1, err
    assert message in err
    assert "Traceback" not in err
    assert sorted(path.name for path in (trained.data_dir / "models" / "decisions").iterdir()) == before
