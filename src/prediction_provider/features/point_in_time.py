"""Feature vectors *as of* a time, computed only from bars at or before it, and cached.

``PointInTimeFeatures.snapshot(symbol, as_of)`` finds the last bar that had
closed at or before ``as_of`` and computes the training pipeline
(``features.pipeline``) on the ``lookback_bars`` bars that end with it.

Bars are identified by their close time. A feeder labels a bar either by its
close time (``bar_label="close"``: the label is the close) or by its open time
(``"open"``, as the sample EURUSD CSVs are: the bar closes one interval of the
symbol later). Reading a bar's CLOSE at its open time would be a look-ahead, so
an open-labelled bar is released only at label + interval. Nothing is released
after the clock either (``clock``, the server's one clock): with a replay or a
manual clock set in the past of recorded bars, the later bars have simply not
arrived yet, and the latest-bar snapshot moves forward as the clock does.

Parity with training: within the first ``lookback_bars`` bars of a series the
window is the whole history, so a snapshot equals the ``compute_features`` row
bit for bit. Later, only the recursive averages (RSI, MACD, ATR) still feel the
window's start, by a factor of at most (13/14)**512 ~ 1e-17; measured on all of
EURUSD the largest difference is 2.2e-16 (tests pin 1e-12).

Freshness: ``FeatureSnapshot.data_as_of`` is the close time of the bar the vector
ends with; ``age`` (``as_of - data_as_of``) is how old the data was at the time
asked for. With ``as_of=None`` the snapshot is of the latest bar closed by the
clock and ``as_of`` is the clock's time, so ``age`` says how stale the feed is.
A forecast's target time (data_as_of + h intervals) is then the close time of
the bar it forecasts.

Caching: vectors are kept per (symbol, bar) in a bounded LRU. A vector depends
on its bar and the bars before it, so appending later bars keeps it valid; a
bar that is inserted or corrected invalidates the vectors from its time on.
"""

from __future__ import annotations

import contextlib
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

import numpy as np
import pandas as pd

from prediction_provider.errors import InsufficientHistory, InvalidInput, UnknownSymbol
from prediction_provider.features.feeders.base import BarFeeder, normalise_symbol
from prediction_provider.features.feeders.frames import normalise_bars
from prediction_provider.features.feeders.intervals import Interval
from prediction_provider.features.pipeline import FEATURE_NAMES, WARMUP_BARS, BarArrays, feature_matrix

# Long enough that the slowest recursive average (alpha = 1/14) forgets the window's start to
# below float precision; a 512-bar window costs well under a millisecond.
LOOKBACK_BARS = 512
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
BarLabel = Literal["open", "close"]


@dataclass(frozen=True, slots=True)
class FeatureSnapshot:
    """What was known about ``symbol`` at ``as_of``: ``values`` in ``FEATURE_NAMES`` order."""

    symbol: str
    as_of: datetime  # the time asked for (UTC); now when none was given
    data_as_of: datetime  # close time of the last bar used (<= as_of)
    values: dict[str, float]
    bars_used: int

    @property
    def age(self) -> timedelta:
        """How old the data was at ``as_of``."""
        return self.as_of - self.data_as_of


@dataclass(frozen=True, slots=True)
class _Vector:
    values: tuple[float, ...]
    data_as_of: datetime
    bars_used: int


class _Series:
    """One symbol's bars, never mutated: an update builds a new one. ``times`` are the labels in
    int64 ns; a bar closes ``offset`` ns after its label (0 for close-labelled bars). The offset is
    one per symbol, so a bound on close times is a bound on labels: one searchsorted, no second array."""

    __slots__ = ("arrays", "frame", "last_close", "offset", "times")

    def __init__(self, frame: pd.DataFrame, offset: int) -> None:
        self.frame = frame
        self.times = frame.index.asi8
        self.arrays = BarArrays.from_frame(frame)
        self.offset = offset
        self.last_close = int(self.times[-1]) + offset if len(self.times) else None

    def closed_before(self, bound_ns: int) -> int:
        """How many bars have closed at or before ``bound_ns``."""
        if self.last_close is not None and self.last_close <= bound_ns:
            return len(self.times)  # the live case: every bar has closed
        return int(np.searchsorted(self.times, bound_ns - self.offset, "right"))

    def close_time(self, position: int) -> datetime:
        closed: datetime = pd.Timestamp(int(self.times[position]) + self.offset, tz="UTC").to_pydatetime()
        return closed

    def __len__(self) -> int:
        return len(self.times)


