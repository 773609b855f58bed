"""The yfinance feeder, replaying recorded Yahoo answers (tests/testdata/yfinance), never the network."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from prediction_provider.errors import FeederUnavailable, UnknownSymbol
from prediction_provider.features.feeders.samples import SampleFeeder
from prediction_provider.features.feeders.yahoo import YahooRequest, YFinanceFeeder, download_history

RECORDED = Path(__file__).parents[1] / "testdata" / "yfinance"
FILES = {("GOOG", "1d"): "GOOG_1d.csv", ("EURUSD=X", "1h"): "EURUSD_X_1h.csv"}


def recorded_history(ticker: str, interval: str) -> pd.DataFrame:
    """A recorded ``Ticker.history`` answer, rebuilt as yfinance returns it (exchange-zone index)."""
    frame = pd.read_csv(RECORDED / FILES[(ticker, interval)], index_col=0)
    zone = "America/New_York" if interval == "1d" else "Europe/London"
    frame.index = pd.DatetimeIndex(
        pd.to_datetime(frame.index, utc=True).tz_convert(zone), name=frame.index.name
    )
    return frame


class Replay:
    """Answers downloads from the recorded files as Yahoo would: start inclusive, end exclusive."""

    def __init__(self) -> None:
        self.requests: list[YahooRequest] = []

    def __call__(self, request: YahooRequest) -> pd.DataFrame:
        self.requests.append(request)
        if (request.ticker, request.interval) not in FILES:
            return pd.DataFrame()
        history = recorded_history(request.ticker, request.interval)
        if request.start is not None:
            history = history[history.index >= request.start]
        if request.end is not None:
            history = history[history.index < request.end]
        return history


def test_daily_bars_are_labelled_by_trading_date_in_utc_and_match_the_source() -> None:
    replay = Replay()
    bars = YFinanceFeeder(download=replay).bars("GOOG", "1d")
    assert list(bars.columns) == ["open", "high", "low", "close", "volume"]
    assert bars.index[0] == pd.Timestamp("2013-02-01", tz="UTC")
    expected = SampleFeeder().bars("GOOG", "1d", "2013-02-01T00:00Z", "2013-03-01T00:00Z")
    pd.testing.assert_frame_equal(bars, expected)
    assert replay.requests == [YahooRequest("GOOG", "1d", None, None, True)]


def test_a_range_asks_yahoo_one_bar_past_the_end_because_its_end_is_exclusive() -> None:
    replay = Replay()
    feeder = YFinanceFeeder(download=replay, auto_adjust=False)
    bars = feeder.bars("GOOG", "1d", "2013-02-04T00:00Z", "2013-02-08T00:00Z")
    assert list(bars.index.day) == [4, 5, 6, 7, 8]
    (request,) = replay.requests
    assert request.start == pd.Timestamp("2013-02-04", tz="UTC").to_pydatetime()
    assert request.end == pd.Timestamp("2013-02-09", tz="UTC").to_pydatetime()
    assert request.auto_adjust is False


def test_intervals_yahoo_lacks_are_resampled_from_ones_it_has() -> None:
    replay = Replay()
    feeder = YFinanceFeeder(tickers={"EURUSD": "EURUSD=X"}, download=replay)
    four = feeder.bars("EURUSD", "4h")
    assert [request.interval for request in replay.requests] == ["1h"]
    assert replay.requests[0].ticker == "EURUSD=X"
    expected = SampleFeeder().bars("EURUSD", "4h", "2017-05-01T00:00Z", "2017-05-02T20:00Z")
    pd.testing.assert_frame_equal(four.drop(columns="volume"), expected.drop(columns="volume"))
    assert (four["volume"] == 0).all()  # Yahoo reports no FX volume
    feeder.bars("GOOG", "1w", start="2013-02-04T00:00Z")
    assert replay.requests[-1].interval == "1wk"


def test_an_unknown_ticker_and_a_failing_download_are_clear_errors() -> None:
    with pytest.raises(UnknownSymbol):
        YFinanceFeeder(download=Replay()).bars("NOPE", "1d")
    assert YFinanceFeeder(download=Replay()).bars("NOPE", "1d", start="2013-01-01T00:00Z").empty

    def offline(request: YahooRequest) -> pd.DataFrame:
        raise ConnectionError("no route to query1.finance.yahoo.com")

    with pytest.raises(FeederUnavailable, match="did not answer") as raised:
        YFinanceFeeder(download=offline).bars("GOOG", "1d")
    assert raised.value.details == {"ticker": "GOOG"}


def test_yfinance_is_imported_only_when_bars_are_downloaded() -> None:
    code = (
        "import sys\n"
        "from prediction_provider.config import Settings\n"
        "from prediction_provider.features.feeders import load_feeder\n"
        "load_feeder('yfinance', Settings())\n"
        "assert 'yfinance' not in sys.modules, 'imported at start-up'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_the_real_download_asks_yfinance_for_the_whole_history_without_actions(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    yfinance = pytest.importorskip("yfinance", reason="the yfinance extra is not installed")
    calls: list[tuple[str, dict[str, Any]]] = []

    class RecordedTicker:
        def __init__(self, ticker: str) -> None:
            self.ticker = ticker

        def history(self, **options: Any) -> pd.DataFrame:
            calls.append((self.ticker, options))
            return recorded_history("GOOG", "1d")

    monkeypatch.setattr(yfinance, "Ticker", RecordedTicker)
    bars = YFinanceFeeder().bars("GOOG", "1d")
    assert len(bars) == 20
    assert calls == [("GOOG", {"interval": "1d", "auto_adjust": True, "actions": False, "period": "max"})]
    download_history(YahooRequest("GOOG", "1h", pd.Timestamp("2013-02-01", tz="UTC"), None, False))
    assert calls[-1][1] == {
        "interval": "1h",
        "auto_adjust": False,
        "actions": False,
        "start": pd.Timestamp("2013-02-01", tz="UTC"),
    }
