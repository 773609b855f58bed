"""``prediction-provider serve --workers 2``: several processes serving one port."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from prediction_provider.config import Settings
from tests.conftest import MODEL


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def two_workers(settings: Settings, tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    port = free_port()
    command = [
        str(Path(sys.executable).with_name("prediction-provider")),
        "serve",
        "--data-dir",
        str(settings.data_dir),
        "--port",
        str(port),
        "--grpc-port",
        str(free_port()),
        "--workers",
        "2",
        "--warm",
        MODEL,
    ]
    log = (tmp_path / "server.log").open("wb")
    process = subprocess.Popen(
        command, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PP_LOG_LEVEL": "warning"}
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, (tmp_path / "server.log").read_text()
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health/ready", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "workers did not become ready"
            with contextlib.suppress(subprocess.TimeoutExpired):  # poll, and notice an early exit
                process.wait(timeout=0.5)
        yield process, port
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


def test_two_worker_processes_serve_predictions(
    two_workers: tuple[subprocess.Popen[bytes], int], feature_rows: list[dict[str, float]]
) -> None:
    process, port = two_workers
    children = Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text().split()
    assert len(children) >= 2
    with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
        answers = {
            client.post("/predict", json={"model": MODEL, "features": feature_rows[0]}).json()["prediction"]
            for _ in range(20)
        }
    assert len(answers) == 1
