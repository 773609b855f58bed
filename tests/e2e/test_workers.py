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
import tritonclient.grpc as triton

from prediction_provider.config import Settings
from tests.conftest import MODEL, TEST_JWT_SECRET
from tests.processes import free_port, stop, wait_until_healthy, wait_until_logged

Server = tuple[subprocess.Popen[bytes], int]


@contextmanager
def serving(settings: Settings, tmp_path: Path, *flags: str, grpc_port: int = 0) -> Iterator[Server]:
    port = free_port()
    command = [
        str(Path(sys.executable).with_name("prediction-provider")),
        "serve", "--data-dir", str(settings.data_dir), "--port", str(port),
        "--grpc-port", str(grpc_port or free_port()), "--workers", "2", "--warm", MODEL, *flags,
    ]  # fmt: skip
    log_path = tmp_path / "server.log"
    with log_path.open("wb") as log:
        env = {**os.environ, "PP_LOG_LEVEL": "info", "PP_JWT_SECRET": TEST_JWT_SECRET}
        if settings.database_url:
            env["PP_DATABASE_URL"] = settings.database_url
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            wait_until_healthy(process, f"http://127.0.0.1:{port}/health/ready", log_path)
            # One worker answering is not both started: wait for each worker's start-up to finish.
            wait_until_logged(process, log_path, "Application startup complete", count=2)
            yield process, port
        finally:
            stop(process)


@pytest.fixture
def two_workers(settings: Settings, tmp_path: Path) -> Iterator[Server]:
    with serving(settings, tmp_path) as server:
        yield server


def children(pid: int, command_part: bytes) -> list[int]:
    """The child processes of ``pid`` whose command line holds ``command_part``."""
    found = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [int(child) for child in found if command_part in Path(f"/proc/{child}/cmdline").read_bytes()]


def worker_pids(process: subprocess.Popen[bytes]) -> list[int]:
    """The server's worker processes (multiprocessing also starts a resource tracker beside them)."""
    return children(process.pid, b"spawn_main")


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


@pytest.mark.parametrize("grpc_frontend", ["python", "native"])
def test_pinned_workers_each_run_every_thread_on_a_cpu_of_their_own(
    settings: Settings,
    tmp_path: Path,
    client_headers: dict[str, str],
    feature_rows: list[dict[str, float]],
    grpc_frontend: str,
    request: pytest.FixtureRequest,
) -> None:
    """With the native front end, each worker's front end runs on its worker's CPU too."""
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("two workers need two CPUs to be pinned apart")
    if grpc_frontend == "native":
        request.getfixturevalue("grpc_frontend_binary")
    flags = ("--pin-workers", "--grpc-frontend", grpc_frontend)
    with serving(settings, tmp_path, *flags) as (process, port):
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=client_headers) as client:
            body = {"model": MODEL, "features": feature_rows[0]}
            assert client.post("/predict", json=body).status_code == 200
        cpus_of_workers = []
        for pid in worker_pids(process):
            frontends = children(pid, b"pp-grpc-frontend")
            assert len(frontends) == (1 if grpc_frontend == "native" else 0)
            cpus = set.union(thread_cpus(pid), *(thread_cpus(child) for child in frontends))
            assert len(cpus) == 1, f"worker {pid}'s threads run on {cpus}"
            (only,) = cpus
            assert len(only) == 1
            cpus_of_workers.append(only)
    assert len(cpus_of_workers) == 2
    assert cpus_of_workers[0] != cpus_of_workers[1]


def test_native_front_ends_of_two_workers_share_the_grpc_port(
    settings: Settings, tmp_path: Path, client_headers: dict[str, str], grpc_frontend_binary: Path
) -> None:
    """Each worker runs a front end on the same port; calls on every connection are answered."""
    grpc_port = free_port()
    with serving(settings, tmp_path, "--grpc-frontend", "native", grpc_port=grpc_port) as (process, _):
        frontends = [child for pid in worker_pids(process) for child in children(pid, b"pp-grpc-frontend")]
        assert len(frontends) == 2
        metadata = tuple((k.lower(), v) for k, v in client_headers.items())
        for _ in range(8):  # fresh connections, spread by the kernel over both front ends
            client = triton.InferenceServerClient(f"127.0.0.1:{grpc_port}")
            try:
                assert client.is_model_ready(MODEL, headers=dict(metadata))
            finally:
                client.close()
    for pid in frontends:  # they ended with their workers
        assert not Path(f"/proc/{pid}").exists() or b"Z" in Path(f"/proc/{pid}/stat").read_bytes().split()[2]
