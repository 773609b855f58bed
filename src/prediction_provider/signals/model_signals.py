"""What the model-based signal predictors share: their bars, the entry bar of a request, the answers.

A request's entry bar is the last bar stamped at or before its time: the bar
just closed when a backtest client asks, whose CLOSE is the entry price, as
for the oracle. Its features read that bar and earlier ones only, and
``bars_remaining`` comes from the calendar (``horizon.calendar_bars_remaining``),
so nothing after the entry bar is ever read. A request before the features'
warm-up is refused (422) rather than answered from NaNs.

The bars are those of ``PP_ORACLE_CSV`` when it is set, else the embedded
EURUSD hourly bars the demo trains on.
"""

from __future__ import annotations

from abc import abstractmethod
from decimal import Decimal
from typing import Any

from prediction_provider.config import Settings
from prediction_provider.errors import InvalidInput, ModelLoadFailed
from prediction_provider.features.pipeline import WARMUP_BARS
from prediction_provider.signals.bars import FloatArray, PriceBars, read_bars_csv
from prediction_provider.signals.features import SIGNAL_FEATURES, SignalFeatures
from prediction_provider.signals.levels import Levels, entry_levels
from prediction_provider.signals.predictor import (
    Answer,
    EntryQuery,
    EntrySignal,
    ExitQuery,
    ExitSignal,
    PredictorInfo,
    SignalPredictor,
    Uncertainty,
)

DEMO_SYMBOL = "EURUSD"


def signal_bars(settings: Settings) -> PriceBars:
    if settings.oracle_csv is None:
        from prediction_provider.features.market_data import load_sample_bars

        return PriceBars.from_frame(load_sample_bars(DEMO_SYMBOL))
    try:
        return read_bars_csv(settings.oracle_csv)
    except (OSError, ValueError) as exc:
        raise ModelLoadFailed(f"cannot read the signal bars from {settings.oracle_csv}: {exc}") from exc


def answer_from_probability(probability: float, uncertainty: Uncertainty | None = None) -> Answer:
    """1 when the target is at least as likely as not to come first; confidence in the answer given."""
    return Answer(int(probability >= 0.5), max(probability, 1.0 - probability), uncertainty)


def check_card_features(card: dict[str, Any], predictor: str) -> None:
    if tuple(card.get("features", ())) != SIGNAL_FEATURES:
        raise ModelLoadFailed(f"the {predictor} signal model was trained on other features; retrain it")


class ModelSignals(SignalPredictor):
    """Override ``score``: one ``Answer`` per input row (``features.SIGNAL_FEATURES`` order)."""

    def __init__(self, features: SignalFeatures, pip_size: Decimal) -> None:
        if features.first_usable >= len(features.bars):
            raise ModelLoadFailed(
                f"{len(features.bars)} bars are too few for the signal features "
                f"(they need {WARMUP_BARS + 1} at least)"
            )
        self.features = features
        self.pip_size = pip_size
        # A bar is known once it has closed: with open-labelled bars (PP_BAR_LABEL=open) that is one
        # interval after its stamp, so the answer reads the last bar closed at the request time.
        self.close_offset_ns = 0

    def labelled_by(self, bar_label: str) -> ModelSignals:
        self.close_offset_ns = self.features.bars.spacing_ns() if bar_label == "open" else 0
        return self

    @abstractmethod
    def score(self, rows: FloatArray) -> list[Answer]: ...

    def info(self) -> PredictorInfo:
        return PredictorInfo(
            self.name, window_size=WARMUP_BARS + 1, prediction_scope="point_in_time", look_ahead=False
        )

    def entry(self, query: EntryQuery) -> EntrySignal:
        entry = self._entry_bar(query.at_ns)
        price = float(self.features.bars.close[entry])
        buy, sell = entry_levels(price, query.tp, query.sl, query.costs, self.pip_size)
        buy_answer, sell_answer = self.score(self.features.trade_rows(entry, [(buy, price), (sell, price)]))
        return EntrySignal(buy_answer, sell_answer, int(self.features.horizon[entry]))

    def exit(self, query: ExitQuery) -> ExitSignal:
        entry = self._entry_bar(query.at_ns)
        price = float(self.features.bars.close[entry])
        levels = Levels(query.direction, float(query.tp_price), float(query.sl_price))
        (answer,) = self.score(self.features.trade_rows(entry, [(levels, price)]))
        return ExitSignal(answer)

    def _entry_bar(self, at_ns: int) -> int:
        entry = self.features.bars.as_of(at_ns - self.close_offset_ns)
        if entry < self.features.first_usable:
            first = self.features.bars.timestamp(self.features.first_usable).isoformat()
            raise InvalidInput(
                f"no signal before {first}: the features need {WARMUP_BARS + 1} bars of history",
                [{"field": "datetime", "error": f"must be at or after {first}"}],
            )
        return entry