class PointInTimeFeatures:
    """Point-in-time feature vectors over any feeder. Safe to share between threads.

    ``interval_for`` picks the bar interval per symbol (default: the feeder's
    ``default_interval``, e.g. 1h for EURUSD and 1d for GOOG in the sample bars).
    A symbol's whole history is read from the feeder on first use and kept.
    ``bar_label`` says what the feeder's bar times are (see the module); ``clock``
    is the time no read goes past (the server's one clock: ``services.clock.now``).
    """

    def __init__(
        self,
        feeder: BarFeeder,
        interval_for: Callable[[str], str] | None = None,
        cache_size: int = 1024,
        *,
        lookback_bars: int = LOOKBACK_BARS,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        bar_label: BarLabel = "close",
    ) -> None:
        if cache_size < 1 or lookback_bars <= WARMUP_BARS:
            raise ValueError(f"cache_size must be >= 1 and lookback_bars > {WARMUP_BARS}")
        if bar_label not in ("open", "close"):
            raise ValueError(f"bar_label must be open or close, not {bar_label!r}")
        self.bar_label = bar_label
        self.feeder = feeder
        self.interval_for = interval_for or feeder.default_interval
        self.cache_size = cache_size
        self.lookback_bars = lookback_bars
        self._clock = clock
        self._lock = threading.Lock()
        self._series: dict[str, _Series] = {}
        self._vectors: OrderedDict[tuple[str, int], _Vector] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def bars(self, symbol: str, as_of: datetime | None = None, lookback: int | None = None) -> pd.DataFrame:
        """The bars closed at or before ``as_of`` and the clock (the clock alone when ``None``), the
        last ``lookback`` of them if given; indexed by the feeder's labels, as the feeder gives them."""
        symbol = normalise_symbol(symbol)
        series = self._series_of(symbol)
        end = series.closed_before(self._bound(as_of))
        if end == 0:
            raise self._too_early(symbol, as_of, series, 0)
        start = 0 if lookback is None else max(0, end - lookback)
        return series.frame.iloc[start:end].copy()

    def closed_bars(
        self, symbol: str, until: datetime | None = None, *, after: datetime | None = None
    ) -> pd.DataFrame:
        """The bars whose close time is at or before ``until`` and the clock (and after ``after``,
        when given), indexed by their close time (a UTC ``DatetimeIndex`` named ``close_time``), with
        the feeder's columns (open, high, low, close, volume). Outcomes are read through it, so an
        outcome never reads a bar before it has closed by the server's clock. Empty when none has."""
        symbol = normalise_symbol(symbol)
        series = self._series_of(symbol)
        end = series.closed_before(self._bound(until))
        start = 0 if after is None else min(end, series.closed_before(_nanoseconds(after)))
        frame = series.frame.iloc[start:end].copy()
        if series.offset:
            frame.index = frame.index + pd.Timedelta(series.offset, "ns")
        frame.index.name = "close_time"
        return frame

    def close_offset(self, symbol: str) -> timedelta:
        """How long after its label a bar of ``symbol`` closes: one interval for open-labelled bars,
        zero for close-labelled ones."""
        return timedelta(microseconds=self._offset_of(normalise_symbol(symbol)) // 1000)

    def snapshot(self, symbol: str, as_of: datetime | None = None) -> FeatureSnapshot:
        """The feature vector of the last bar closed at or before ``as_of`` (``None``: the clock's
        time); never of a bar closing after the clock. ``data_as_of`` is that bar's close time.

        ``UnknownSymbol`` when the feeder has no such symbol; ``InsufficientHistory``
        (422) when fewer than ``WARMUP_BARS + 1`` bars have closed by ``as_of``.
        """
        symbol = normalise_symbol(symbol)
        series = self._series_of(symbol)
        now = self._clock()
        asked = now if as_of is None else _utc(as_of)
        # A time past the clock reads no more than the clock: later bars are not released yet.
        position = series.closed_before(_nanoseconds(asked if asked <= now else now)) - 1
        if position < WARMUP_BARS:
            raise self._too_early(symbol, asked, series, position + 1)
        key = (symbol, int(series.times[position]))
        with self._lock:
            vector = self._vectors.get(key)
            if vector is not None:
                self._vectors.move_to_end(key)
                self.hits += 1
            else:
                # Computed under the lock (well under a millisecond): an append_bars that corrects
                # this bar cannot slip in between the computation and its caching.
                series = self._series.get(symbol, series)
                vector = self._compute(series, int(np.searchsorted(series.times, key[1], "left")))
                self._remember(key, vector)
                self.misses += 1
        return FeatureSnapshot(
            symbol,
            asked,
            vector.data_as_of,
            dict(zip(FEATURE_NAMES, vector.values, strict=True)),
            vector.bars_used,
        )

    def append_bars(self, symbol: str, bars: pd.DataFrame) -> None:
        """Merge new or corrected bars (at the symbol's interval) into the series.

        Bars after the last one only extend it; a bar at an existing time
        replaces that bar, and one inside the series is inserted. Either way the
        cached vectors from the earliest changed time on are dropped. A symbol
        the feeder does not know starts from these bars alone.
        """
        symbol = normalise_symbol(symbol)
        incoming = normalise_bars(bars, symbol)
        if incoming.empty:
            return
        with contextlib.suppress(UnknownSymbol):  # a symbol only ever streamed starts empty
            self._series_of(symbol)
        offset = self._offset_of(symbol)
        with self._lock:
            current = self._series.get(symbol)
            merged, changed_from = _merge(None if current is None else current.frame, incoming)
            self._series[symbol] = _Series(merged, offset)
            if changed_from is not None:
                stale = [key for key in self._vectors if key[0] == symbol and key[1] >= changed_from]
                for key in stale:
                    del self._vectors[key]

    def reload(self, symbol: str) -> None:
        """Forget a symbol's bars and vectors; the next call reads the feeder again."""
        symbol = normalise_symbol(symbol)
        with self._lock:
            self._series.pop(symbol, None)
            for key in [key for key in self._vectors if key[0] == symbol]:
                del self._vectors[key]

    def has_bars(self, symbol: str) -> bool:
        """Whether ``symbol``'s bars are loaded: a snapshot of it then reads no feeder."""
        return normalise_symbol(symbol) in self._series

    def cached_vectors(self) -> int:
        return len(self._vectors)

    # -- internals -------------------------------------------------------------------------------

    def _series_of(self, symbol: str) -> _Series:
        series = self._series.get(symbol)
        if series is not None:
            return series
        # Read outside the lock: a slow feeder must not stall snapshots of other symbols.
        frame = self.feeder.bars(symbol, self.interval_for(symbol))
        built = _Series(frame, self._offset_of(symbol))
        with self._lock:
            return self._series.setdefault(symbol, built)

    def _offset_of(self, symbol: str) -> int:
        """Nanoseconds from a bar's label to its close."""
        if self.bar_label == "close":
            return 0
        return Interval.parse(self.interval_for(symbol)).seconds * 1_000_000_000

    def _bound(self, as_of: datetime | None) -> int:
        """The latest close time a read may use, in ns: ``as_of`` but never past the clock."""
        now = self._clock()
        if as_of is None:
            return _nanoseconds(now)
        asked = _utc(as_of)
        return _nanoseconds(asked if asked <= now else now)

    def _compute(self, series: _Series, position: int) -> _Vector:
        start = max(0, position + 1 - self.lookback_bars)
        source = series.arrays
        window = slice(start, position + 1)
        arrays = BarArrays(
            source.open[window],
            source.high[window],
            source.low[window],
            source.close[window],
            source.volume[window],
            first_row=position - start,
        )
        row = feature_matrix(arrays)[-1]
        return _Vector(
            tuple(float(value) for value in row), series.close_time(position), position + 1 - start
        )

    def _remember(self, key: tuple[str, int], vector: _Vector) -> None:
        self._vectors[key] = vector
        while len(self._vectors) > self.cache_size:
            self._vectors.popitem(last=False)

    def _too_early(
        self, symbol: str, as_of: datetime | None, series: _Series, available: int
    ) -> InsufficientHistory:
        if len(series) <= WARMUP_BARS:
            first_usable = "none yet"
        else:
            first_usable = series.close_time(WARMUP_BARS).isoformat()
        asked = "now" if as_of is None else as_of.isoformat()
        return InsufficientHistory(
            f"{symbol} has {available} bar(s) at or before {asked}; features need {WARMUP_BARS + 1}. "
            f"The first usable {symbol} bar is at {first_usable}",
            [{"field": "timestamp", "error": f"the first usable {symbol} bar is at {first_usable}"}],
        )


def _merge(current: pd.DataFrame | None, incoming: pd.DataFrame) -> tuple[pd.DataFrame, int | None]:
    """``current`` updated with ``incoming``, and the earliest time (ns) whose bars changed
    (``None`` when ``incoming`` only extends ``current``)."""
    if current is None or current.empty:
        return incoming, None
    last = current.index[-1]
    if incoming.index[0] > last:
        return pd.concat([current, incoming]), None
    overlap = incoming.index.intersection(current.index)
    differs = (current.loc[overlap].to_numpy() != incoming.loc[overlap].to_numpy()).any(axis=1)
    inserted = incoming.index.difference(current.index)
    candidates = [*overlap[differs], *inserted[inserted <= last]]
    merged = pd.concat([current.drop(index=overlap), incoming]).sort_index(kind="stable")
    if not candidates:
        return merged, None
    return merged, int(min(candidates).value)


def _utc(as_of: datetime) -> datetime:
    if not isinstance(as_of, datetime) or as_of.tzinfo is None:
        raise InvalidInput(
            f"as_of must be a timezone-aware time, not {as_of!r}",
            [{"field": "timestamp", "error": "give a timezone-aware time, e.g. 2017-03-22T08:00:00Z"}],
        )
    return as_of.astimezone(UTC)


def _nanoseconds(as_of: datetime) -> int:
    if isinstance(as_of, pd.Timestamp):
        if as_of.tzinfo is None:
            _utc(as_of)
        return int(as_of.value)
    delta = _utc(as_of) - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1_000
