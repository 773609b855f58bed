"""Market regimes from a Gaussian hidden Markov model over returns and volatility.

The model is fitted with ``hmmlearn`` on one observation per bar: the 1-bar log
return and the rolling standard deviation of those returns, both standardised
with the training bars' mean and spread. Its hidden states are named by their
mean return: the lowest is ``bear``, the highest ``bull``, any in between
``sideways``. The fitted parameters are stored as plain JSON (never pickled) and
the model is rebuilt from them.

Serving only ever *filters*: the posterior at bar ``t`` is the forward
algorithm's, which reads bars up to ``t`` and nothing after. hmmlearn's own
``predict_proba`` smooths with the backward pass, which looks ahead, so it is
used in tests only, where the last bar's smoothed and filtered posteriors agree.

Entropy is the Shannon entropy of the regime probabilities divided by
``log(3)``, so 0 means one regime is certain and 1 means all three are equally
likely.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
from numpy.lib.stride_tricks import sliding_window_view

REGIMES = ("bull", "bear", "sideways")
FloatArray = npt.NDArray[np.float64]
FORMAT_VERSION = 1


@dataclass(frozen=True, slots=True)
class RegimeProbabilities:
    """Filtered probabilities of each regime at one bar, and their normalised entropy."""

    bull: float
    bear: float
    sideways: float
    entropy: float

    @classmethod
    def from_probabilities(cls, bull: float, bear: float, sideways: float) -> RegimeProbabilities:
        total = bull + bear + sideways
        values = [bull / total, bear / total, sideways / total]
        entropy = -sum(p * math.log(p) for p in values if p > 0) / math.log(len(REGIMES))
        return cls(values[0], values[1], values[2], min(1.0, max(0.0, entropy)))

    def as_dict(self) -> dict[str, float]:
        return {"bull": self.bull, "bear": self.bear, "sideways": self.sideways, "entropy": self.entropy}

    def most_likely(self) -> str:
        weights = {"bull": self.bull, "bear": self.bear, "sideways": self.sideways}
        return max(REGIMES, key=lambda regime: weights[regime])


def observations(bars: pd.DataFrame, volatility_window: int) -> pd.DataFrame:
    """Return and rolling volatility per bar; the first ``volatility_window`` bars have none."""
    returns = np.log(bars["close"] / bars["close"].shift(1))
    volatility = returns.rolling(volatility_window).std()
    return pd.DataFrame({"ret": returns, "vol": volatility}, index=bars.index).dropna()


@dataclass(frozen=True)
class RegimeModel:
    """A fitted Gaussian HMM with diagonal covariances, and the regime each state stands for."""

    start_probabilities: FloatArray  # (k,)
    transitions: FloatArray  # (k, k), rows sum to 1
    means: FloatArray  # (k, 2), standardised units
    variances: FloatArray  # (k, 2), standardised units
    scale_mean: FloatArray  # (2,)
    scale_std: FloatArray  # (2,)
    state_regimes: tuple[str, ...]  # (k,)
    volatility_window: int
    trained_at: datetime
    training_bars: int

    def __post_init__(self) -> None:
        states = len(self.start_probabilities)
        shapes = {
            "transitions": (self.transitions.shape, (states, states)),
            "means": (self.means.shape, (states, 2)),
            "variances": (self.variances.shape, (states, 2)),
            "scale_mean": (self.scale_mean.shape, (2,)),
            "scale_std": (self.scale_std.shape, (2,)),
        }
        for name, (actual, expected) in shapes.items():
            if actual != expected:
                raise ValueError(f"regime model {name} has shape {actual}, expected {expected}")
        if len(self.state_regimes) != states or not set(self.state_regimes) <= set(REGIMES):
            raise ValueError(f"state_regimes must name one of {REGIMES} per state: {self.state_regimes}")
        arrays = (self.start_probabilities, self.transitions, self.means, self.variances, self.scale_std)
        if not all(np.isfinite(array).all() for array in arrays):
            raise ValueError("regime model parameters must be finite")
        if (self.variances <= 0).any() or (self.scale_std <= 0).any():
            raise ValueError("regime model variances must be positive")
        rows = np.concatenate([self.start_probabilities[None, :], self.transitions])
        if (rows < 0).any() or not np.allclose(rows.sum(axis=1), 1.0, atol=1e-6):
            raise ValueError("regime model probabilities must be non-negative and sum to 1")
        if self.volatility_window < 2:
            raise ValueError("volatility_window must be at least 2")

    @property
    def lookback_needed(self) -> int:
        """Bars before the first observation: one for the return, the window for the volatility."""
        return self.volatility_window

    def standardised(self, bars: pd.DataFrame) -> FloatArray:
        """``observations`` in numpy (pandas' rolling machinery costs a millisecond a call)."""
        close = bars["close"].to_numpy(np.float64)
        returns = np.diff(np.log(close))
        window = self.volatility_window
        if len(returns) < window:
            return np.empty((0, 2), dtype=np.float64)
        volatility = sliding_window_view(returns, window).std(axis=1, ddof=1)
        raw = np.column_stack((returns[window - 1 :], volatility))
        raw = raw[np.isfinite(raw).all(axis=1)]
        return np.asarray((raw - self.scale_mean) / self.scale_std, dtype=np.float64)

    @cached_property
    def stationary(self) -> FloatArray:
        """The chain's long-run state distribution: the prior for a window that starts mid-series."""
        values, vectors = np.linalg.eig(self.transitions.T)
        vector = np.abs(np.real(vectors[:, int(np.argmin(np.abs(values - 1.0)))]))
        return np.asarray(vector / vector.sum(), dtype=np.float64)

    def filter(self, standardised: FloatArray, prior: FloatArray | None = None) -> FloatArray:
        """Forward-filtered state probabilities ``(T, k)``: row ``t`` reads rows ``0..t`` only.

        ``prior`` is the state distribution before the first row; by default the
        stationary one, since a serving window rarely starts where training did.
        """
        if len(standardised) == 0:
            raise ValueError("no observations to filter")
        log_density = self._log_density(standardised)
        # Rescaling each row by its maximum keeps the densities in range; the forward
        # recursion renormalises every step, so the common factor cancels.
        density_matrix = np.exp(log_density - log_density.max(axis=1, keepdims=True))
        start_vector = self.stationary if prior is None else prior
        compiled = _compiled_forward(start_vector, self.transitions, density_matrix)
        if compiled is not None:
            return compiled
        return self.filter_reference(start_vector, density_matrix)

    def filter_reference(self, start_vector: FloatArray, density_matrix: FloatArray) -> FloatArray:
        """The forward recursion in plain Python: the fallback, and the reference tests compare with."""
        density = density_matrix.tolist()
        start = start_vector.tolist()
        columns = [list(column) for column in zip(*self.transitions.tolist(), strict=True)]
        previous = _normalised([p * d for p, d in zip(start, density[0], strict=True)], density[0])
        filtered = [previous]
        for row in density[1:]:
            predicted = [sum(p * a for p, a in zip(previous, column, strict=True)) for column in columns]
            previous = _normalised([p * d for p, d in zip(predicted, row, strict=True)], row)
            filtered.append(previous)
        return np.asarray(filtered, dtype=np.float64)

    def _log_density(self, x: FloatArray) -> FloatArray:
        squared = (x[:, None, :] - self.means[None, :, :]) ** 2 / self.variances[None, :, :]
        log_norm = np.log(2 * np.pi * self.variances).sum(axis=1)
        return np.asarray(-0.5 * (squared.sum(axis=2) + log_norm[None, :]), dtype=np.float64)

    def regime_probabilities(self, state_probabilities: FloatArray) -> RegimeProbabilities:
        totals = dict.fromkeys(REGIMES, 0.0)
        for regime, probability in zip(self.state_regimes, state_probabilities.tolist(), strict=True):
            totals[regime] += probability
        return RegimeProbabilities.from_probabilities(totals["bull"], totals["bear"], totals["sideways"])

    def posterior(self, bars: pd.DataFrame) -> RegimeProbabilities:
        """The regime probabilities at the last of ``bars``, filtered over all of them."""
        standardised = self.standardised(bars)
        if len(standardised) == 0:
            raise ValueError(f"need more than {self.volatility_window} bars to detect a regime")
        return self.regime_probabilities(self.filter(standardised)[-1])

    def regime_per_bar(self, bars: pd.DataFrame) -> pd.Series:
        """The most likely regime at each bar, filtered (no look-ahead): labels for training."""
        frame = observations(bars, self.volatility_window)
        standardised = (frame.to_numpy(np.float64) - self.scale_mean) / self.scale_std
        filtered = self.filter(np.asarray(standardised, dtype=np.float64))
        regimes = [self.regime_probabilities(row).most_likely() for row in filtered]
        return pd.Series(regimes, index=frame.index, name="regime")

    # -- persistence ------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT_VERSION,
            "kind": "gaussian_hmm_diag",
            "start_probabilities": self.start_probabilities.tolist(),
            "transitions": self.transitions.tolist(),
            "means": self.means.tolist(),
            "variances": self.variances.tolist(),
            "scale_mean": self.scale_mean.tolist(),
            "scale_std": self.scale_std.tolist(),
            "state_regimes": list(self.state_regimes),
            "volatility_window": self.volatility_window,
            "trained_at": self.trained_at.isoformat(),
            "training_bars": self.training_bars,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RegimeModel:
        if data.get("format") != FORMAT_VERSION or data.get("kind") != "gaussian_hmm_diag":
            raise ValueError(f"unsupported regime model format: {data.get('format')}/{data.get('kind')}")

        def array(name: str) -> FloatArray:
            return np.asarray(data[name], dtype=np.float64)

        trained_at = datetime.fromisoformat(str(data["trained_at"]))
        return cls(
            start_probabilities=array("start_probabilities"),
            transitions=array("transitions"),
            means=array("means"),
            variances=array("variances"),
            scale_mean=array("scale_mean"),
            scale_std=array("scale_std"),
            state_regimes=tuple(str(name) for name in data["state_regimes"]),
            volatility_window=int(data["volatility_window"]),
            trained_at=trained_at if trained_at.tzinfo else trained_at.replace(tzinfo=UTC),
            training_bars=int(data["training_bars"]),
        )

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(path.name + ".tmp")
        temporary.write_text(json.dumps(self.to_json(), indent=1), encoding="utf-8")
        temporary.replace(path)

    @classmethod
    def load(cls, path: Path) -> RegimeModel:
        loaded = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(loaded, dict):
            raise ValueError(f"{path} must hold a JSON object")
        return cls.from_json(loaded)


def _compiled_forward(start: FloatArray, transitions: FloatArray, density: FloatArray) -> FloatArray | None:
    """hmmlearn's compiled scaled forward pass (what GaussianHMM itself runs), ~60x faster than
    Python; each row of its lattice is normalised, i.e. the filtered posterior. None when the
    private module is not there or the result is unusable, and the caller falls back."""
    try:
        from hmmlearn import _hmmc
    except ImportError:
        return None
    try:
        _, lattice, _ = _hmmc.forward_scaling(
            np.ascontiguousarray(start), np.ascontiguousarray(transitions), np.ascontiguousarray(density)
        )
    except (ValueError, RuntimeError, ZeroDivisionError):
        return None
    result = np.asarray(lattice, dtype=np.float64)
    return result if np.isfinite(result).all() else None


def _normalised(alpha: list[float], density: list[float]) -> list[float]:
    total = sum(alpha)
    if total > 0 and math.isfinite(total):
        return [value / total for value in alpha]
    # Every state ruled out by the transitions: restart from the emissions alone.
    total = sum(density)
    return [value / total for value in density]


def fit_regime_model(
    bars: pd.DataFrame, *, states: int = 3, volatility_window: int = 10, seed: int = 7, iterations: int = 100
) -> RegimeModel:
    """Fit the HMM on ``bars`` and name its states by mean return (bear < sideways < bull)."""
    from hmmlearn.hmm import GaussianHMM

    if states not in (2, 3):
        raise ValueError("states must be 2 (bear, bull) or 3 (bear, sideways, bull)")
    frame = observations(bars, volatility_window)
    if len(frame) < 50 * states:
        raise ValueError(f"too few bars to fit a regime model: {len(frame)} observations")
    raw = frame.to_numpy(np.float64)
    scale_mean, scale_std = raw.mean(axis=0), raw.std(axis=0)
    if (scale_std <= 0).any():
        raise ValueError("returns or volatility are constant: no regimes to find")
    standardised = (raw - scale_mean) / scale_std
    hmm = GaussianHMM(
        n_components=states, covariance_type="diag", n_iter=iterations, random_state=seed, tol=1e-4
    )
    hmm.fit(standardised)
    order = np.argsort(hmm.means_[:, 0])  # by mean return, lowest first
    names = ("bear", "bull") if states == 2 else ("bear", "sideways", "bull")
    state_regimes = [""] * states
    for rank, state in enumerate(order):
        state_regimes[int(state)] = names[rank]
    transitions = np.asarray(hmm.transmat_, dtype=np.float64)
    # A transition hmmlearn estimated as exactly impossible would make the filter brittle.
    transitions = transitions + 1e-9
    transitions /= transitions.sum(axis=1, keepdims=True)
    start = np.asarray(hmm.startprob_, dtype=np.float64) + 1e-9
    return RegimeModel(
        start_probabilities=start / start.sum(),
        transitions=transitions,
        means=np.asarray(hmm.means_, dtype=np.float64),
        variances=np.asarray([np.diag(c) for c in hmm.covars_], dtype=np.float64),
        scale_mean=np.asarray(scale_mean, dtype=np.float64),
        scale_std=np.asarray(scale_std, dtype=np.float64),
        state_regimes=tuple(state_regimes),
        volatility_window=volatility_window,
        trained_at=datetime.now(UTC),
        training_bars=len(bars),
    )
