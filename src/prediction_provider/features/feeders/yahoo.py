"""``PP_FEEDER=yfinance``: bars from Yahoo Finance through the optional ``yfinance`` package.

Install with ``pip install 'prediction-provider[yfinance]'``; ``yfinance`` is
imported on the first download, never at start-up. Yahoo serves 1m to 90m, 1h,
1d and 1wk bars natively (intraday only for recent weeks); other intervals are
resampled from the coarsest native one that tiles them (4h from 1h). Daily and
weekly bars are labelled with their trading date at 00:00 UTC, as the sample
GOOG bars are, rather than with the exchange's local midnight.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Self

import pandas as pd

from prediction_provider.errors import FeederUnavailable
from prediction_provider.features.feeders.base import BarFeeder, normalise_symbol, unknown_symbol
from prediction_provider.features.feeders.frames import empty_bars
from prediction_provider.features.feeders.intervals import Interval

if TYPE_CHECKING:
    from prediction_provider.config import Settings

# Our canonical interval -> Yahoo's spelling.
YAHOO_INTERVALS = {
    "1m": "1m",
    "2m": "2m",
    "5m": "5m",
    "15m": "15m",
    "30m": "30m",
    "90m": "90m",
    "1h": "1h",
    "1d": "1d",
    "1w": "1wk",
}


@dataclass(frozen=True, slots=True)
class YahooRequest:
    """One history download. ``end`` is exclusive, as Yahoo reads it; ``start=None`` asks for all."""

    ticker: str
    interval: str
    start: datetime | None
    end: datetime | None
    auto_adjust: bool


Download = Callable[[YahooRequest], pd.DataFrame]


def download_history(request: YahooRequest) -> pd.DataFrame:
    """``yfinance.Ticker(...).history(...)``: the frame Yahoo's chart API answers with."""
    try:
        import yfinance
    except ImportError as exc:
        raise FeederUnavailable(
            "the yfinance feeder needs the optional package: pip install 'prediction-provider[yfinance]'"
        ) from exc
    options: dict[str, object] = {"interval": request.interval, "auto_adjust": request.auto_adjust}
    options["actions"] = False
    if request.start is None:
        options["period"] = "max"
    else:
        options["start"] = request.start
    if request.end is not None:
        options["end"] = request.end
    history: pd.DataFrame = yfinance.Ticker(request.ticker).history(**options)
    return history


class YFinanceFeeder(BarFeeder):
    """``tickers`` maps our symbols to Yahoo's where they differ (``{"EURUSD": "EURUSD=X"}``);
    ``download`` is the seam tests use to replay a recorded answer instead of the network."""

    name = "yfinance"

    def __init__(
        self,
        *,
        tickers: Mapping[str, str] | None = None,
        auto_adjust: bool = True,
        download: Download = download_history,
        max_gap: pd.Timedelta | str | None = None,
    ) -> None:
        super().__init__(max_gap=max_gap)
        self.tickers = {normalise_symbol(symbol): ticker for symbol, ticker in (tickers or {}).items()}
        self.auto_adjust = auto_adjust
        self._download = download

    @classmethod
    def from_settings(cls, settings: Settings) -> Self:
        return cls(max_gap=settings.feeder_max_gap)

    def native_interval(self, symbol: str) -> str:
        return "1d"

    def source_interval(self, symbol: str, target: Interval) -> Interval:
        if target.text in YAHOO_INTERVALS:
            return target
        for text in ("1d", "1h", "30m", "15m", "5m", "2m", "1m"):
            native = Interval.parse(text)
            if native.divides(target):
                return native
        return super().source_interval(symbol, target)

    def read(
        self, symbol: str, interval: Interval, start: pd.Timestamp | None, end: pd.Timestamp | None
    ) -> pd.DataFrame:
        request = YahooRequest(
            ticker=self.tickers.get(symbol, symbol),
            interval=YAHOO_INTERVALS[interval.text],
            start=None if start is None else start.to_pydatetime(),
            # Yahoo's end is exclusive: ask one bar further so a bar opening at ``end`` comes too.
            end=None if end is None else (end + interval.delta).to_pydatetime(),
            auto_adjust=self.auto_adjust,
        )
        try:
            history = self._download(request)
        except FeederUnavailable:
            raise
        except Exception as exc:  # the network, Yahoo's rate limits, or yfinance itself
            raise FeederUnavailable(
                f"Yahoo Finance did not answer for {request.ticker}: {exc}", {"ticker": request.ticker}
            ) from exc
        if history.empty and start is None:
            raise unknown_symbol(symbol)
        return _yahoo_bars(history, interval)


def _yahoo_bars(history: pd.DataFrame, interval: Interval) -> pd.DataFrame:
    if history.empty:
        return empty_bars()
    bars = history.rename(columns=lambda column: str(column).strip().lower())
    bars = bars.loc[:, [name for name in ("open", "high", "low", "close", "volume") if name in bars.columns]]
    index = pd.DatetimeIndex(bars.index)
    if index.tz is None:
        index = index.tz_localize("UTC")
    if interval.seconds >= Interval.parse("1d").seconds:
        # The trading date, whatever the exchange's zone: 2013-03-01 00:00 UTC, not 05:00.
        index = index.tz_localize(None).normalize().tz_localize("UTC")
    bars.index = index
    # Yahoo sends a row of NaNs for a halted session; it is not a bar.
    return bars.dropna(subset=["open", "high", "low", "close"], how="all")
