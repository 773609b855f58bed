"""Precomputed predictions: a Parquet file written by ``batch-infer``, served row by row from memory.

The file is indexed once into a dict of key -> row; a lookup is a dict hit.
Each lookup checks the file's modification time and size at most once a
second, and a changed file is re-read and swapped in whole, so readers never
see half of an old file and half of a new one.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from prediction_provider.errors import InvalidInput, PrecomputedNotFound

CHECK_INTERVAL_SECONDS = 1.0


@dataclass(frozen=True, slots=True)
class _Snapshot:
    signature: tuple[int, int]  # (mtime_ns, size)
    rows: dict[str, dict[str, Any]]
    loaded_at: float


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
                self._snapshot = _Snapshot(signature, self._read(), now)
                self.reloads += 1
            return self._snapshot

    def _file_signature(self) -> tuple[int, int]:
        try:
            stat = self.path.stat()
        except FileNotFoundError as exc:
            raise PrecomputedNotFound("no precomputed predictions file", {"path": str(self.path)}) from exc
        return stat.st_mtime_ns, stat.st_size

    def _read(self) -> dict[str, dict[str, Any]]:
        table = pq.read_table(self.path)
        if self.key_column not in table.column_names:
            raise InvalidInput(
                f"precomputed file has no key column {self.key_column!r}",
                [{"field": "precomputed_key", "error": f"columns are {table.column_names}"}],
            )
        rows: dict[str, dict[str, Any]] = {}
        for record in table.to_pylist():
            key = str(record.pop(self.key_column))
            rows[key] = {name: _clean(value) for name, value in record.items()}
        return rows
