"""An experiment's results over the shared records (outcomes design §3.10) and the canary
controller's window figures (design §3.6).

What is read: the experiment's primary ``prediction_records`` (forced rows left out: a forced
variant is a debugging tool, not a sample), each joined to its current scored
``prediction_scores`` row (an outcome reported through ``POST /outcomes`` or resolved from the
market), and its ``shadow_records`` paired with the primary by ``(request_id, row)``.

Rules every figure follows:

- A request counts once however many rows it had; it is an **error** when its primary call
  failed, timed out or was rejected, or when a fallback (or the prior) served it: a breaker must
  never hide a bad candidate. Latency is the model call time of answered or failed calls
  (rejected and dropped calls never ran).
- A variant's **quality** (accuracy, log loss, Brier, realized return) is judged on the answers its
  own model gave (status ok, served by the primary), never on a fallback's.
- Per-row outcome metrics are recomputed from the realized label for primary and shadow answers
  alike, so a pair is judged by one formula: hit = label equals the outcome; log loss
  -ln p(outcome) with p clipped to [1e-15, 1 - 1e-15]; Brier Σ_k (p_k - [k = outcome])².
- **De-duplication**: rows sharing an ``outcome_key`` (clients asking about one bar) are one
  observation per variant, their values averaged; a row without a key is its own observation.
  Observations are time-ordered (first row) for the Diebold-Mariano test and clustered by unit
  for the bootstrap.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
from sqlalchemy import and_, select
from sqlalchemy.orm import Session

from prediction_provider.db.modelops_models import Experiment, ShadowRecord
from prediction_provider.db.models import PredictionRecord
from prediction_provider.db.outcome_models import PredictionScore
from prediction_provider.modelops import stats
from prediction_provider.modelops.canary import VariantWindow

LOG_LOSS_CLIP = 1e-15
DEFAULT_MIN_OUTCOMES = 500
OUTCOME_METRICS = ("accuracy", "log_loss", "brier")
SIGNIFICANCE = 0.05
BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0
_UP = frozenset({"up", "buy", "long"})
_DOWN = frozenset({"down", "sell", "short"})


@dataclass(frozen=True, slots=True)
class _Primary:
    request_id: str
    row: int
    created_at: datetime
    variant: str | None
    status: str
    served_by: str
    latency_ms: float | None
    label: str | None
    probabilities: dict[str, float] | None
    value: float | None
    unit_hash: str | None
    outcome_key: str | None
    model_name: str
    model_version: str | None
    forced: bool
    realized_label: str | None
    realized_return: float | None

    @property
    def own_answer(self) -> bool:
        return self.status == "ok" and self.served_by == "primary"

    @property
    def failed(self) -> bool:
        return self.status != "ok" or self.served_by != "primary"

    @property
    def key(self) -> str:
        return self.outcome_key or f"{self.request_id}|{self.row}"

    @property
    def cluster(self) -> str:
        return self.unit_hash or self.key


@dataclass(frozen=True, slots=True)
class _Shadow:
    request_id: str
    row: int
    created_at: datetime
    variant: str | None
    shadow_of: str
    target: str
    model_name: str
    model_version: str | None
    label: str | None
    probabilities: dict[str, float] | None
    status: str
    latency_ms: float | None


@dataclass(frozen=True, slots=True)
class _Pair:
    """A challenger's and a baseline's answers to one row (``a`` - ``b`` in every difference)."""

    primary: _Primary
    a_label: str | None
    a_probabilities: dict[str, float] | None
    b_label: str | None
    b_probabilities: dict[str, float] | None


@dataclass(slots=True)
class _Observation:
    """One outcome key's values, averaged over its rows."""

    first: datetime
    cluster: str
    values: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))

    def mean(self, metric: str) -> float | None:
        values = self.values.get(metric)
        return math.fsum(values) / len(values) if values else None


# -- loading ----------------------------------------------------------------------------------


_PRIMARY_COLUMNS = (
    "request_id", "row", "created_at", "variant", "status", "served_by", "latency_ms", "label",
    "probabilities", "value", "unit_hash", "outcome_key", "model_name", "model_version", "forced",
)  # fmt: skip
_SHADOW_COLUMNS = (
    "request_id", "row", "created_at", "variant", "shadow_of", "target", "model_name",
    "model_version", "label", "probabilities", "status", "latency_ms",
)  # fmt: skip


