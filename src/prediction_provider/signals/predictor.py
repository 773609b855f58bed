"""What a signal predictor answers, and the interface every predictor (built-in or plugin) implements.

A binary answer of 1 means "the take-profit is reached before the stop-loss
within the week": for an entry, open the trade; for an exit, keep the position
open. ``confidence`` is the probability that the answer given is the right
one: 1 - noise_probability for the oracle, max(p, 1 - p) for a model whose
probability of the target coming first is p. Clients size positions by
``bars_remaining`` x confidence.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

from prediction_provider.config import Settings
from prediction_provider.signals.levels import Direction, TradeCosts

SUPPORTED_TYPES = ("entry", "exit")
DIRECTIONS = (Direction.BUY.value, Direction.SELL.value)
REQUIRED_COLUMNS = ("OPEN", "HIGH", "LOW", "CLOSE")


@dataclass(frozen=True, slots=True)
class EntryQuery:
    at_ns: int
    tp: float
    sl: float
    costs: TradeCosts = field(default_factory=TradeCosts)


@dataclass(frozen=True, slots=True)
class ExitQuery:
    at_ns: int
    direction: Direction
    tp_price: float
    sl_price: float


@dataclass(frozen=True, slots=True)
class Uncertainty:
    """Spread of the probability over stochastic passes: ``lower``..``upper`` is a ``level`` interval."""

    mean: float
    std: float
    lower: float
    upper: float
    passes: int
    level: float

    def payload(self) -> dict[str, float | int]:
        return {
            "mean": self.mean,
            "std": self.std,
            "lower": self.lower,
            "upper": self.upper,
            "passes": self.passes,
            "level": self.level,
        }


@dataclass(frozen=True, slots=True)
class Answer:
    binary: int
    confidence: float
    uncertainty: Uncertainty | None = None


@dataclass(frozen=True, slots=True)
class EntrySignal:
    buy: Answer
    sell: Answer
    bars_remaining: int

    def payload(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "buy_entry_binary": self.buy.binary,
            "sell_entry_binary": self.sell.binary,
            "bars_remaining": self.bars_remaining,
            "buy_confidence": self.buy.confidence,
            "sell_confidence": self.sell.confidence,
        }
        if self.buy.uncertainty is not None:
            body["buy_uncertainty"] = self.buy.uncertainty.payload()
        if self.sell.uncertainty is not None:
            body["sell_uncertainty"] = self.sell.uncertainty.payload()
        return body


@dataclass(frozen=True, slots=True)
class ExitSignal:
    answer: Answer

    def payload(self) -> dict[str, Any]:
        body: dict[str, Any] = {"exit_binary": self.answer.binary, "exit_confidence": self.answer.confidence}
        if self.answer.uncertainty is not None:
            body["exit_uncertainty"] = self.answer.uncertainty.payload()
        return body


@dataclass(frozen=True, slots=True)
class PredictorInfo:
    model_name: str
    window_size: int
    prediction_scope: str
    look_ahead: bool

    def payload(self) -> dict[str, Any]:
        return {
            "model_name": self.model_name,
            "window_size": self.window_size,
            "supported_types": list(SUPPORTED_TYPES),
            "entry_directions": list(DIRECTIONS),
            "exit_directions": list(DIRECTIONS),
            "prediction_scope": self.prediction_scope,
            "required_columns": list(REQUIRED_COLUMNS),
            "accepts_ohlc_window": False,
            "look_ahead": self.look_ahead,
        }


class SignalPredictor(ABC):
    """Override ``from_settings``, ``info``, ``entry`` and ``exit``; register the class under the
    ``prediction_provider.predictors`` entry point group with the name clients select it by."""

    name: ClassVar[str]
    # True only for predictors whose every answer is a bounded array scan (tens of microseconds):
    # they answer on the event loop. Anything that runs a model answers in a worker thread.
    answers_inline: ClassVar[bool] = False

    @classmethod
    @abstractmethod
    def from_settings(cls, settings: Settings) -> SignalPredictor:
        """Load what the predictor needs; raise ``ModelLoadFailed`` when it cannot."""

    @abstractmethod
    def info(self) -> PredictorInfo: ...

    @abstractmethod
    def entry(self, query: EntryQuery) -> EntrySignal: ...

    @abstractmethod
    def exit(self, query: ExitQuery) -> ExitSignal: ...
