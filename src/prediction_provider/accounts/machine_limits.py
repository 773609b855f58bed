"""Rate-limit windows and in-flight slots shared by the worker processes of one machine.

``serve --workers N`` without Redis keeps its limits here: an LMDB file under the
data dir, memory-mapped by every worker. LMDB runs one write transaction at a time
under a process-shared robust mutex (a worker killed mid-transaction does not leave
it locked), so each check-and-count below is atomic across processes, for about
2 µs: no server, no socket, no fsync (the windows are worth nothing after a power
cut, so they are written without one).

Every value starts with the time it expires at, so a sweep can drop stale records
without knowing their kind. Keys are the ``limits`` keys, prefixed by kind.
"""

from __future__ import annotations

import itertools
import os
import socket
import struct
import time
from collections.abc import Iterator
from contextlib import contextmanager
from math import floor
from pathlib import Path
from typing import TYPE_CHECKING

import lmdb
from limits.storage import MovingWindowSupport, SlidingWindowCounterSupport, Storage

from prediction_provider.accounts.in_flight import Slot

if TYPE_CHECKING:
    from prediction_provider.config import Settings

MAP_SIZE = 256 * 1024 * 1024  # address space, not disk: the file stays as small as its records
SWEEP_INTERVAL_SECONDS = 1.0
SWEEP_BATCH = 256  # records visited per sweep, so one sweep never holds the lock for long

_EXPIRES = struct.Struct("<d")
_COUNTER = struct.Struct("<dq")  # expires at, count
_SLIDING = struct.Struct("<dqqq")  # expires at, window index, previous count, current count
_STAMP = struct.Struct("<d")
_TOKEN = struct.Struct("<qdq")  # holder pid, acquired at, the holder's sequence number

Stored = bytes | memoryview | None  # what a transaction's get answers


LMDB_FILES = ("data.mdb", "lock.mdb")


@contextmanager
def shared_by_workers(settings: Settings) -> Iterator[Settings]:
    """The settings for worker processes started inside the block, with ``limits_dir`` set.

    ``PP_LIMITS_SCOPE=process`` keeps each worker's limits in its own memory. ``PP_LIMITS_DIR``
    as given is used as it is (other servers may share it). Else one directory
    per host and port under the data dir, emptied before the workers start and after they end:
    the slots of a previous run's workers must not count, and in a restarted container the
    same pids come back, so they could not be told from live ones.
    """
    if settings.limits_scope == "process" and not settings.redis_url:
        yield settings.model_copy(update={"limits_dir": None})
        return
    if settings.limits_dir is not None or settings.redis_url:
        yield settings
        return
    directory = settings.data_dir / "limits" / f"{socket.gethostname()}-{settings.port}"
    _remove_store(directory)
    try:
        yield settings.model_copy(update={"limits_dir": directory})
    finally:
        _remove_store(directory)


def _remove_store(directory: Path) -> None:
    for name in LMDB_FILES:
        (directory / name).unlink(missing_ok=True)


