"""``serve --workers 2``: an unload and a load reach every worker and survive a restart; each
worker keeps the app's own log lines.

A connection is served by the worker that accepted it, so each check is made on one
kept-alive connection per worker, that worker found by which process holds the
connection's server-side socket (``/proc``).
"""

from __future__ import annotations

import http.client
import json
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from prediction_provider.config import Settings
from prediction_provider.db import migrate
from tests.conftest import MODEL
from tests.e2e.test_workers import serving, worker_pids
from tests.integration.database_fixtures import sqlite_url
from tests.processes import new_api_key

Answer = tuple[int, Any]


@pytest.fixture
def own_settings(settings: Settings, tmp_path: Path, request: pytest.FixtureRequest) -> Settings:
    """The suite's models in a database of this test's own: an unload here must not reach the
    shared live server."""
    if os.environ.get("PP_TEST_DATABASE", "sqlite") == "postgresql":
        url: str = request.getfixturevalue("postgres_databases")()
    else:
        (tmp_path / "db").mkdir()
        url = sqlite_url(tmp_path / "db")
    migrate.upgrade(url)
    return settings.model_copy(update={"database_url": url})


def socket_inode(local_port: int, remote_port: int) -> str | None:
    """The inode of the loopback TCP socket from ``local_port`` to ``remote_port``."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote = fields[1].split(":"), fields[2].split(":")
        if int(local[1], 16) == local_port and int(remote[1], 16) == remote_port:
            return fields[9]
    return None


def holder(inode: str, pids: list[int]) -> int | None:
    for pid in pids:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                if os.readlink(fd) == f"socket:[{inode}]":
                    return pid
            except FileNotFoundError:
                continue
    return None


def call(
    connection: http.client.HTTPConnection, method: str, path: str, headers: dict[str, str], body: Any = None
) -> Answer:
    payload = None if body is None else json.dumps(body)
    connection.request(method, path, body=payload, headers={**headers, "Content-Type": "application/json"})
    response = connection.getresponse()
    raw = response.read()
    return response.status, json.loads(raw) if raw else None


@contextmanager
def connections_to_each_worker(port: int, pids: list[int]) -> Iterator[dict[int, http.client.HTTPConnection]]:
    """New connections until every worker holds one (the kernel hands each to one worker)."""
    found: dict[int, http.client.HTTPConnection] = {}
    try:
        for _ in range(300):
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            assert call(connection, "GET", "/health/live", {})[0] == 200  # answered: a worker accepted it
            inode = socket_inode(port, connection.sock.getsockname()[1])
            pid = holder(inode, pids) if inode else None
            if pid is None or pid in found:
                connection.close()
                continue
            found[pid] = connection
            if len(found) == len(pids):
                yield found
                return
        raise AssertionError(f"300 connections reached only workers {sorted(found)} of {pids}")
    finally:
        for connection in found.values():
            connection.close()


def model_answers(
    connection: http.client.HTTPConnection, key: str, row: dict[str, float]
) -> tuple[Answer, ...]:
    """What one worker says of MODEL: v2 ready, version ready, then a /predict."""
    headers = {"X-API-KEY": key}
    return (
        call(connection, "GET", f"/v2/models/{MODEL}/ready", headers),
        call(connection, "GET", f"/v2/models/{MODEL}/versions/1/ready", headers),
        call(connection, "POST", "/predict", headers, {"model": MODEL, "features": row}),
    )


def assert_unloaded(answers: tuple[Answer, ...]) -> None:
    ready, version_ready, predicted = answers
    assert ready == (400, {"name": MODEL, "ready": False})
    assert version_ready == (400, {"name": MODEL, "ready": False})
    assert predicted[0] == 503
    assert predicted[1]["error"]["code"] == "model_unloaded"


def assert_served(answers: tuple[Answer, ...]) -> None:
    ready, version_ready, predicted = answers
    assert ready == (200, {"name": MODEL, "ready": True})
    assert version_ready == (200, {"name": MODEL, "ready": True})
    assert predicted[0] == 200
    assert "prediction" in predicted[1]


def pids_logging(log: Path, pattern: str) -> set[int]:
    """The process ids on the log lines that match ``pattern`` (lines read ``... [pid] logger: ...``)."""
    found = set()
    for line in log.read_text(errors="replace").splitlines():
        if re.search(pattern, line):
            match = re.search(r"\[(\d+)\] prediction_provider", line)
            if match:
                found.add(int(match.group(1)))
    return found


def repository(connection: http.client.HTTPConnection, action: str, key: str) -> Answer:
    return call(connection, "POST", f"/v2/repository/models/{MODEL}/{action}", {"X-API-KEY": key})


def test_unload_and_load_reach_every_worker_and_an_unload_survives_a_restart(
    own_settings: Settings, tmp_path: Path, feature_rows: list[dict[str, float]]
) -> None:
    """Each phase on fresh connections: uvicorn closes one left idle for 5 s (a load can take that)."""
    provider, client = new_api_key(own_settings, "provider"), new_api_key(own_settings, "client")
    row = feature_rows[0]
    with serving(own_settings, tmp_path) as (process, port):
        pids = worker_pids(process)
        with connections_to_each_worker(port, pids) as workers:
            for connection in workers.values():
                assert_served(model_answers(connection, client, row))
            assert repository(workers[pids[0]], "unload", provider) == (200, {})
            for connection in workers.values():
                assert_unloaded(model_answers(connection, client, row))
                assert_unloaded(model_answers(connection, client, row))  # asking loaded nothing back
                # Unloaded on purpose: the server stays ready.
                assert call(connection, "GET", "/health/ready", {})[0] == 200
            assert repository(workers[pids[0]], "load", provider) == (200, {})
        with connections_to_each_worker(port, pids) as workers:
            for connection in workers.values():
                assert_served(model_answers(connection, client, row))
            assert repository(workers[pids[1]], "unload", provider) == (200, {})
    # Restarted: the unload holds, the warm model is not loaded, and the server is ready.
    with serving(own_settings, tmp_path) as (process, port):
        log = tmp_path / "server.log"
        pids = worker_pids(process)
        assert pids_logging(log, rf"not warming {MODEL}: unloaded") == set(pids)
        assert not pids_logging(log, rf"warmed {MODEL}")
        with connections_to_each_worker(port, pids) as workers:
            for connection in workers.values():
                assert_unloaded(model_answers(connection, client, row))
            assert repository(workers[pids[1]], "load", provider) == (200, {})
        with connections_to_each_worker(port, pids) as workers:
            for connection in workers.values():
                assert_served(model_answers(connection, client, row))


def test_every_worker_logs_its_warm_up_and_grpc_bind_line(own_settings: Settings, tmp_path: Path) -> None:
    """The app's own lines came from the parent process only, and the workers' were lost."""
    with serving(own_settings, tmp_path) as (process, _):
        log = tmp_path / "server.log"
        pids = worker_pids(process)
        assert len(pids) == 2
        assert pids_logging(log, rf"INFO .* warmed {MODEL} ") == set(pids)
        assert pids_logging(log, r"gRPC Open Inference Protocol on") == set(pids)
