"""Built-in demo traffic: as the market replay releases bars, ask what a client would ask.

Each time the clock passes a new bar close of a served forecast symbol (EURUSD 1h and GOOG 1d in the
demo), ``DemoTraffic`` asks that symbol's latest-bar forecast through the forecast service, as the
demo client, and a trading decision when the decision service trades the symbol. The answers are
recorded like any client's, so the scorer resolves them as later bars close and the leaderboard
fills in while a user watches. It only reads the clock through the services (a bar is "new" when the
latest-bar snapshot's close time moves), so a manual clock drives it in tests: call ``tick()``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

import anyio

from prediction_provider.accounts.principal import Principal
from prediction_provider.accounts.roles import Role
from prediction_provider.errors import PredictionProviderError
from prediction_provider.forecasts.records import Requester
from prediction_provider.forecasts.service import ForecastRequest

if TYPE_CHECKING:
    from prediction_provider.api.deps import Services
    from prediction_provider.forecasts.records import Forecast
    from prediction_provider.trading.decisions import Decision, DecisionService

log = logging.getLogger(__name__)

DEMO_CLIENT = "demo-client"  # the client account `prediction-provider demo` creates
TRAFFIC_USERNAME = "demo-traffic"  # who asks when there is no demo client account
TRAFFIC_CHANNEL = "demo"
POLL_S = 1.0  # wall seconds between looks at the clock: a replayed hourly bar closes each minute at 60x


class ForecastCatalogLike(Protocol):
    def symbols(self) -> list[str]: ...

    def intervals(self, symbol: str) -> Iterable[str]: ...


class ForecastSource(Protocol):
    """What the traffic needs of ``forecasts.service.ForecastService``."""

    @property
    def catalog(self) -> ForecastCatalogLike: ...

    def data_as_of(self, request: ForecastRequest) -> datetime: ...

    def forecast(self, request: ForecastRequest, requester: Requester) -> Forecast: ...


@dataclass(frozen=True, slots=True)
class TrafficAnswer:
    """One new bar's traffic: the forecast asked and the decision, when one was made."""

    symbol: str
    interval: str
    data_as_of: datetime
    forecast: Forecast
    decision: Decision | None


class DemoTraffic:
    """Asks one latest-bar forecast (and decision) per served (symbol, interval) per newly closed bar.

    ``tick()`` looks once and returns what it asked. Bars seen for the first time count as new, so
    the first tick asks about the latest bar of every symbol. When the clock jumps past several
    closes between two ticks, only the latest bar is asked about (a latest-bar forecast can only be
    of the latest bar). A symbol that fails is logged and tried again on its next new bar.
    ``start()`` runs ticks on a thread every ``period_s`` wall seconds (waiting on an event, so
    ``stop()`` ends it at once); ``stop()`` joins it.
    """

    def __init__(
        self,
        forecasts: ForecastSource,
        requester: Requester,
        *,
        decisions: DecisionService | None = None,
        period_s: float = POLL_S,
    ) -> None:
        if period_s <= 0:
            raise ValueError("period_s must be > 0")
        self.forecasts = forecasts
        self.requester = requester
        self.decisions = decisions
        self.period_s = period_s
        self.principal = Principal(requester.user_id, requester.username, Role.CLIENT, TRAFFIC_CHANNEL)
        self.forecasts_made = 0
        self.decisions_made = 0
        self._seen: dict[tuple[str, str], datetime] = {}
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._tick_lock = threading.Lock()

    def tick(self) -> list[TrafficAnswer]:
        """Ask about every (symbol, interval) whose latest closed bar is newer than the last one asked."""
        answers = []
        with self._tick_lock:
            for symbol in self.forecasts.catalog.symbols():
                for interval in sorted(self.forecasts.catalog.intervals(symbol)):
                    answer = self._ask(symbol, interval)
                    if answer is not None:
                        answers.append(answer)
        return answers

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name="demo-traffic", daemon=True)
        self._thread.start()
        log.info("demo traffic on: a forecast of every served symbol as each of its bars closes")

    def stop(self, timeout: float = 10.0) -> None:
        self._stopping.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout)

    # -- internals -------------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                self.tick()
            except Exception:  # demo traffic must never take the server down
                log.exception("demo traffic tick failed")
            self._stopping.wait(self.period_s)

    def _ask(self, symbol: str, interval: str) -> TrafficAnswer | None:
        request = ForecastRequest(symbol=symbol, interval=interval)
        key = (symbol, interval)
        try:
            closed = self.forecasts.data_as_of(request)
            previous = self._seen.get(key)
            if previous is not None and closed <= previous:
                return None
            forecast = self.forecasts.forecast(request, self.requester)
        except PredictionProviderError as exc:
            log.warning("demo traffic: no forecast of %s %s: %s", symbol, interval, exc)
            return None
        # The forecast's own bar: a bar that closed between the two reads is asked about next tick.
        self._seen[key] = forecast.data_as_of
        self.forecasts_made += 1
        return TrafficAnswer(symbol, interval, forecast.data_as_of, forecast, self._decide(symbol))

    def _decide(self, symbol: str) -> Decision | None:
        decisions = self.decisions
        if decisions is None or symbol not in decisions.models.symbols():
            return None
        from prediction_provider.trading.decisions import DecisionRequest

        try:
            decision = anyio.run(decisions.decide, DecisionRequest(symbol=symbol), self.principal)
        except PredictionProviderError as exc:
            log.warning("demo traffic: no decision on %s: %s", symbol, exc)
            return None
        self.decisions_made += 1
        return decision


def demo_traffic(services: Services) -> DemoTraffic | None:
    """The traffic of ``services`` as the demo client (its user row when there is one); ``None``
    without a forecast service."""
    if services.forecasts is None:
        return None
    try:
        user = services.accounts.get(DEMO_CLIENT)
        requester = Requester(int(user["id"]), str(user["username"]), TRAFFIC_CHANNEL)
    except PredictionProviderError:
        requester = Requester(None, TRAFFIC_USERNAME, TRAFFIC_CHANNEL)
    return DemoTraffic(services.forecasts, requester, decisions=services.decisions)
