"""The regime HMM: state naming, filtering without look-ahead, entropy, and pickle-free persistence."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hmmlearn.hmm import GaussianHMM

from prediction_provider.features.market_data import load_sample_bars
from prediction_provider.trading.regime import (
    REGIMES,
    RegimeModel,
    RegimeProbabilities,
    fit_regime_model,
    observations,
)


@pytest.fixture(scope="module")
def bars() -> pd.DataFrame:
    return load_sample_bars("GOOG").iloc[-900:]


@pytest.fixture(scope="module")
def model(bars: pd.DataFrame) -> RegimeModel:
    return fit_regime_model(bars, seed=7)


def as_hmmlearn(model: RegimeModel) -> GaussianHMM:
    hmm = GaussianHMM(n_components=len(model.state_regimes), covariance_type="diag")
    hmm.startprob_ = model.start_probabilities
    hmm.transmat_ = model.transitions
    hmm.means_ = model.means
    hmm.covars_ = model.variances
    return hmm


def test_states_are_named_by_mean_return(model: RegimeModel) -> None:
    mean_return = dict(zip(model.state_regimes, model.means[:, 0], strict=True))
    assert sorted(model.state_regimes) == sorted(REGIMES)
    assert mean_return["bear"] < mean_return["sideways"] < mean_return["bull"]


def test_two_state_model_names_bear_and_bull(bars: pd.DataFrame) -> None:
    two = fit_regime_model(bars, states=2, seed=3)
    assert sorted(two.state_regimes) == ["bear", "bull"]
    posterior = two.posterior(bars)
    assert posterior.sideways == 0.0
    assert posterior.bull + posterior.bear == pytest.approx(1.0)


def test_posterior_probabilities_sum_to_one_with_entropy_in_range(
    model: RegimeModel, bars: pd.DataFrame
) -> None:
    for end in (60, 200, 500, 900):
        posterior = model.posterior(bars.iloc[:end])
        assert posterior.bull + posterior.bear + posterior.sideways == pytest.approx(1.0, abs=1e-12)
        assert 0.0 <= posterior.entropy <= 1.0


def test_entropy_is_normalised_from_certain_to_uniform() -> None:
    assert RegimeProbabilities.from_probabilities(1.0, 0.0, 0.0).entropy == 0.0
    assert RegimeProbabilities.from_probabilities(1, 1, 1).entropy == pytest.approx(1.0)
    between = RegimeProbabilities.from_probabilities(0.5, 0.5, 0.0)
    assert between.entropy == pytest.approx(math.log(2) / math.log(3))


def test_last_filtered_posterior_equals_hmmlearns_smoothed_one(
    model: RegimeModel, bars: pd.DataFrame
) -> None:
    """At the last bar, forward-backward smoothing has nothing to look ahead at: the two agree."""
    x = model.standardised(bars)
    ours = model.filter(x, prior=model.start_probabilities)
    theirs = as_hmmlearn(model).predict_proba(x)
    np.testing.assert_allclose(ours[-1], theirs[-1], atol=1e-9)


def test_filtering_differs_from_smoothing_before_the_last_bar(model: RegimeModel, bars: pd.DataFrame) -> None:
    """Smoothing reads later bars; the filter must not, so somewhere the two disagree."""
    x = model.standardised(bars)
    ours = model.filter(x, prior=model.start_probabilities)
    smoothed = as_hmmlearn(model).predict_proba(x)
    assert np.abs(ours[:-1] - smoothed[:-1]).max() > 1e-3


def test_filtered_posteriors_ignore_later_bars(model: RegimeModel, bars: pd.DataFrame) -> None:
    cut = 600
    before = model.filter(model.standardised(bars.iloc[:cut]))
    altered = bars.copy()
    rng = np.random.default_rng(0)
    altered.iloc[cut:, :4] *= rng.uniform(0.5, 1.5, size=(len(bars) - cut, 1))
    after = model.filter(model.standardised(altered))
    np.testing.assert_allclose(after[: len(before)], before, atol=1e-12)
    assert model.posterior(altered.iloc[:cut]) == model.posterior(bars.iloc[:cut])


def test_compiled_forward_pass_matches_the_python_reference(model: RegimeModel, bars: pd.DataFrame) -> None:
    x = model.standardised(bars)
    log_density = model._log_density(x)
    density = np.exp(log_density - log_density.max(axis=1, keepdims=True))
    reference = model.filter_reference(model.stationary, density)
    np.testing.assert_allclose(model.filter(x), reference, atol=1e-12)


def test_numpy_observations_match_the_pandas_definition(model: RegimeModel, bars: pd.DataFrame) -> None:
    expected = (observations(bars, model.volatility_window).to_numpy() - model.scale_mean) / model.scale_std
    np.testing.assert_allclose(model.standardised(bars), expected, atol=1e-9)


def test_stationary_distribution_is_invariant_under_the_transitions(model: RegimeModel) -> None:
    np.testing.assert_allclose(model.stationary @ model.transitions, model.stationary, atol=1e-10)
    assert model.stationary.sum() == pytest.approx(1.0)


def test_saved_model_is_plain_json_and_rebuilds_identically(
    model: RegimeModel, bars: pd.DataFrame, tmp_path: Path
) -> None:
    path = tmp_path / "regime.json"
    model.save(path)
    stored = json.loads(path.read_text(encoding="utf-8"))
    assert stored["kind"] == "gaussian_hmm_diag"
    rebuilt = RegimeModel.load(path)
    assert rebuilt.state_regimes == model.state_regimes
    assert rebuilt.posterior(bars) == model.posterior(bars)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("variances", [[1.0, -1.0], [1.0, 1.0], [1.0, 1.0]], "positive"),
        ("transitions", [[0.5, 0.5, 0.5], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]], "sum to 1"),
        ("means", [[0.0, 0.0]], "shape"),
        ("state_regimes", ["bull", "bull", "crash"], "state_regimes"),
        ("format", 99, "unsupported"),
    ],
)
def test_tampered_parameters_are_refused(model: RegimeModel, field: str, value: object, message: str) -> None:
    data = {**model.to_json(), field: value}
    with pytest.raises(ValueError, match=message):
        RegimeModel.from_json(data)


def test_too_few_bars_are_refused(bars: pd.DataFrame, model: RegimeModel) -> None:
    with pytest.raises(ValueError, match="too few bars"):
        fit_regime_model(bars.iloc[:100])
    with pytest.raises(ValueError, match="more than"):
        model.posterior(bars.iloc[:5])
