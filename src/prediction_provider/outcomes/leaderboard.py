"""The leaderboard of design 3.9 as a pure function of score rows: same rows in, same bytes out.

The scorer recomputes the board from score rows after every scoring transaction and a cache serves
the bytes, so :func:`build_leaderboard` sorts its input by ``score_id`` before any arithmetic (float
sums depend on order) and returns a ``digest`` over the canonical JSON of what it ranks. Aggregates
are numpy over per-target columns, so ~100k rows take a fraction of a second.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

import numpy as np
import numpy.typing as npt

from prediction_provider.outcomes.metrics import LOG_LOSS_EPS

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

TARGETS = ("direction", "return", "quantiles", "entry_signal")
GROUPS = ("model", "provider")
HIGHER_IS_BETTER = {"direction": True, "return": True, "quantiles": False, "entry_signal": False}
Z95 = 1.96
ECE_BINS = 10
MIN_CROSS_SECTION = 5  # symbols on one as_of date for a cross-sectional IC
MIN_SHARPE_PERIODS = 20
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_DAY_US = 86_400_000_000


@dataclass(frozen=True, slots=True)
class ScoredRecord:
    """One current, eligible score row with what the board needs to aggregate it.

    ``metrics`` holds the metrics of the requested target only (the dict of ``direction_metrics``,
    ``return_metrics``, ``quantile_metrics`` or ``signal_metrics``); an empty mapping is a flat
    outcome and is excluded. ``context`` carries ``base_rate`` (the symbol's up-frequency over the
    250 bars before ``as_of``), ``last_up`` (the last bar before ``as_of`` rose) and
    ``periods_per_year``. ``price`` is the micro-units paid, ``None`` for a free request.
    """

    score_id: int
    model_name: str
    model_version: str | None
    provider: str | None
    symbol: str
    horizon: int
    as_of: datetime
    target_time: datetime
    scored_at: datetime
    metrics: Mapping[str, Any]
    context: Mapping[str, Any]
    price: int | None = None


def model_key(model_name: str, model_version: str | None) -> str:
    """The ``model`` group key, ``name@version`` (just ``name`` for an unversioned model)."""
    return model_name if model_version is None else f"{model_name}@{model_version}"


def canonical_json(value: Any) -> bytes:
    """Sorted keys, no spaces, floats by repr, non-finite floats as null: the bytes the digest covers."""
    return json.dumps(
        _json_safe(value), sort_keys=True, separators=(",", ":"), allow_nan=False, ensure_ascii=False
    ).encode()


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        number = float(value)
        return number if math.isfinite(number) else None
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    if isinstance(value, Decimal):
        return format(value, "f")
    return value


def _iso(micros: int) -> str:
    return (_EPOCH + timedelta(microseconds=micros)).isoformat()


def _optional(value: Any) -> float:
    return math.nan if value is None else float(value)


# ---- statistics -------------------------------------------------------------------------------


def _mean_ci(values: FloatArray) -> tuple[float | None, list[float] | None]:
    """Mean ± 1.96·sd/√n (sample sd); no interval under two values."""
    if values.size == 0:
        return None, None
    mean = float(values.mean())
    if values.size < 2:
        return mean, None
    half = Z95 * float(values.std(ddof=1)) / math.sqrt(values.size)
    return mean, [mean - half, mean + half]


def _wilson(successes: int, n: int) -> dict[str, Any]:
    """A rate with its Wilson score 95 % interval (sane near 0 and 1, unlike mean ± 1.96·sd)."""
    if n == 0:
        return {"value": None, "ci95": None, "n": 0}
    rate = successes / n
    z2 = Z95 * Z95
    denominator = 1.0 + z2 / n
    centre = (rate + z2 / (2 * n)) / denominator
    half = Z95 / denominator * math.sqrt(rate * (1.0 - rate) / n + z2 / (4 * n * n))
    return {"value": rate, "ci95": [centre - half, centre + half], "n": n}


def _rate(flags: FloatArray) -> dict[str, Any]:
    """Wilson rate of 0/1 flags, NaN (abstention, no call) excluded."""
    decided = flags[~np.isnan(flags)]
    return _wilson(int(decided.sum()), int(decided.size))


def _ece(p: FloatArray, y: FloatArray) -> float | None:
    """Expected calibration error over 10 equal-width bins of p: Σ_b (n_b/n)·|mean y_b - mean p_b|."""
    if p.size == 0:
        return None
    bins = np.minimum(np.floor(p * ECE_BINS).astype(np.int64), ECE_BINS - 1)
    gap = np.bincount(bins, weights=y, minlength=ECE_BINS) - np.bincount(bins, weights=p, minlength=ECE_BINS)
    return float(np.abs(gap).sum() / p.size)


def _average_ranks(x: FloatArray) -> FloatArray:
    order = np.argsort(x, kind="mergesort")
    ordered = x[order]
    starts_run = np.empty(x.size, dtype=bool)
    starts_run[0] = True
    starts_run[1:] = ordered[1:] != ordered[:-1]
    run = np.cumsum(starts_run) - 1
    starts = np.flatnonzero(starts_run)
    lengths = np.diff(np.append(starts, x.size))
    ranks = np.empty(x.size, dtype=np.float64)
    ranks[order] = (starts + (lengths + 1) / 2.0)[run]
    return ranks


def _spearman(x: FloatArray, y: FloatArray) -> float | None:
    """Spearman's rho with average ranks for ties; ``None`` under 3 points or for a constant side."""
    if x.size < 3:
        return None
    rx = _average_ranks(x)
    ry = _average_ranks(y)
    rx -= rx.mean()
    ry -= ry.mean()
    denominator = math.sqrt(float((rx * rx).sum()) * float((ry * ry).sum()))
    return None if denominator == 0.0 else float((rx * ry).sum()) / denominator


