"""Rows inserted in batches by a background thread, so that a request never waits for a commit.

Callers ``record`` items; one thread per writer wakes every ``flush_interval_s``,
turns what was recorded into rows (off the request path), inserts them and
commits. ``record`` only appends to a deque: it wakes no thread, so a request
pays neither a lock nor a context switch for it. What a caller may rely on:

- an item is written within about ``flush_interval_s`` of being recorded;
  ``flush`` returns once everything recorded before it is stored or given up;
  ``close`` writes what is left and stops the thread (call it before disposing
  of the database);
- ``record`` blocks only when ``MAX_QUEUED`` items wait, that is when the
  database has fallen far behind: slowing callers down then is better than
  losing what they recorded;
- a database that is unreachable (``OperationalError``, a restart or a dropped
  connection) is retried with backoff for about a minute before the batch is
  given up and logged;
- a batch the database refuses (a duplicate key, a row that violates a
  constraint) is retried one row at a time, so one bad row costs only itself.

Retrying after a connection dropped mid-commit can store a batch twice; tables
whose key comes from the item (not the database) refuse the second copy.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Generic, TypeVar

from sqlalchemy import insert
from sqlalchemy.exc import InterfaceError, OperationalError, SQLAlchemyError

from prediction_provider.db.base import Base
from prediction_provider.db.session import Database

log = logging.getLogger(__name__)

MAX_QUEUED = 100_000
BATCH = 500
# Rows per INSERT within a batch's transaction. Turning rows into parameters is pure Python that holds
# the GIL; between statements the driver lets it go, so the event loop never waits long behind a batch.
CHUNK = 50
# Seconds between attempts while the database is unreachable: about a minute in all.
RETRY_DELAYS_S = (0.2, 0.5, 1.0, 2.0, 5.0, 5.0, 5.0, 10.0, 10.0, 10.0)

Item = TypeVar("Item")
Row = Mapping[str, Any]


def _one_row(to_row: Callable[[Item], Row] | None) -> Callable[[Item], Iterable[Row]]:
    assert to_row is not None
    return lambda item: (to_row(item),)


class _Marker:
    """Queued behind the items of a ``flush`` (or ``close``): set once they are written."""

    def __init__(self, stop: bool = False) -> None:
        self.stop = stop
        self.done = threading.Event()


class BatchWriter(Generic[Item]):
    """Inserts ``to_row(item)`` for every recorded item into ``table`` (or every row of
    ``to_rows(item)``, for items that are several rows, e.g. a forecast's steps); every row must
    have the same keys (one statement inserts many)."""

    def __init__(
        self,
        db: Database,
        table: type[Base],
        to_row: Callable[[Item], Row] | None,
        *,
        name: str,
        to_rows: Callable[[Item], Iterable[Row]] | None = None,
        flush_interval_s: float = 0.2,
        retry_delays_s: Sequence[float] = RETRY_DELAYS_S,
    ) -> None:
        self.db = db
        self.table = table
        self.name = name
        self.failed_attempts = 0  # database errors met so far, retried or not
        self.lost = 0  # items given up on
        self._insert_rows = insert(table.metadata.tables[table.__tablename__])
        if (to_row is None) == (to_rows is None):
            raise TypeError("give exactly one of to_row and to_rows")
        self._to_rows = to_rows if to_rows is not None else _one_row(to_row)
        # deque.append and popleft are atomic: callers and the writer share it without a lock.
        self._items: deque[Item | _Marker] = deque()
        self._interval = flush_interval_s
        self._retry_delays = tuple(retry_delays_s)
        self._wake = threading.Event()
        self._room = threading.Condition()
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def record(self, item: Item) -> None:
        """Queue one item; blocks only when the database has fallen far behind. After ``close`` the
        item is counted as lost and logged: no thread is left to write it."""
        if self._closing.is_set():
            self.lost += 1
            log.error("%s: closed; an item recorded after closing is lost", self.name)
            return
        if len(self._items) >= MAX_QUEUED:
            self._wait_for_room()
        self._items.append(item)

    def pending(self) -> int:
        return len(self._items)

    def flush(self) -> None:
        """Return once every item recorded so far is in the database (or given up and logged)."""
        if self._thread.is_alive():
            self._await(_Marker())

    def close(self) -> None:
        """Write what is queued, then stop; retries of an unreachable database are cut short."""
        if self._closing.is_set():
            return
        self._closing.set()
        self._await(_Marker(stop=True), timeout=30)
        self._thread.join(timeout=5)

    def _await(self, marker: _Marker, timeout: float | None = None) -> None:
        self._items.append(marker)
        self._wake.set()
        marker.done.wait(timeout)

    def _wait_for_room(self) -> None:
        with self._room:
            while len(self._items) >= MAX_QUEUED and self._thread.is_alive():
                self._wake.set()
                self._room.wait(timeout=1.0)

    def _run(self) -> None:
        while True:
            self._wake.wait(self._interval)
            self._wake.clear()
            if not self._drain():
                return

    def _drain(self) -> bool:
        """Write everything queued, in batches; False once the stop marker is reached."""
        batch: list[Item] = []
        while self._items:
            entry = self._items.popleft()
            if isinstance(entry, _Marker):
                self._write(batch)
                batch = []
                entry.done.set()
                if entry.stop:
                    return False
                continue
            batch.append(entry)
            if len(batch) >= BATCH:
                self._write(batch)
                batch = []
        self._write(batch)
        return True

    def _write(self, items: Sequence[Item]) -> None:
        if items:
            try:
                self._store(items)
            except Exception:  # a bug here must not end the thread: later items still need writing
                self.lost += len(items)
                log.exception("%s: could not write %d rows", self.name, len(items))
        with self._room:
            self._room.notify_all()

    def _store(self, items: Sequence[Item]) -> None:
        rows = self._rows(items)
        if not rows:
            return
        for delay in (*self._retry_delays, None):
            try:
                self._insert(rows)
                return
            except (OperationalError, InterfaceError) as exc:
                self.failed_attempts += 1
                if delay is None or self._closing.is_set():
                    self.lost += len(rows)
                    log.error("%s: database unreachable, %d rows lost: %s", self.name, len(rows), exc)
                    return
                log.warning("%s: database unreachable (%s); retrying in %g s", self.name, exc.orig, delay)
                self._closing.wait(delay)
            except SQLAlchemyError:
                self.failed_attempts += 1
                self._store_one_by_one(rows)
                return

    def _store_one_by_one(self, rows: Sequence[Row]) -> None:
        for row in rows:
            try:
                self._insert([row])
            except SQLAlchemyError as exc:
                self.lost += 1
                log.error("%s: the database refused a row: %s", self.name, exc)

    def _rows(self, items: Sequence[Item]) -> list[Row]:
        rows: list[Row] = []
        for item in items:
            try:
                rows.extend(self._to_rows(item))
            except Exception:
                self.lost += 1
                log.exception("%s: could not turn an item into a row", self.name)
        return rows

    def _insert(self, rows: Sequence[Row]) -> None:
        # Core, not the ORM's bulk insert: half the Python per row, and nothing here needs the ORM.
        with self.db.session() as session:
            for start in range(0, len(rows), CHUNK):
                session.execute(self._insert_rows, list(rows[start : start + CHUNK]))
