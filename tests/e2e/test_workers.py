"""``prediction-provider serve --workers 2``: several processes serving one port."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from prediction_provider.config import Settings
from tests.conftest import MODEL, TEST_JWT_SECRET
from tests.processes import free_port, stop, wait_until_healthy


@pytest.fixture
def two_workers(settings: Settings, tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    port = free_port()
    command = [
        str(Path(sys.executable).with_name("prediction-provider")),
        "serve", "--data-dir", str(settings.data_dir), "--port", str(port),
        "--grpc-port", str(free_port()), "--workers", "2", "--warm", MODEL,
    ]  # fmt: skip
    log_path = tmp_path / "server.log"
    with log_path.open("wb") as log:
        env = {**os.environ, "PP_LOG_LEVEL": "warning", "PP_JWT_SECRET": TEST_JWT_SECRET}
        if settings.database_url:
            env["PP_DATABASE_URL"] = settings.database_url
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            wait_until_healthy(process, f"http://127.0.0.1:{port}/health/ready", log_path)
            yield process, port
        finally:
            stop(process)


def test_two_worker_processes_serve_predictions(
    two_workers: tuple[subprocess.Popen[bytes], int],
    client_headers: dict[str, str],
    feature_rows: list[dict[str, float]],
) -> None:
    process, port = two_workers
    children = Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text().split()
    assert len(children) >= 2
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=client_headers) as client:
        body = {"model": MODEL, "features": feature_rows[0]}
        answers = {client.post("/predict", json=body).json()["prediction"] for _ in range(20)}
    assert len(answers) == 1