def _clipped_log_loss(p: FloatArray, y: FloatArray) -> FloatArray:
    q = np.clip(p, LOG_LOSS_EPS, 1.0 - LOG_LOSS_EPS)
    losses: FloatArray = -(y * np.log(q) + (1.0 - y) * np.log(1.0 - q))
    return losses


def _hits_of(p: FloatArray, y: FloatArray) -> FloatArray:
    hits: FloatArray = ((p > 0.5) == (y == 1.0)).astype(np.float64)
    hits[p == 0.5] = math.nan
    return hits


def _paired(delta: FloatArray) -> dict[str, Any]:
    mean, ci = _mean_ci(delta)
    return {"mean": mean, "ci95": ci}


# ---- columns: one pass over the records, per target ------------------------------------------


def _direction_row(record: ScoredRecord) -> tuple[float, ...]:
    m, c = record.metrics, record.context
    base_rate = float(c["base_rate"])
    if not 0.0 <= base_rate <= 1.0:
        raise ValueError(f"score {record.score_id}: base_rate {base_rate!r} is not in [0, 1]")
    persistence = 0.6 if c["last_up"] else 0.4
    return (float(m["p"]), float(m["y"]), float(m["brier"]), float(m["log_loss"]), base_rate, persistence)


def _return_row(record: ScoredRecord) -> tuple[float, ...]:
    m = record.metrics
    return (
        float(m["expected"]),
        float(m["realized"]),
        float(m["squared_error"]),
        float(m["absolute_error"]),
        _optional(m["sign_hit"]),
        float(m["signal_return"]),
        float(record.context["periods_per_year"]),
    )


def _quantile_row(record: ScoredRecord) -> tuple[float, ...]:
    return (float(record.metrics["pinball"]), _optional(record.metrics.get("covered")))


def _signal_row(record: ScoredRecord) -> tuple[float, ...]:
    m = record.metrics
    hits = [int(v) for k, v in m.items() if k.endswith("_hit")]
    return (1.0 - float(m["accuracy"]), _optional(m.get("brier")), float(sum(hits)), float(len(hits)))


