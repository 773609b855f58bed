"""Canary rollout rules (design §3.6): the rollout config, one evaluation of a window of shared
records, the controller's next move, and the fast abort. Pure: the rollout controller reads the
window (``modelops.results.window_stats``), calls these, and writes what they decide.

Semantics (Argo Rollouts / Flagger): an evaluation is *successful* when the candidate has
``min_requests`` in the window and every step check passes, *failed* when it has them and some
check fails, *inconclusive* otherwise, so no data never advances a step. In one step, failed
evaluations > ``failure_limit`` roll back, successful ones ≥ ``evaluations_per_step`` advance,
inconclusive ones > ``inconclusive_limit`` hold (pause, ``insufficient_traffic``) or roll back.
Outcome checks (accuracy, log loss, Brier) are non-inferiority tests and run only as the
promotion gate at the last step, and only once final (n ≥ ``min_outcomes``): no peeking.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from prediction_provider.modelops import stats

Metric = Literal[
    "error_rate",
    "fallback_rate",
    "latency_p50_ms",
    "latency_p95_ms",
    "latency_p99_ms",
    "agreement",
    "mean_tv",
    "prediction_psi",
    "accuracy",
    "log_loss",
    "brier",
]
OUTCOME_METRICS = frozenset({"accuracy", "log_loss", "brier"})
# Paired figures and the PSI are judged only on this many samples (pairs; labels on each side)
# unless a check says otherwise: resilience4j's and Hystrix's idea of a minimum volume.
MIN_SAMPLES = 20
BOUNDS = ("max", "min", "max_ratio_to_control", "max_delta_to_control")


class Check(BaseModel):
    """One guard: a metric and one or more bounds. An outcome metric takes only
    ``max_delta_to_control`` (non-inferiority: the upper end of the one-sided (1 - alpha) bound of
    candidate - control ≤ delta; for accuracy, of control - candidate) or ``max``/``min`` on its
    mean, and is judged only once it has ``min_outcomes`` observations."""

    model_config = ConfigDict(extra="forbid")

    metric: Metric
    max: float | None = None
    min: float | None = None
    max_ratio_to_control: float | None = Field(default=None, gt=0)
    max_delta_to_control: float | None = None
    min_outcomes: int = Field(default=500, ge=2)
    alpha: float = Field(default=0.05, gt=0, lt=0.5)
    gate: Literal["step", "promotion"] | None = None
    min_samples: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _bounded(self) -> Check:
        if all(getattr(self, bound) is None for bound in BOUNDS):
            raise ValueError(f"check {self.metric!r} needs one of {', '.join(BOUNDS)}")
        if self.metric in OUTCOME_METRICS:
            if self.max_ratio_to_control is not None:
                raise ValueError(f"outcome check {self.metric!r} takes max_delta_to_control, not a ratio")
            if self.gate == "step":
                raise ValueError(f"outcome check {self.metric!r} runs only as the promotion gate")
        return self

    @property
    def is_gate(self) -> bool:
        return self.gate == "promotion" or self.metric in OUTCOME_METRICS


class FastAbort(BaseModel):
    model_config = ConfigDict(extra="forbid")

    window: int = Field(default=50, ge=1)
    error_rate: float = Field(default=0.5, gt=0, le=1)


class OnPromote(BaseModel):
    model_config = ConfigDict(extra="forbid")

    alias: str = Field(default="champion", min_length=1, max_length=64)
    keep_previous_as: str | None = Field(default="previous-champion", min_length=1, max_length=64)


def _default_checks() -> list[Check]:
    # A rollout without any guard would advance on traffic alone; an error-rate bound is the floor.
    return [Check(metric="error_rate", max=0.01)]


class RolloutConfig(BaseModel):
    """``experiment.config["rollout"]`` (design §3.6). Steps are the candidate's percent of traffic."""

    model_config = ConfigDict(extra="forbid")

    steps: list[float] = Field(min_length=1)
    interval_s: float = Field(default=60.0, gt=0)
    min_requests: int = Field(default=200, ge=1)
    evaluations_per_step: int = Field(default=1, ge=1)
    checks: list[Check] = Field(default_factory=_default_checks)
    failure_limit: int = Field(default=0, ge=0)
    inconclusive_limit: int = Field(default=10, ge=0)
    on_inconclusive: Literal["hold", "rollback"] = "hold"
    fast_abort: FastAbort | None = Field(default_factory=FastAbort)
    promote: Literal["auto", "manual"] = "auto"
    on_promote: OnPromote = Field(default_factory=OnPromote)

    @field_validator("steps")
    @classmethod
    def _increasing(cls, steps: list[float]) -> list[float]:
        for step in steps:
            if not 0 < step <= 100 or round(step, 2) != step:
                raise ValueError("each step is a percent in (0, 100] with at most 2 decimals")
        if any(later <= earlier for earlier, later in pairwise(steps)):
            raise ValueError("steps must increase")
        return steps


