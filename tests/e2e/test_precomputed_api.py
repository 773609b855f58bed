"""``batch-infer`` writes precomputed predictions that ``/predict/precomputed/{key}`` then serves."""

from __future__ import annotations

from pathlib import Path

import httpx
import pandas as pd
from typer.testing import CliRunner

from prediction_provider.cli import app as cli
from prediction_provider.cli import settings_env
from prediction_provider.config import Settings
from tests.conftest import MODEL, Account, LiveServer


def test_batch_infer_output_is_served_by_key(
    settings: Settings,
    accounts: dict[str, Account],
    eurusd_features: pd.DataFrame,
    tmp_path: Path,
) -> None:
    data = eurusd_features.reset_index()  # the bar time becomes the key column
    data_path = tmp_path / "features.csv"
    data.to_csv(data_path, index=False)
    out = tmp_path / "precomputed.parquet"
    env = {name: value for name, value in settings_env(settings).items() if name != "PP_JWT_SECRET"}
    result = CliRunner().invoke(
        cli,
        ["batch-infer", "--model", MODEL, "--data", str(data_path), "--out", str(out), "--chunk-rows", "64"],
        env=env,
    )
    assert result.exit_code == 0, result.output
    written = pd.read_parquet(out)
    assert len(written) == len(data)
    assert list(written["key"]) == list(data["time"].astype(str))
    assert {"prediction", "proba_down", "proba_flat", "proba_up"} <= set(written.columns)
    assert not list(tmp_path.glob(".*.tmp"))

    served = settings.model_copy(update={"precomputed_path": out, "precomputed_key": "key"})
    with (
        LiveServer(served) as server,
        httpx.Client(base_url=server.url, headers=accounts["client"].headers) as http,
    ):
        key = written["key"].iloc[-1]
        answer = http.get(f"/predict/precomputed/{key}")
        assert answer.status_code == 200, answer.text
        direct = http.post(
            "/predict", json={"model": MODEL, "features": eurusd_features.iloc[-1].to_dict()}
        ).json()
        assert answer.json()["prediction"] == direct["prediction"]
        assert answer.json()["proba_up"] == direct["probabilities"]["up"]
        # The key column holds times: their ISO 8601 spelling with Z finds the same row.
        iso = pd.Timestamp(key).tz_convert("UTC").strftime("%Y-%m-%dT%H:%M:%SZ")
        assert iso != key
        by_iso = http.get(f"/predict/precomputed/{iso}")
        assert by_iso.status_code == 200, by_iso.text
        assert by_iso.json()["prediction"] == answer.json()["prediction"]
        missing = http.get("/predict/precomputed/no-such-key")
        assert missing.status_code == 404
        assert missing.json()["error"]["code"] == "precomputed_not_found"


def test_batch_infer_refuses_a_dataset_without_the_features(settings: Settings, tmp_path: Path) -> None:
    data_path = tmp_path / "bad.csv"
    pd.DataFrame({"time": ["a"], "ret_1": [0.1]}).to_csv(data_path, index=False)
    env = {name: value for name, value in settings_env(settings).items() if name != "PP_JWT_SECRET"}
    result = CliRunner().invoke(
        cli,
        ["batch-infer", "--model", MODEL, "--data", str(data_path), "--out", str(tmp_path / "o.parquet")],
        env=env,
    )
    assert result.exit_code != 0
    assert not (tmp_path / "o.parquet").exists()


def test_precomputed_needs_a_predicting_account(
    live_server: LiveServer, accounts: dict[str, Account]
) -> None:
    with httpx.Client(base_url=live_server.url) as anonymous:
        assert anonymous.get("/predict/precomputed/x").status_code == 401
    with httpx.Client(base_url=live_server.url, headers=accounts["operator"].headers) as operator:
        assert operator.get("/predict/precomputed/x").status_code == 403
    with httpx.Client(base_url=live_server.url, headers=accounts["client"].headers) as client:
        assert client.get("/predict/precomputed/x").status_code == 404  # none configured