_ROWS: dict[str, tuple[tuple[str, ...], Callable[[ScoredRecord], tuple[float, ...]]]] = {
    "direction": (("p", "y", "brier", "log_loss", "base_rate", "persistence"), _direction_row),
    "return": (("expected", "realized", "se", "ae", "sign_hit", "signal_return", "ppy"), _return_row),
    "quantiles": (("pinball", "covered"), _quantile_row),
    "entry_signal": (("error", "brier", "side_hits", "sides"), _signal_row),
}


@dataclass(frozen=True, slots=True)
class _Columns:
    """Per-record numbers aligned with the kept records (sorted by score_id)."""

    values: dict[str, FloatArray]
    as_of_us: IntArray
    scored_us: IntArray
    symbol: IntArray
    price: IntArray
    paid: npt.NDArray[np.bool_]

    def take(self, idx: IntArray) -> _Columns:
        return _Columns(
            {k: v[idx] for k, v in self.values.items()},
            self.as_of_us[idx],
            self.scored_us[idx],
            self.symbol[idx],
            self.price[idx],
            self.paid[idx],
        )


def _micros_of(moments: list[datetime], what: str, kept: Sequence[ScoredRecord]) -> IntArray:
    """Microseconds since the epoch, vectorized; aware datetimes only (naive ones would read as local).

    ``timestamp()`` is a float, but within a few centuries of 1970 its error is far below half a
    microsecond, so rounding recovers the exact microsecond.
    """
    for moment, record in zip(moments, kept, strict=True):
        if moment.tzinfo is None:
            raise ValueError(f"score {record.score_id}: {what} must be timezone-aware")
    seconds = np.array([moment.timestamp() for moment in moments], dtype=np.float64)
    return np.rint(seconds * 1e6).astype(np.int64)


def _codes(labels: list[str]) -> tuple[list[str], IntArray]:
    """Distinct labels (sorted) and each record's index into them."""
    names = sorted(set(labels))
    index = {name: i for i, name in enumerate(names)}
    return names, np.array([index[label] for label in labels], dtype=np.int64)


def _columns(target: str, kept: Sequence[ScoredRecord]) -> _Columns:
    names, row_of = _ROWS[target]
    try:
        rows = [row_of(record) for record in kept]
    except (KeyError, TypeError, ValueError):
        for record in kept:  # again, one by one, to name the bad score
            try:
                row_of(record)
            except (KeyError, TypeError) as error:
                raise ValueError(
                    f"score {record.score_id}: metrics/context lack {error} for {target}"
                ) from None
        raise
    table = np.array(rows, dtype=np.float64).reshape(len(rows), len(names))
    if not np.isfinite(np.nan_to_num(table, nan=0.0)).all():
        raise ValueError("score metrics must be finite numbers")
    prices = np.array([-1 if r.price is None else int(r.price) for r in kept], dtype=np.int64)
    return _Columns(
        {name: table[:, i] for i, name in enumerate(names)},
        _micros_of([r.as_of for r in kept], "as_of", kept),
        _micros_of([r.scored_at for r in kept], "scored_at", kept),
        _codes([r.symbol for r in kept])[1],
        prices,
        prices >= 0,
    )


# ---- per-target aggregates -------------------------------------------------------------------


def _direction_stats(cols: _Columns) -> dict[str, Any]:
    v = cols.values
    p, y, brier = v["p"], v["y"], v["brier"]
    reference = (v["base_rate"] - y) ** 2
    mean_ref = float(reference.mean())
    # BSS = 1 - mean(brier)/mean(ref) = mean((ref_i - brier_i)/mean(ref)): the per-record brier
    # improvements scaled by the (fixed) mean reference brier, whose mean is the BSS exactly; the
    # interval treats mean(ref) as known and so ignores its own sampling noise.
    if mean_ref > 0.0:
        bss, ci = _mean_ci((reference - brier) / mean_ref)
    else:
        bss, ci = None, None
    return {
        "primary": {"metric": "bss", "value": bss, "ci95": ci},
        "hit_rate": _rate(_hits_of(p, y)),
        "brier": float(brier.mean()),
        "log_loss": float(v["log_loss"].mean()),
        "ece": _ece(p, y),
        "delta_vs_baselines": {
            "coin_flip": _paired(0.25 - brier),
            "base_rate": _paired(reference - brier),
            "persistence": _paired((v["persistence"] - y) ** 2 - brier),
        },
    }


