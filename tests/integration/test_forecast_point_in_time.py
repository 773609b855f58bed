"""No look-ahead: a forecast as of t is a function of the bars at or before t only."""

from __future__ import annotations

from datetime import timedelta

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from prediction_provider.errors import InsufficientHistory
from prediction_provider.features.feeders.base import MemoryFeeder
from prediction_provider.features.market_data import load_sample_bars
from prediction_provider.features.point_in_time import PointInTimeFeatures
from prediction_provider.forecasts.records import Requester
from prediction_provider.forecasts.service import ForecastRequest, ForecastService
from tests.conftest import LiveServer

REQUESTER = Requester(None, None, "predict")
BARS = load_sample_bars("EURUSD")


class FixedMarket:
    """Every symbol read from one in-memory set of bars."""

    def __init__(self, bars: pd.DataFrame) -> None:
        self.features = PointInTimeFeatures(MemoryFeeder({"EURUSD": bars}, "1h"))

    def for_symbol(self, symbol: str, interval: str, source: str | None) -> PointInTimeFeatures:
        return self.features


def service_over(live_server: LiveServer, bars: pd.DataFrame) -> ForecastService:
    served = live_server.services.forecasts
    return ForecastService(served.cache, served.catalog, FixedMarket(bars), None)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cut=st.integers(min_value=300, max_value=len(BARS) - 30), later=st.floats(0.5, 3.0))
def test_bars_after_as_of_never_change_the_forecast(live_server: LiveServer, cut: int, later: float) -> None:
    as_of = BARS.index[cut].to_pydatetime() + timedelta(minutes=30)
    known = BARS.iloc[: cut + 1]
    # What happens after as_of: gone entirely, or every later price scaled (a different future).
    altered = BARS.copy()
    altered.iloc[cut + 1 :, :4] *= later
    request = ForecastRequest("EURUSD", "1h", as_of=as_of)
    truth = service_over(live_server, known).forecast(request, REQUESTER)
    for bars in (BARS, altered):
        answer = service_over(live_server, bars).forecast(request, REQUESTER)
        assert answer.data_as_of == truth.data_as_of == BARS.index[cut].to_pydatetime()
        assert answer.feature_hash == truth.feature_hash
        assert answer.steps == truth.steps


def test_the_served_forecast_is_the_point_in_time_one(live_server: LiveServer) -> None:
    as_of = BARS.index[-500].to_pydatetime()
    request = ForecastRequest("EURUSD", "1h", as_of=as_of)
    served = live_server.services.forecasts.forecast(request, REQUESTER)
    alone = service_over(live_server, BARS.iloc[:-499]).forecast(request, REQUESTER)
    assert served.steps == alone.steps
    assert served.feature_hash == alone.feature_hash
    with pytest.raises(InsufficientHistory, match="first usable EURUSD bar"):
        service_over(live_server, BARS).forecast(
            ForecastRequest("EURUSD", "1h", as_of=BARS.index[5]), REQUESTER
        )


def test_a_corrected_bar_is_forecast_afresh_not_from_the_kept_answer(live_server: LiveServer) -> None:
    bars = BARS.iloc[:-100]
    service = service_over(live_server, bars)
    request = ForecastRequest("EURUSD", "1h")
    before = service.forecast(request, REQUESTER)
    assert service.forecast(request, REQUESTER).steps == before.steps  # answered from the kept steps
    corrected = bars.iloc[-1:].copy()
    corrected["close"] *= 1.01
    corrected["high"] = corrected[["high", "close"]].max(axis=1)
    market = service.market
    assert isinstance(market, FixedMarket)
    market.features.append_bars("EURUSD", corrected)
    after = service.forecast(request, REQUESTER)
    fresh = service_over(live_server, pd.concat([bars.iloc[:-1], corrected])).forecast(request, REQUESTER)
    assert after.feature_hash != before.feature_hash
    assert after.steps == fresh.steps
    assert after.steps != before.steps
