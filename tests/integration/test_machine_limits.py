"""The machine's shared limits store (LMDB under the data dir): what several worker processes
of one machine count together, and what a dead worker leaves behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import pytest
from limits import parse
from limits.strategies import FixedWindowRateLimiter, MovingWindowRateLimiter, SlidingWindowCounterRateLimiter

import prediction_provider.accounts.machine_limits as machine_limits
from prediction_provider.accounts.machine_limits import MachineStorage, MachineStore, shared_by_workers
from prediction_provider.accounts.throttle import SweepingMemoryStorage, Throttle
from prediction_provider.config import Settings
from prediction_provider.errors import RateLimited
from tests.integration.test_throttle import Clock


def machine_throttle(directory: Path, requests: str = "5/minute", in_flight: int = 1) -> Throttle:
    return Throttle(None, requests, "5/15 minutes", "30/minute", in_flight, directory)


def run_python(code: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=Path(__file__).parents[2]
    )


def test_another_process_counts_against_the_same_limit(tmp_path: Path) -> None:
    caller = f"user:{uuid.uuid4().hex}"
    with run_python(
        "from pathlib import Path\n"
        "from tests.integration.test_machine_limits import machine_throttle\n"
        f"limits = machine_throttle(Path({str(tmp_path)!r}))\n"
        f"for _ in range(3): limits.request({caller!r})\n"
    ) as other:
        assert other.wait(timeout=60) == 0
    here = machine_throttle(tmp_path)
    here.request(caller)
    here.request(caller)
    with pytest.raises(RateLimited):
        here.request(caller)


def test_a_slot_held_by_a_killed_process_is_reaped(tmp_path: Path) -> None:
    """A worker that crashes mid-prediction does not lock its user out."""
    user = f"user:{uuid.uuid4().hex}"
    here = machine_throttle(tmp_path, in_flight=1)
    with run_python(
        "import time\n"
        "from pathlib import Path\n"
        "from tests.integration.test_machine_limits import machine_throttle\n"
        f"with machine_throttle(Path({str(tmp_path)!r})).in_flight({user!r}):\n"
        "    print('holding', flush=True)\n"
        "    time.sleep(600)\n"
    ) as holder:
        try:
            assert holder.stdout is not None
            assert holder.stdout.readline() == "holding\n"
            with pytest.raises(RateLimited), here.in_flight(user):
                pass  # the live holder's slot counts here too
        finally:
            holder.send_signal(signal.SIGKILL)
            holder.wait(timeout=60)
    with here.in_flight(user), pytest.raises(RateLimited), here.in_flight(user):
        pass  # the dead holder's slot is reaped, and the cap still holds


def test_a_slot_older_than_its_ttl_is_reaped_even_if_its_pid_is_alive(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pid can come back (a restarted container's workers are pids 7, 8, ... again)."""
    clock = Clock()
    monkeypatch.setattr(machine_limits, "time", clock)
    store = MachineStore(tmp_path)
    slots = machine_limits.MachineInFlight(store, ttl_seconds=300)
    stale = slots.acquire("user:1", 1)
    assert stale is not None
    monkeypatch.setattr(slots, "pid", os.getppid())  # another live process takes the next slots
    assert slots.acquire("user:1", 1) is None
    clock.now += 301
    assert slots.acquire("user:1", 1) is not None


