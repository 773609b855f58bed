"""``PP_FEEDER=database``: bars stored in ``time_series_data``, on their own or as a cache in front of
another feeder (``PP_FEEDER_UPSTREAM``).

Prices are stored as exact decimals (``Numeric(28, 10)``; volume ``Numeric(28, 8)``)
from the shortest decimal form of each float, so prices with up to ten decimal
places come back bit-for-bit. As a cache, a request fetches from the upstream
only what the table does not yet cover and upserts it (one row per symbol,
interval and time, so a repeated or overlapping fetch never duplicates a bar):

- the span before the first stored bar, when the request starts earlier (or
  asks for all history, once per process);
- the span after the last stored bar, when the request ends later; an
  open-ended request asks the upstream again at most every ``refresh``, and
  re-fetches the last stored bar too, in case it was still forming.

Holes inside the stored span are never back-filled: markets close, and the
table only ever grows outwards from spans that were fetched whole.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Self

import numpy as np
import pandas as pd
from sqlalchemy import Float, cast, delete, func, select
from sqlalchemy.orm import Session

from prediction_provider.db.models import TimeSeriesBar
from prediction_provider.db.session import Database
from prediction_provider.errors import FeederUnavailable
from prediction_provider.features.feeders.base import BarFeeder, normalise_symbol, unknown_symbol
from prediction_provider.features.feeders.frames import empty_bars, normalise_bars
from prediction_provider.features.feeders.intervals import Interval
from prediction_provider.features.market_data import OHLCV_COLUMNS

if TYPE_CHECKING:
    from prediction_provider.config import Settings

# Core, not ORM, statements for bulk writes: the ORM bulk path costs ~0.2 ms a row.
_TABLE = TimeSeriesBar.metadata.tables[TimeSeriesBar.__tablename__]
_KEY_COLUMNS = ["symbol", "interval", "time"]
_VALUE_COLUMNS = ("open", "high", "low", "close", "volume", "source", "ingested_at")


@dataclass(slots=True)
class _Coverage:
    """What this process knows the table holds for one symbol and interval."""

    first: pd.Timestamp | None  # None: everything the upstream has before ``last`` is stored
    last: pd.Timestamp
    checked_at: datetime  # when the upstream was last asked for bars after ``last``


class DatabaseFeeder(BarFeeder):
    name = "database"

    def __init__(
        self,
        database: Database,
        upstream: BarFeeder | None = None,
        *,
        refresh: timedelta = timedelta(seconds=60),
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        max_gap: pd.Timedelta | str | None = None,
        owns_database: bool = False,
    ) -> None:
        super().__init__(max_gap=max_gap)
        self.database = database
        self.upstream = upstream
        self.refresh = refresh
        self._clock = clock
        self._owns_database = owns_database
        self._lock = threading.Lock()
        self._coverage: dict[tuple[str, str], _Coverage] = {}

    @classmethod
    def from_settings(cls, settings: Settings) -> Self:
        from prediction_provider.features.feeders.registry import load_feeder

        upstream = None
        if settings.feeder_upstream:
            if settings.feeder_upstream == cls.name:
                raise FeederUnavailable("PP_FEEDER_UPSTREAM cannot be the database feeder itself")
            upstream = load_feeder(settings.feeder_upstream, settings)
        return cls(
            Database(settings.database),
            upstream,
            refresh=timedelta(seconds=settings.feeder_refresh_seconds),
            max_gap=settings.feeder_max_gap,
            owns_database=True,
        )

    def close(self) -> None:
        if self.upstream is not None:
            self.upstream.close()
        if self._owns_database:
            self.database.dispose()

    # -- BarFeeder -------------------------------------------------------------------------------

    def source_interval(self, symbol: str, target: Interval) -> Interval:
        if self.upstream is not None:
            return target  # the cache stores what is asked for; the upstream resamples
        stored = self.stored_intervals(symbol)
        if target in stored:
            return target
        finer = [interval for interval in stored if interval.divides(target)]
        if not finer:
            return super().source_interval(symbol, target)
        return max(finer, key=lambda interval: interval.seconds)

    def native_interval(self, symbol: str) -> str:
        if self.upstream is not None:
            return self.upstream.native_interval(symbol)
        stored = self.stored_intervals(symbol)
        if not stored:
            raise unknown_symbol(symbol, self.symbols())
        return min(stored, key=lambda interval: interval.seconds).text

    def default_interval(self, symbol: str) -> str:
        if self.upstream is not None:
            return self.upstream.default_interval(symbol)
        return self.native_interval(symbol)

    def read(
        self, symbol: str, interval: Interval, start: pd.Timestamp | None, end: pd.Timestamp | None
    ) -> pd.DataFrame:
        if self.upstream is not None:
            self._fill(symbol, interval, start, end)
        return self.stored_bars(symbol, interval, start, end)

    def symbols(self) -> tuple[str, ...]:
        with self.database.session() as session:
            stored = session.scalars(select(TimeSeriesBar.symbol).distinct()).all()
        upstream = self.upstream.symbols() if self.upstream is not None else ()
        return tuple(sorted(set(stored) | set(upstream)))

    # -- the table -------------------------------------------------------------------------------

    def stored_intervals(self, symbol: str) -> list[Interval]:
        with self.database.session() as session:
            texts = session.scalars(
                select(TimeSeriesBar.interval)
                .where(TimeSeriesBar.symbol == normalise_symbol(symbol))
                .distinct()
            ).all()
        return [Interval.parse(text) for text in texts]

    def stored_bars(
        self,
        symbol: str,
        interval: Interval,
        start: pd.Timestamp | None = None,
        end: pd.Timestamp | None = None,
    ) -> pd.DataFrame:
        """The stored bars in ``[start, end]``, as floats (read as doubles by the database itself)."""
        table = TimeSeriesBar
        query = select(table.time, *(cast(getattr(table, name), Float) for name in OHLCV_COLUMNS)).where(
            table.symbol == normalise_symbol(symbol), table.interval == interval.text
        )
        # Databases keep microseconds: round the bounds inwards so no bar outside them slips in.
        if start is not None:
            query = query.where(table.time >= start.ceil("us").to_pydatetime())
        if end is not None:
            query = query.where(table.time <= end.floor("us").to_pydatetime())
        with self.database.session() as session:
            rows = session.execute(query.order_by(table.time)).all()
        if not rows:
            return empty_bars()
        times = pd.DatetimeIndex([row[0] for row in rows], name="time").tz_convert("UTC").as_unit("ns")
        values = np.array([row[1:] for row in rows], dtype=np.float64)
        return pd.DataFrame(values, index=times, columns=list(OHLCV_COLUMNS))

    def store(self, symbol: str, interval: str, bars: pd.DataFrame, source: str) -> int:
        """Insert or update ``bars`` (any feeder output); returns the number of rows written."""
        symbol = normalise_symbol(symbol)
        bars = normalise_bars(bars, symbol)
        if bars.empty:
            return 0
        now = self._clock()
        interval_text = Interval.parse(interval).text
        rows = [
            {
                "symbol": symbol,
                "interval": interval_text,
                "time": stamp.to_pydatetime(),
                **{name: _decimal(value) for name, value in zip(OHLCV_COLUMNS, values, strict=True)},
                "source": source[:32],
                "ingested_at": now,
            }
            for stamp, values in zip(bars.index, bars.to_numpy().tolist(), strict=True)
        ]
        with self.database.session() as session:
            # One statement, many parameter sets: SQLAlchemy batches them into multi-row VALUES
            # ("insertmanyvalues") with one compiled statement, instead of compiling each chunk.
            session.connection().execute(self._upsert(), rows)
        return len(rows)

    def forget(self, symbol: str, interval: str | None = None) -> int:
        """Delete stored bars of ``symbol`` (one interval, or all); the next read fetches them again."""
        symbol = normalise_symbol(symbol)
        statement = delete(TimeSeriesBar).where(TimeSeriesBar.symbol == symbol)
        if interval is not None:
            statement = statement.where(TimeSeriesBar.interval == Interval.parse(interval).text)
        with self.database.session() as session:
            deleted = getattr(session.execute(statement), "rowcount", 0)
        with self._lock:
            for key in [key for key in self._coverage if key[0] == symbol]:
                if interval is None or key[1] == Interval.parse(interval).text:
                    del self._coverage[key]
        return int(deleted or 0)

    # -- the cache -------------------------------------------------------------------------------

    def _fill(
        self, symbol: str, interval: Interval, start: pd.Timestamp | None, end: pd.Timestamp | None
    ) -> None:
        assert self.upstream is not None
        key = (symbol, interval.text)
        with self._lock:  # one filler at a time: concurrent misses would fetch the same span twice
            now = self._clock()
            # No bar can open after now, so a future end covers no more than now.
            horizon = None if end is None else min(end, pd.Timestamp(now).tz_convert("UTC"))
            coverage = self._coverage.get(key) or self._stored_span(symbol, interval)
            if coverage is None:
                fetched = self._fetch(symbol, interval, start, end)
                if fetched.empty and horizon is None:
                    return
                last = max(
                    x for x in (horizon, None if fetched.empty else fetched.index[-1]) if x is not None
                )
                self._coverage[key] = _Coverage(start, last, now)
                return
            if coverage.first is not None and (start is None or start < coverage.first):
                self._fetch(symbol, interval, start, coverage.first)
                coverage.first = start
            if end is None and now - coverage.checked_at >= self.refresh:
                fetched = self._fetch(symbol, interval, coverage.last, None)
                coverage.checked_at = now
            elif horizon is not None and horizon > coverage.last:
                fetched = self._fetch(symbol, interval, coverage.last, end)
                coverage.last = horizon
            else:
                fetched = empty_bars()
            if not fetched.empty:
                coverage.last = max(coverage.last, fetched.index[-1])
            self._coverage[key] = coverage

    def _fetch(
        self, symbol: str, interval: Interval, start: pd.Timestamp | None, end: pd.Timestamp | None
    ) -> pd.DataFrame:
        assert self.upstream is not None
        bars = self.upstream.bars(symbol, interval.text, start, end)
        self.store(symbol, interval.text, bars, self.upstream.name)
        return bars

    def _stored_span(self, symbol: str, interval: Interval) -> _Coverage | None:
        table = TimeSeriesBar
        with self.database.session() as session:
            first, last = session.execute(
                select(func.min(table.time), func.max(table.time)).where(
                    table.symbol == symbol, table.interval == interval.text
                )
            ).one()
        if first is None or last is None:
            return None
        # Stored by another process or an earlier run: what lies beyond is unknown, so ask once.
        return _Coverage(_utc(first), _utc(last), datetime.min.replace(tzinfo=UTC))

    def _upsert(self) -> Any:
        dialect = self.database.engine.dialect.name
        if dialect == "postgresql":
            from sqlalchemy.dialects import postgresql

            pg_statement = postgresql.insert(_TABLE)
            return pg_statement.on_conflict_do_update(
                index_elements=_KEY_COLUMNS,
                set_={name: pg_statement.excluded[name] for name in _VALUE_COLUMNS},
            )
        if dialect == "sqlite":
            from sqlalchemy.dialects import sqlite

            lite_statement = sqlite.insert(_TABLE)
            return lite_statement.on_conflict_do_update(
                index_elements=_KEY_COLUMNS,
                set_={name: lite_statement.excluded[name] for name in _VALUE_COLUMNS},
            )
        raise FeederUnavailable(f"the bar cache supports PostgreSQL and SQLite, not {dialect}")


def _decimal(value: float) -> Decimal:
    # repr is the shortest decimal that reads back as the same float: 1.10525, not 1.1052499999...
    return Decimal(repr(float(value)))


def _utc(value: datetime) -> pd.Timestamp:
    stamp = pd.Timestamp(value)
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def session_bars(session: Session, symbol: str, interval: str) -> int:
    """How many bars the table holds for ``symbol`` at ``interval`` (for operators and tests)."""
    count = session.scalar(
        select(func.count()).where(
            TimeSeriesBar.symbol == normalise_symbol(symbol),
            TimeSeriesBar.interval == Interval.parse(interval).text,
        )
    )
    return int(count or 0)
