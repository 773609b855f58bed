"""Pinning each worker process to a CPU of its own (``PP_PIN_WORKERS``).

Why: every single-row prediction crosses threads at least twice (the event loop
hands the row to the model's batcher thread, which hands the answer back), and
gRPC adds hops between grpcio's own polling threads and the loop. Waking a
thread that sleeps on another CPU costs an inter-processor interrupt, which a
virtual machine makes expensive: a loop → thread → loop round trip took
85-123 µs across the two vCPUs of our test machine and 26-41 µs on one. With as
many workers as CPUs, a worker whose threads share one CPU pays the cheap hop,
and the workers stop migrating onto each other's CPU.

Each worker claims the first CPU no other worker holds with an exclusive lock
on a file in the machine's temporary directory (``LOCK_DIR``), held for the
worker's lifetime: a worker that dies frees its CPU for the one that replaces
it, and two servers on one machine share its CPUs out between them. The locks
are local files on purpose: a data dir may be a network volume that several
machines or containers share, where the CPU numbers mean different CPUs. A
worker that finds every CPU taken (more workers than CPUs) stays unpinned.
Threads that split one large request across CPUs (``release_current_thread``)
are let out again.
"""

from __future__ import annotations

import fcntl
import logging
import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

log = logging.getLogger(__name__)

LOCK_DIR = Path(tempfile.gettempdir()) / f"prediction-provider-cpus-{os.getuid()}"

# The CPUs the process could use before it was pinned; None while it is not pinned.
_unpinned_cpus: frozenset[int] | None = None


@dataclass(frozen=True, slots=True)
class CpuClaim:
    """A CPU this process holds, and the locked file that holds it."""

    cpu: int
    lock: BinaryIO

    def release(self) -> None:
        self.lock.close()  # closing the file drops the lock


def claim_cpu(lock_dir: Path, cpus: Iterable[int]) -> CpuClaim | None:
    """The first of ``cpus`` whose lock no other process (or open file) holds; None when all are."""
    lock_dir.mkdir(parents=True, exist_ok=True)
    for cpu in cpus:
        lock = (lock_dir / f"cpu-{cpu}.lock").open("ab")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            continue
        return CpuClaim(cpu, lock)
    return None


def pin_process(cpu: int) -> None:
    """Run every thread of this process on ``cpu`` only; threads they start later inherit it."""
    global _unpinned_cpus
    if _unpinned_cpus is None:
        _unpinned_cpus = frozenset(os.sched_getaffinity(0))
    for task in Path("/proc/self/task").iterdir():
        try:
            os.sched_setaffinity(int(task.name), {cpu})
        except ProcessLookupError:  # the thread ended since the listing
            continue


def release_current_thread() -> None:
    """Let the calling thread run on every CPU the process could use before it was pinned.

    A thread initializer for threads whose job is to use the other CPUs.
    """
    if _unpinned_cpus is not None:
        os.sched_setaffinity(0, _unpinned_cpus)


def pin_worker(lock_dir: Path = LOCK_DIR) -> CpuClaim | None:
    """Claim a free CPU and pin this process to it; None (and a log line) when it stays unpinned."""
    if not hasattr(os, "sched_setaffinity"):
        log.warning("PP_PIN_WORKERS: this platform cannot pin threads to CPUs; workers stay unpinned")
        return None
    claim = claim_cpu(lock_dir, sorted(os.sched_getaffinity(0)))
    if claim is None:
        log.warning("PP_PIN_WORKERS: every CPU already has a worker; worker %d stays unpinned", os.getpid())
        return None
    pin_process(claim.cpu)
    log.info("worker %d pinned to CPU %d", os.getpid(), claim.cpu)
    return claim