@dataclass(frozen=True, slots=True)
class VariantWindow:
    """One variant's figures over the records of a window (``results.window_stats``).

    ``errors`` counts answers whose primary call failed, timed out or was rejected, or that a
    fallback served (a breaker must never hide a bad candidate). Paired figures (``pairs``,
    ``agreement``, ``mean_tv``) and ``prediction_psi`` are the candidate's against the control's.
    ``outcomes`` maps accuracy/log_loss/brier to per-observation values (hits 1/0 for accuracy),
    one per outcome key; ``paired_outcomes`` the same metric as (this variant's, the control's)
    values on the same rows."""

    variant: str
    requests: int = 0
    errors: int = 0
    fallbacks: int = 0
    latency_p50_ms: float | None = None
    latency_p95_ms: float | None = None
    latency_p99_ms: float | None = None
    pairs: int = 0
    agreement: float | None = None
    mean_tv: float | None = None
    prediction_psi: float | None = None
    label_counts: Mapping[str, int] = field(default_factory=dict)
    outcomes: Mapping[str, tuple[float, ...]] = field(default_factory=dict)
    paired_outcomes: Mapping[str, tuple[tuple[float, ...], tuple[float, ...]]] = field(default_factory=dict)

    @property
    def error_rate(self) -> float | None:
        return self.errors / self.requests if self.requests else None

    @property
    def fallback_rate(self) -> float | None:
        return self.fallbacks / self.requests if self.requests else None

    def metric(self, name: str) -> float | None:
        """A step metric's value; an outcome metric's mean."""
        if name in OUTCOME_METRICS:
            values = self.outcomes.get(name, ())
            return math.fsum(values) / len(values) if values else None
        value = getattr(self, name)
        return None if value is None else float(value)

    def samples(self, name: str) -> int:
        """How many observations stand behind a metric."""
        if name in ("agreement", "mean_tv"):
            return self.pairs
        if name == "prediction_psi":
            return sum(self.label_counts.values())
        if name in OUTCOME_METRICS:
            return len(self.outcomes.get(name, ()))
        return self.requests


CheckStatus = Literal["passed", "failed", "inconclusive"]


@dataclass(frozen=True, slots=True)
class CheckResult:
    """One bound of one check: ``value`` is what was compared with ``limit`` (the candidate's
    metric, its ratio or difference to the control's, or the non-inferiority bound's upper end)."""

    metric: str
    bound: str
    limit: float
    status: CheckStatus
    value: float | None
    candidate: float | None
    control: float | None
    gate: bool
    n: int
    reason: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "bound": self.bound,
            "limit": self.limit,
            "status": self.status,
            "value": self.value,
            "candidate": self.candidate,
            "control": self.control,
            "gate": self.gate,
            "n": self.n,
            "reason": self.reason,
        }


Verdict = Literal["successful", "failed", "inconclusive"]
GateStatus = Literal["passed", "failed", "pending", "none"]


@dataclass(frozen=True, slots=True)
class Evaluation:
    """``verdict`` judges the step checks; ``gate`` the promotion checks (``pending`` until every
    one has its ``min_outcomes``; ``none`` when there are none)."""

    verdict: Verdict
    reason: str
    requests: int
    checks: tuple[CheckResult, ...]
    gate: GateStatus

    def failing(self) -> list[str]:
        return sorted({c.metric for c in self.checks if c.status == "failed" and not c.gate})

    def as_dict(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict,
            "reason": self.reason,
            "requests": self.requests,
            "gate": self.gate,
            "checks": [check.as_dict() for check in self.checks],
        }


def _compare(bound: str, value: float, limit: float) -> bool:
    return value >= limit if bound == "min" else value <= limit


