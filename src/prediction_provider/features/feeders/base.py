"""The feeder interface: OHLCV bars for a symbol and interval, in one checked shape.

A plugin subclasses ``BarFeeder``, implements ``native_interval`` and ``read``
(and ``from_settings`` to be chosen by ``PP_FEEDER``), and registers the class
under the ``prediction_provider.feeders`` entry-point group. ``bars`` does the
rest for every plugin alike: symbol and interval parsing, resampling to
coarser intervals, date-range filtering, and the duplicate, price and gap checks.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, ClassVar, Self, TypeAlias

import pandas as pd

from prediction_provider.errors import FeederUnavailable, InvalidInput, UnknownSymbol
from prediction_provider.features.feeders.frames import (
    check_gaps,
    normalise_bars,
    parse_duration,
    select_range,
    utc_timestamp,
)
from prediction_provider.features.feeders.intervals import Interval
from prediction_provider.features.feeders.resample import resample_bars, source_span

if TYPE_CHECKING:
    from prediction_provider.config import Settings

TimeBound: TypeAlias = datetime | pd.Timestamp | str | None


class BarFeeder(ABC):
    """A source of OHLCV bars.

    ``max_gap`` turns on gap detection: consecutive bars further apart than it
    make ``bars`` fail with ``InvalidMarketData`` (leave it unset for series with
    weekends and holidays unless it is set above them, e.g. ``72h`` for hourly FX).
    """

    name: ClassVar[str] = "feeder"

    def __init__(self, *, max_gap: pd.Timedelta | str | None = None) -> None:
        self.max_gap = parse_duration(max_gap)

    @classmethod
    def from_settings(cls, settings: Settings) -> Self:
        """The feeder ``PP_FEEDER=<entry point name>`` builds. A feeder that only code builds
        (``MemoryFeeder``) keeps this one; a plugin chosen by ``PP_FEEDER`` overrides it."""
        raise FeederUnavailable(
            f"the {cls.name} feeder cannot be chosen by PP_FEEDER: {cls.__name__} has no from_settings"
        )

    def bars(
        self, symbol: str, interval: str, start: TimeBound = None, end: TimeBound = None
    ) -> pd.DataFrame:
        """Bars of ``symbol`` at ``interval`` with ``start <= time <= end``, oldest first.

        Raises ``UnknownSymbol`` for a symbol the source does not hold,
        ``InvalidInput`` for a bad interval or naive bound, and
        ``InvalidMarketData`` for duplicate times, impossible prices or gaps.
        A known symbol with no bars in the range gives an empty frame.
        """
        symbol = normalise_symbol(symbol)
        target = Interval.parse(interval)
        first, last = utc_timestamp(start, "start"), utc_timestamp(end, "end")
        if first is not None and last is not None and first > last:
            raise InvalidInput(
                "start is after end",
                [{"field": "start", "error": f"{first.isoformat()} > {last.isoformat()}"}],
            )
        source = self.source_interval(symbol, target)
        read_first, read_last = (first, last) if source == target else source_span(target, first, last)
        raw = normalise_bars(self.read(symbol, source, read_first, read_last), symbol)
        bars = select_range(resample_bars(raw, source, target), first, last)
        check_gaps(bars, symbol, target, self.max_gap)
        return bars.copy()

    def source_interval(self, symbol: str, target: Interval) -> Interval:
        """The interval to read so that ``target`` bars can be built: the native one by default."""
        native = Interval.parse(self.native_interval(symbol))
        if not native.divides(target):
            raise InvalidInput(
                f"{symbol} bars come at {native}; {target} bars cannot be built from them",
                [{"field": "interval", "error": f"choose {native} or a multiple of it"}],
            )
        return native

    def default_interval(self, symbol: str) -> str:
        """The interval a caller gets when it names none (point-in-time features use it)."""
        return self.native_interval(symbol)

    def symbols(self) -> tuple[str, ...]:
        """The symbols this feeder can list; a source that cannot list them returns ()."""
        return ()

    def close(self) -> None:  # noqa: B027 - most feeders hold nothing to release
        """Release connections or files; the feeder is unusable afterwards."""

    @abstractmethod
    def native_interval(self, symbol: str) -> str:
        """The interval the source holds ``symbol`` at; ``UnknownSymbol`` when it holds none."""

    @abstractmethod
    def read(
        self, symbol: str, interval: Interval, start: pd.Timestamp | None, end: pd.Timestamp | None
    ) -> pd.DataFrame:
        """Raw bars at ``interval`` covering at least ``[start, end]`` (more is fine: ``bars`` filters).

        Columns ``open, high, low, close`` and optionally ``volume``, on a
        timezone-aware DatetimeIndex; ``bars`` normalises and checks them.
        """


class MemoryFeeder(BarFeeder):
    """Bars held in memory, one frame per symbol, all at one interval: for data a caller already has
    (a notebook, a test, bars received from a stream)."""

    name = "memory"

    def __init__(
        self,
        frames: Mapping[str, pd.DataFrame],
        interval: str = "1h",
        *,
        max_gap: pd.Timedelta | str | None = None,
    ) -> None:
        super().__init__(max_gap=max_gap)
        self.interval = Interval.parse(interval)
        self._frames = {
            normalise_symbol(symbol): normalise_bars(frame, symbol) for symbol, frame in frames.items()
        }

    def native_interval(self, symbol: str) -> str:
        self._frame(symbol)
        return self.interval.text

    def read(
        self, symbol: str, interval: Interval, start: pd.Timestamp | None, end: pd.Timestamp | None
    ) -> pd.DataFrame:
        return select_range(self._frame(symbol), start, end)

    def symbols(self) -> tuple[str, ...]:
        return tuple(sorted(self._frames))

    def _frame(self, symbol: str) -> pd.DataFrame:
        frame = self._frames.get(normalise_symbol(symbol))
        if frame is None:
            raise unknown_symbol(symbol, self.symbols())
        return frame


def normalise_symbol(symbol: str) -> str:
    cleaned = symbol.strip().upper() if isinstance(symbol, str) else ""
    if not cleaned:
        raise InvalidInput("symbol is empty", [{"field": "symbol", "error": "give a symbol, e.g. EURUSD"}])
    return cleaned


def unknown_symbol(symbol: str, available: tuple[str, ...] = ()) -> UnknownSymbol:
    details: dict[str, object] = {"symbol": symbol}
    if available:
        details["available"] = list(available)
    return UnknownSymbol(f"no market data for {symbol}", details)
