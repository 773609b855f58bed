"""``prediction-provider serve --workers 2``: several processes serving one port."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import httpx
import pytest

from prediction_provider.config import Settings
from tests.conftest import MODEL, TEST_JWT_SECRET
from tests.processes import free_port, stop, wait_until_healthy

Server = tuple[subprocess.Popen[bytes], int]


@contextmanager
def serving(settings: Settings, tmp_path: Path, *flags: str) -> Iterator[Server]:
    port = free_port()
    command = [
        str(Path(sys.executable).with_name("prediction-provider")),
        "serve", "--data-dir", str(settings.data_dir), "--port", str(port),
        "--grpc-port", str(free_port()), "--workers", "2", "--warm", MODEL, *flags,
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


@pytest.fixture
def two_workers(settings: Settings, tmp_path: Path) -> Iterator[Server]:
    with serving(settings, tmp_path) as server:
        yield server


def worker_pids(process: subprocess.Popen[bytes]) -> list[int]:
    """The server's worker processes (multiprocessing also starts a resource tracker beside them)."""
    children = Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text().split()
    return [int(pid) for pid in children if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()]


def thread_cpus(pid: int) -> set[frozenset[int]]:
    """The CPU sets the threads of process ``pid`` may run on."""
    cpus = set()
    for thread in Path(f"/proc/{pid}/task").iterdir():
        with suppress(ProcessLookupError):  # an idle pool thread may end meanwhile
            cpus.add(frozenset(os.sched_getaffinity(int(thread.name))))
    return cpus


def test_two_worker_processes_serve_predictions(
    two_workers: tuple[subprocess.Popen[bytes], int],
    client_headers: dict[str, str],
    feature_rows: list[dict[str, float]],
) -> None:
    process, port = two_workers
    assert len(worker_pids(process)) == 2
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=client_headers) as client:
        body = {"model": MODEL, "features": feature_rows[0]}
        answers = {client.post("/predict", json=body).json()["prediction"] for _ in range(20)}
    assert len(answers) == 1


def test_pinned_workers_each_run_every_thread_on_a_cpu_of_their_own(
    settings: Settings,
    tmp_path: Path,
    client_headers: dict[str, str],
    feature_rows: list[dict[str, float]],
) -> None:
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("two workers need two CPUs to be pinned apart")
    with serving(settings, tmp_path, "--pin-workers") as (process, port):
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=client_headers) as client:
            body = {"model": MODEL, "features": feature_rows[0]}
            assert client.post("/predict", json=body).status_code == 200
        cpus_of_workers = []
        for pid in worker_pids(process):
            cpus = thread_cpus(pid)
            assert len(cpus) == 1, f"worker {pid}'s threads run on {cpus}"
            (only,) = cpus
            assert len(only) == 1
            cpus_of_workers.append(only)
    assert len(cpus_of_workers) == 2
    assert cpus_of_workers[0] != cpus_of_workers[1]