def _step_result(
    check: Check, bound: str, limit: float, candidate: VariantWindow, control: VariantWindow
) -> CheckResult:
    mine, theirs = candidate.metric(check.metric), control.metric(check.metric)
    paired = check.metric in ("agreement", "mean_tv", "prediction_psi")
    needed = check.min_samples or (MIN_SAMPLES if paired else 1)
    n = candidate.samples(check.metric)

    def result(status: CheckStatus, value: float | None, reason: str | None = None) -> CheckResult:
        return CheckResult(check.metric, bound, limit, status, value, mine, theirs, check.is_gate, n, reason)

    if mine is None or n < needed:
        return result("inconclusive", mine, "insufficient_samples")
    if check.metric == "prediction_psi" and sum(control.label_counts.values()) < needed:
        return result("inconclusive", mine, "insufficient_control_samples")
    if bound in ("max", "min"):
        return result("passed" if _compare(bound, mine, limit) else "failed", mine)
    if theirs is None:
        return result("inconclusive", None, "no_control_value")
    if bound == "max_ratio_to_control":
        ratio = (1.0 if mine == 0 else math.inf) if theirs == 0 else mine / theirs
        return result("passed" if ratio <= limit else "failed", ratio)
    delta = mine - theirs
    return result("passed" if delta <= limit else "failed", delta)


def _gate_result(
    check: Check, bound: str, limit: float, candidate: VariantWindow, control: VariantWindow
) -> CheckResult:
    mine, theirs = candidate.metric(check.metric), control.metric(check.metric)
    higher_is_better = check.metric == "accuracy"

    def result(status: CheckStatus, value: float | None, n: int, reason: str | None = None) -> CheckResult:
        return CheckResult(check.metric, bound, limit, status, value, mine, theirs, True, n, reason)

    if bound in ("max", "min"):
        n = candidate.samples(check.metric)
        if mine is None or n < check.min_outcomes:
            return result("inconclusive", mine, n, "insufficient_outcomes")
        return result("passed" if _compare(bound, mine, limit) else "failed", mine, n)
    # Non-inferiority, on a loss (lower is better): accuracy enters as the control's minus the
    # candidate's hits, so "delta" bounds how much accuracy the candidate may lose.
    paired = candidate.paired_outcomes.get(check.metric)
    if paired is not None and len(paired[0]) >= check.min_outcomes:
        own, their = paired
        if higher_is_better:
            own, their = their, own
        test = stats.non_inferiority_paired(own, their, delta=limit, alpha=check.alpha)
    else:
        own = candidate.outcomes.get(check.metric, ())
        their = control.outcomes.get(check.metric, ())
        if min(len(own), len(their)) < check.min_outcomes:
            return result("inconclusive", None, min(len(own), len(their)), "insufficient_outcomes")
        if higher_is_better:
            own, their = their, own
        test = stats.non_inferiority_unpaired(own, their, delta=limit, alpha=check.alpha)
    if test.upper is None:
        return result("inconclusive", None, test.n, "insufficient_outcomes")
    return result("passed" if test.passed else "failed", test.upper, test.n, f"non_inferiority_{test.method}")


def evaluate(config: RolloutConfig, candidate: VariantWindow, control: VariantWindow) -> Evaluation:
    """One evaluation of the candidate against the control over one window."""
    results: list[CheckResult] = []
    for check in config.checks:
        for bound in BOUNDS:
            limit = getattr(check, bound)
            if limit is None:
                continue
            judge = _gate_result if check.is_gate and check.metric in OUTCOME_METRICS else _step_result
            results.append(judge(check, bound, float(limit), candidate, control))
    step = [r for r in results if not r.gate]
    gates = [r for r in results if r.gate]
    if candidate.requests < config.min_requests:
        verdict: Verdict = "inconclusive"
        reason = "insufficient_traffic"
    elif any(r.status == "failed" for r in step):
        verdict, reason = "failed", "checks_failed"
    elif any(r.status == "inconclusive" for r in step):
        verdict, reason = "inconclusive", "checks_inconclusive"
    else:
        verdict, reason = "successful", "checks_passed"
    gate: GateStatus
    if not gates:
        gate = "none"
    elif any(r.status == "failed" for r in gates):
        gate = "failed"
    elif any(r.status == "inconclusive" for r in gates):
        gate = "pending"
    else:
        gate = "passed"
    return Evaluation(verdict, reason, candidate.requests, tuple(results), gate)


Action = Literal["advance", "stay", "rollback", "hold", "promote", "await_promotion"]
# The experiment state each action leaves (None: unchanged).
STATE_AFTER: dict[str, str | None] = {
    "advance": None,
    "stay": None,
    "rollback": "rolled_back",
    "hold": "paused",
    "promote": "promoted",
    "await_promotion": "awaiting_promotion",
}


