"""``binary_ideal_oracle``: perfect entry/exit signals read from the future bars, for backtests.

Explicitly look-ahead: it knows the bars after the request time, says so in
its name and in ``/api/v1/model/info`` (``look_ahead: true``), and is the
ceiling a strategy's backtest can reach with perfect signals; optional noise
degrades it to a predictor of known accuracy.

The request time snaps to the nearest bar (of two equally near, the earlier);
that bar's CLOSE is the price P. The horizon and the scan are those of
``signals.horizon`` and ``signals.outcomes``; the levels those of
``signals.levels``.

Exit: ``exit_binary`` = 1 means keep the position open. Holding from P, the
position's own target is reached before its stop within the week: staying in
pays more than closing at P. 0 means close now: either the stop comes first
(closing at P beats being stopped out), or neither level is reached by the
week's close, where the position would be closed anyway and holding on only
adds risk (the entry rule "neither -> 0" read for an open position). Levels
the price has already crossed at P get no special case: the scan starts at
the next bar, so a buy target at or below P is reached on the next close that
stays at or above it, unless that bar's low hits the stop.
"""

from __future__ import annotations

import threading
from decimal import Decimal

import numpy as np

from prediction_provider.config import Settings
from prediction_provider.errors import ModelLoadFailed
from prediction_provider.signals.bars import PriceBars, read_bars_csv
from prediction_provider.signals.horizon import Horizon, WeeklyHorizon
from prediction_provider.signals.levels import Levels, entry_levels
from prediction_provider.signals.outcomes import target_first
from prediction_provider.signals.predictor import (
    Answer,
    EntryQuery,
    EntrySignal,
    ExitQuery,
    ExitSignal,
    PredictorInfo,
    SignalPredictor,
)


class NoiseStream:
    """Flips answers with a fixed probability, every draw taken from one seeded stream.

    One uniform draw per answer, in the order answers are given (an entry takes
    buy then sell), so the same requests in the same order after a start get
    the same answers. The stream belongs to one process: with several server
    workers, each has its own.
    """

    def __init__(self, probability: float, seed: int) -> None:
        if not 0.0 <= probability <= 1.0:
            raise ValueError("noise probability must lie in [0, 1]")
        self.probability = probability
        self.seed = seed
        self._random = np.random.default_rng(seed)
        self._lock = threading.Lock()

    def apply(self, answer: int) -> int:
        if self.probability == 0.0:
            return answer
        with self._lock:
            draw = float(self._random.random())
        return 1 - answer if draw < self.probability else answer


def oracle_bars(predictor: str, settings: Settings) -> PriceBars:
    """The bars of ``PP_ORACLE_CSV``, which every look-ahead predictor reads; ``ModelLoadFailed`` else."""
    path = settings.oracle_csv
    if path is None:
        raise ModelLoadFailed(f"{predictor} reads its bars from PP_ORACLE_CSV, which is not set")
    if not path.is_file():
        raise ModelLoadFailed(f"PP_ORACLE_CSV names {path}, which is not a file", {"path": str(path)})
    try:
        return read_bars_csv(path)
    except (OSError, ValueError) as exc:
        raise ModelLoadFailed(f"cannot read the oracle's bars from {path.name}: {exc}") from exc


class BinaryIdealOracle(SignalPredictor):
    name = "binary_ideal_oracle"
    answers_inline = True

    def __init__(
        self, bars: PriceBars, pip_size: Decimal, prediction_horizon: int, noise: NoiseStream
    ) -> None:
        self.bars = bars
        self.pip_size = pip_size
        self.horizon = WeeklyHorizon.of(bars, prediction_horizon)
        self.noise = noise
        self.confidence = 1.0 - noise.probability

    @classmethod
    def from_settings(cls, settings: Settings) -> BinaryIdealOracle:
        noise = NoiseStream(settings.oracle_noise_probability, settings.oracle_noise_seed)
        return cls(oracle_bars(cls.name, settings), settings.pip_size, settings.prediction_horizon, noise)

    def info(self) -> PredictorInfo:
        return PredictorInfo(self.name, window_size=0, prediction_scope="path_scanning", look_ahead=True)

    def entry(self, query: EntryQuery) -> EntrySignal:
        horizon = self._horizon_at(query.at_ns)
        price = float(self.bars.close[horizon.entry])
        buy, sell = entry_levels(price, query.tp, query.sl, query.costs, self.pip_size)
        return EntrySignal(self._answer(horizon, buy), self._answer(horizon, sell), horizon.bars_remaining)

    def exit(self, query: ExitQuery) -> ExitSignal:
        levels = Levels(query.direction, float(query.tp_price), float(query.sl_price))
        return ExitSignal(self._answer(self._horizon_at(query.at_ns), levels))

    def _horizon_at(self, at_ns: int) -> Horizon:
        return self.horizon.span(self.bars.nearest(at_ns))

    def _answer(self, horizon: Horizon, levels: Levels) -> Answer:
        truth = int(target_first(self.bars, horizon, levels))
        return Answer(self.noise.apply(truth), self.confidence)
