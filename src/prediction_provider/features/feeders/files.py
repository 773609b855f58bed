"""What CSV and Parquet feeders share: one file per symbol, column mapping, time parsing, and a
parsed-file cache that notices when a file changes on disk."""

from __future__ import annotations

import re
import threading
from abc import abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from prediction_provider.errors import FeederUnavailable, InvalidMarketData
from prediction_provider.features.feeders.base import BarFeeder, normalise_symbol, unknown_symbol
from prediction_provider.features.feeders.frames import select_range
from prediction_provider.features.feeders.intervals import Interval
from prediction_provider.features.feeders.timestamps import check_timezone, parse_times

FIELDS = ("time", "open", "high", "low", "close", "volume")
_USUAL_NAMES: dict[str, tuple[str, ...]] = {
    "time": ("time", "datetime", "date_time", "timestamp", "date", "gmt time", "local time", "dt"),
    "open": ("open", "o"),
    "high": ("high", "h"),
    "low": ("low", "l"),
    "close": ("close", "c"),
    "volume": ("volume", "vol", "v", "tick_volume", "tickvol"),
}
# Symbols become file names: nothing that could climb out of the data directory.
_FILE_SYMBOL = re.compile(r"^[A-Z0-9][A-Z0-9._^=-]{0,31}$")


@dataclass(frozen=True, slots=True)
class ColumnMap:
    """Which file column holds each bar field, e.g. ``{"time": "DATE_TIME", "open": "OPEN"}``.

    A field left out is found by its usual names in any case (``Open``, ``CLOSE``,
    ``Gmt time``, ``tick_volume``). ``time`` may join columns with ``+``
    (``"Date+Time"`` for MetaTrader exports). ``volume`` is optional: without
    one the bars get zero volume.
    """

    names: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = sorted(set(self.names) - set(FIELDS))
        if unknown:
            raise FeederUnavailable(
                f"unknown bar fields in the column map: {unknown}", {"fields": list(FIELDS)}
            )

    def resolve(self, columns: list[str], source: str) -> dict[str, list[str]]:
        """The file columns for each field found (``time`` absent means: use the index)."""
        by_lower = {column.strip().lower(): column for column in columns}
        resolved: dict[str, list[str]] = {}
        for name in FIELDS:
            if name in self.names:
                wanted = [part.strip() for part in self.names[name].split("+")]
                found = [by_lower.get(part.lower()) for part in wanted]
                if None in found:
                    raise InvalidMarketData(
                        f"{source} has no column {self.names[name]!r} for {name}",
                        {"source": source, "columns": columns},
                    )
                resolved[name] = [column for column in found if column is not None]
                continue
            usual = next((by_lower[alias] for alias in _USUAL_NAMES[name] if alias in by_lower), None)
            if usual is not None:
                resolved[name] = [usual]
        if "time" not in self.names and "date" in by_lower and "time" in by_lower:
            resolved["time"] = [by_lower["date"], by_lower["time"]]
        missing = [name for name in ("open", "high", "low", "close") if name not in resolved]
        if missing:
            raise InvalidMarketData(
                f"{source} has no {', '.join(missing)} column; map them with the column settings",
                {"source": source, "columns": columns, "missing": missing},
            )
        return resolved


def bars_from_table(
    table: pd.DataFrame, columns: ColumnMap, datetime_format: str | None, timezone: str, source: str
) -> pd.DataFrame:
    """The OHLCV frame inside a file's table, on a UTC index (checked later by ``normalise_bars``)."""
    resolved = columns.resolve([str(column) for column in table.columns], source)
    time_columns = resolved.pop("time", None)
    if time_columns is None:
        if not isinstance(table.index, pd.DatetimeIndex):
            raise InvalidMarketData(
                f"{source} has no time column", {"source": source, "columns": list(table.columns)}
            )
        times = pd.Series(table.index)
    elif len(time_columns) == 1:
        times = table[time_columns[0]]
    else:
        times = table[time_columns].astype("string").agg(" ".join, axis=1)
    index = parse_times(times.reset_index(drop=True), datetime_format, timezone, source)
    values = {
        name: pd.to_numeric(table[names[0]], errors="coerce").to_numpy(dtype="float64")
        for name, names in resolved.items()
    }
    return pd.DataFrame(values, index=index)


