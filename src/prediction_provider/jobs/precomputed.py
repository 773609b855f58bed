"""Precomputed predictions: a Parquet file written by ``batch-infer``, served row by row from memory.

The file is indexed once into a dict of key -> row; a lookup is a dict hit.
Each lookup checks the file's modification time and size at most once a
second, and a changed file is re-read and swapped in whole, so readers never
see half of an old file and half of a new one.

A key column of times (a timestamp column, or text such as ``2018-01-22 04:00:00``)
is also found by any ISO 8601 spelling of the same instant (``2018-01-22T04:00:00Z``,
``2018-01-22T05:00:00+01:00``): clients build the key from a time, and which of the
equivalent spellings the file holds is an accident of how it was written. Times
without an offset are UTC, as everywhere in this service.
"""

from __future__ import annotations

import math
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from prediction_provider.errors import InvalidInput, PrecomputedNotFound

CHECK_INTERVAL_SECONDS = 1.0
# A date and a time of day, as ISO 8601 writes them (T or a space between), an optional offset.
# Anything else (an id, a bare date, a number) is never read as a time.
TIMESTAMP_TEXT = re.compile(
    r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,6})?)?(?:Z|[+-]\d{2}:?\d{2})?", re.ASCII
)


@dataclass(frozen=True, slots=True)
class _Snapshot:
    signature: tuple[int, int]  # (mtime_ns, size)
    rows: dict[str, dict[str, Any]]
    loaded_at: float
    # The stored key of each row whose key is a time, by that instant (UTC).
    keys_by_instant: dict[datetime, str] = field(default_factory=dict)


def instant_of(key: Any) -> datetime | None:
    """The UTC instant a key names, when it is a datetime or ISO 8601 text of one; else ``None``."""
    if isinstance(key, datetime):
        moment = key
    elif isinstance(key, str) and TIMESTAMP_TEXT.fullmatch(key):
        try:
            moment = datetime.fromisoformat(key)
        except ValueError:  # 2018-02-31 and the like
            return None
    else:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value


class PrecomputedPredictions:
    def __init__(self, path: Path, key_column: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.path = path
        self.key_column = key_column
        self.clock = clock
        self._snapshot: _Snapshot | None = None
        self._checked_at = -math.inf
        self._lock = threading.Lock()
        self.reloads = 0

    def lookup(self, key: str) -> dict[str, Any]:
        snapshot = self._current()
        row = snapshot.rows.get(key)
        if row is None and snapshot.keys_by_instant:
            instant = instant_of(key)
            stored = snapshot.keys_by_instant.get(instant) if instant is not None else None
            row = snapshot.rows.get(stored) if stored is not None else None
        if row is None:
            raise PrecomputedNotFound(f"no precomputed prediction for key {key!r}", {"key": key})
        return row

    def size(self) -> int:
        return len(self._current().rows)

    def _current(self) -> _Snapshot:
        now = self.clock()
        snapshot = self._snapshot
        if snapshot is not None and now - self._checked_at < CHECK_INTERVAL_SECONDS:
            return snapshot
        with self._lock:
            self._checked_at = now
            signature = self._file_signature()
            if self._snapshot is None or self._snapshot.signature != signature:
                rows, keys_by_instant = self._read()
                self._snapshot = _Snapshot(signature, rows, now, keys_by_instant)
                self.reloads += 1
            return self._snapshot

    def _file_signature(self) -> tuple[int, int]:
        try:
            stat = self.path.stat()
        except FileNotFoundError as exc:
            raise PrecomputedNotFound("no precomputed predictions file", {"path": str(self.path)}) from exc
        return stat.st_mtime_ns, stat.st_size

    def _read(self) -> tuple[dict[str, dict[str, Any]], dict[datetime, str]]:
        table = pq.read_table(self.path)
        if self.key_column not in table.column_names:
            raise InvalidInput(
                f"precomputed file has no key column {self.key_column!r}",
                [{"field": "precomputed_key", "error": f"columns are {table.column_names}"}],
            )
        rows: dict[str, dict[str, Any]] = {}
        keys_by_instant: dict[datetime, str] = {}
        for record in table.to_pylist():
            stored = record.pop(self.key_column)
            key = str(stored)
            rows[key] = {name: _clean(value) for name, value in record.items()}
            instant = instant_of(stored)
            if instant is not None:
                keys_by_instant.setdefault(instant, key)
        return rows, keys_by_instant