def _primaries(session: Session, name: str, since: datetime | None, until: datetime | None) -> list[_Primary]:
    record, score = PredictionRecord, PredictionScore
    columns = [getattr(record, column) for column in _PRIMARY_COLUMNS]
    query = (
        select(*columns, score.realized_label, score.realized_return)
        .outerjoin(
            score,
            and_(
                score.request_id == record.request_id,
                score.row == record.row,
                score.current.is_(True),
                score.status == "scored",
            ),
        )
        .where(record.experiment == name, record.role == "primary")
        .order_by(record.created_at, record.request_id, record.row)
    )
    if since is not None:
        query = query.where(record.created_at >= since)
    if until is not None:
        query = query.where(record.created_at < until)
    return [_Primary(**row._asdict()) for row in session.execute(query)]


def _shadows(session: Session, name: str, since: datetime | None, until: datetime | None) -> list[_Shadow]:
    shadow = ShadowRecord
    query = (
        select(*[getattr(shadow, column) for column in _SHADOW_COLUMNS])
        .where(shadow.experiment == name)
        .order_by(shadow.created_at, shadow.request_id, shadow.row)
    )
    if since is not None:
        query = query.where(shadow.created_at >= since)
    if until is not None:
        query = query.where(shadow.created_at < until)
    return [_Shadow(**row._asdict()) for row in session.execute(query)]


# -- per-row figures --------------------------------------------------------------------------


def row_scores(
    label: str | None, probabilities: Mapping[str, float] | None, realized_label: str | None
) -> dict[str, float]:
    """Hit (accuracy), log loss and Brier of one answer against its realized label; only what
    the answer allows (no probabilities: hit only)."""
    if realized_label is None:
        return {}
    scores: dict[str, float] = {}
    if label is not None:
        scores["accuracy"] = float(str(label) == realized_label)
    if probabilities:
        p = float(probabilities.get(realized_label, 0.0))
        scores["log_loss"] = -math.log(min(max(p, LOG_LOSS_CLIP), 1.0 - LOG_LOSS_CLIP))
        brier = math.fsum(
            (float(q) - (1.0 if str(k) == realized_label else 0.0)) ** 2 for k, q in probabilities.items()
        )
        scores["brier"] = brier + (0.0 if realized_label in probabilities else 1.0)
    return scores


def total_variation(p: Mapping[str, float], q: Mapping[str, float]) -> float:
    """½·Σ_k |p_k - q_k| over the classes of either answer, in [0, 1]."""
    return 0.5 * math.fsum(abs(float(p.get(k, 0.0)) - float(q.get(k, 0.0))) for k in set(p) | set(q))


def _signal(label: str | None, value: float | None) -> int | None:
    if value is not None and math.isfinite(value):
        return (value > 0) - (value < 0)
    if label is None:
        return None
    text = str(label).lower()
    return 1 if text in _UP else -1 if text in _DOWN else 0 if text in ("flat", "hold") else None


