"""``serve --workers 2`` without Redis: one rate limit and one in-flight cap over both workers.

Each connection is traced to the worker process that accepted it (``/proc``), so the tests
know they reached both workers instead of hoping the kernel spread the connections.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path

import pytest

from prediction_provider.config import Settings
from tests.conftest import MODEL
from tests.e2e.test_workers import serving, worker_pids
from tests.processes import new_api_key

ATTEMPTS = 400  # connections opened, at most, to find one that a given worker accepted


def accepting_worker(local_port: int, server_port: int, pids: list[int]) -> int | None:
    """The worker holding the server side of our loopback connection from ``local_port``."""
    inode = None
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote = fields[1], fields[2]
        if int(local.split(":")[1], 16) == server_port and int(remote.split(":")[1], 16) == local_port:
            inode = fields[9]
    if inode in (None, "0"):
        return None  # not accepted yet
    target = f"socket:[{inode}]"
    for pid in pids:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with suppress(OSError):
                if os.readlink(fd) == target:
                    return pid
    return None


def worker_accepting(connection: socket.socket, server_port: int, pids: list[int]) -> int:
    for _ in range(500):  # the accept happens on the worker's event loop, within moments
        worker = accepting_worker(connection.getsockname()[1], server_port, pids)
        if worker is not None:
            return worker
        time.sleep(0.01)
    raise AssertionError("no worker accepted the connection")


class Connection:
    """One kept-alive HTTP connection, and the worker that serves it."""

    def __init__(self, port: int, pids: list[int], api_key: str) -> None:
        self.http = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        self.http.connect()
        self.api_key = api_key
        self.worker = worker_accepting(self.http.sock, port, pids)

    def predict(self, body: dict[str, object]) -> int:
        """The status; a 429 must be the limit under test (the other is set out of reach)."""
        headers = {"X-API-KEY": self.api_key, "Content-Type": "application/json"}
        self.http.request("POST", "/predict", json.dumps(body), headers)
        response = self.http.getresponse()
        answer = response.read()
        if response.status == 429:
            assert json.loads(answer)["error"]["code"] == "rate_limited"
        return response.status

    def close(self) -> None:
        self.http.close()


def connections_to_both(port: int, pids: list[int], api_key: str, at_least: int = 4) -> list[Connection]:
    opened: list[Connection] = []
    while len({c.worker for c in opened}) < len(pids) or len(opened) < at_least:
        assert len(opened) < ATTEMPTS, f"every connection went to {opened[0].worker}"
        opened.append(Connection(port, pids, api_key))
    return opened


@pytest.fixture
def workers_limited(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """Two workers, no Redis, with the limits the test gives (indirect parameter) as PP_* variables."""
    monkeypatch.delenv("PP_REDIS_URL", raising=False)
    monkeypatch.delenv("PP_LIMITS_DIR", raising=False)
    for name, value in request.param.items():
        monkeypatch.setenv(f"PP_{name.upper()}", str(value))
    with serving(settings, tmp_path) as server:
        yield server


@pytest.mark.parametrize(
    "workers_limited", [{"rate_limit": "40/minute", "max_concurrent_predictions": 1000}], indirect=True
)
def test_a_limit_of_40_a_minute_lets_exactly_40_of_80_through_two_workers(
    workers_limited: tuple[subprocess.Popen[bytes], int],
    settings: Settings,
    feature_rows: list[dict[str, float]],
) -> None:
    process, port = workers_limited
    pids = worker_pids(process)
    assert len(pids) == 2
    body = {"model": MODEL, "features": feature_rows[0]}
    for _ in range(2):  # a burst that straddles a minute boundary is weighed over two windows: redo it
        connections = connections_to_both(port, pids, new_api_key(settings, "client"))
        minute = time.time() // 60
        # Round robin over connections on both workers: the workers take turns counting.
        statuses = [connections[i % len(connections)].predict(body) for i in range(80)]
        within_one_window = time.time() // 60 == minute
        for connection in connections:
            connection.close()
        if within_one_window:
            break
    assert set(statuses) <= {200, 429}
    assert statuses.count(200) == 40, statuses
    assert statuses[:40] == [200] * 40


@pytest.mark.parametrize(
    "workers_limited", [{"rate_limit": "100000/minute", "max_concurrent_predictions": 1}], indirect=True
)
def test_a_cap_of_one_prediction_in_flight_holds_over_two_workers(
    workers_limited: tuple[subprocess.Popen[bytes], int],
    settings: Settings,
    feature_rows: list[dict[str, float]],
) -> None:
    """One request is held in flight by a body that has not all arrived; every other prediction
    of that user is refused, on either worker, until it completes; and when the worker holding
    it is killed, the slot is reaped instead of locking the user out."""
    process, port = workers_limited
    pids = worker_pids(process)
    api_key = new_api_key(settings, "client")
    body = json.dumps({"model": MODEL, "features": feature_rows[0]}).encode()

    def start_held() -> tuple[socket.socket, int]:
        held = socket.create_connection(("127.0.0.1", port), timeout=60)
        head = (
            f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nX-API-KEY: {api_key}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        held.sendall(head.encode() + body[:10])  # the slot is taken before the body is read
        return held, worker_accepting(held, port, pids)

    def probes_until(condition: object) -> list[tuple[int, int]]:
        """Predictions on fresh connections, (worker, status) each, until ``condition`` holds."""
        seen: list[tuple[int, int]] = []
        while not condition(seen):  # type: ignore[operator]
            assert len(seen) < ATTEMPTS, seen
            probe = Connection(port, pids, api_key)
            seen.append((probe.worker, probe.predict(json.loads(body))))
            probe.close()
        return seen

    held, holder = start_held()
    other = next(pid for pid in pids if pid != holder)
    # Any 429 shows the held request has its slot (it is the only other prediction there is).
    probes_until(lambda seen: any(status == 429 for _, status in seen))
    after = probes_until(lambda seen: any(worker == other for worker, _ in seen))
    assert {status for _, status in after} == {429}, after  # the other worker counts the held slot

    held.sendall(body[10:])
    response = http.client.HTTPResponse(held)
    response.begin()
    assert response.status == 200
    held.close()
    assert probes_until(lambda seen: len(seen) == 1)[0][1] == 200  # the slot was given back

    held, holder = start_held()
    probes_until(lambda seen: any(status == 429 for _, status in seen))
    os.kill(holder, signal.SIGKILL)
    for _ in range(500):  # the server's supervisor reaps it
        if not Path(f"/proc/{holder}").exists() or b") Z" in Path(f"/proc/{holder}/stat").read_bytes():
            break
        time.sleep(0.01)
    held.close()
    survivor = http.client.HTTPConnection("127.0.0.1", port, timeout=60)  # any worker alive
    survivor.request("POST", "/predict", body, {"X-API-KEY": api_key, "Content-Type": "application/json"})
    assert survivor.getresponse().status == 200  # the dead worker's slot was reaped
    survivor.close()
