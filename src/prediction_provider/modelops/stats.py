"""Significance tests for comparing variants on realized outcomes (outcomes design §3.10).

Pure functions of plain sequences; every figure returned is a Python ``float``/``int`` (never a
numpy scalar) so callers can put it straight into JSON. Conventions shared by every test:

- a difference is always ``a - b`` (the first argument minus the second);
- ``ci`` is a two-sided interval at ``confidence`` (default 0.95) around that difference;
- a test that cannot be computed (no data, no variance) says so with ``None`` rather than raising.

Paired designs (shadow pairs, ``compare_with_control``: the same rows answered twice) use McNemar's
exact test for hit/miss and Diebold-Mariano with a Newey-West variance for per-row losses; unpaired
designs (A/B arms) use a two-proportion z test, Welch's t and a bootstrap clustered by unit.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as scipy_stats

# A proportion of 0 in a PSI's reference or current distribution is replaced by this (without
# renormalizing), as in the drift statistics: ln(0) would make one unseen label infinite.
PSI_FLOOR = 1e-4


@dataclass(frozen=True, slots=True)
class Comparison:
    """One comparison: ``diff`` = a - b, ``ci`` its two-sided interval, ``n`` the observations
    (pairs for paired tests; the smaller arm for unpaired ones)."""

    test: str
    statistic: float | None
    p_value: float | None
    diff: float | None
    ci: tuple[float, float] | None
    n: int


@dataclass(frozen=True, slots=True)
class NonInferiority:
    """``upper`` is the upper end of the one-sided (1 - alpha) confidence bound of candidate - control
    (a loss: lower is better); the candidate is non-inferior when ``upper ≤ delta``."""

    diff: float | None
    upper: float | None
    delta: float
    alpha: float
    n: int
    passed: bool
    method: str  # paired | unpaired


def _floats(values: Sequence[float] | np.ndarray) -> np.ndarray:
    return np.asarray(values, dtype=np.float64)


def _interval(low: float, high: float) -> tuple[float, float]:
    return (float(low), float(high))


def wilson_interval(successes: float, n: int, confidence: float = 0.95) -> tuple[float, float] | None:
    """Wilson score interval of a proportion (the leaderboard's interval for hit rates)."""
    if n <= 0:
        return None
    z = float(scipy_stats.norm.ppf(0.5 + confidence / 2))
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return _interval(max(0.0, centre - half), min(1.0, centre + half))


def mcnemar_exact(hits_a: Sequence[int], hits_b: Sequence[int], confidence: float = 0.95) -> Comparison:
    """McNemar's exact test on paired hit/miss (1/0): a two-sided binomial test (p = ½) on the
    discordant pairs. ``statistic`` is the count of pairs a got right and b wrong; ``diff`` the
    accuracy difference with a Wald interval for paired proportions."""
    a, b = _floats(hits_a), _floats(hits_b)
    if a.shape != b.shape:
        raise ValueError("paired samples must have the same length")
    n = int(a.size)
    if n == 0:
        return Comparison("mcnemar_exact", None, None, None, None, 0)
    only_a = int(np.sum((a == 1) & (b == 0)))
    only_b = int(np.sum((a == 0) & (b == 1)))
    discordant = only_a + only_b
    p_value = 1.0 if discordant == 0 else float(scipy_stats.binomtest(only_a, discordant, 0.5).pvalue)
    diff = (only_a - only_b) / n
    z = float(scipy_stats.norm.ppf(0.5 + confidence / 2))
    se = math.sqrt(max(discordant - (only_a - only_b) ** 2 / n, 0.0)) / n
    return Comparison(
        "mcnemar_exact", float(only_a), p_value, diff, _interval(diff - z * se, diff + z * se), n
    )


def newey_west_variance(values: Sequence[float] | np.ndarray, lag: int) -> float:
    """Long-run variance of a series: g₀ + 2·Σ_{k=1..lag} (1 - k/(lag+1))·g_k (Bartlett weights,
    autocovariances with divisor n), never negative."""
    x = _floats(values)
    n = x.size
    centred = x - x.mean()
    variance = float(centred @ centred) / n
    for k in range(1, min(lag, n - 1) + 1):
        gamma = float(centred[k:] @ centred[:-k]) / n
        variance += 2.0 * (1.0 - k / (lag + 1)) * gamma
    return max(variance, 0.0)


def default_lag(n: int) -> int:
    """⌊n^(1/3)⌋, the outcomes design's Newey-West truncation lag."""
    return math.floor(n ** (1.0 / 3.0) + 1e-9) if n > 0 else 0


def _dm_parts(differences: np.ndarray, lag: int | None) -> tuple[float, float, int, int]:
    """(mean, standard error with the Harvey-Leybourne-Newbold correction, n, lag)."""
    n = int(differences.size)
    h = default_lag(n) if lag is None else lag
    variance = newey_west_variance(differences, h)
    # HLN small-sample factor with forecast horizon h + 1 (autocovariances up to lag h). With lag 0
    # the standard error equals a paired t-test's: sqrt(g₀/(n-1)) = s/√n.
    horizon = h + 1
    factor = (n + 1 - 2 * horizon + horizon * (horizon - 1) / n) / n
    se = math.sqrt(variance / n / factor) if factor > 0 else math.inf
    return float(differences.mean()), se, n, h


def diebold_mariano(
    loss_a: Sequence[float], loss_b: Sequence[float], *, lag: int | None = None, confidence: float = 0.95
) -> Comparison:
    """Diebold-Mariano test of equal expected loss on paired per-row losses (time-ordered):
    d = loss_a - loss_b, Newey-West variance with ``lag`` (default ⌊n^(1/3)⌋), the
    Harvey-Leybourne-Newbold correction and a t distribution with n - 1 degrees of freedom."""
    a, b = _floats(loss_a), _floats(loss_b)
    if a.shape != b.shape:
        raise ValueError("paired samples must have the same length")
    if a.size < 2:
        return Comparison(
            "diebold_mariano", None, None, float(a.mean() - b.mean()) if a.size else None, None, int(a.size)
        )
    mean, se, n, _ = _dm_parts(a - b, lag)
    if not math.isfinite(se):  # too few rows for the lag: no variance estimate
        return Comparison("diebold_mariano", None, None, mean, None, n)
    if se == 0.0:
        statistic = 0.0 if mean == 0.0 else math.copysign(math.inf, mean)
        p_value = 1.0 if mean == 0.0 else 0.0
        return Comparison("diebold_mariano", statistic, p_value, mean, _interval(mean, mean), n)
    statistic = mean / se
    p_value = float(2 * scipy_stats.t.sf(abs(statistic), n - 1))
    t = float(scipy_stats.t.ppf(0.5 + confidence / 2, n - 1))
    return Comparison("diebold_mariano", statistic, p_value, mean, _interval(mean - t * se, mean + t * se), n)


def welch_t(a: Sequence[float], b: Sequence[float], confidence: float = 0.95) -> Comparison:
    """Welch's unequal-variance t test of mean(a) - mean(b), with the Welch-Satterthwaite interval."""
    x, y = _floats(a), _floats(b)
    n = int(min(x.size, y.size))
    if x.size < 2 or y.size < 2:
        diff = float(x.mean() - y.mean()) if x.size and y.size else None
        return Comparison("welch_t", None, None, diff, None, n)
    diff = float(x.mean() - y.mean())
    vx, vy = float(x.var(ddof=1)) / x.size, float(y.var(ddof=1)) / y.size
    se = math.sqrt(vx + vy)
    if se == 0.0:
        return Comparison("welch_t", 0.0 if diff == 0 else math.copysign(math.inf, diff),
                          1.0 if diff == 0 else 0.0, diff, _interval(diff, diff), n)  # fmt: skip
    df = (vx + vy) ** 2 / (vx * vx / (x.size - 1) + vy * vy / (y.size - 1))
    statistic = diff / se
    p_value = float(2 * scipy_stats.t.sf(abs(statistic), df))
    t = float(scipy_stats.t.ppf(0.5 + confidence / 2, df))
    return Comparison("welch_t", statistic, p_value, diff, _interval(diff - t * se, diff + t * se), n)


def two_proportion_z(
    hits_a: Sequence[float], hits_b: Sequence[float], confidence: float = 0.95
) -> Comparison:
    """Two-proportion z test (pooled variance for the p-value, unpooled for the interval)."""
    x, y = _floats(hits_a), _floats(hits_b)
    n = int(min(x.size, y.size))
    if x.size == 0 or y.size == 0:
        return Comparison("two_proportion_z", None, None, None, None, n)
    pa, pb = float(x.mean()), float(y.mean())
    diff = pa - pb
    pooled = (float(x.sum()) + float(y.sum())) / (x.size + y.size)
    se_pooled = math.sqrt(pooled * (1 - pooled) * (1 / x.size + 1 / y.size))
    z = float(scipy_stats.norm.ppf(0.5 + confidence / 2))
    se = math.sqrt(pa * (1 - pa) / x.size + pb * (1 - pb) / y.size)
    ci = _interval(diff - z * se, diff + z * se)
    if se_pooled == 0.0:
        return Comparison("two_proportion_z", 0.0, 1.0, diff, ci, n)
    statistic = diff / se_pooled
    return Comparison(
        "two_proportion_z", statistic, float(2 * scipy_stats.norm.sf(abs(statistic))), diff, ci, n
    )


def _cluster_totals(values: np.ndarray, clusters: Sequence[Hashable]) -> tuple[np.ndarray, np.ndarray]:
    index: dict[Hashable, int] = {}
    codes = np.fromiter(
        (index.setdefault(c, len(index)) for c in clusters), dtype=np.int64, count=len(clusters)
    )
    sums = np.bincount(codes, weights=values, minlength=len(index))
    counts = np.bincount(codes, minlength=len(index)).astype(np.float64)
    return sums, counts


def _resampled_means(
    sums: np.ndarray, counts: np.ndarray, n_resamples: int, rng: np.random.Generator
) -> np.ndarray:
    k = sums.size
    means = np.empty(n_resamples, dtype=np.float64)
    chunk = max(1, 2_000_000 // max(k, 1))  # bounds memory at ~16 MB of indices per chunk
    for start in range(0, n_resamples, chunk):
        stop = min(n_resamples, start + chunk)
        picks = rng.integers(0, k, size=(stop - start, k))
        means[start:stop] = sums[picks].sum(axis=1) / counts[picks].sum(axis=1)
    return means


def bootstrap_mean_difference(
    a: Sequence[float],
    b: Sequence[float],
    *,
    clusters_a: Sequence[Hashable] | None = None,
    clusters_b: Sequence[Hashable] | None = None,
    n_resamples: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
) -> Comparison:
    """Percentile bootstrap interval of mean(a) - mean(b), resampling whole clusters (units)
    within each arm, so rows of one sticky client move together. Without clusters each row is its
    own cluster. Seeded: the same inputs give the same interval. The p-value is the two-sided
    bootstrap share of resampled differences on the far side of 0."""
    x, y = _floats(a), _floats(b)
    n = int(min(x.size, y.size))
    if x.size == 0 or y.size == 0:
        return Comparison("bootstrap_clustered", None, None, None, None, n)
    rng = np.random.default_rng(seed)
    sums_a, counts_a = _cluster_totals(x, clusters_a if clusters_a is not None else range(x.size))
    sums_b, counts_b = _cluster_totals(y, clusters_b if clusters_b is not None else range(y.size))
    differences = _resampled_means(sums_a, counts_a, n_resamples, rng) - _resampled_means(
        sums_b, counts_b, n_resamples, rng
    )
    tail = (1 - confidence) / 2
    low, high = np.quantile(differences, [tail, 1 - tail])
    below, above = float(np.mean(differences <= 0)), float(np.mean(differences >= 0))
    p_value = min(1.0, 2 * min(below, above))
    diff = float(x.mean() - y.mean())
    return Comparison("bootstrap_clustered", diff, p_value, diff, _interval(low, high), n)


def non_inferiority_paired(
    candidate: Sequence[float],
    control: Sequence[float],
    *,
    delta: float,
    alpha: float,
    lag: int | None = None,
) -> NonInferiority:
    """Non-inferiority of the candidate's loss on the same rows as the control's: the one-sided
    (1 - alpha) upper bound of mean(candidate - control), with the Diebold-Mariano standard error."""
    a, b = _floats(candidate), _floats(control)
    if a.shape != b.shape:
        raise ValueError("paired samples must have the same length")
    if a.size < 2:
        return NonInferiority(None, None, delta, alpha, int(a.size), False, "paired")
    mean, se, n, _ = _dm_parts(a - b, lag)
    if not math.isfinite(se):
        return NonInferiority(mean, None, delta, alpha, n, False, "paired")
    upper = mean + float(scipy_stats.t.ppf(1 - alpha, n - 1)) * se
    return NonInferiority(mean, upper, delta, alpha, n, upper <= delta, "paired")


def non_inferiority_unpaired(
    candidate: Sequence[float], control: Sequence[float], *, delta: float, alpha: float
) -> NonInferiority:
    """Non-inferiority of the candidate's loss against another arm's: the one-sided (1 - alpha) upper
    bound of mean(candidate) - mean(control) with Welch's standard error and degrees of freedom."""
    x, y = _floats(candidate), _floats(control)
    n = int(min(x.size, y.size))
    if x.size < 2 or y.size < 2:
        return NonInferiority(None, None, delta, alpha, n, False, "unpaired")
    diff = float(x.mean() - y.mean())
    vx, vy = float(x.var(ddof=1)) / x.size, float(y.var(ddof=1)) / y.size
    se = math.sqrt(vx + vy)
    if se == 0.0:
        return NonInferiority(diff, diff, delta, alpha, n, diff <= delta, "unpaired")
    df = (vx + vy) ** 2 / (vx * vx / (x.size - 1) + vy * vy / (y.size - 1))
    upper = diff + float(scipy_stats.t.ppf(1 - alpha, df)) * se
    return NonInferiority(diff, upper, delta, alpha, n, upper <= delta, "unpaired")


def label_psi(current: Mapping[str, int], reference: Mapping[str, int]) -> float | None:
    """Population stability index of two label distributions (counts): Σ (c - r)·ln(c/r) over
    every label seen in either, with a zero share replaced by ``PSI_FLOOR``. ``None`` when either
    side is empty."""
    total_c, total_r = sum(current.values()), sum(reference.values())
    if total_c <= 0 or total_r <= 0:
        return None
    psi = 0.0
    for label in sorted(set(current) | set(reference)):
        c = current.get(label, 0) / total_c or PSI_FLOOR
        r = reference.get(label, 0) / total_r or PSI_FLOOR
        psi += (c - r) * math.log(c / r)
    return psi