def _percentiles(values: Sequence[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p95": None, "p99": None}
    p50, p95, p99 = np.percentile(np.asarray(values, dtype=np.float64), [50, 95, 99])
    return {"p50": float(p50), "p95": float(p95), "p99": float(p99)}


def _mean(values: Iterable[float | None]) -> float | None:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return math.fsum(finite) / len(finite) if finite else None


def _rate(part: int, whole: int) -> float | None:
    return part / whole if whole else None


# -- aggregation ------------------------------------------------------------------------------


def _traffic(rows: Sequence[_Primary]) -> dict[str, Any]:
    """Requests (each once), errors, fallbacks and per-request model call time."""
    by_request: dict[str, list[_Primary]] = defaultdict(list)
    for row in rows:
        by_request[row.request_id].append(row)
    errors = fallbacks = 0
    latencies: list[float] = []
    for request_rows in by_request.values():
        errors += any(r.failed for r in request_rows)
        fallbacks += any(r.served_by != "primary" for r in request_rows)
        ran = [
            r.latency_ms
            for r in request_rows
            if r.latency_ms is not None and r.status not in ("rejected", "dropped")
        ]
        if ran:
            latencies.append(max(ran))
    requests = len(by_request)
    return {
        "requests": requests,
        "rows": len(rows),
        "errors": errors,
        "error_rate": _rate(errors, requests),
        "fallbacks": fallbacks,
        "fallback_rate": _rate(fallbacks, requests),
        "latency_ms": _percentiles(latencies),
    }


def _observations(items: Iterable[tuple[_Primary, Mapping[str, float]]]) -> list[_Observation]:
    """Rows grouped by outcome key, time-ordered by each key's first row."""
    grouped: dict[str, _Observation] = {}
    for primary, values in items:
        if not values:
            continue
        observation = grouped.get(primary.key)
        if observation is None:
            observation = grouped[primary.key] = _Observation(primary.created_at, primary.cluster)
        for metric, value in values.items():
            observation.values[metric].append(value)
    return sorted(grouped.values(), key=lambda o: o.first)


def _series(observations: Sequence[_Observation], metric: str) -> tuple[list[float], list[str]]:
    values: list[float] = []
    clusters: list[str] = []
    for observation in observations:
        value = observation.mean(metric)
        if value is not None:
            values.append(value)
            clusters.append(observation.cluster)
    return values, clusters


def _own_observations(rows: Sequence[_Primary]) -> list[_Observation]:
    def items() -> Iterable[tuple[_Primary, dict[str, float]]]:
        for row in rows:
            if not row.own_answer:
                continue
            values = row_scores(row.label, row.probabilities, row.realized_label)
            signal = _signal(row.label, row.value)
            if signal is not None and row.realized_return is not None:
                values["realized_return"] = signal * row.realized_return
            yield row, values

    return _observations(items())


def _quality(observations: Sequence[_Observation]) -> dict[str, Any]:
    scored = [o for o in observations if any(m in o.values for m in OUTCOME_METRICS)]
    quality: dict[str, Any] = {"outcomes": len(scored)}
    for metric in (*OUTCOME_METRICS, "realized_return"):
        quality[metric] = _mean(o.mean(metric) for o in observations)
    return quality


def _paired_observations(pairs: Sequence[_Pair]) -> list[_Observation]:
    """Per key, the mean of a's and b's values on the rows where both have the metric."""

    def items() -> Iterable[tuple[_Primary, dict[str, float]]]:
        for pair in pairs:
            realized = pair.primary.realized_label
            a = row_scores(pair.a_label, pair.a_probabilities, realized)
            b = row_scores(pair.b_label, pair.b_probabilities, realized)
            both = {f"a:{m}": a[m] for m in a if m in b} | {f"b:{m}": b[m] for m in b if m in a}
            yield pair.primary, both

    return _observations(items())


def _paired_series(observations: Sequence[_Observation], metric: str) -> tuple[list[float], list[float]]:
    a: list[float] = []
    b: list[float] = []
    for observation in observations:
        va, vb = observation.mean(f"a:{metric}"), observation.mean(f"b:{metric}")
        if va is not None and vb is not None:
            a.append(va)
            b.append(vb)
    return a, b


def _agreement(pairs: Sequence[_Pair]) -> tuple[int, float | None, float | None]:
    labelled = [p for p in pairs if p.a_label is not None and p.b_label is not None]
    agreement = _rate(sum(str(p.a_label) == str(p.b_label) for p in labelled), len(labelled))
    tv = _mean(
        total_variation(p.a_probabilities, p.b_probabilities)
        for p in pairs
        if p.a_probabilities and p.b_probabilities
    )
    return len(pairs), agreement, tv


def _comparison(
    a: str, b: str, metric: str, design: str, result: stats.Comparison, min_n: int, **extra: Any
) -> dict[str, Any]:
    return {
        "a": a,
        "b": b,
        "metric": metric,
        "design": design,
        "test": result.test,
        "statistic": _finite(result.statistic),
        "p_value": result.p_value,
        "diff": result.diff,
        "ci": None if result.ci is None else [result.ci[0], result.ci[1]],
        "n": result.n,
        "min_n": min_n,
        "significant": result.p_value is not None and result.p_value < SIGNIFICANCE,
        "final": result.n >= min_n,
        **extra,
    }


def _finite(value: float | None) -> float | None:
    return value if value is None or math.isfinite(value) else None


def _paired_tests(a: str, b: str, pairs: Sequence[_Pair], min_n: int) -> list[dict[str, Any]]:
    """McNemar on hit/miss, Diebold-Mariano on log loss and Brier, over pairs where both answered."""
    observations = _paired_observations(pairs)
    tests: list[dict[str, Any]] = []
    for metric in OUTCOME_METRICS:
        va, vb = _paired_series(observations, metric)
        if not va:
            continue
        if metric == "accuracy":
            # Averaged keys become a majority hit; a key split evenly says nothing and is left out.
            kept = [(x, y) for x, y in zip(va, vb, strict=True) if x != 0.5 and y != 0.5]
            result = stats.mcnemar_exact([round(x) for x, _ in kept], [round(y) for _, y in kept])
        else:
            result = stats.diebold_mariano(va, vb)
        tests.append(_comparison(a, b, metric, "paired", result, min_n))
    return tests


def _unpaired_tests(
    a: str, b: str, obs_a: Sequence[_Observation], obs_b: Sequence[_Observation], min_n: int
) -> list[dict[str, Any]]:
    """Two-proportion z (accuracy) or Welch t (losses) for the p-value; the interval from a
    bootstrap that resamples units (clusters) within each arm."""
    tests: list[dict[str, Any]] = []
    for metric in OUTCOME_METRICS:
        (va, ca), (vb, cb) = _series(obs_a, metric), _series(obs_b, metric)
        if not va or not vb:
            continue
        test = stats.two_proportion_z(va, vb) if metric == "accuracy" else stats.welch_t(va, vb)
        boot = stats.bootstrap_mean_difference(
            va, vb, clusters_a=ca, clusters_b=cb, n_resamples=BOOTSTRAP_RESAMPLES, seed=BOOTSTRAP_SEED
        )
        result = stats.Comparison(test.test, test.statistic, test.p_value, test.diff, boot.ci, test.n)
        extra = {"ci_method": "bootstrap_clustered", "n_a": len(va), "n_b": len(vb)}
        tests.append(_comparison(a, b, metric, "unpaired", result, min_n, **extra))
    return tests


def _shadow_block(
    kind: str, shadows: Sequence[_Shadow], pairs: Sequence[_Pair], by_key: Mapping[tuple[str, int], _Primary]
) -> dict[str, Any] | None:
    if not shadows:
        return None
    statuses = Counter(s.status for s in shadows)
    n = len(shadows)
    latencies = [s.latency_ms for s in shadows if s.latency_ms is not None and s.status != "dropped"]
    paired_primary = [p.primary.latency_ms for p in pairs if p.primary.latency_ms is not None]
    count, agreement, tv = _agreement(pairs)

    def items() -> Iterable[tuple[_Primary, dict[str, float]]]:
        for s in shadows:
            primary = by_key.get((s.request_id, s.row))
            if s.status == "ok" and primary is not None:
                yield primary, row_scores(s.label, s.probabilities, primary.realized_label)

    return {
        "kind": kind,
        "targets": sorted({s.target for s in shadows}),
        "n": n,
        "ok": statuses.get("ok", 0),
        "error_rate": _rate(statuses.get("error", 0), n),
        "timeout_rate": _rate(statuses.get("timeout", 0), n),
        "drop_rate": _rate(statuses.get("dropped", 0), n),
        "latency_ms": _percentiles(latencies),
        "primary_latency_ms": _percentiles(paired_primary),
        "pairs": count,
        "agreement": agreement,
        "mean_tv": tv,
        **_quality(_observations(items())),
    }


# -- the experiment's view --------------------------------------------------------------------


def _variants(
    experiment: Experiment, seen: Iterable[str | None]
) -> tuple[list[str], str | None, dict[str, Any]]:
    declared = [
        v for v in (experiment.config or {}).get("variants", []) if isinstance(v, dict) and "name" in v
    ]
    names = [str(v["name"]) for v in declared]
    control = next((str(v["name"]) for v in declared if v.get("control")), names[0] if names else None)
    names += sorted({s for s in seen if s is not None and s not in names})
    return names, control, {str(v["name"]): v for v in declared}


def _min_outcomes(experiment: Experiment, override: int | None) -> int:
    if override is not None:
        return override
    config = experiment.config or {}
    if isinstance(config.get("min_outcomes"), int):
        return int(config["min_outcomes"])
    rollout = config.get("rollout") or {}
    found = [
        int(c["min_outcomes"])
        for c in rollout.get("checks", [])
        if isinstance(c, dict)
        and c.get("metric") in OUTCOME_METRICS
        and isinstance(c.get("min_outcomes"), int)
    ]
    return max(found) if found else DEFAULT_MIN_OUTCOMES


def _live(
    primaries: Sequence[_Primary], shadows: Sequence[_Shadow]
) -> tuple[list[_Primary], list[_Shadow], dict[tuple[str, int], _Primary]]:
    """Forced rows out; shadows of forced primaries out with them."""
    forced = {(p.request_id, p.row) for p in primaries if p.forced}
    kept = [p for p in primaries if not p.forced]
    return (
        kept,
        [s for s in shadows if (s.request_id, s.row) not in forced],
        {(p.request_id, p.row): p for p in kept},
    )


def _pairs_of(
    shadows: Iterable[_Shadow], by_key: Mapping[tuple[str, int], _Primary], *, shadow_is_a: bool
) -> list[_Pair]:
    """Pairs where the primary gave its own answer and the shadow answered."""
    pairs: list[_Pair] = []
    for s in shadows:
        primary = by_key.get((s.request_id, s.row))
        if primary is None or not primary.own_answer or s.status != "ok":
            continue
        mine = (s.label, s.probabilities)
        theirs = (primary.label, primary.probabilities)
        a, b = (mine, theirs) if shadow_is_a else (theirs, mine)
        pairs.append(_Pair(primary, a[0], a[1], b[0], b[1]))
    return pairs


def experiment_results(
    session: Session,
    experiment: Experiment,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    min_outcomes: int | None = None,
) -> dict[str, Any]:
    """``GET /experiments/{n}/results``: per variant traffic and quality, the shadow's and the
    control-as-shadow's paired figures, and the comparisons (each ``final`` once n ≥ ``min_n``)."""
    primaries, shadows, by_key = _live(
        _primaries(session, experiment.name, since, until), _shadows(session, experiment.name, since, until)
    )
    names, control, declared = _variants(experiment, (p.variant for p in primaries))
    min_n = _min_outcomes(experiment, min_outcomes)
    rows_of: dict[str | None, list[_Primary]] = defaultdict(list)
    for primary in primaries:
        rows_of[primary.variant].append(primary)
    observations = {name: _own_observations(rows_of[name]) for name in names}
    variants = [
        {
            "name": name,
            "control": name == control,
            "target": declared.get(name, {}).get("target"),
            "weight_bp": (experiment.weights or {}).get(name),
            **_traffic(rows_of[name]),
            **_quality(observations[name]),
        }
        for name in names
    ]
    comparisons: list[dict[str, Any]] = []
    for name in names:
        if name != control and control is not None:
            comparisons += _unpaired_tests(name, control, observations[name], observations[control], min_n)
    mirrored = [s for s in shadows if s.shadow_of == "shadow"]
    controls = [s for s in shadows if s.shadow_of == "control"]
    shadow_pairs = _pairs_of(mirrored, by_key, shadow_is_a=True)
    control_pairs = _pairs_of(controls, by_key, shadow_is_a=False)
    for name in names:
        comparisons += _paired_tests(
            "shadow", name, [p for p in shadow_pairs if p.primary.variant == name], min_n
        )
        if control is not None and name != control:
            comparisons += _paired_tests(
                name, control, [p for p in control_pairs if p.primary.variant == name], min_n
            )
    return {
        "experiment": experiment.name,
        "state": experiment.state,
        "since": None if since is None else since.isoformat(),
        "until": None if until is None else until.isoformat(),
        "min_n": min_n,
        "variants": variants,
        "shadow": _shadow_block("shadow", mirrored, shadow_pairs, by_key),
        "compare_with_control": _shadow_block("control", controls, control_pairs, by_key),
        "comparisons": comparisons,
    }


# -- the canary controller's window -----------------------------------------------------------


def _is_variant(experiment: Experiment, name: str, declared: Mapping[str, Any], s: _Shadow) -> bool:
    """Whether a shadow answer came from this variant's target: its declared target, its frozen
    reference, or the model version it was frozen to when the experiment started."""
    frozen = (experiment.resolved or {}).get(name)
    targets = {str(declared.get(name, {}).get("target"))}
    if isinstance(frozen, str):
        targets.add(frozen)
    elif isinstance(frozen, dict):
        targets |= {str(frozen[k]) for k in ("target", "reference") if frozen.get(k)}
        if frozen.get("name") and (s.model_name, s.model_version) == (frozen["name"], frozen.get("version")):
            return True
    return s.target in targets


def window_stats(
    session: Session, experiment: Experiment, since: datetime, *, outcomes_since: datetime | None = None
) -> dict[str, VariantWindow]:
    """Each variant's figures over the records since ``since`` (the current step's start).

    A non-control variant's paired figures and PSI are against the control: its own answers
    against the control run as a shadow on its traffic (``compare_with_control``), and the
    experiment's shadow answers on the control's traffic when that shadow is this variant. Outcome
    arrays cover records since ``outcomes_since`` (default ``since``; the promotion gate may want
    the whole experiment). When the control served nothing in the window (the last step at 100 %),
    its latency is that of its shadow calls on the candidate's traffic."""
    scored_from = since if outcomes_since is None else outcomes_since
    start = min(since, scored_from)
    primaries, shadows, by_key = _live(
        _primaries(session, experiment.name, start, None), _shadows(session, experiment.name, start, None)
    )
    names, control, declared = _variants(experiment, (p.variant for p in primaries))
    rows_of: dict[str | None, list[_Primary]] = defaultdict(list)
    outcome_rows: dict[str | None, list[_Primary]] = defaultdict(list)
    for primary in primaries:
        if primary.created_at >= since:
            rows_of[primary.variant].append(primary)
        if primary.created_at >= scored_from:
            outcome_rows[primary.variant].append(primary)
    recent = [s for s in shadows if s.created_at >= since]
    control_shadows = [s for s in recent if s.shadow_of == "control"]
    control_labels = _labels(rows_of[control], control_shadows)

    def candidate_pairs(name: str, pool: Sequence[_Shadow]) -> list[_Pair]:
        """(candidate, control) answers to the same rows, from either kind of shadow."""
        on_candidate = [s for s in pool if s.shadow_of == "control" and s.variant == name]
        candidate_mirrors = [
            s
            for s in pool
            if s.shadow_of == "shadow" and s.variant == control and _is_variant(experiment, name, declared, s)
        ]
        return _pairs_of(on_candidate, by_key, shadow_is_a=False) + _pairs_of(
            candidate_mirrors, by_key, shadow_is_a=True
        )

    windows: dict[str, VariantWindow] = {}
    for name in names:
        traffic = _traffic(rows_of[name])
        latency = traffic["latency_ms"]
        if name == control and traffic["requests"] == 0:
            latency = _percentiles(
                [s.latency_ms for s in control_shadows if s.status == "ok" and s.latency_ms is not None]
            )
        labels, pairs, psi = control_labels, [], None
        paired: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {}
        if name != control:
            pairs = candidate_pairs(name, recent)
            # The candidate's answers given as the experiment's shadow count as its labels too.
            labels = _labels(rows_of[name], [])
            labels.update(
                str(p.a_label) for p in pairs if p.primary.variant == control and p.a_label is not None
            )
            psi = stats.label_psi(labels, control_labels)
            observed = _paired_observations(
                [p for p in candidate_pairs(name, shadows) if p.primary.created_at >= scored_from]
            )
            for metric in OUTCOME_METRICS:
                va, vb = _paired_series(observed, metric)
                if va:
                    paired[metric] = (tuple(va), tuple(vb))
        count, agreement, tv = _agreement(pairs)
        observations = _own_observations(outcome_rows[name])
        windows[name] = VariantWindow(
            variant=name,
            requests=traffic["requests"],
            errors=traffic["errors"],
            fallbacks=traffic["fallbacks"],
            latency_p50_ms=latency["p50"],
            latency_p95_ms=latency["p95"],
            latency_p99_ms=latency["p99"],
            pairs=count,
            agreement=agreement,
            mean_tv=tv,
            prediction_psi=psi,
            label_counts=dict(labels),
            outcomes={m: tuple(_series(observations, m)[0]) for m in OUTCOME_METRICS},
            paired_outcomes=paired,
        )
    return windows


def _labels(rows: Iterable[_Primary], shadows: Iterable[_Shadow]) -> Counter[str]:
    """Predicted labels of a variant's own answers and of its answers given as a shadow."""
    labels = Counter(str(p.label) for p in rows if p.own_answer and p.label is not None)
    labels.update(str(s.label) for s in shadows if s.status == "ok" and s.label is not None)
    return labels
