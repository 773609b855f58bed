"""The variant-comparison statistics against SciPy and hand-computed values: McNemar is a binomial
test on the discordant pairs, Diebold-Mariano on uncorrelated losses is a paired t-test (exactly at
lag 0), its Newey-West variance widens the interval on autocorrelated losses, the clustered
bootstrap covers the true difference at about its nominal rate where a row bootstrap does not,
and the non-inferiority bounds are SciPy's one-sided intervals."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from prediction_provider.modelops import stats


def test_mcnemar_is_an_exact_binomial_test_on_the_discordant_pairs() -> None:
    # 10 rows only a got right, 3 only b got right, 20 both right, 7 both wrong.
    a = [1] * 10 + [0] * 3 + [1] * 20 + [0] * 7
    b = [0] * 10 + [1] * 3 + [1] * 20 + [0] * 7
    result = stats.mcnemar_exact(a, b)
    assert result.p_value == pytest.approx(scipy_stats.binomtest(10, 13, 0.5).pvalue, rel=1e-12)
    assert result.statistic == 10
    assert result.n == 40
    assert result.diff == pytest.approx((10 - 3) / 40)
    se = math.sqrt(13 - 7**2 / 40) / 40
    assert result.ci == pytest.approx((7 / 40 - 1.959963984540054 * se, 7 / 40 + 1.959963984540054 * se))


def test_mcnemar_without_discordant_pairs_finds_no_difference() -> None:
    result = stats.mcnemar_exact([1, 0, 1], [1, 0, 1])
    assert (result.p_value, result.diff) == (1.0, 0.0)


def test_mcnemar_on_no_pairs_reports_nothing() -> None:
    result = stats.mcnemar_exact([], [])
    assert (result.p_value, result.diff, result.ci, result.n) == (None, None, None, 0)


def test_newey_west_variance_by_hand() -> None:
    x = [1.0, 3.0, 2.0, 6.0]  # mean 3, centred -2, 0, -1, 3
    gamma0 = (4 + 0 + 1 + 9) / 4
    gamma1 = ((0 * -2) + (-1 * 0) + (3 * -1)) / 4
    gamma2 = ((-1 * -2) + (3 * 0)) / 4
    assert stats.newey_west_variance(x, 0) == pytest.approx(gamma0)
    assert stats.newey_west_variance(x, 2) == pytest.approx(
        gamma0 + 2 * (2 / 3) * gamma1 + 2 * (1 / 3) * gamma2
    )


def test_default_lag_is_the_floor_of_the_cube_root() -> None:
    assert [stats.default_lag(n) for n in (1, 7, 8, 26, 27, 1000, 1330)] == [1, 1, 2, 2, 3, 10, 10]


def test_diebold_mariano_at_lag_zero_is_the_paired_t_test() -> None:
    rng = np.random.default_rng(1)
    a, b = rng.gamma(2.0, 0.3, 80), rng.gamma(2.1, 0.3, 80)
    result = stats.diebold_mariano(a, b, lag=0)
    reference = scipy_stats.ttest_rel(a, b)
    assert result.statistic == pytest.approx(reference.statistic, rel=1e-10)
    assert result.p_value == pytest.approx(reference.pvalue, rel=1e-10)
    ci = reference.confidence_interval(0.95)
    assert result.ci == pytest.approx((ci.low, ci.high), rel=1e-10)
    assert result.diff == pytest.approx(float(np.mean(a - b)))


def test_diebold_mariano_on_uncorrelated_losses_is_close_to_the_t_test() -> None:
    # With the default lag (⌊500^(1/3)⌋ = 7) on iid losses, the Newey-West statistic is the t
    # statistic up to sampling noise in the autocovariances: equal on average, close each time.
    rng = np.random.default_rng(2)
    ratios = []
    for _ in range(60):
        a, b = rng.normal(0.70, 0.2, 500), rng.normal(0.67, 0.2, 500)
        result = stats.diebold_mariano(a, b)
        reference = scipy_stats.ttest_rel(a, b)
        assert result.statistic is not None
        ratios.append(result.statistic / reference.statistic)
    assert float(np.mean(ratios)) == pytest.approx(1.0, abs=0.03)
    assert min(ratios) > 0.8
    assert max(ratios) < 1.2


def test_diebold_mariano_widens_the_interval_on_autocorrelated_losses() -> None:
    # AR(1) loss differences (rho 0.8), as on overlapping market horizons: a t-test that treats
    # rows as independent is overconfident; the Newey-West variance is larger.
    rng = np.random.default_rng(3)
    d = np.empty(1000)
    d[0] = 0.0
    for i in range(1, d.size):
        d[i] = 0.8 * d[i - 1] + rng.normal(0, 0.1)
    d += 0.01
    result = stats.diebold_mariano(d, np.zeros_like(d))
    naive = stats.diebold_mariano(d, np.zeros_like(d), lag=0)
    assert result.ci is not None
    assert naive.ci is not None
    assert result.ci[1] - result.ci[0] > 2 * (naive.ci[1] - naive.ci[0])
    assert result.p_value is not None
    assert naive.p_value is not None
    assert result.p_value > naive.p_value


def test_diebold_mariano_of_identical_losses_finds_no_difference() -> None:
    result = stats.diebold_mariano([0.3, 0.5, 0.4], [0.3, 0.5, 0.4])
    assert (result.statistic, result.p_value, result.diff) == (0.0, 1.0, 0.0)


def test_welch_t_matches_scipy() -> None:
    rng = np.random.default_rng(4)
    a, b = rng.normal(0.6, 0.1, 40), rng.normal(0.65, 0.3, 55)
    result = stats.welch_t(a, b)
    reference = scipy_stats.ttest_ind(a, b, equal_var=False)
    assert result.statistic == pytest.approx(reference.statistic, rel=1e-10)
    assert result.p_value == pytest.approx(reference.pvalue, rel=1e-10)
    ci = reference.confidence_interval(0.95)
    assert result.ci == pytest.approx((ci.low, ci.high), rel=1e-10)


def test_two_proportion_z_by_hand() -> None:
    a = [1] * 60 + [0] * 40  # 0.60
    b = [1] * 50 + [0] * 50  # 0.50
    result = stats.two_proportion_z(a, b)
    pooled = 110 / 200
    z = 0.1 / math.sqrt(pooled * (1 - pooled) * (2 / 100))
    assert result.statistic == pytest.approx(z)
    assert result.p_value == pytest.approx(2 * scipy_stats.norm.sf(z))
    se = math.sqrt(0.6 * 0.4 / 100 + 0.25 / 100)
    assert result.ci == pytest.approx((0.1 - 1.959963984540054 * se, 0.1 + 1.959963984540054 * se))


@pytest.mark.parametrize(("k", "n"), [(0, 10), (3, 10), (97, 100), (10, 10), (412, 1000)])
def test_wilson_interval_matches_scipy(k: int, n: int) -> None:
    reference = scipy_stats.binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    assert stats.wilson_interval(k, n) == pytest.approx((reference.low, reference.high), rel=1e-9, abs=1e-12)


def test_wilson_interval_of_nothing_is_none() -> None:
    assert stats.wilson_interval(0, 0) is None


def _clustered_arm(
    rng: np.random.Generator, mean: float, clusters: int, rows: int
) -> tuple[np.ndarray, list[int]]:
    # Each unit (sticky client) has its own level: rows of one unit are strongly correlated.
    levels = rng.normal(mean, 0.5, clusters)
    values = np.repeat(levels, rows) + rng.normal(0, 0.1, clusters * rows)
    return values, list(np.repeat(np.arange(clusters), rows))


def test_clustered_bootstrap_covers_the_true_difference_where_a_row_bootstrap_does_not() -> None:
    rng = np.random.default_rng(5)
    true_diff = 0.2
    covered_clustered = covered_rows = 0
    simulations = 150
    for i in range(simulations):
        a, ca = _clustered_arm(rng, 1.0 + true_diff, 30, 10)
        b, cb = _clustered_arm(rng, 1.0, 30, 10)
        clustered = stats.bootstrap_mean_difference(
            a, b, clusters_a=ca, clusters_b=cb, n_resamples=500, seed=i
        )
        rows = stats.bootstrap_mean_difference(a, b, n_resamples=500, seed=i)
        assert clustered.ci is not None
        assert rows.ci is not None
        covered_clustered += clustered.ci[0] <= true_diff <= clustered.ci[1]
        covered_rows += rows.ci[0] <= true_diff <= rows.ci[1]
    assert covered_clustered / simulations >= 0.88
    assert covered_rows / simulations < 0.6


def test_bootstrap_is_reproducible_with_its_seed() -> None:
    rng = np.random.default_rng(6)
    a, b = rng.normal(0, 1, 200), rng.normal(0.1, 1, 150)
    first = stats.bootstrap_mean_difference(a, b, seed=0)
    assert first == stats.bootstrap_mean_difference(a, b, seed=0)
    assert first.ci != stats.bootstrap_mean_difference(a, b, seed=1).ci
    assert first.diff == pytest.approx(float(a.mean() - b.mean()))


def test_bootstrap_of_clearly_different_arms_is_significant() -> None:
    rng = np.random.default_rng(7)
    result = stats.bootstrap_mean_difference(rng.normal(1, 0.1, 100), rng.normal(0, 0.1, 100))
    assert result.p_value == 0.0
    assert result.ci is not None
    assert 0.9 < result.ci[0] < result.ci[1] < 1.1


def test_paired_non_inferiority_bound_is_the_one_sided_paired_t_interval_at_lag_zero() -> None:
    rng = np.random.default_rng(8)
    control = rng.gamma(2.0, 0.3, 300)
    candidate = control + rng.normal(0.01, 0.05, 300)
    result = stats.non_inferiority_paired(candidate, control, delta=0.02, alpha=0.05, lag=0)
    reference = scipy_stats.ttest_rel(candidate, control, alternative="less").confidence_interval(0.95)
    assert result.upper == pytest.approx(reference.high, rel=1e-10)
    assert result.passed == (reference.high <= 0.02)


def test_unpaired_non_inferiority_bound_is_the_one_sided_welch_interval() -> None:
    rng = np.random.default_rng(9)
    candidate, control = rng.normal(0.70, 0.2, 400), rng.normal(0.69, 0.25, 500)
    result = stats.non_inferiority_unpaired(candidate, control, delta=0.05, alpha=0.05)
    reference = scipy_stats.ttest_ind(candidate, control, equal_var=False, alternative="less")
    high = reference.confidence_interval(0.95).high
    assert result.upper == pytest.approx(high, rel=1e-10)
    assert result.passed == (high <= 0.05)


def test_a_clearly_worse_candidate_is_not_non_inferior_and_an_equal_one_is() -> None:
    rng = np.random.default_rng(10)
    control = rng.gamma(2.0, 0.3, 1000)
    worse = control + 0.1 + rng.normal(0, 0.05, 1000)
    equal = control + rng.normal(0, 0.05, 1000)
    assert not stats.non_inferiority_paired(worse, control, delta=0.02, alpha=0.05).passed
    assert stats.non_inferiority_paired(equal, control, delta=0.02, alpha=0.05).passed


def test_non_inferiority_without_data_never_passes() -> None:
    assert not stats.non_inferiority_paired([0.1], [0.2], delta=1.0, alpha=0.05).passed
    assert not stats.non_inferiority_unpaired([], [0.2, 0.3], delta=1.0, alpha=0.05).passed


def test_label_psi_by_hand_with_the_floor_for_an_unseen_label() -> None:
    current = {"up": 60, "down": 40}
    reference = {"up": 50, "down": 40, "flat": 10}
    expected = (
        (0.6 - 0.5) * math.log(0.6 / 0.5) + (0.4 - 0.4) * math.log(1.0) + (1e-4 - 0.1) * math.log(1e-4 / 0.1)
    )
    assert stats.label_psi(current, reference) == pytest.approx(expected)
    assert stats.label_psi(current, current) == 0.0
    assert stats.label_psi({}, reference) is None


def test_diebold_mariano_on_too_few_rows_for_its_lag_gives_no_verdict() -> None:
    # Two rows with lag ⌊2^(1/3)⌋ = 1: the corrected variance has no degrees of freedom left.
    result = stats.diebold_mariano([0.2, 0.4], [0.3, 0.1])
    assert (result.statistic, result.p_value, result.ci, result.n) == (None, None, None, 2)
    assert result.diff == pytest.approx(0.1)
    assert not stats.non_inferiority_paired([0.2, 0.4], [0.3, 0.1], delta=1.0, alpha=0.05).passed
