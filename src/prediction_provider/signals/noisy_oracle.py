"""``noisy_ideal_oracle``: the ideal oracle degraded by Gaussian noise, scored against itself.

The answers of ``binary_ideal_oracle`` (look-ahead: it reads the bars after the
request time) get N(0, noise_std) added and are thresholded at 0.5, so the
chance of a wrong answer grows smoothly with ``noise_std`` (0: the oracle
itself; 0.5: about 16 % wrong; large: a coin). This is what noise-sweep
experiments use to measure how a strategy degrades with prediction quality.

Every answer is also counted against the noiseless oracle in a confusion
matrix (1 = "target first" is the positive class): ``metrics()`` gives tp, fp,
tn, fn and precision, recall, F1 and accuracy since the last reset.
``set_noise`` sets a new ``noise_std``, zeroes the counts and restarts the
random stream from ``PP_ORACLE_NOISE_SEED``, so the same requests after the
same ``set_noise`` get the same answers. Noise, counts and stream live in the
predictor, which each server process builds for itself: with several workers,
each keeps its own (run noise sweeps against one worker).
"""

from __future__ import annotations

import math
import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

import numpy as np

from prediction_provider.config import Settings
from prediction_provider.db.base import utcnow
from prediction_provider.errors import NoiseUnsupported
from prediction_provider.signals.bars import PriceBars
from prediction_provider.signals.horizon import Horizon
from prediction_provider.signals.levels import Levels
from prediction_provider.signals.oracle import BinaryIdealOracle, NoiseStream, oracle_bars
from prediction_provider.signals.outcomes import target_first
from prediction_provider.signals.predictor import Answer, SignalPredictor

THRESHOLD = 0.5


@dataclass(frozen=True, slots=True)
class ConfusionMetrics:
    """Noisy answers scored against the noiseless ones, since ``since``."""

    tp: int
    fp: int
    tn: int
    fn: int
    noise_std: float
    since: datetime

    @property
    def total(self) -> int:
        return self.tp + self.fp + self.tn + self.fn

    @property
    def precision(self) -> float:
        return _ratio(self.tp, self.tp + self.fp)

    @property
    def recall(self) -> float:
        return _ratio(self.tp, self.tp + self.fn)

    @property
    def f1(self) -> float:
        precision, recall = self.precision, self.recall
        return _ratio(2 * precision * recall, precision + recall)

    @property
    def accuracy(self) -> float:
        return _ratio(self.tp + self.tn, self.total)


def _ratio(numerator: float, denominator: float) -> float:
    """0.0 for an empty denominator (no answers yet, or none of a class), as the seed's clients expect."""
    return numerator / denominator if denominator > 0 else 0.0


class NoiseControl(ABC):
    """A signal predictor whose noise can be set while it serves, and which scores its answers.

    A plugin predictor that implements it (besides ``SignalPredictor``) answers
    ``POST /api/v1/predict/set_noise`` and ``GET /api/v1/predict/metrics``.
    """

    @abstractmethod
    def set_noise(self, noise_std: float) -> None:
        """Serve with ``noise_std`` from now on; zero the counts and restart the random stream."""

    @abstractmethod
    def metrics(self) -> ConfusionMetrics: ...


def noise_control(predictor: SignalPredictor) -> NoiseControl:
    """``predictor`` as a ``NoiseControl``; ``NoiseUnsupported`` (409) when it takes no noise."""
    if isinstance(predictor, NoiseControl):
        return predictor
    raise NoiseUnsupported(
        f"the signal predictor {predictor.name} takes no noise_std; serve noisy_ideal_oracle "
        "(PP_SIGNAL_PREDICTOR=noisy_ideal_oracle with PP_ORACLE_CSV) for noise sweeps",
        {"predictor": predictor.name, "noise_predictors": [NoisyIdealOracle.name]},
    )


class GaussianNoise:
    """Adds N(0, std) to 0/1 answers and thresholds them, from one seeded stream, and counts the
    outcome of each answer against the noiseless one. Thread-safe: one lock guards stream and counts."""

    def __init__(self, std: float, seed: int) -> None:
        self.seed = seed
        self._lock = threading.Lock()
        self._reset(std)

    def _reset(self, std: float) -> None:
        if not (math.isfinite(std) and std >= 0):
            raise ValueError("noise_std must be a finite number >= 0")
        self.std = std
        self._random = np.random.default_rng(self.seed)
        self._counts = [0, 0, 0, 0]  # tp, fp, tn, fn
        self._since = utcnow()

    def reset(self, std: float) -> None:
        with self._lock:
            self._reset(std)

    @property
    def confidence(self) -> float:
        """The chance an answer is right: P(noise on the right side of 0.5) = Phi(0.5 / std)."""
        if self.std == 0.0:
            return 1.0
        return 0.5 * (1.0 + math.erf(THRESHOLD / (self.std * math.sqrt(2.0))))

    def apply(self, truth: int) -> int:
        with self._lock:
            if self.std == 0.0:  # no draw: the stream is used only while there is noise, as in the seed
                answer = truth
            else:
                answer = int(truth + float(self._random.normal(0.0, self.std)) > THRESHOLD)
            # tp, fp, tn, fn: positive = "target first" (1)
            self._counts[(0 if truth else 1) if answer else (3 if truth else 2)] += 1
        return answer

    def metrics(self) -> ConfusionMetrics:
        with self._lock:
            tp, fp, tn, fn = self._counts
            return ConfusionMetrics(tp, fp, tn, fn, self.std, self._since)


class NoisyIdealOracle(BinaryIdealOracle, NoiseControl):
    name = "noisy_ideal_oracle"
    answers_inline = True

    def __init__(
        self, bars: PriceBars, pip_size: Decimal, prediction_horizon: int, noise: GaussianNoise
    ) -> None:
        # The parent's flip stream stays silent (probability 0): this oracle's noise is Gaussian.
        super().__init__(bars, pip_size, prediction_horizon, NoiseStream(0.0, noise.seed))
        self.gaussian = noise

    @classmethod
    def from_settings(cls, settings: Settings) -> NoisyIdealOracle:
        noise = GaussianNoise(settings.oracle_noise_std, settings.oracle_noise_seed)
        return cls(oracle_bars(cls.name, settings), settings.pip_size, settings.prediction_horizon, noise)

    def set_noise(self, noise_std: float) -> None:
        self.gaussian.reset(noise_std)

    def metrics(self) -> ConfusionMetrics:
        return self.gaussian.metrics()

    def _answer(self, horizon: Horizon, levels: Levels) -> Answer:
        truth = int(target_first(self.bars, horizon, levels))
        return Answer(self.gaussian.apply(truth), self.gaussian.confidence)
