"""``lightgbm``: a gradient-boosted classifier of the oracle's answers, from point-in-time features.

Trained by the demo (``signals.training``) and read from LightGBM's text
format, which holds no code. Its probability is that of the target coming
before the stop within the week.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import numpy as np

from prediction_provider.config import Settings
from prediction_provider.signals.artifacts import LIGHTGBM_FILE, trained_model
from prediction_provider.signals.bars import FloatArray
from prediction_provider.signals.features import SignalFeatures
from prediction_provider.signals.model_signals import (
    ModelSignals,
    answer_from_probability,
    check_card_features,
    signal_bars,
)
from prediction_provider.signals.predictor import Answer


class LightGBMSignals(ModelSignals):
    name = "lightgbm"

    def __init__(self, features: SignalFeatures, pip_size: Decimal, booster: Any) -> None:
        super().__init__(features, pip_size)
        self.booster = booster

    @classmethod
    def from_settings(cls, settings: Settings) -> LightGBMSignals:
        import lightgbm

        model_file, card = trained_model(settings, LIGHTGBM_FILE, cls.name)
        check_card_features(card, cls.name)
        booster = lightgbm.Booster(model_file=str(model_file))
        signals = cls(SignalFeatures.of(signal_bars(settings)), settings.pip_size, booster)
        signals.labelled_by(settings.bar_label)
        return signals

    def score(self, rows: FloatArray) -> list[Answer]:
        probabilities = np.asarray(self.booster.predict(rows, num_threads=1), dtype=np.float64)
        return [answer_from_probability(float(p)) for p in probabilities]