def _information_coefficient(cols: _Columns) -> dict[str, Any]:
    expected, realized = cols.values["expected"], cols.values["realized"]
    days = cols.as_of_us // _DAY_US
    order = np.argsort(days, kind="stable")
    bounds = np.flatnonzero(np.diff(days[order])) + 1
    daily: list[float] = []
    for chunk in np.split(order, bounds):
        if np.unique(cols.symbol[chunk]).size >= MIN_CROSS_SECTION:
            rho = _spearman(expected[chunk], realized[chunk])
            if rho is not None:
                daily.append(rho)
    if daily:
        ics = np.array(daily)
        ic, ci = _mean_ci(ics)
        sd = float(ics.std(ddof=1)) if ics.size >= 2 else 0.0
        icir = float(ics.mean()) / sd if sd > 0.0 else None
        return {"ic": ic, "ci95": ci, "icir": icir, "ic_method": "cross_sectional", "ic_periods": ics.size}
    # Too few symbols per date: one time-series rho, its interval by Fisher's z (no per-record parts).
    rho = _spearman(expected, realized)
    ts_ci = None
    if rho is not None and abs(rho) < 1.0 and expected.size > 3:
        z, half = math.atanh(rho), Z95 / math.sqrt(expected.size - 3)
        ts_ci = [math.tanh(z - half), math.tanh(z + half)]
    return {"ic": rho, "ci95": ts_ci, "icir": None, "ic_method": "time_series", "ic_periods": expected.size}


def _signal_sharpe(cols: _Columns) -> tuple[float | None, int]:
    """Annualized Sharpe of the per-period (per as_of) mean signal return; ``None`` under 20 periods."""
    _, period = np.unique(cols.as_of_us, return_inverse=True)
    counts = np.bincount(period)
    returns = np.bincount(period, weights=cols.values["signal_return"]) / counts
    if returns.size < MIN_SHARPE_PERIODS:
        return None, int(returns.size)
    sd = float(returns.std(ddof=1))
    if sd == 0.0:
        return None, int(returns.size)
    periods_per_year = float(np.median(cols.values["ppy"]))
    return float(returns.mean()) / sd * math.sqrt(periods_per_year), int(returns.size)


def _return_stats(cols: _Columns) -> dict[str, Any]:
    v = cols.values
    ic = _information_coefficient(cols)
    sharpe, periods = _signal_sharpe(cols)
    return {
        "primary": {"metric": "ic", "value": ic["ic"], "ci95": ic["ci95"]},
        "hit_rate": _rate(v["sign_hit"]),
        "ic": ic["ic"],
        "icir": ic["icir"],
        "ic_method": ic["ic_method"],
        "ic_periods": ic["ic_periods"],
        "squared_error": float(v["se"].mean()),
        "absolute_error": float(v["ae"].mean()),
        "signal_sharpe": sharpe,
        "sharpe_periods": periods,
        "delta_vs_baselines": {"zero_return": _paired(v["realized"] ** 2 - v["se"])},
    }


def _quantile_stats(cols: _Columns) -> dict[str, Any]:
    value, ci = _mean_ci(cols.values["pinball"])
    return {
        "primary": {"metric": "pinball", "value": value, "ci95": ci},
        "coverage": _rate(cols.values["covered"]),
    }