def test_windows_count_as_limits_own_memory_storage_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Across window boundaries and idle gaps, the shared store admits exactly what memory would."""
    import limits.storage.memory
    import limits.strategies

    clock = Clock()
    for module in (limits.storage.memory, limits.strategies, machine_limits):
        monkeypatch.setattr(module, "time", clock)
    shared, memory = MachineStorage(MachineStore(tmp_path)), SweepingMemoryStorage()
    cases = (
        (SlidingWindowCounterRateLimiter, "7/10 seconds"),
        (MovingWindowRateLimiter, "3/4 seconds"),
        (FixedWindowRateLimiter, "5/3 seconds"),
    )
    for strategy, limit in cases:
        item = parse(limit)
        shared_limiter, memory_limiter = strategy(shared), strategy(memory)
        steps = [0.3] * 40 + [9.0] + [0.7] * 30 + [25.0] + [0.1] * 20
        decisions = []
        for step in steps:
            clock.now += step
            decisions.append((shared_limiter.hit(item, "k"), memory_limiter.hit(item, "k")))
            assert shared_limiter.get_window_stats(item, "k") == memory_limiter.get_window_stats(item, "k")
        assert all(ours == theirs for ours, theirs in decisions), decisions
        assert {ours for ours, _ in decisions} == {True, False}  # the limit was reached, and lifted


def test_a_sweep_drops_expired_records_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock()
    monkeypatch.setattr(machine_limits, "time", clock)
    store = MachineStore(tmp_path)
    windows = SlidingWindowCounterRateLimiter(MachineStorage(store))
    for user in range(10):
        windows.hit(parse("5/minute"), "request", f"user:{user}")
    clock.now += 60
    windows.hit(parse("5/minute"), "request", "user:recent")
    clock.now += 70  # the first ten expire two windows after theirs, the recent one not yet
    assert store.sweep(limit=4) != b""  # a bounded sweep stops part way, with where to resume
    store.sweep()
    with store.env.begin() as txn:
        keys = [bytes(key) for key, _ in txn.cursor()]
    assert len(keys) == 1
    assert b"/user:recent/" in keys[0]


def test_serve_with_workers_uses_a_fresh_store_under_the_data_dir(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, port=8123)
    with shared_by_workers(settings) as first:
        assert first.limits_dir is not None
        assert first.limits_dir.is_relative_to(tmp_path)
        machine_throttle(first.limits_dir).request("user:1")
    with shared_by_workers(settings) as second:
        assert second.limits_dir == first.limits_dir
        assert not (second.limits_dir / "data.mdb").exists()  # a previous run's windows are gone
    given = Settings(data_dir=tmp_path, limits_dir=tmp_path / "mine")
    machine_throttle(tmp_path / "mine").request("user:1")
    with shared_by_workers(given) as kept:
        assert kept.limits_dir == tmp_path / "mine"
        assert (tmp_path / "mine" / "data.mdb").exists()  # a directory the operator chose is kept


def test_process_scope_keeps_each_workers_limits_in_its_own_memory(tmp_path: Path) -> None:
    """PP_LIMITS_SCOPE=process: no shared store, not even one the operator named."""
    for settings in (
        Settings(data_dir=tmp_path, limits_scope="process"),
        Settings(data_dir=tmp_path, limits_scope="process", limits_dir=tmp_path / "mine"),
    ):
        with shared_by_workers(settings) as workers:
            assert workers.limits_dir is None
    assert not (tmp_path / "limits").exists()
    assert not (tmp_path / "mine").exists()


def test_a_process_killed_inside_a_transaction_leaves_the_store_usable(tmp_path: Path) -> None:
    """LMDB's writer mutex is robust: the next writer takes it over from a dead holder."""
    here = machine_throttle(tmp_path, requests="2/minute")
    with run_python(
        "import time\n"
        "from pathlib import Path\n"
        "from prediction_provider.accounts.machine_limits import MachineStore\n"
        f"transaction = MachineStore(Path({str(tmp_path)!r})).write()\n"
        "transaction.put(b'c/never-committed', b'x')\n"
        "print('writing', flush=True)\n"
        "time.sleep(600)\n"
    ) as writer:
        try:
            assert writer.stdout is not None
            assert writer.stdout.readline() == "writing\n"
        finally:
            writer.send_signal(signal.SIGKILL)
            writer.wait(timeout=60)
    done = threading.Event()
    worker = threading.Thread(
        target=lambda: (here.request("user:1"), here.request("user:1"), done.set()), daemon=True
    )
    worker.start()
    worker.join(timeout=30)
    assert done.is_set(), "the store stayed locked by the dead writer"
    with pytest.raises(RateLimited):
        here.request("user:1")
