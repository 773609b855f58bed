"""The binned drift statistics against scipy on the raw samples: KS D within one grid step of
``ks_2samp``, normalized Wasserstein close to ``wasserstein_distance`` ÷ the reference's std, JS equal
to ``jensenshannon`` (base 2), chi² equal to ``chi2_contingency``; PSI floors zero proportions."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats
from scipy.spatial.distance import jensenshannon

from prediction_provider.modelops.drift import statistics as st
from prediction_provider.modelops.drift.counters import bin_rows
from prediction_provider.modelops.drift.reference import Reference, build_profile

RNG = np.random.default_rng(20)


def _profile_and_fine(reference: np.ndarray, current: np.ndarray) -> tuple[Reference, np.ndarray]:
    profile = Reference.parse(build_profile(["x"], reference.reshape(-1, 1)))
    fine = bin_rows(current.reshape(-1, 1), profile.grid)[0]
    return profile, fine


@pytest.mark.parametrize(("shift", "scale"), [(0.0, 1.0), (0.3, 1.0), (0.0, 1.6), (-0.8, 0.7), (1.5, 1.0)])
def test_binned_ks_is_within_one_grid_step_under_the_exact_statistic(shift: float, scale: float) -> None:
    reference = RNG.normal(size=4000)
    current = RNG.normal(shift, scale, size=1500)
    profile, fine = _profile_and_fine(reference, current)
    entry = profile.entries[0]
    binned = st.binned_ks(entry["ks_cdf"], len(reference), fine)
    exact = stats.ks_2samp(reference, current).statistic
    # The largest mass of one fine bin, in either sample: how far a grid point can be from the sup.
    reference_step = np.max(np.diff(np.concatenate(([0.0], entry["ks_cdf"], [1.0]))))
    current_step = fine[:-1].max() / fine[:-1].sum()
    assert binned.statistic <= exact + 1e-12
    assert exact - binned.statistic <= max(reference_step, current_step) + 1e-12
    assert 0.0 <= binned.p_value <= 1.0


def test_ks_p_value_uses_kstwo_with_the_effective_sample_size() -> None:
    reference = RNG.normal(size=3000)
    current = RNG.normal(0.2, 1.0, size=1000)
    profile, fine = _profile_and_fine(reference, current)
    binned = st.binned_ks(profile.entries[0]["ks_cdf"], 3000, fine)
    assert binned.p_value == pytest.approx(stats.kstwo.sf(binned.statistic, round(1000 * 3000 / 4000)))


@pytest.mark.parametrize(("shift", "scale"), [(0.0, 1.0), (0.25, 1.0), (0.0, 0.6), (-0.4, 0.8)])
def test_binned_wasserstein_matches_scipy_on_the_raw_samples(shift: float, scale: float) -> None:
    reference = RNG.normal(size=5000)
    current = np.clip(RNG.normal(shift, scale, size=2000), reference.min(), reference.max())
    profile, fine = _profile_and_fine(reference, current)
    entry = profile.entries[0]
    binned = st.binned_wasserstein(entry["ks_cdf"], entry["ks_grid"], fine, float(entry["std"]))
    exact = stats.wasserstein_distance(reference, current) / reference.std()
    assert binned == pytest.approx(exact, abs=0.02, rel=0.1)


def test_identical_samples_score_zero_on_every_distance() -> None:
    reference = RNG.normal(size=2000)
    profile, fine = _profile_and_fine(reference, reference)
    scores = profile.scores(0, fine)
    assert scores["psi"] == pytest.approx(0.0, abs=1e-12)
    assert scores["js"] == pytest.approx(0.0, abs=1e-7)
    assert scores["wasserstein"] == pytest.approx(0.0, abs=1e-12)


def test_psi_floors_zero_proportions_without_renormalizing() -> None:
    reference = [0.5, 0.5, 0.0]
    current = [0.25, 0.5, 0.25]
    expected = (0.25 - 0.5) * math.log(0.25 / 0.5) + (0.25 - 1e-4) * math.log(0.25 / 1e-4)
    assert st.psi(reference, current) == pytest.approx(expected)


def test_js_distance_is_scipys_base_2() -> None:
    reference = np.array([0.1, 0.2, 0.3, 0.4, 0.0])
    current = np.array([0.3, 0.3, 0.2, 0.1, 0.1])
    assert st.js_distance(reference, current) == pytest.approx(jensenshannon(reference, current, base=2))
    assert st.js_distance([1.0, 0.0], [0.0, 1.0]) == pytest.approx(1.0)


def test_chi2_is_the_contingency_test_of_the_two_rows_without_empty_bins() -> None:
    reference = np.array([100.0, 300.0, 0.0, 600.0])
    current = np.array([30, 20, 0, 50])
    result = st.chi2(reference, current)
    expected = stats.chi2_contingency(np.array([[100, 300, 600], [30, 20, 50]]), correction=False)
    assert result.statistic == pytest.approx(expected.statistic)
    assert result.p_value == pytest.approx(expected.pvalue)


def test_calibration_only_raises_the_default_thresholds() -> None:
    assert st.thresholds("psi", None) == (0.10, 0.25)
    assert st.thresholds("psi", [0.01, 0.01]) == (0.10, 0.25)
    warn, drift = st.thresholds("psi", [0.2, 0.05])
    assert warn == pytest.approx(0.30)
    assert drift == pytest.approx(0.35)
    assert st.status_of(0.29, warn, drift) == "ok"
    assert st.status_of(0.31, warn, drift) == "warn"
    assert st.status_of(0.36, warn, drift) == "drift"


def test_coarse_bins_are_sums_of_fine_bins_on_the_decile_edges() -> None:
    reference = RNG.normal(size=3000)
    current = np.concatenate([RNG.normal(0.5, 2.0, size=997), [np.nan, np.inf, -np.inf]])
    profile, fine = _profile_and_fine(reference, current)
    edges = np.asarray(profile.entries[0]["edges"])
    finite = current[np.isfinite(current)]
    direct = np.bincount(np.searchsorted(edges, finite, side="right"), minlength=len(edges) + 1)
    coarse = st.coarse_counts(fine, profile.subdivision)
    assert coarse[:-1].tolist() == direct.tolist()
    assert coarse[-1] == 3  # NaN and both infinities are missing
    assert len(coarse) == 13
