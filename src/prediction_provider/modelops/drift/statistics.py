"""Drift statistics of binned counts against a reference profile (design §3.9).

Bins: a numeric series has ``G = bins·subdivision + 1`` grid points ``g₀ = min … g_G-1 = max⁺`` (the
reference's quantiles; ``max⁺`` is the next float above the maximum). ``searchsorted(grid, x,
side="right")`` puts a value in one of ``G + 1`` *fine* bins (0: below the minimum, ``G``: at or
above ``max⁺``); NaN and ±inf go to the *missing* bin, index ``G + 1``. The decile *edges* are every
``subdivision``-th grid point, so the ``bins + 3`` *coarse* bins (below, ``bins`` inside, above,
missing) are sums of fine bins: both come from one counter per fine bin.

PSI, Jensen-Shannon and chi² use the coarse bins; KS and Wasserstein the fine ones. In PSI a
proportion of 0 (reference or current) is replaced by ``PROPORTION_FLOOR`` without renormalizing.
Every figure returned is a Python ``float`` (JSON-ready), never a numpy scalar.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats as scipy_stats
from scipy.spatial.distance import jensenshannon

PROPORTION_FLOOR = 1e-4
METHODS = ("psi", "js", "wasserstein")
# warn / drift defaults; calibration may only raise them.
DEFAULT_THRESHOLDS: dict[str, tuple[float, float]] = {
    "psi": (0.10, 0.25),
    "js": (0.10, 0.20),
    "wasserstein": (0.10, 0.20),
}

Counts = np.ndarray[Any, np.dtype[np.int64]]
Floats = np.ndarray[Any, np.dtype[np.float64]]
Values = Sequence[float] | Sequence[int] | np.ndarray[Any, Any]


def coarse_counts(fine: Values, subdivision: int) -> Counts:
    """``bins + 3`` coarse counts (below, inside…, above, missing) from ``G + 2`` fine counts."""
    fine = np.asarray(fine, dtype=np.int64)
    above = len(fine) - 2  # fine index G: at or above max⁺
    inside = fine[1:above].reshape(-1, subdivision).sum(axis=1)
    return np.concatenate(([fine[0]], inside, [fine[above], fine[-1]])).astype(np.int64)


def proportions(counts: Values) -> Floats:
    counts = np.asarray(counts, dtype=np.float64)
    total = counts.sum()
    return counts / total if total > 0 else np.zeros_like(counts)


def psi(reference: Values, current: Values) -> float:
    """Population stability index Σ (c - r)·ln(c/r) of two proportion vectors, zeros floored."""
    r = np.maximum(np.asarray(reference, dtype=np.float64), PROPORTION_FLOOR)
    c = np.maximum(np.asarray(current, dtype=np.float64), PROPORTION_FLOOR)
    return float(np.sum((c - r) * np.log(c / r)))


def js_distance(reference: Values, current: Values) -> float:
    """Jensen-Shannon distance, base 2, in [0, 1]."""
    r = np.asarray(reference, dtype=np.float64)
    c = np.asarray(current, dtype=np.float64)
    if r.sum() <= 0 or c.sum() <= 0:
        return 0.0
    value = float(jensenshannon(r, c, base=2))
    return value if math.isfinite(value) else 0.0


def fine_cdf(fine: Values) -> Floats:
    """The current distribution's ``F(g_k) = P(x < g_k)`` at each grid point, over finite values."""
    finite: Floats = np.asarray(fine, dtype=np.float64)[:-1]  # without missing
    total = float(finite.sum())
    if total <= 0:
        return np.zeros(len(finite) - 1)
    cdf: Floats = np.cumsum(finite)[:-1] / total
    return cdf


@dataclass(frozen=True, slots=True)
class KsResult:
    statistic: float
    p_value: float


def binned_ks(reference_cdf: Sequence[float], reference_rows: int, fine: Values) -> KsResult:
    """KS D on the grid: the largest |ΔF| at a grid point, under the exact D by at most one grid
    step; p-value from ``kstwo`` with the effective size n·m/(n+m)."""
    current = fine_cdf(fine)
    d = float(np.max(np.abs(np.asarray(reference_cdf, dtype=np.float64) - current))) if len(current) else 0.0
    n = int(np.asarray(fine)[:-1].sum())
    if n <= 0 or reference_rows <= 0:
        return KsResult(d, 1.0)
    effective = max(1, round(n * reference_rows / (n + reference_rows)))
    return KsResult(d, float(min(1.0, max(0.0, scipy_stats.kstwo.sf(d, effective)))))


def binned_wasserstein(
    reference_cdf: Sequence[float], grid: Sequence[float], fine: Values, reference_std: float
) -> float:
    """∫|F_ref - F_cur| over the grid, values spread evenly within each fine bin, ÷ the reference's
    standard deviation. Mass outside [min, max⁺] counts at the grid's ends (a lower bound)."""
    grid_values = np.asarray(grid, dtype=np.float64)
    if len(grid_values) < 2:
        return 0.0
    diff = np.asarray(reference_cdf, dtype=np.float64) - fine_cdf(fine)
    if not np.asarray(fine)[:-1].sum():
        return 0.0
    widths = np.diff(grid_values)
    left, right = diff[:-1], diff[1:]
    same_sign = left * right >= 0
    area_same = (np.abs(left) + np.abs(right)) / 2 * widths
    denominator = np.abs(left) + np.abs(right)
    with np.errstate(divide="ignore", invalid="ignore"):
        area_cross = np.where(denominator > 0, (left**2 + right**2) / (2 * denominator), 0.0) * widths
    area = float(np.sum(np.where(same_sign, area_same, area_cross)))
    scale = reference_std if reference_std > 0 else float(grid_values[-1] - grid_values[0]) or 1.0
    return area / scale


@dataclass(frozen=True, slots=True)
class Chi2Result:
    statistic: float
    p_value: float


def chi2(reference: Values, current: Values) -> Chi2Result:
    """Chi² of the 2 x bins table (reference counts, current counts); empty columns left out."""
    table = np.vstack([np.asarray(reference, dtype=np.float64), np.asarray(current, dtype=np.float64)])
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2 or (table.sum(axis=1) <= 0).any():
        return Chi2Result(0.0, 1.0)
    result = scipy_stats.chi2_contingency(table, correction=False)
    return Chi2Result(float(result.statistic), float(result.pvalue))


def thresholds(method: str, calibration: Sequence[float] | None) -> tuple[float, float]:
    """(warn, drift): the defaults, raised to mean + 2sd / mean + 3sd of the reference chunks."""
    warn, drift = DEFAULT_THRESHOLDS[method]
    if calibration is not None and len(calibration) == 2:
        mean, std = float(calibration[0]), float(calibration[1])
        warn, drift = max(warn, mean + 2 * std), max(drift, mean + 3 * std)
    return warn, max(warn, drift)


def status_of(score: float, warn: float, drift: float) -> str:
    if score >= drift:
        return "drift"
    return "warn" if score >= warn else "ok"
