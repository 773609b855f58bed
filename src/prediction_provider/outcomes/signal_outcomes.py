"""The realized outcome of an entry/exit signal: did each side's target come before its stop?

The reference TP/SL engine is the oracle's rule (``signals.outcomes.target_first``: stop checked
before target within a bar, the target judged on the close) on the bars strictly after the
answer's bar, up to and including the horizon's last bar, with the levels the record stored
(``signals.records``). Only bars closed by ``now`` are ever read (``SignalMarket.closed_by``): a
bar's close time is its stamp, plus one interval when ``PP_BAR_LABEL=open``.

While the horizon's last bar has not closed the outcome is pending (None). Once ``now`` is past
the horizon end, the outcome is known when a bar closing at or after it has arrived; when none has
within ``PP_MAX_RESOLVE_DELAY`` (the data ended), or the answer's bar is not among the bars any
more, the score is void.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import numpy as np

from prediction_provider.config import Settings
from prediction_provider.outcomes.metrics import signal_metrics
from prediction_provider.outcomes.scoring import Candidate
from prediction_provider.signals.bars import PriceBars
from prediction_provider.signals.horizon import Horizon
from prediction_provider.signals.levels import Direction, Levels
from prediction_provider.signals.outcomes import target_first
from prediction_provider.signals.records import SignalMarket, ns_of, price_text, utc_of_ns

ClosedSignalBars = Callable[[datetime], PriceBars | None]


class SignalJudge:
    """``(candidate, now) -> outcome | None``, the scorer's ``SignalJudge``. ``closed_bars(now)``
    gives the signal bars closed by ``now`` (default: ``SignalMarket.from_settings``, read once, on
    the first signal judged); the market's close offset turns their stamps into close times."""

    def __init__(
        self,
        settings: Settings,
        market: SignalMarket | None = None,
        closed_bars: ClosedSignalBars | None = None,
    ) -> None:
        self.settings = settings
        self._market = market
        self._closed_bars = closed_bars
        self._lock = threading.Lock()

    def market(self) -> SignalMarket:
        with self._lock:
            if self._market is None:
                self._market = SignalMarket.from_settings(self.settings)
            return self._market

    def closed_bars(self, now: datetime) -> PriceBars | None:
        if self._closed_bars is not None:
            return self._closed_bars(now)
        return self.market().closed_by(now)

    def __call__(self, candidate: Candidate, now: datetime) -> dict[str, Any] | None:
        answer = candidate.answer
        try:
            signals = {str(side): int(value) for side, value in answer["signals"].items()}
            levels = {side: _levels(answer["levels"][side]) for side in signals}
            entry_time = datetime.fromisoformat(answer["entry_close_time"])
            horizon_end = datetime.fromisoformat(answer["horizon_end"])
        except (KeyError, TypeError, ValueError):
            return {"status": "void", "reason": "not_a_signal_record", "metrics": {}}
        if now < horizon_end:
            return None
        bars = self.closed_bars(now)
        offset = self.market().close_offset_ns
        closes = None if bars is None else bars.times + offset
        if bars is None or closes is None or int(closes[-1]) < ns_of(horizon_end):
            # The horizon's last bar has not arrived: pending, until it is overdue.
            if now - horizon_end > timedelta(seconds=self.settings.max_resolve_delay_s):
                return {"status": "void", "reason": "no_bars", "metrics": {}}
            return None
        entry = int(np.searchsorted(closes, ns_of(entry_time), side="left"))
        if entry >= len(closes) or int(closes[entry]) != ns_of(entry_time):
            return {"status": "void", "reason": "entry_bar_missing", "metrics": {}}
        last = int(np.searchsorted(closes, ns_of(horizon_end), side="right")) - 1
        horizon = Horizon(entry, last, last - entry, runs_out=False)
        realized = {side: int(target_first(bars, horizon, levels[side])) for side in signals}
        resolved = utc_of_ns(int(closes[last]))
        entry_close, last_close = price_text(bars.close[entry]), price_text(bars.close[last])
        return {
            "status": "scored",
            "metrics": {"entry_signal": signal_metrics(signals, realized, candidate.probabilities)},
            "resolved_time": resolved,
            "realized_label": ",".join(f"{side}:{value}" for side, value in sorted(realized.items())),
            "bars": [
                {"role": "entry", "close_time": entry_time.isoformat(), "close": entry_close},
                {"role": "horizon_end", "close_time": resolved.isoformat(), "close": last_close},
            ],
            "context": {"bars_scanned": last - entry},
        }  # fmt: skip


def _levels(stored: dict[str, str]) -> Levels:
    return Levels(Direction(stored["direction"]), float(stored["take_profit"]), float(stored["stop_loss"]))
