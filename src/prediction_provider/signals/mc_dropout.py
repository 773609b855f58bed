"""``mc_dropout``: a small PyTorch network whose dropout stays on when it answers (MC dropout).

Each answer is ``passes`` stochastic forward passes of the same input, each
through a different dropout mask: the passes' mean probability decides the
answer, and their spread is reported as ``*_uncertainty``: ``mean``, ``std``
(over the passes, population formula) and a ``level`` = 90 % interval
``mean +- 1.645 std`` clipped to [0, 1] (a normal approximation: symmetric
unless clipped, and it always contains the mean).

The masks are drawn once, from a seed, when the predictor is built: every
request goes through the same ``passes`` sub-networks, so answers are
reproducible and independent of request order and threads, while the passes
of one request still differ from one another as MC dropout needs. The weights
are a ``state_dict`` read with ``torch.load(weights_only=True)``: nothing is
unpickled. torch is an optional extra, imported only here and in training.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import numpy as np

from prediction_provider.config import Settings
from prediction_provider.errors import ModelLoadFailed
from prediction_provider.signals.artifacts import MC_DROPOUT_FILE, trained_model
from prediction_provider.signals.bars import FloatArray
from prediction_provider.signals.features import SIGNAL_FEATURES, SignalFeatures
from prediction_provider.signals.model_signals import (
    ModelSignals,
    answer_from_probability,
    check_card_features,
    signal_bars,
)
from prediction_provider.signals.predictor import Answer, Uncertainty

HIDDEN_LAYERS = (64, 64)
DROPOUT_RATE = 0.2
INTERVAL_LEVEL = 0.9
# The standard normal quantile at 0.95: mean +- Z covers the central 90 %.
INTERVAL_Z = 1.6448536269514722


def build_layers(inputs: int, hidden: Sequence[int]) -> Any:
    """Linear layers ``inputs -> hidden... -> 1``, as a ``torch.nn.ModuleList``."""
    import torch

    sizes = [inputs, *hidden, 1]
    return torch.nn.ModuleList(torch.nn.Linear(a, b) for a, b in itertools.pairwise(sizes))


def forward(layers: Any, inputs: Any, masks: Sequence[Any]) -> Any:
    """Logits; ``masks[k]`` (already scaled by 1 / keep) multiplies hidden layer k's activations."""
    import torch

    hidden = inputs
    for layer, mask in zip(layers[:-1], masks, strict=True):
        hidden = torch.relu(layer(hidden)) * mask
    return layers[-1](hidden).squeeze(-1)


def dropout_masks(leading: tuple[int, ...], hidden: Sequence[int], rate: float, generator: Any) -> list[Any]:
    import torch

    keep = 1.0 - rate
    return [
        (torch.rand((*leading, width), generator=generator) < keep).to(torch.float32) / keep
        for width in hidden
    ]


@dataclass(frozen=True, slots=True, eq=False)
class Standardizer:
    """Training-set mean and standard deviation per input; missing inputs become the mean (0)."""

    mean: FloatArray
    std: FloatArray

    @classmethod
    def fit(cls, rows: FloatArray) -> Standardizer:
        """From finite training rows; a constant input gets a deviation of 1."""
        std = rows.std(axis=0)
        return cls(rows.mean(axis=0), np.where(std > 0, std, 1.0))

    def transform(self, rows: FloatArray) -> np.ndarray[Any, np.dtype[np.float32]]:
        scaled = (rows - self.mean) / self.std
        return np.nan_to_num(scaled, nan=0.0, posinf=0.0, neginf=0.0).astype(np.float32)


def summarize(probabilities: FloatArray) -> Uncertainty:
    mean = float(probabilities.mean())
    std = float(probabilities.std())
    half_width = INTERVAL_Z * std
    return Uncertainty(
        mean=mean,
        std=std,
        lower=max(0.0, mean - half_width),
        upper=min(1.0, mean + half_width),
        passes=len(probabilities),
        level=INTERVAL_LEVEL,
    )


class MCDropoutSignals(ModelSignals):
    name = "mc_dropout"

    def __init__(
        self,
        features: SignalFeatures,
        pip_size: Decimal,
        layers: Any,
        standardizer: Standardizer,
        *,
        hidden: Sequence[int],
        rate: float,
        passes: int,
        seed: int,
    ) -> None:
        import torch

        super().__init__(features, pip_size)
        if passes < 2:
            raise ValueError("MC dropout needs at least two passes")
        self.layers = layers.eval()
        self.standardizer = standardizer
        self.passes = passes
        generator = torch.Generator().manual_seed(seed)
        # (passes, width): broadcast against (rows, 1, width), every row meets the same sub-networks.
        self.masks = dropout_masks((passes,), hidden, rate, generator)

    @classmethod
    def from_settings(cls, settings: Settings) -> MCDropoutSignals:
        try:
            import torch
        except ImportError as exc:
            raise ModelLoadFailed(
                "the mc_dropout signal predictor needs PyTorch: pip install 'prediction-provider[torch]'"
            ) from exc
        model_file, card = trained_model(settings, MC_DROPOUT_FILE, cls.name)
        check_card_features(card, cls.name)
        hidden = tuple(int(width) for width in card["hidden"])
        layers = build_layers(len(SIGNAL_FEATURES), hidden)
        try:
            layers.load_state_dict(torch.load(model_file, map_location="cpu", weights_only=True))
        except Exception as exc:  # an unpicklable object, a foreign file or other shapes: refuse, never run
            raise ModelLoadFailed(
                f"the {cls.name} weights in {model_file.name} cannot be read: {exc}"
            ) from exc
        if settings.predict_threads:
            torch.set_num_threads(settings.predict_threads)
        standardizer = Standardizer(
            np.asarray(card["input_mean"], dtype=np.float64), np.asarray(card["input_std"], dtype=np.float64)
        )
        signals = cls(
            SignalFeatures.of(signal_bars(settings)),
            settings.pip_size,
            layers,
            standardizer,
            hidden=hidden,
            rate=float(card["dropout"]),
            passes=settings.mc_dropout_passes,
            seed=int(card["seed"]),
        )
        signals.labelled_by(settings.bar_label)
        return signals

    def probabilities(self, rows: FloatArray) -> FloatArray:
        """``(rows, passes)``: the probability of the target first, per row and pass."""
        import torch

        inputs = torch.from_numpy(self.standardizer.transform(rows)).unsqueeze(1)
        with torch.inference_mode():
            logits = forward(self.layers, inputs, self.masks)
            return np.asarray(torch.sigmoid(logits).numpy(), dtype=np.float64)

    def score(self, rows: FloatArray) -> list[Answer]:
        answers = []
        for samples in self.probabilities(rows):
            uncertainty = summarize(samples)
            answers.append(answer_from_probability(uncertainty.mean, uncertainty))
        return answers
