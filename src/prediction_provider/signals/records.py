"""The record of every answered entry/exit signal: one ``prediction_records`` row (channel "signal").

Recording costs the request a deque append (``SignalRecorder.record_entry``); the row is built
on the writer's thread, which reads the signal bars (those the predictors read: ``PP_ORACLE_CSV``
or the embedded EURUSD hourly bars) to find what the answer is later judged on:

- the answer's bar: the bar the request time snaps to by the predictor's own rule (the oracle's
  nearest bar, a model's last bar stamped at or before the time); ``data_as_of`` is its close;
- the levels per side, as the oracle's rule computes them from that bar's close (prices kept as
  the shortest repr of their float, so the judge compares exactly what the oracle compares);
- the horizon: the oracle's weekly horizon over the bars; its last bar's close is ``target_time``,
  when the outcome is known. Where the data ends before the week does, the horizon end is the
  calendar's (``horizon.calendar_bars_remaining`` bars after the answer's bar).

Times: a signal bar's close is its stamp plus one interval when ``PP_BAR_LABEL=open``, its stamp
otherwise (``SignalMarket``). An answer that read a bar not closed at the request time is
recorded but marked by its ``role``: "oracle" for a look-ahead predictor (by design), "unclosed"
for a model that read a bar still open (open-labelled bars); both are left out of leaderboards.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import numpy as np
import orjson

from prediction_provider.config import Settings
from prediction_provider.db.batch_writer import BatchWriter
from prediction_provider.db.models import PredictionRecord
from prediction_provider.db.session import Database
from prediction_provider.features.feeders.intervals import Interval
from prediction_provider.forecasts.records import Requester
from prediction_provider.signals.bars import PriceBars
from prediction_provider.signals.horizon import WeeklyHorizon, calendar_bars_remaining
from prediction_provider.signals.levels import Levels, entry_levels
from prediction_provider.signals.model_signals import DEMO_SYMBOL, signal_bars
from prediction_provider.signals.predictor import (
    EntryQuery,
    EntrySignal,
    ExitQuery,
    ExitSignal,
    SignalPredictor,
)

log = logging.getLogger(__name__)

SIGNAL_CHANNEL = "signal"
NS_PER_SECOND = 1_000_000_000
DEFAULT_PIP_SIZE = Decimal("0.00001")


def utc_of_ns(ns: int) -> datetime:
    return datetime.fromtimestamp(ns // NS_PER_SECOND, UTC).replace(microsecond=(ns % NS_PER_SECOND) // 1000)


def ns_of(when: datetime) -> int:
    moment = when.astimezone(UTC)
    whole = int(moment.replace(microsecond=0).timestamp())
    return whole * NS_PER_SECOND + moment.microsecond * 1000


def price_text(value: float) -> str:
    """A price as the shortest text that reads back as the same float64."""
    return repr(float(value))


class SignalMarket:
    """The signal bars with the conventions the recorder and the judge share: the symbol and
    interval they are recorded under, and each bar's close time (``close_ns``)."""

    def __init__(
        self,
        bars: PriceBars,
        symbol: str,
        bar_label: str = "close",
        prediction_horizon: int = 30,
        pip_size: Decimal = DEFAULT_PIP_SIZE,
    ) -> None:
        self.bars = bars
        self.symbol = symbol
        self.pip_size = pip_size
        spacing_s = max(bars.spacing_ns() // NS_PER_SECOND, 60)
        self.interval = Interval.parse(f"{spacing_s // 60}m").text
        self.interval_ns = Interval.parse(self.interval).seconds * NS_PER_SECOND
        self.close_offset_ns = self.interval_ns if bar_label == "open" else 0
        self.close_ns = bars.times + self.close_offset_ns
        self.horizon = WeeklyHorizon.of(bars, prediction_horizon)

    @classmethod
    def from_settings(cls, settings: Settings) -> SignalMarket:
        return cls(
            signal_bars(settings),
            signal_symbol(settings),
            settings.bar_label,
            settings.prediction_horizon,
            settings.pip_size,
        )

    def close_time(self, index: int) -> datetime:
        return utc_of_ns(int(self.close_ns[index]))

    def closed_by(self, now: datetime) -> PriceBars | None:
        """The bars closed at or before ``now`` (None when none has): all a judge may read then."""
        count = int(np.searchsorted(self.close_ns, ns_of(now), side="right"))
        if count == 0:
            return None
        bars = self.bars
        return PriceBars(
            bars.times[:count], bars.open[:count], bars.high[:count], bars.low[:count], bars.close[:count]
        )


def signal_symbol(settings: Settings) -> str:
    """EURUSD for the embedded bars; for ``PP_ORACLE_CSV`` the file name up to its first "_"
    (the demo writes ``EURUSD_1h.csv``)."""
    if settings.oracle_csv is None:
        return DEMO_SYMBOL
    return settings.oracle_csv.stem.split("_")[0].upper() or DEMO_SYMBOL


@dataclass(frozen=True, slots=True)
class AnsweredSignal:
    """One answered signal, as queued: what was asked, who asked, which predictor said what."""

    request_id: str
    predictor: str
    model_version: str | None
    look_ahead: bool
    query: EntryQuery | ExitQuery
    signal: EntrySignal | ExitSignal
    requester: Requester
    created_at: datetime
    latency_ms: float


class SignalRecorder(BatchWriter[AnsweredSignal]):
    """Writes one ``prediction_records`` row per answered signal from a thread of its own. The
    signal bars are read on that thread, on the first answer recorded (``market`` gives them)."""

    def __init__(
        self,
        db: Database,
        settings: Settings,
        *,
        clock: Callable[[], datetime] | None = None,
        market: Callable[[], SignalMarket] | None = None,
        flush_interval_s: float = 0.2,
    ) -> None:
        self._clock = clock or (lambda: datetime.now(UTC))
        self._load_market = market or (lambda: SignalMarket.from_settings(settings))
        self._market: SignalMarket | None = None
        self._market_lock = threading.Lock()
        super().__init__(
            db, PredictionRecord, None, to_rows=self.rows_of, name="signal-recorder",
            flush_interval_s=flush_interval_s,
        )  # fmt: skip

    def record_entry(
        self,
        predictor: SignalPredictor,
        query: EntryQuery,
        signal: EntrySignal,
        requester: Requester,
        latency_ms: float,
    ) -> str:
        """Queue the record of an entry answer; returns its request id."""
        return self._queue(predictor, query, signal, requester, latency_ms)

    def record_exit(
        self,
        predictor: SignalPredictor,
        query: ExitQuery,
        signal: ExitSignal,
        requester: Requester,
        latency_ms: float,
    ) -> str:
        """Queue the record of an exit answer (side "exit"); returns its request id."""
        return self._queue(predictor, query, signal, requester, latency_ms)

    def _queue(
        self,
        predictor: SignalPredictor,
        query: EntryQuery | ExitQuery,
        signal: EntrySignal | ExitSignal,
        requester: Requester,
        latency_ms: float,
    ) -> str:
        request_id = str(uuid.uuid4())
        version = getattr(predictor, "version", None)
        self.record(
            AnsweredSignal(
                request_id, predictor.name, None if version is None else str(version),
                predictor.info().look_ahead, query, signal, requester, self._clock(), latency_ms,
            )
        )  # fmt: skip
        return request_id

    def market(self) -> SignalMarket:
        with self._market_lock:
            if self._market is None:
                self._market = self._load_market()
            return self._market

    def rows_of(self, answered: AnsweredSignal) -> list[dict[str, Any]]:
        return [signal_row(answered, self.market())]


def answer_bar(market: SignalMarket, at_ns: int, look_ahead: bool) -> int:
    """The bar an answer was computed at, by the predictor's rule: the oracle snaps to the nearest
    bar (``BinaryIdealOracle``), the models to the last bar stamped at or before the time."""
    return market.bars.nearest(at_ns) if look_ahead else market.bars.as_of(at_ns)


def signal_row(answered: AnsweredSignal, market: SignalMarket) -> dict[str, Any]:
    """The ``prediction_records`` row of one answer (see the module docstring)."""
    query, signal = answered.query, answered.signal
    entry = answer_bar(market, query.at_ns, answered.look_ahead)
    if entry < 0:
        raise ValueError(f"no signal bar at or before {utc_of_ns(query.at_ns).isoformat()}")
    span = market.horizon.span(entry)
    if span.runs_out:  # the data ends before the week: the horizon ends where the calendar says
        bars = int(calendar_bars_remaining(market.bars.times[entry : entry + 1], market.interval_ns)[0])
        horizon_end_ns = int(market.close_ns[entry]) + bars * market.interval_ns
    else:
        bars = span.last - entry
        horizon_end_ns = int(market.close_ns[span.last])
    price = float(market.bars.close[entry])
    answer, levels, signals, p_one = _sides(query, signal, price, market)
    data_as_of = market.close_time(entry)
    as_of = utc_of_ns(query.at_ns)
    role = "oracle" if answered.look_ahead else "unclosed" if data_as_of > as_of else "primary"
    requester = answered.requester
    return {
        "request_id": answered.request_id, "row": 0, "created_at": answered.created_at,
        "channel": SIGNAL_CHANNEL, "job_id": requester.job_id, "user_id": requester.user_id,
        "username": requester.username, "model_name": answered.predictor,
        "model_version": answered.model_version, "role": role, "served_by": answered.predictor[:64],
        "symbol": market.symbol, "interval": market.interval, "as_of": as_of, "data_as_of": data_as_of,
        "horizon": bars, "target_time": utc_of_ns(horizon_end_ns),
        "feature_hash": _feature_hash(answered, market, entry),
        "label": ",".join(f"{side}:{value}" for side, value in sorted(signals.items())),
        "probabilities": p_one, "value": None,
        "answer": {
            **answer, "signals": signals, "levels": levels, "entry_close": price_text(price),
            "entry_close_time": data_as_of.isoformat(), "horizon_end": utc_of_ns(horizon_end_ns).isoformat(),
        },
        "latency_ms": answered.latency_ms, "status": "ok",
    }  # fmt: skip


def _sides(
    query: EntryQuery | ExitQuery, signal: EntrySignal | ExitSignal, price: float, market: SignalMarket
) -> tuple[dict[str, Any], dict[str, dict[str, str]], dict[str, int], dict[str, float]]:
    """The answer's payload, the levels per side, the binary per side, and per side the probability
    that the answer is 1 (a confidence is the probability that the answer given is right)."""
    if isinstance(query, EntryQuery) and isinstance(signal, EntrySignal):
        buy, sell = entry_levels(price, query.tp, query.sl, query.costs, market.pip_size)
        answers = {"buy": (signal.buy, buy), "sell": (signal.sell, sell)}
        payload = {"side": "entry", **signal.payload()}
    elif isinstance(query, ExitQuery) and isinstance(signal, ExitSignal):
        levels = Levels(query.direction, float(query.tp_price), float(query.sl_price))
        answers = {"exit": (signal.answer, levels)}
        payload = {"side": "exit", **signal.payload()}
    else:
        raise TypeError("an entry answer needs an entry query, an exit answer an exit query")
    stored = {
        side: {
            "direction": levels.direction.value,
            "take_profit": price_text(levels.take_profit),
            "stop_loss": price_text(levels.stop_loss),
        }
        for side, (_, levels) in answers.items()
    }
    signals = {side: int(given.binary) for side, (given, _) in answers.items()}
    p_one = {
        side: float(given.confidence) if given.binary == 1 else 1.0 - float(given.confidence)
        for side, (given, _) in answers.items()
    }
    return payload, stored, signals, p_one


def _feature_hash(answered: AnsweredSignal, market: SignalMarket, entry: int) -> str:
    """What the answer was a function of: the predictor, the answer's bar and the query."""
    query = answered.query
    asked: dict[str, Any] = {"predictor": answered.predictor, "bar": int(market.close_ns[entry])}
    if isinstance(query, EntryQuery):
        costs = query.costs
        asked.update(
            tp=query.tp, sl=query.sl, spread=costs.spread_pips, commission=costs.commission_per_lot,
            slippage=costs.slippage_pips,
        )  # fmt: skip
    else:
        asked.update(direction=query.direction.value, tp=query.tp_price, sl=query.sl_price)
    return hashlib.sha256(orjson.dumps(asked, option=orjson.OPT_SORT_KEYS)).hexdigest()
