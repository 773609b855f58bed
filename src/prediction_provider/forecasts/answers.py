"""A model's forecast steps for one feature vector, computed once and kept.

Why: every client asking about a symbol's latest bar gets the same answer from
the same model version until the next bar arrives, and an answer is twenty
booster calls (~0.2 ms) where a lookup is a microsecond. The key is the model
version's URI, the bar's time, a SHA-256 of the features and the steps asked,
so a corrected bar (other features) or a new version (another URI) can never
be answered from an old entry. Bounded LRU; safe to share between threads.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from datetime import datetime
from functools import lru_cache

import numpy as np
import numpy.typing as npt
import pandas as pd

from prediction_provider.features.feeders.intervals import Interval
from prediction_provider.forecasts.model import ForecastModel
from prediction_provider.forecasts.records import ForecastStep

ANSWER_CACHE_SIZE = 4096
AnswerKey = tuple[str, datetime, str, tuple[int, ...]]


@lru_cache(maxsize=64)
def step_offset(interval: str) -> pd.DateOffset | pd.Timedelta:
    """What one step of ``interval`` adds to a bar's time: business days for daily bars (the labels
    count bars, and markets that close at weekends have no weekend bars), the interval otherwise.
    Computed from the calendar alone, so later bars never change a forecast's target times."""
    delta = Interval.parse(interval).delta
    if delta == pd.Timedelta(days=1):
        return pd.offsets.BDay(1)
    return delta


class ForecastAnswers:
    def __init__(self, size: int = ANSWER_CACHE_SIZE) -> None:
        self.size = size
        self._lock = threading.Lock()
        self._answers: OrderedDict[AnswerKey, tuple[ForecastStep, ...]] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def steps(
        self,
        model_uri: str,
        model: ForecastModel,
        row: npt.NDArray[np.float64],
        digest: str,
        data_as_of: datetime,
        steps: Sequence[int],
    ) -> tuple[ForecastStep, ...]:
        key: AnswerKey = (model_uri, data_as_of, digest, tuple(steps))
        with self._lock:
            found = self._answers.get(key)
            if found is not None:
                self._answers.move_to_end(key)
                self.hits += 1
                return found
        answer = self._compute(model, row, data_as_of, steps)
        if self.size == 0:
            self.misses += 1
            return answer
        with self._lock:
            self.misses += 1
            self._answers[key] = answer
            while len(self._answers) > self.size:
                self._answers.popitem(last=False)
        return answer

    @staticmethod
    def _compute(
        model: ForecastModel, row: npt.NDArray[np.float64], data_as_of: datetime, steps: Sequence[int]
    ) -> tuple[ForecastStep, ...]:
        manifest = model.manifest
        offset = step_offset(manifest.interval)
        classes = manifest.classes
        start = pd.Timestamp(data_as_of)
        return tuple(
            ForecastStep(
                step=answer.step,
                target_time=(start + answer.step * offset).to_pydatetime(),
                direction=classes[max(range(len(classes)), key=answer.probabilities.__getitem__)],
                probabilities=dict(zip(classes, answer.probabilities, strict=True)),
                expected_return=answer.quantiles[len(answer.quantiles) // 2],
                interval_80=(answer.quantiles[0], answer.quantiles[-1]),
            )
            for answer in model.forecast(row, steps)
        )