@dataclass(frozen=True, slots=True)
class Decision:
    """What the controller does after one evaluation. ``step`` and ``weight`` (the candidate's
    percent) are the values after the action; ``counts`` are the step's evaluation counts to store
    (reset to zero when the step changes)."""

    action: Action
    reason: str
    step: int
    weight: float
    counts: dict[str, int]
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def state(self) -> str | None:
        return STATE_AFTER[self.action]

    def as_dict(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "reason": self.reason,
            "state": self.state,
            "step": self.step,
            "weight": self.weight,
            "counts": dict(self.counts),
            "detail": dict(self.detail),
        }


def _zero_counts() -> dict[str, int]:
    return {"successful": 0, "failed": 0, "inconclusive": 0}


def decide(
    config: RolloutConfig,
    step_index: int,
    counts_in_step: Mapping[str, int],
    evaluation: Evaluation,
    at_last_step: bool,
) -> Decision:
    """The controller's move after ``evaluation``. ``counts_in_step`` are the step's earlier
    evaluations (``successful``/``failed``/``inconclusive``, missing keys 0); this one is added.

    At the last step a successful evaluation promotes only when the gate has passed: a failed gate
    rolls back; a pending gate (too few outcomes yet) counts as inconclusive, so a candidate
    without outcomes is held, never promoted."""
    if not 0 <= step_index < len(config.steps):
        raise ValueError(f"step {step_index} is outside the rollout's {len(config.steps)} steps")
    counts = {**_zero_counts(), **{k: int(v) for k, v in counts_in_step.items() if k in _zero_counts()}}
    weight = config.steps[step_index]
    verdict = evaluation.verdict
    detail: dict[str, Any] = {"verdict": verdict}
    if verdict == "successful" and at_last_step and evaluation.gate == "pending":
        verdict, detail["gate"] = "inconclusive", "pending"

    def decision(action: Action, reason: str, *, step: int = step_index, w: float = weight) -> Decision:
        return Decision(action, reason, step, w, counts, detail)

    if verdict == "failed":
        counts["failed"] += 1
        detail["failing"] = evaluation.failing()
        if counts["failed"] > config.failure_limit:
            return decision("rollback", "checks_failed", w=0.0)
        return decision("stay", "checks_failed")
    if verdict == "inconclusive":
        counts["inconclusive"] += 1
        # Too few requests, pairs or control figures all mean "not enough traffic to judge".
        waiting_for = "insufficient_outcomes" if "gate" in detail else "insufficient_traffic"
        detail["cause"] = "gate_pending" if "gate" in detail else evaluation.reason
        if counts["inconclusive"] > config.inconclusive_limit:
            if config.on_inconclusive == "rollback":
                return decision("rollback", waiting_for, w=0.0)
            return decision("hold", waiting_for)
        return decision("stay", waiting_for)
    counts["successful"] += 1
    if counts["successful"] < config.evaluations_per_step:
        return decision("stay", "checks_passed")
    if not at_last_step:
        counts = _zero_counts()
        return decision("advance", "checks_passed", step=step_index + 1, w=config.steps[step_index + 1])
    if evaluation.gate == "failed":
        detail["failing"] = sorted({c.metric for c in evaluation.checks if c.gate and c.status == "failed"})
        return decision("rollback", "promotion_gate_failed", w=0.0)
    if config.promote == "manual":
        return decision("await_promotion", "checks_passed")
    return decision("promote", "checks_passed")


def fast_abort(
    config: RolloutConfig, recent_statuses: Sequence[str], breaker_state: str | None
) -> str | None:
    """A reason to roll back now, without waiting for the interval, or None: the candidate's
    breaker is open (or half-open: it opened), or at least ``fast_abort.error_rate`` of its last
    ``fast_abort.window`` calls failed (statuses oldest first; judged only once that many exist).
    ``fast_abort: null`` turns both off."""
    if config.fast_abort is None:
        return None
    if breaker_state in ("open", "half_open"):
        return "circuit_open"
    window = config.fast_abort.window
    if len(recent_statuses) < window:
        return None
    failed = sum(1 for status in recent_statuses[-window:] if status != "ok")
    if failed / window >= config.fast_abort.error_rate:
        return "fast_abort_error_rate"
    return None