class FileFeeder(BarFeeder):
    """Bars from one file per symbol.

    ``path`` is a file, or a template naming the file of a symbol with
    ``{symbol}`` (upper case) or ``{symbol_lower}``: ``data/{symbol}_H1.csv``.
    A single file holds ``symbol`` (by default its name without the suffix,
    upper-cased). Every file holds bars at ``interval``; coarser intervals are
    resampled. A parsed file is kept until its size or modification time changes.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        interval: str = "1h",
        columns: ColumnMap | Mapping[str, str] | None = None,
        datetime_format: str | None = None,
        timezone: str = "UTC",
        symbol: str | None = None,
        max_gap: pd.Timedelta | str | None = None,
    ) -> None:
        super().__init__(max_gap=max_gap)
        self.path = str(path)
        self.templated = "{symbol" in self.path
        self.interval = Interval.parse(interval)
        self.columns = columns if isinstance(columns, ColumnMap) else ColumnMap(dict(columns or {}))
        self.datetime_format = datetime_format
        self.timezone = check_timezone(timezone)
        self.symbol = None if self.templated else normalise_symbol(symbol or Path(self.path).stem)
        self._lock = threading.Lock()
        self._parsed: dict[Path, tuple[tuple[int, int], pd.DataFrame]] = {}

    def path_for(self, symbol: str) -> Path:
        """The file of ``symbol``; ``UnknownSymbol`` when there is none."""
        symbol = normalise_symbol(symbol)
        if not self.templated:
            if symbol != self.symbol:
                raise unknown_symbol(symbol, self.symbols())
            path = Path(self.path)
        else:
            if not _FILE_SYMBOL.match(symbol):
                raise unknown_symbol(symbol)
            path = Path(self.path.format(symbol=symbol, symbol_lower=symbol.lower()))
        if not path.is_file():
            raise unknown_symbol(symbol, self.symbols())
        return path

    def native_interval(self, symbol: str) -> str:
        self.path_for(symbol)
        return self.interval.text

    def read(
        self, symbol: str, interval: Interval, start: pd.Timestamp | None, end: pd.Timestamp | None
    ) -> pd.DataFrame:
        return select_range(self._parsed_file(self.path_for(symbol)), start, end)

    def symbols(self) -> tuple[str, ...]:
        if not self.templated:
            return (self.symbol,) if self.symbol and Path(self.path).is_file() else ()
        pattern = Path(self.path.replace("{symbol_lower}", "*").replace("{symbol}", "*"))
        prefix, _, suffix = pattern.name.partition("*")
        found = {
            match.name[len(prefix) : len(match.name) - len(suffix)].upper()
            for match in pattern.parent.glob(pattern.name)
            if match.is_file()
        }
        return tuple(sorted(symbol for symbol in found if _FILE_SYMBOL.match(symbol)))

    def _parsed_file(self, path: Path) -> pd.DataFrame:
        stat = path.stat()
        stamp = (stat.st_mtime_ns, stat.st_size)
        with self._lock:
            cached = self._parsed.get(path)
            if cached is not None and cached[0] == stamp:
                return cached[1]
        source = path.name
        try:
            table = self.read_table(path)
        except (OSError, ValueError) as exc:
            raise InvalidMarketData(f"{source} cannot be read: {exc}", {"source": source}) from exc
        bars = bars_from_table(table, self.columns, self.datetime_format, self.timezone, source)
        bars = bars.sort_index(kind="stable")
        with self._lock:
            self._parsed[path] = (stamp, bars)
        return bars

    @abstractmethod
    def read_table(self, path: Path) -> pd.DataFrame:
        """The file's table as it is; ``bars_from_table`` picks the columns."""