class MachineStore:
    """One LMDB environment per directory and process; open it in the worker, never before a fork."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.env = lmdb.open(
            str(directory), map_size=MAP_SIZE, sync=False, metasync=False, writemap=True,
            readahead=False, max_spare_txns=4,
        )  # fmt: skip
        self.env.reader_check()  # reader slots of processes that died holding one
        self._next_sweep = time.monotonic() + SWEEP_INTERVAL_SECONDS
        self._sweep_from = b""

    def write(self) -> lmdb.Transaction:
        return self.env.begin(write=True)

    def maybe_sweep(self) -> None:
        """Drop up to ``SWEEP_BATCH`` expired records, once a second, resuming where the last sweep ended."""
        now = time.monotonic()
        if now < self._next_sweep:
            return
        self._next_sweep = now + SWEEP_INTERVAL_SECONDS
        self._sweep_from = self.sweep(SWEEP_BATCH, self._sweep_from)

    def sweep(self, limit: int | None = None, start: bytes = b"") -> bytes:
        """Delete expired records from ``start`` on; the key to resume at (``b""``: from the beginning)."""
        wall = time.time()
        expired: list[bytes] = []
        resume = b""
        with self.write() as txn:
            cursor = txn.cursor()
            if start:
                cursor.set_range(start)
            else:
                cursor.first()
            for visited, (key, value) in enumerate(cursor.iternext()):
                if limit is not None and visited >= limit:
                    resume = bytes(key)
                    break
                if _EXPIRES.unpack_from(value)[0] <= wall:
                    expired.append(bytes(key))
            for key in expired:
                txn.delete(key)
        return resume

    def reset(self) -> int:
        """Forget every window and slot; how many records there were."""
        main = self.env.open_db()
        with self.write() as txn:
            count = int(txn.stat(main)["entries"])
            txn.drop(main, delete=False)
        return count

    def close(self) -> None:
        self.env.close()


class MachineStorage(Storage, MovingWindowSupport, SlidingWindowCounterSupport):
    """A ``limits`` storage on a :class:`MachineStore`: what ``limits`` keeps in memory, shared.

    The moving window keeps one timestamp per counted event (logins: a few); the sliding
    window counter two counts per key (requests: O(1) a hit). Both follow the arithmetic of
    ``limits``' memory storage, so a limit means the same whichever storage holds it.
    """

    STORAGE_SCHEME = None

    def __init__(self, store: MachineStore) -> None:
        super().__init__()
        self.store = store

    @property
    def base_exceptions(self) -> type[Exception] | tuple[type[Exception], ...]:
        return lmdb.Error

    # -- fixed window counters (part of the ``limits`` storage interface) ------------

    def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        now = time.time()
        name = b"c/" + key.encode()
        with self.store.write() as txn:
            raw = txn.get(name)
            expires, count = _COUNTER.unpack(raw) if raw else (0.0, 0)
            if expires <= now:
                expires, count = now + expiry, 0
            total = int(count) + amount
            txn.put(name, _COUNTER.pack(expires, total))
        return total

    def get(self, key: str) -> int:
        with self.store.env.begin() as txn:
            raw = txn.get(b"c/" + key.encode())
        if not raw:
            return 0
        expires, count = _COUNTER.unpack(raw)
        return int(count) if expires > time.time() else 0

    def get_expiry(self, key: str) -> float:
        with self.store.env.begin() as txn:
            raw = txn.get(b"c/" + key.encode())
        return float(_COUNTER.unpack(raw)[0]) if raw else time.time()

    def check(self) -> bool:
        return True

    def reset(self) -> int | None:
        return self.store.reset()

    def clear(self, key: str) -> None:
        with self.store.write() as txn:
            for kind in (b"c/", b"m/", b"s/"):
                txn.delete(kind + key.encode())

    # -- moving window ---------------------------------------------------------------

    @staticmethod
    def _events(raw: Stored, since: float) -> list[float]:
        """The window's timestamps after ``since``, oldest first."""
        if not raw:
            return []
        stamps = [stamp for (stamp,) in _STAMP.iter_unpack(raw[_EXPIRES.size :])]
        return [stamp for stamp in stamps if stamp > since]

    def acquire_entry(self, key: str, limit: int, expiry: int, amount: int = 1) -> bool:
        if amount > limit:
            return False
        now = time.time()
        name = b"m/" + key.encode()
        with self.store.write() as txn:
            events = self._events(txn.get(name), now - expiry)
            if len(events) + amount > limit:
                return False
            events.extend([now] * amount)
            txn.put(name, _EXPIRES.pack(now + expiry) + b"".join(_STAMP.pack(e) for e in events))
        self.store.maybe_sweep()
        return True

    def get_moving_window(self, key: str, limit: int, expiry: int) -> tuple[float, int]:
        now = time.time()
        with self.store.env.begin() as txn:
            events = self._events(txn.get(b"m/" + key.encode()), now - expiry)
        return (events[0], len(events)) if events else (now, 0)

    # -- sliding window counter ------------------------------------------------------

    @staticmethod
    def _windows(raw: Stored, expiry: int, now: float) -> tuple[int, int, int]:
        """(current window index, previous count, current count), rolled forward to ``now``."""
        index = int(now / expiry)
        if not raw:
            return index, 0, 0
        _, stored_index, previous, current = _SLIDING.unpack(raw)
        if stored_index == index:
            return index, previous, current
        if stored_index == index - 1:
            return index, current, 0
        return index, 0, 0

    @staticmethod
    def _ttls(previous: int, expiry: int, now: float) -> tuple[float, float]:
        previous_ttl = (1 - (((now - expiry) / expiry) % 1)) * expiry if previous else 0.0
        return previous_ttl, (1 - ((now / expiry) % 1)) * expiry + expiry

    def acquire_sliding_window_entry(self, key: str, limit: int, expiry: int, amount: int = 1) -> bool:
        if amount > limit:
            return False
        now = time.time()
        name = b"s/" + key.encode()
        with self.store.write() as txn:
            index, previous, current = self._windows(txn.get(name), expiry, now)
            previous_ttl, _ = self._ttls(previous, expiry, now)
            if floor(previous * previous_ttl / expiry + current) + amount > limit:
                return False
            txn.put(name, _SLIDING.pack((index + 2) * expiry, index, previous, current + amount))
        self.store.maybe_sweep()
        return True

    def get_sliding_window(self, key: str, expiry: int) -> tuple[int, float, int, float]:
        now = time.time()
        with self.store.env.begin() as txn:
            _, previous, current = self._windows(txn.get(b"s/" + key.encode()), expiry, now)
        previous_ttl, current_ttl = self._ttls(previous, expiry, now)
        return previous, previous_ttl, current, current_ttl

    def clear_sliding_window(self, key: str, expiry: int) -> None:
        with self.store.write() as txn:
            txn.delete(b"s/" + key.encode())


