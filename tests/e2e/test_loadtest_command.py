"""``prediction-provider loadtest`` against the live test server: the report and its JSON file."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from prediction_provider.cli import app
from prediction_provider.loadtest import decision_url, percentile
from tests.conftest import Account, LiveServer

LATENCY_FIGURES = {"mean", "median", "min", "max", "p50", "p75", "p90", "p95", "p99"}


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["loadtest", *args])
    return result.exit_code, result.output


def test_loadtest_reports_latency_success_and_actions(
    live_server: LiveServer, accounts: dict[str, Account], tmp_path: Path
) -> None:
    output = tmp_path / "results.json"
    code, printed = run(
        "--url", live_server.url, "--requests", "40", "--concurrency", "4", "--output", str(output),
        "--api-key", accounts["client"].api_key, "--symbol", "EURUSD", "--symbol", "GOOG",
    )  # fmt: skip
    assert code == 0, printed
    summary = json.loads(output.read_text())
    assert summary["url"] == f"{live_server.url}/api/v1/predict"
    assert (summary["requests"], summary["concurrency"], summary["successes"]) == (40, 4, 40)
    assert summary["success_rate"] == 1.0
    assert summary["statuses"] == {"200": 40}
    latency = summary["latency_ms"]
    assert set(latency) == LATENCY_FIGURES
    assert 0 < latency["min"] <= latency["p50"] <= latency["p75"] <= latency["p90"] <= latency["p95"]
    assert latency["p95"] <= latency["p99"] <= latency["max"]
    assert latency["min"] <= latency["mean"] <= latency["max"]
    assert set(summary["actions"]) <= {"BUY", "SELL", "HOLD"}
    assert sum(entry["count"] for entry in summary["actions"].values()) == 40
    assert sum(entry["share"] for entry in summary["actions"].values()) == pytest.approx(1.0)
    assert "success rate" in printed


def test_loadtest_counts_risk_rejections_apart(
    live_server: LiveServer, accounts: dict[str, Account], tmp_path: Path
) -> None:
    name = f"loadtest-{uuid.uuid4().hex[:10]}"
    with httpx.Client(base_url=live_server.url, headers=accounts["client"].headers, timeout=60) as http:
        http.post("/api/v1/accounts", json={"name": name, "equity": "97000"}).raise_for_status()
        http.put(f"/api/v1/accounts/{name}", json={"day_start_equity": "100000"}).raise_for_status()
    output = tmp_path / "results.json"
    code, printed = run(
        "--url", f"{live_server.url}/api/v1/predict", "--requests", "12", "--concurrency", "3",
        "--api-key", accounts["client"].api_key, "--account", name, "--output", str(output),
    )  # fmt: skip
    summary = json.loads(output.read_text())
    rejected = summary["statuses"].get("403", 0)
    assert summary["risk_rejections"] == rejected
    assert summary["successes"] + rejected == 12
    assert set(summary["actions"]) <= {"HOLD"}, "only HOLD passes once the day's loss limit is reached"
    assert code == (0 if summary["successes"] else 1), printed


def test_loadtest_without_credentials_fails(live_server: LiveServer, tmp_path: Path) -> None:
    output = tmp_path / "results.json"
    code, _ = run("--url", live_server.url, "--requests", "3", "--concurrency", "2", "--output", str(output))
    assert code == 1
    summary = json.loads(output.read_text())
    assert summary["success_rate"] == 0.0
    assert summary["statuses"] == {"401": 3}
    assert summary["actions"] == {}


def test_loadtest_refuses_a_url_that_is_not_http() -> None:
    code, printed = run("--url", "ftp://example.invalid", "--requests", "1")
    assert code == 2
    assert "http" in printed


def test_decision_url_adds_the_path_to_a_bare_address() -> None:
    assert decision_url("http://127.0.0.1:8000") == "http://127.0.0.1:8000/api/v1/predict"
    assert decision_url("http://127.0.0.1:8000/") == "http://127.0.0.1:8000/api/v1/predict"
    assert decision_url("https://host/custom/predict") == "https://host/custom/predict"


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert (percentile(values, 50), percentile(values, 95), percentile(values, 99)) == (50.0, 95.0, 99.0)
    assert percentile([3.0], 99) == 3.0
