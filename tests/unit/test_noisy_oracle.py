"""The noisy oracle's noise and its confusion counts, on the answers they are given."""

from __future__ import annotations

import math

import pytest

from prediction_provider.errors import NoiseUnsupported
from prediction_provider.features.pipelines import POINT_IN_TIME, load_pipeline
from prediction_provider.signals.noisy_oracle import (
    ConfusionMetrics,
    GaussianNoise,
    NoisyIdealOracle,
    noise_control,
)
from prediction_provider.signals.oracle import BinaryIdealOracle
from prediction_provider.signals.registry import predictor_class

TRUTHS = [1, 0] * 500


def test_without_noise_every_answer_is_the_truth_and_counted_right() -> None:
    noise = GaussianNoise(0.0, seed=7)
    assert [noise.apply(truth) for truth in TRUTHS] == TRUTHS
    metrics = noise.metrics()
    assert (metrics.tp, metrics.fp, metrics.tn, metrics.fn) == (500, 0, 500, 0)
    assert metrics.accuracy == metrics.precision == metrics.recall == metrics.f1 == 1.0
    assert noise.confidence == 1.0


def test_each_answer_lands_in_its_cell_of_the_confusion_matrix() -> None:
    noise = GaussianNoise(0.8, seed=7)
    answers = [noise.apply(truth) for truth in TRUTHS]
    pairs = list(zip(TRUTHS, answers, strict=True))
    metrics = noise.metrics()
    assert (metrics.tp, metrics.fp, metrics.tn, metrics.fn) == (
        pairs.count((1, 1)),
        pairs.count((0, 1)),
        pairs.count((0, 0)),
        pairs.count((1, 0)),
    )
    assert metrics.total == len(TRUTHS)


def test_the_share_of_wrong_answers_matches_the_stated_confidence() -> None:
    noise = GaussianNoise(0.5, seed=11)
    wrong = sum(noise.apply(truth) != truth for truth in TRUTHS * 10) / (len(TRUTHS) * 10)
    assert noise.confidence == pytest.approx(0.5 * (1 + math.erf(1 / math.sqrt(2))))  # Phi(1)
    assert wrong == pytest.approx(1 - noise.confidence, abs=0.02)


def test_a_reset_zeroes_the_counts_and_restarts_the_stream() -> None:
    noise = GaussianNoise(0.7, seed=3)
    first = [noise.apply(truth) for truth in TRUTHS]
    noise.reset(0.7)
    assert noise.metrics().total == 0
    assert [noise.apply(truth) for truth in TRUTHS] == first
    noise.reset(0.0)
    assert noise.metrics().noise_std == 0.0


@pytest.mark.parametrize("std", [-0.1, math.inf, math.nan])
def test_a_noise_that_is_not_a_finite_number_at_least_zero_is_refused(std: float) -> None:
    with pytest.raises(ValueError, match="noise_std"):
        GaussianNoise(std, seed=1)


def test_ratios_of_empty_counts_are_zero_not_an_error() -> None:
    empty = ConfusionMetrics(0, 0, 0, 0, 0.3, GaussianNoise(0.3, 1).metrics().since)
    assert (empty.precision, empty.recall, empty.f1, empty.accuracy) == (0.0, 0.0, 0.0, 0.0)


def test_only_a_predictor_with_noise_answers_the_noise_routes() -> None:
    assert predictor_class("noisy_ideal_oracle") is NoisyIdealOracle
    assert issubclass(NoisyIdealOracle, BinaryIdealOracle)
    with pytest.raises(NoiseUnsupported) as refused:
        noise_control(object.__new__(BinaryIdealOracle))
    assert refused.value.details == {
        "predictor": "binary_ideal_oracle",
        "noise_predictors": ["noisy_ideal_oracle"],
    }


def test_the_point_in_time_pipeline_is_a_registered_plugin() -> None:
    pipeline = load_pipeline("point_in_time")
    assert pipeline is POINT_IN_TIME
    assert len(pipeline.feature_names) == len(set(pipeline.feature_names)) > 0
    assert pipeline.warmup_bars > 0