def process_alive(pid: int) -> bool:
    """Whether ``pid`` names a live process of this machine (a zombie counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: alive
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return True  # no /proc: trust kill(0)
    return stat.rsplit(b")", 1)[-1].split()[0] != b"Z"


class MachineInFlight:
    """In-flight slots in a :class:`MachineStore`, each tagged with its holder's pid and start time.

    A key holds a count (``n/<key>``) and one record per slot (``f/<key>\\0<token>``), so taking
    and giving back a slot costs the same with 1 or 64 held: the write lock every worker waits
    on is held for a few lookups, never while a list of the user's slots is parsed and rewritten.
    A worker that dies holding slots cannot release them; when a key is at its cap, its slot
    records are recounted, dropping those of processes that are gone or older than
    ``ttl_seconds``, before refusing. Recounting runs only then, so the hot path pays nothing
    for it.
    """

    def __init__(self, store: MachineStore, ttl_seconds: float) -> None:
        self.store = store
        self.ttl_seconds = ttl_seconds
        self.pid = os.getpid()
        self._sequence = itertools.count()

    def _live(self, token: bytes, stale: float) -> bool:
        pid, acquired, _ = _TOKEN.unpack(token)
        return bool(acquired > stale and (pid == self.pid or process_alive(pid)))

    def _recount(self, txn: lmdb.Transaction, prefix: bytes, now: float) -> int:
        """The live slots under ``prefix``; the records of dead or stale holders are deleted."""
        stale = now - self.ttl_seconds
        live, dead = 0, []
        cursor = txn.cursor()
        if cursor.set_range(prefix):
            for key in cursor.iternext(keys=True, values=False):
                if not bytes(key).startswith(prefix):
                    break
                if self._live(bytes(key)[len(prefix) :], stale):
                    live += 1
                else:
                    dead.append(bytes(key))
        for key in dead:
            txn.delete(key)
        return live

    def acquire(self, key: str, cap: int) -> Slot | None:
        now = time.time()
        name = key.encode()
        count_key, prefix = b"n/" + name, b"f/" + name + b"\0"
        with self.store.write() as txn:
            raw = txn.get(count_key)
            held = int(_COUNTER.unpack(raw)[1]) if raw else 0
            if held >= cap:
                live = self._recount(txn, prefix, now)
                if live >= cap:
                    if live != held:
                        txn.put(count_key, _COUNTER.pack(now + self.ttl_seconds, live))
                    return None
                held = live
            token = _TOKEN.pack(self.pid, now, next(self._sequence))
            txn.put(prefix + token, _EXPIRES.pack(now + self.ttl_seconds))
            txn.put(count_key, _COUNTER.pack(now + self.ttl_seconds, held + 1))
        return Slot(token, held + 1)

    def release(self, key: str, token: bytes) -> None:
        name = key.encode()
        count_key = b"n/" + name
        with self.store.write() as txn:
            if not txn.delete(b"f/" + name + b"\0" + token):
                return  # reaped meanwhile, or the store was emptied
            raw = txn.get(count_key)
            if raw:
                held = int(_COUNTER.unpack(raw)[1])
                txn.put(count_key, _COUNTER.pack(time.time() + self.ttl_seconds, max(0, held - 1)))