def _signal_stats(cols: _Columns) -> dict[str, Any]:
    v = cols.values
    error, brier = v["error"], v["brier"]
    # Brier only when every record carries confidences: mixing Brier and error rates in one mean
    # would compare different scales.
    if not np.isnan(brier).any():
        metric, contribution, coin_flip = "brier", brier, 0.25
    else:
        metric, contribution, coin_flip = "error_rate", error, 0.5
    value, ci = _mean_ci(contribution)
    known = brier[~np.isnan(brier)]
    return {
        "primary": {"metric": metric, "value": value, "ci95": ci},
        "hit_rate": _wilson(int(v["side_hits"].sum()), int(v["sides"].sum())),
        "accuracy": float(1.0 - error.mean()),
        "brier": float(known.mean()) if known.size else None,
        "delta_vs_baselines": {"coin_flip": _paired(coin_flip - contribution)},
    }


_STATS: dict[str, Callable[[_Columns], dict[str, Any]]] = {
    "direction": _direction_stats,
    "return": _return_stats,
    "quantiles": _quantile_stats,
    "entry_signal": _signal_stats,
}


def _baselines(target: str, cols: _Columns) -> dict[str, Any]:
    """The reference forecasters' own metrics over every record of the call, unranked."""
    n = int(cols.as_of_us.size)
    if n == 0:
        return {}
    v = cols.values
    if target == "direction":
        y = v["y"]
        mean_ref = float(((v["base_rate"] - y) ** 2).mean())
        out: dict[str, Any] = {}
        forecasts = {
            "coin_flip": np.full(n, 0.5),
            "base_rate": v["base_rate"],
            "persistence": v["persistence"],
        }
        for name, p in forecasts.items():
            brier = float(((p - y) ** 2).mean())
            out[name] = {
                "n": n,
                "brier": brier,
                "log_loss": float(_clipped_log_loss(p, y).mean()),
                "bss": 1.0 - brier / mean_ref if mean_ref > 0.0 else None,
                "hit_rate": _rate(_hits_of(p, y)),
                "ece": _ece(p, y),
            }
        return out
    if target == "return":
        r = v["realized"]
        return {
            "zero_return": {
                "n": n,
                "squared_error": float((r * r).mean()),
                "absolute_error": float(np.abs(r).mean()),
                "ic": None,
                "signal_sharpe": None,
            }
        }
    if target == "entry_signal":
        return {"coin_flip": {"n": n, "brier": 0.25, "error_rate": 0.5}}
    return {}  # quantiles: no reference distribution is defined by the design


# ---- the board -------------------------------------------------------------------------------


def _avg_price(cols: _Columns) -> str | None:
    """Mean price of the paid records, in currency units (micro-units / 10^6) as a decimal string."""
    paid = cols.price[cols.paid]
    if paid.size == 0:
        return None
    mean_micros = (Decimal(int(paid.sum())) / Decimal(int(paid.size))).quantize(
        Decimal("0.01"), rounding=ROUND_HALF_EVEN
    )
    return format(mean_micros.scaleb(-6).normalize(), "f")


