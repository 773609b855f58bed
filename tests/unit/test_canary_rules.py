"""Canary rollout rules: the design's rollout JSON parses, every evaluation verdict and every
controller transition (advance, stay, roll back, hold, promote, await promotion), the promotion
gate's non-inferiority test on realized outcomes, and the fast abort."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from prediction_provider.modelops.canary import (
    Check,
    Evaluation,
    RolloutConfig,
    VariantWindow,
    decide,
    evaluate,
    fast_abort,
)

DESIGN_ROLLOUT: dict[str, Any] = {
    "steps": [5, 10, 25, 50, 100],
    "interval_s": 60,
    "min_requests": 200,
    "evaluations_per_step": 1,
    "checks": [
        {"metric": "error_rate", "max": 0.01},
        {"metric": "latency_p99_ms", "max_ratio_to_control": 1.5},
        {"metric": "agreement", "min": 0.6},
        {"metric": "prediction_psi", "max": 0.25},
        {
            "metric": "log_loss",
            "max_delta_to_control": 0.0,
            "min_outcomes": 500,
            "alpha": 0.05,
            "gate": "promotion",
        },
    ],
    "failure_limit": 1,
    "inconclusive_limit": 10,
    "on_inconclusive": "hold",
    "fast_abort": {"window": 50, "error_rate": 0.5},
    "promote": "auto",
    "on_promote": {"alias": "champion", "keep_previous_as": "previous-champion"},
}


def config(**changes: Any) -> RolloutConfig:
    return RolloutConfig.model_validate({**DESIGN_ROLLOUT, **changes})


def healthy(**changes: Any) -> VariantWindow:
    fields: dict[str, Any] = {
        "variant": "candidate",
        "requests": 400,
        "errors": 2,
        "latency_p99_ms": 12.0,
        "pairs": 400,
        "agreement": 0.9,
        "mean_tv": 0.05,
        "prediction_psi": 0.02,
        "label_counts": {"up": 200, "down": 200},
    }
    return VariantWindow(**{**fields, **changes})


def control_window(**changes: Any) -> VariantWindow:
    fields: dict[str, Any] = {
        "variant": "control",
        "requests": 4000,
        "errors": 10,
        "latency_p99_ms": 10.0,
        "label_counts": {"up": 2000, "down": 2000},
    }
    return VariantWindow(**{**fields, **changes})


def by_metric(evaluation: Evaluation) -> dict[str, Any]:
    return {(c.metric, c.bound): c for c in evaluation.checks}


# -- the config -------------------------------------------------------------------------------


def test_the_design_rollout_parses_with_its_gate() -> None:
    rollout = config()
    assert rollout.steps == [5, 10, 25, 50, 100]
    assert [c.is_gate for c in rollout.checks] == [False, False, False, False, True]
    assert rollout.on_promote.keep_previous_as == "previous-champion"


def test_defaults_guard_the_error_rate_and_abort_fast() -> None:
    rollout = RolloutConfig.model_validate({"steps": [10, 100]})
    assert [(c.metric, c.max) for c in rollout.checks] == [("error_rate", 0.01)]
    assert rollout.failure_limit == 0
    assert rollout.fast_abort is not None


@pytest.mark.parametrize(
    "change",
    [
        {"steps": [10, 5]},
        {"steps": [10, 10]},
        {"steps": [0, 50]},
        {"steps": [50, 101]},
        {"steps": []},
        {"checks": [{"metric": "error_rate"}]},
        {"checks": [{"metric": "log_loss", "max_ratio_to_control": 1.1}]},
        {"checks": [{"metric": "accuracy", "max_delta_to_control": 0.01, "gate": "step"}]},
        {"checks": [{"metric": "throughput", "max": 1}]},
        {"on_inconclusive": "wait"},
        {"surprise": True},
    ],
)
def test_an_invalid_rollout_is_refused(change: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        config(**change)


def test_an_outcome_check_is_always_a_promotion_gate() -> None:
    assert Check(metric="brier", max_delta_to_control=0.0).is_gate
    assert not Check(metric="error_rate", max=0.1).is_gate
    assert Check(metric="agreement", min=0.5, gate="promotion").is_gate


# -- evaluation -------------------------------------------------------------------------------


def test_no_traffic_is_inconclusive_never_successful() -> None:
    evaluation = evaluate(config(), VariantWindow("candidate"), control_window())
    assert (evaluation.verdict, evaluation.reason) == ("inconclusive", "insufficient_traffic")


def test_too_few_requests_is_inconclusive_even_when_every_check_passes() -> None:
    evaluation = evaluate(config(), healthy(requests=199, errors=0), control_window())
    assert evaluation.verdict == "inconclusive"
    assert all(c.status == "passed" for c in evaluation.checks if not c.gate)


def test_every_check_passing_with_enough_traffic_is_successful() -> None:
    evaluation = evaluate(config(), healthy(), control_window())
    assert (evaluation.verdict, evaluation.reason) == ("successful", "checks_passed")
    latency = by_metric(evaluation)[("latency_p99_ms", "max_ratio_to_control")]
    assert (latency.value, latency.limit, latency.candidate, latency.control) == (1.2, 1.5, 12.0, 10.0)


def test_an_error_rate_over_its_bound_fails_with_value_and_bound() -> None:
    evaluation = evaluate(config(), healthy(errors=8), control_window())
    assert evaluation.verdict == "failed"
    assert evaluation.failing() == ["error_rate"]
    check = by_metric(evaluation)[("error_rate", "max")]
    assert (check.status, check.value, check.limit) == ("failed", 0.02, 0.01)


def test_answers_rescued_by_a_fallback_count_as_errors() -> None:
    # The window counts them into errors; a high fallback rate fails its own bound too.
    rollout = config(checks=[{"metric": "fallback_rate", "max": 0.05}])
    evaluation = evaluate(rollout, healthy(fallbacks=40, errors=40), control_window())
    assert evaluation.verdict == "failed"
    assert by_metric(evaluation)[("fallback_rate", "max")].value == 0.1


def test_latency_far_above_the_control_fails() -> None:
    evaluation = evaluate(config(), healthy(latency_p99_ms=20.0), control_window())
    assert evaluation.failing() == ["latency_p99_ms"]


def test_a_ratio_without_a_control_figure_is_inconclusive() -> None:
    evaluation = evaluate(config(), healthy(), control_window(latency_p99_ms=None))
    assert (evaluation.verdict, evaluation.reason) == ("inconclusive", "checks_inconclusive")
    assert by_metric(evaluation)[("latency_p99_ms", "max_ratio_to_control")].reason == "no_control_value"


def test_a_failure_wins_over_an_inconclusive_check() -> None:
    evaluation = evaluate(config(), healthy(errors=50), control_window(latency_p99_ms=None))
    assert evaluation.verdict == "failed"


def test_agreement_on_too_few_pairs_is_inconclusive_and_low_agreement_fails() -> None:
    few = evaluate(config(), healthy(pairs=5, agreement=0.1), control_window())
    assert few.verdict == "inconclusive"
    assert by_metric(few)[("agreement", "min")].reason == "insufficient_samples"
    low = evaluate(config(), healthy(agreement=0.5), control_window())
    assert low.failing() == ["agreement"]


def test_prediction_psi_needs_labels_on_both_sides_and_fails_when_distributions_move() -> None:
    moved = evaluate(config(), healthy(prediction_psi=0.4), control_window())
    assert moved.failing() == ["prediction_psi"]
    no_control = evaluate(config(), healthy(), control_window(label_counts={}))
    assert by_metric(no_control)[("prediction_psi", "max")].reason == "insufficient_control_samples"


def test_a_delta_to_control_bounds_the_difference() -> None:
    rollout = config(checks=[{"metric": "error_rate", "max_delta_to_control": 0.002}])
    # control 10/4000 = 0.0025; candidate 2/400 = 0.005 → delta 0.0025 > 0.002
    evaluation = evaluate(rollout, healthy(), control_window())
    check = by_metric(evaluation)[("error_rate", "max_delta_to_control")]
    assert check.status == "failed"
    assert check.value == pytest.approx(0.0025)


def test_a_zero_control_rate_makes_any_candidate_errors_an_infinite_ratio() -> None:
    rollout = config(checks=[{"metric": "error_rate", "max_ratio_to_control": 2.0}])
    assert evaluate(rollout, healthy(), control_window(errors=0)).verdict == "failed"
    assert evaluate(rollout, healthy(errors=0), control_window(errors=0)).verdict == "successful"


def losses(rng: np.random.Generator, n: int, shift: float) -> tuple[float, ...]:
    return tuple(float(x) for x in rng.gamma(2.0, 0.3, n) + shift)


def test_the_outcome_gate_is_pending_until_min_outcomes_and_never_blocks_a_step() -> None:
    rng = np.random.default_rng(0)
    candidate = healthy(outcomes={"log_loss": losses(rng, 100, 0.0)})
    control = control_window(outcomes={"log_loss": losses(rng, 100, 0.0)})
    evaluation = evaluate(config(), candidate, control)
    assert (evaluation.verdict, evaluation.gate) == ("successful", "pending")
    gate = by_metric(evaluation)[("log_loss", "max_delta_to_control")]
    assert (gate.reason, gate.n) == ("insufficient_outcomes", 100)


def test_the_outcome_gate_passes_a_non_inferior_candidate_and_fails_a_worse_one_on_pairs() -> None:
    rng = np.random.default_rng(1)
    control_losses = np.asarray(losses(rng, 800, 0.0))
    same = tuple(float(x) for x in control_losses + rng.normal(-0.02, 0.05, 800))
    worse = tuple(float(x) for x in control_losses + rng.normal(0.05, 0.05, 800))
    rollout = config(checks=[{"metric": "log_loss", "max_delta_to_control": 0.0, "min_outcomes": 500}])
    passing = evaluate(
        rollout, healthy(paired_outcomes={"log_loss": (same, tuple(control_losses))}), control_window()
    )
    assert passing.gate == "passed"
    gate = by_metric(passing)[("log_loss", "max_delta_to_control")]
    assert gate.reason == "non_inferiority_paired"
    assert gate.value is not None
    assert gate.value <= 0.0
    failing = evaluate(
        rollout, healthy(paired_outcomes={"log_loss": (worse, tuple(control_losses))}), control_window()
    )
    assert failing.gate == "failed"
    assert failing.verdict == "successful"


def test_the_outcome_gate_falls_back_to_the_arms_without_pairs() -> None:
    rng = np.random.default_rng(2)
    rollout = config(checks=[{"metric": "brier", "max_delta_to_control": 0.05, "min_outcomes": 300}])
    candidate = healthy(outcomes={"brier": losses(rng, 600, 0.0)})
    control = control_window(outcomes={"brier": losses(rng, 3000, 0.0)})
    evaluation = evaluate(rollout, candidate, control)
    assert evaluation.gate == "passed"
    assert by_metric(evaluation)[("brier", "max_delta_to_control")].reason == "non_inferiority_unpaired"


def test_accuracy_non_inferiority_bounds_the_accuracy_the_candidate_loses() -> None:
    rollout = config(checks=[{"metric": "accuracy", "max_delta_to_control": 0.02, "min_outcomes": 500}])
    rng = np.random.default_rng(3)
    control = control_window(outcomes={"accuracy": tuple(float(x) for x in rng.random(5000) < 0.60)})
    better = healthy(outcomes={"accuracy": tuple(float(x) for x in rng.random(2000) < 0.62)})
    worse = healthy(outcomes={"accuracy": tuple(float(x) for x in rng.random(2000) < 0.50)})
    assert evaluate(rollout, better, control).gate == "passed"
    assert evaluate(rollout, worse, control).gate == "failed"


def test_an_absolute_outcome_bound_is_judged_on_the_mean_once_final() -> None:
    rollout = config(checks=[{"metric": "log_loss", "max": 0.5, "min_outcomes": 3}])
    assert evaluate(rollout, healthy(outcomes={"log_loss": (0.4, 0.6)}), control_window()).gate == "pending"
    assert (
        evaluate(rollout, healthy(outcomes={"log_loss": (0.4, 0.6, 0.8)}), control_window()).gate == "failed"
    )
    assert (
        evaluate(rollout, healthy(outcomes={"log_loss": (0.4, 0.4, 0.4)}), control_window()).gate == "passed"
    )


# -- decisions --------------------------------------------------------------------------------


def verdict(kind: str, gate: str = "none") -> Evaluation:
    reason = {
        "successful": "checks_passed",
        "failed": "checks_failed",
        "inconclusive": "insufficient_traffic",
    }
    return Evaluation(kind, reason[kind], 400, (), gate)  # type: ignore[arg-type]


def test_a_successful_evaluation_advances_to_the_next_step_and_resets_the_counts() -> None:
    decision = decide(config(), 1, {"failed": 1, "inconclusive": 3}, verdict("successful"), False)
    assert (decision.action, decision.step, decision.weight, decision.state) == ("advance", 2, 25, None)
    assert decision.counts == {"successful": 0, "failed": 0, "inconclusive": 0}


def test_a_step_needs_evaluations_per_step_successes() -> None:
    rollout = config(evaluations_per_step=3)
    first = decide(rollout, 0, {}, verdict("successful"), False)
    assert (first.action, first.counts["successful"], first.weight) == ("stay", 1, 5)
    third = decide(rollout, 0, {"successful": 2}, verdict("successful"), False)
    assert (third.action, third.step) == ("advance", 1)


def test_failures_up_to_the_limit_stay_and_one_more_rolls_back() -> None:
    rollout = config(failure_limit=1)
    first = decide(rollout, 2, {}, verdict("failed"), False)
    assert (first.action, first.counts["failed"]) == ("stay", 1)
    second = decide(rollout, 2, first.counts, verdict("failed"), False)
    assert (second.action, second.reason, second.state, second.weight) == (
        "rollback", "checks_failed", "rolled_back", 0.0,
    )  # fmt: skip


def test_with_the_default_failure_limit_one_failure_rolls_back() -> None:
    rollout = RolloutConfig.model_validate({"steps": [10, 50, 100]})
    assert decide(rollout, 0, {}, verdict("failed"), False).action == "rollback"


def test_inconclusive_evaluations_stay_then_hold_with_insufficient_traffic() -> None:
    rollout = config(inconclusive_limit=2)
    stay = decide(rollout, 0, {"inconclusive": 1}, verdict("inconclusive"), False)
    assert (stay.action, stay.weight) == ("stay", 5)
    hold = decide(rollout, 0, {"inconclusive": 2}, verdict("inconclusive"), False)
    assert (hold.action, hold.reason, hold.state, hold.weight) == (
        "hold",
        "insufficient_traffic",
        "paused",
        5,
    )


def test_inconclusive_evaluations_can_roll_back_instead() -> None:
    rollout = config(inconclusive_limit=0, on_inconclusive="rollback")
    decision = decide(rollout, 0, {}, verdict("inconclusive"), False)
    assert (decision.action, decision.reason, decision.weight) == ("rollback", "insufficient_traffic", 0.0)


def test_no_data_never_advances_however_often_it_is_evaluated() -> None:
    rollout = config(inconclusive_limit=5)
    counts: dict[str, int] = {}
    actions = []
    for _ in range(10):
        decision = decide(
            rollout, 0, counts, evaluate(rollout, VariantWindow("candidate"), control_window()), False
        )
        counts = decision.counts
        actions.append(decision.action)
        if decision.action == "hold":
            break
    assert actions == ["stay"] * 5 + ["hold"]


def test_the_last_step_promotes_automatically_when_the_gate_passes() -> None:
    decision = decide(config(), 4, {}, verdict("successful", gate="passed"), True)
    assert (decision.action, decision.state, decision.weight) == ("promote", "promoted", 100)


def test_the_last_step_promotes_without_gates_when_none_are_configured() -> None:
    assert decide(config(), 4, {}, verdict("successful"), True).action == "promote"


def test_a_manual_rollout_awaits_promotion_at_the_last_step() -> None:
    decision = decide(config(promote="manual"), 4, {}, verdict("successful", gate="passed"), True)
    assert (decision.action, decision.state) == ("await_promotion", "awaiting_promotion")


def test_a_failed_gate_at_the_last_step_rolls_back() -> None:
    decision = decide(config(), 4, {}, verdict("successful", gate="failed"), True)
    assert (decision.action, decision.reason, decision.weight) == ("rollback", "promotion_gate_failed", 0.0)


def test_a_pending_gate_waits_for_outcomes_then_holds() -> None:
    rollout = config(inconclusive_limit=1)
    wait = decide(rollout, 4, {}, verdict("successful", gate="pending"), True)
    assert (wait.action, wait.reason, wait.counts["inconclusive"], wait.counts["successful"]) == (
        "stay", "insufficient_outcomes", 1, 0,
    )  # fmt: skip
    hold = decide(rollout, 4, wait.counts, verdict("successful", gate="pending"), True)
    assert (hold.action, hold.reason, hold.state) == ("hold", "insufficient_outcomes", "paused")


def test_a_pending_gate_before_the_last_step_does_not_hold_the_ramp() -> None:
    assert decide(config(), 0, {}, verdict("successful", gate="pending"), False).action == "advance"


def test_a_failed_evaluation_at_the_last_step_rolls_back_rather_than_promotes() -> None:
    decision = decide(config(failure_limit=0), 4, {}, verdict("failed", gate="passed"), True)
    assert decision.action == "rollback"


def test_a_step_outside_the_rollout_is_an_error() -> None:
    with pytest.raises(ValueError, match="outside"):
        decide(config(), 5, {}, verdict("successful"), True)


def test_a_decision_serializes_for_the_audit_trail() -> None:
    decision = decide(config(), 0, {}, evaluate(config(), healthy(errors=50), control_window()), False)
    assert decision.as_dict()["detail"] == {"verdict": "failed", "failing": ["error_rate"]}
    assert decision.as_dict()["state"] is None


# -- fast abort -------------------------------------------------------------------------------


def test_an_open_breaker_aborts_at_once() -> None:
    assert fast_abort(config(), [], "open") == "circuit_open"
    assert fast_abort(config(), ["ok"] * 100, "half_open") == "circuit_open"


def test_a_failing_recent_window_aborts() -> None:
    statuses = ["ok"] * 100 + ["error", "ok"] * 25  # the last 50: 25 failed = 0.5
    assert fast_abort(config(), statuses, "closed") == "fast_abort_error_rate"
    assert fast_abort(config(), ["timeout"] * 24 + ["ok"] * 26, None) is None


def test_fast_abort_waits_for_a_full_window() -> None:
    assert fast_abort(config(), ["error"] * 49, "closed") is None
    assert fast_abort(config(), ["error"] * 50, "closed") == "fast_abort_error_rate"


def test_old_failures_outside_the_window_do_not_abort() -> None:
    assert fast_abort(config(), ["error"] * 100 + ["ok"] * 50, "closed") is None


def test_fast_abort_can_be_turned_off() -> None:
    assert fast_abort(config(fast_abort=None), ["error"] * 100, "open") is None
