"""Starting and stopping real server processes in tests, with bounded waits."""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _poll(process: subprocess.Popen[bytes], log: Path, done: Callable[[], bool], attempts: int) -> bool:
    """Ask ``done`` about twice a second until it holds; fail with the server's log if it exits."""
    for _ in range(attempts):
        if process.poll() is not None:
            raise AssertionError(f"server exited:\n{log.read_text()}")
        if done():
            return True
        with contextlib.suppress(subprocess.TimeoutExpired):  # poll, and notice an early exit
            process.wait(timeout=0.5)
    return False


def wait_until_healthy(process: subprocess.Popen[bytes], url: str, log: Path, attempts: int = 240) -> None:
    """Poll ``url`` until it answers 200; fail with the server's log if it exits or never does."""

    def answers() -> bool:
        with contextlib.suppress(httpx.TransportError):
            return httpx.get(url, timeout=2).status_code == 200
        return False

    if not _poll(process, log, answers, attempts):
        raise AssertionError(f"server never became healthy at {url}:\n{log.read_text()}")


def wait_until_logged(
    process: subprocess.Popen[bytes], log: Path, text: str, count: int, attempts: int = 240
) -> None:
    """Poll the server's log until ``text`` appears ``count`` times, e.g. once per started worker."""
    if not _poll(process, log, lambda: log.read_text(errors="replace").count(text) >= count, attempts):
        raise AssertionError(f"{text!r} was never logged {count} times:\n{log.read_text()}")


def stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=30)


def new_api_key(settings: object, role: str) -> str:
    """A fresh active account of ``role`` in the database of ``settings``, and its API key."""
    import uuid

    from prediction_provider.app import account_service

    service = account_service(settings)  # type: ignore[arg-type]
    name = f"{role}-{uuid.uuid4().hex[:8]}"
    user = service.create_user(name, f"{name}@example.com", f"{name}-password", role, active=True)
    key: str = service.regenerate_api_key(user["id"])["api_key"]
    service.db.dispose()
    return key