def _entry(
    key: str,
    last: ScoredRecord,
    models: list[str],
    cols: _Columns,
    target: str,
    group: str,
    fill: float | None,
) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "key": key,
        "model_name": last.model_name if group == "model" else None,
        "model_version": last.model_version if group == "model" else None,
        "provider": last.provider,
        "models": models,
        "n": int(cols.as_of_us.size),
        "days": int(np.unique(cols.as_of_us // _DAY_US).size),
        "rank": None,
        "provisional_reason": None,
        "hit_rate": None,
        "brier": None,
        "log_loss": None,
        "ece": None,
        "ic": None,
        "icir": None,
        "signal_sharpe": None,
        "fill_rate": fill,
        "avg_price": _avg_price(cols),
        "first_scored_at": _iso(int(cols.scored_us.min())),
        "scores_through": _iso(int(cols.scored_us.max())),
    }
    entry.update(_STATS[target](cols))
    return entry


def _provisional_reason(entry: dict[str, Any], min_n: int, min_days: int) -> str | None:
    if entry["n"] < min_n:
        return f"n {entry['n']} < min_n {min_n}"
    if entry["days"] < min_days:
        return f"days {entry['days']} < min_days {min_days}"
    value = entry["primary"]["value"]
    if value is None or not math.isfinite(value):
        return "primary metric undefined"
    return None


def build_leaderboard(
    records: Sequence[ScoredRecord],
    *,
    target: str,
    group: str = "model",
    min_n: int = 30,
    min_days: int = 5,
    fill_rates: Mapping[str, float | None] | None = None,
) -> dict[str, Any]:
    """Rank groups of score rows by the target's primary metric (design 3.9); pure and byte-stable.

    ``group="model"`` keys entries by ``name@version``; ``"provider"`` pools every record of a
    provider's models (weighted by prediction, never averaging ranks) and leaves out records without
    a provider. Entries under ``min_n`` records or ``min_days`` distinct as_of UTC dates (or with an
    undefined primary metric) are listed in ``provisional`` with ``rank`` None. Ties break by higher
    n, then earlier first score, then key. Paired ``delta_vs_baselines`` are baseline loss minus the
    entry's loss per record (positive: the entry beats the baseline). ``baselines`` are computed over
    all records of the call. ``scores_through`` is the latest ``scored_at`` given (flat ones too).
    """
    if target not in TARGETS:
        raise ValueError(f"target must be one of {TARGETS}, got {target!r}")
    if group not in GROUPS:
        raise ValueError(f"group must be one of {GROUPS}, got {group!r}")
    if min_n < 0 or min_days < 0:
        raise ValueError("min_n and min_days must not be negative")
    ordered = sorted(records, key=lambda r: r.score_id)
    if any(a.score_id == b.score_id for a, b in itertools.pairwise(ordered)):
        raise ValueError("score_id must be unique among the records")
    kept = [r for r in ordered if r.metrics]
    cols = _columns(target, kept)
    model_names, model_code = _codes([model_key(r.model_name, r.model_version) for r in kept])
    if group == "model":
        names, code = model_names, model_code
    else:
        names, _ = _codes([r.provider for r in kept if r.provider is not None])
        index = {name: i for i, name in enumerate(names)}
        code = np.array([-1 if r.provider is None else index[r.provider] for r in kept], dtype=np.int64)
    by_group = np.argsort(code, kind="stable")  # stable: each group's records stay in score_id order
    bounds = np.searchsorted(code[by_group], np.arange(len(names) + 1))
    ranked: list[dict[str, Any]] = []
    provisional: list[dict[str, Any]] = []
    for k, key in enumerate(names):
        idx = by_group[bounds[k] : bounds[k + 1]]
        models = [model_names[c] for c in np.unique(model_code[idx])]
        fill = None if fill_rates is None else fill_rates.get(key)
        entry = _entry(key, kept[int(idx[-1])], models, cols.take(idx), target, group, fill)
        entry["provisional_reason"] = _provisional_reason(entry, min_n, min_days)
        (ranked if entry["provisional_reason"] is None else provisional).append(entry)
    sign = -1.0 if HIGHER_IS_BETTER[target] else 1.0

    def order(entry: dict[str, Any]) -> tuple[Any, ...]:
        value = entry["primary"]["value"]
        missing = value is None or not math.isfinite(value)
        return (
            missing,
            0.0 if missing else sign * value,
            -entry["n"],
            entry["first_scored_at"],
            entry["key"],
        )

    ranked.sort(key=order)
    provisional.sort(key=order)
    for rank, entry in enumerate(ranked, start=1):
        entry["rank"] = rank
    body = _json_safe({"entries": ranked, "provisional": provisional, "baselines": _baselines(target, cols)})
    excluded = [r for r in ordered if not r.metrics]
    scored = np.concatenate(
        [cols.scored_us, _micros_of([r.scored_at for r in excluded], "scored_at", excluded)]
    )
    return {
        "target": target,
        "group": group,
        "min_n": min_n,
        "min_days": min_days,
        **body,
        "n_records": len(kept),
        "n_excluded": len(ordered) - len(kept),
        "scores_through": _iso(int(scored.max())) if scored.size else None,
        "digest": hashlib.sha256(canonical_json(body)).hexdigest(),
    }
