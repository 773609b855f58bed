"""Rows inserted in batches by a background thread, so that a request never waits for a commit.

Callers ``record`` items; one thread per writer turns them into rows (off the
request path), inserts up to ``BATCH`` of them per statement and commits. What
a caller may rely on:

- ``flush`` returns once everything recorded before it is stored or given up;
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
import queue
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Generic, TypeVar

from sqlalchemy import insert
from sqlalchemy.exc import InterfaceError, OperationalError, SQLAlchemyError

from prediction_provider.db.base import Base
from prediction_provider.db.session import Database

log = logging.getLogger(__name__)

MAX_QUEUED = 100_000
BATCH = 500
# Seconds between attempts while the database is unreachable: about a minute in all.
RETRY_DELAYS_S = (0.2, 0.5, 1.0, 2.0, 5.0, 5.0, 5.0, 10.0, 10.0, 10.0)

Item = TypeVar("Item")
Row = Mapping[str, Any]


class BatchWriter(Generic[Item]):
    """Inserts ``to_row(item)`` for every recorded item into ``table``."""

    def __init__(
        self,
        db: Database,
        table: type[Base],
        to_row: Callable[[Item], Row],
        *,
        name: str,
        flush_interval_s: float = 0.2,
        retry_delays_s: Sequence[float] = RETRY_DELAYS_S,
    ) -> None:
        self.db = db
        self.table = table
        self.name = name
        self.failed_attempts = 0  # database errors met so far, retried or not
        self.lost = 0  # items given up on
        self._to_row = to_row
        self._queue: queue.Queue[Item | None] = queue.Queue(MAX_QUEUED)
        self._interval = flush_interval_s
        self._retry_delays = tuple(retry_delays_s)
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def record(self, item: Item) -> None:
        """Queue one item; blocks only when the database has fallen far behind."""
        self._queue.put(item)

    def pending(self) -> int:
        return self._queue.qsize()

    def flush(self) -> None:
        """Return once every item queued so far is in the database (or given up and logged)."""
        self._queue.join()

    def close(self) -> None:
        """Write what is queued, then stop; retries of an unreachable database are cut short."""
        self._closing.set()
        self._queue.put(None)
        self._thread.join(timeout=30)

    def _run(self) -> None:
        while True:
            batch = [self._queue.get()]
            # Gather more for up to the interval; the stop marker (None) ends the batch at once.
            while len(batch) < BATCH and batch[-1] is not None:
                try:
                    batch.append(self._queue.get(timeout=self._interval))
                except queue.Empty:
                    break
            items = [item for item in batch if item is not None]
            try:
                if items:
                    self._store(items)
            except Exception:  # a bug here must not end the thread: later items still need writing
                log.exception("%s: could not write %d rows", self.name, len(items))
            finally:
                for _ in batch:
                    self._queue.task_done()
            if any(item is None for item in batch):
                return

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
        rows = []
        for item in items:
            try:
                rows.append(self._to_row(item))
            except Exception:
                self.lost += 1
                log.exception("%s: could not turn an item into a row", self.name)
        return rows

    def _insert(self, rows: Sequence[Row]) -> None:
        with self.db.session() as session:
            session.execute(insert(self.table), list(rows))
