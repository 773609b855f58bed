"""The ensemble arithmetic (design §3.8), and how an ensemble of small real models treats members
that fail, time out, are shut off by their breaker or are hit by injected chaos."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from prediction_provider.errors import InvalidEnsemble, PredictionFailed
from prediction_provider.modelops import combine
from prediction_provider.modelops.breaker import BreakerConfig, CircuitBreaker
from prediction_provider.modelops.ensembles import (
    EnsembleCreate,
    EnsembleModel,
    MemberRuntime,
    plan_layout,
)
from prediction_provider.modelops.metrics import OpsMetrics
from prediction_provider.serving.cache import CachedModel
from prediction_provider.serving.loaders.base import LoadedModel
from prediction_provider.serving.registry import ResolvedModel
from prediction_provider.serving.signature import ModelSignature

P1 = np.array([[0.2, 0.3, 0.5], [0.6, 0.3, 0.1]])
P2 = np.array([[0.1, 0.1, 0.8], [0.3, 0.4, 0.3]])
P3 = np.array([[0.5, 0.4, 0.1], [0.2, 0.2, 0.6]])


def test_weighted_mean_proba_is_the_weighted_average_and_weights_need_not_sum_to_one() -> None:
    combined = combine.combine_probabilities("weighted_mean_proba", [P1, P2, P3], [5.0, 3.0, 2.0])
    expected = (5 * P1 + 3 * P2 + 2 * P3) / 10
    np.testing.assert_allclose(combined.probabilities, expected)
    assert combined.label_index.tolist() == [2, 0]
    scaled = combine.combine_probabilities("weighted_mean_proba", [P1, P2, P3], [0.5, 0.3, 0.2])
    np.testing.assert_allclose(scaled.probabilities, expected)


def test_mean_proba_ignores_weights() -> None:
    combined = combine.combine_probabilities("mean_proba", [P1, P2], [9.0, 1.0])
    np.testing.assert_allclose(combined.probabilities, (P1 + P2) / 2)


def test_geometric_mean_is_the_weighted_log_average_renormalized_with_a_floor_for_zeros() -> None:
    zero = np.array([[0.0, 0.5, 0.5]])
    other = np.array([[0.2, 0.2, 0.6]])
    combined = combine.combine_probabilities("geometric_mean", [zero, other], [1.0, 3.0])
    raw = np.maximum(zero, 1e-12) ** 0.25 * other**0.75
    np.testing.assert_allclose(combined.probabilities, raw / raw.sum(axis=1, keepdims=True))
    np.testing.assert_allclose(combined.probabilities.sum(axis=1), [1.0])
    assert combined.probabilities[0, 0] < 0.01  # one member's zero all but vetoes the class


def test_majority_vote_gives_weighted_vote_shares_and_the_winner_as_label() -> None:
    combined = combine.combine_probabilities("majority_vote", [P1, P2, P3], [1.0, 1.0, 3.0])
    # row 0 votes: up, up, down(3) → down wins 3 to 2; row 1: down, flat, up(3) → up
    np.testing.assert_allclose(combined.probabilities, [[0.6, 0.0, 0.4], [0.2, 0.2, 0.6]])
    assert combined.label_index.tolist() == [0, 2]


def test_a_tied_vote_goes_to_the_class_with_the_highest_mean_probability() -> None:
    first = np.array([[0.9, 0.05, 0.05]])  # votes down, very sure
    second = np.array([[0.3, 0.0, 0.7]])  # votes up, less sure
    combined = combine.combine_probabilities("majority_vote", [first, second], [1.0, 1.0])
    np.testing.assert_allclose(combined.probabilities, [[0.5, 0.0, 0.5]])
    assert combined.label_index.tolist() == [0]  # mean P(down) 0.6 > mean P(up) 0.375
    unsure = np.array([[0.55, 0.05, 0.4]])  # votes down, barely
    sure = np.array([[0.1, 0.0, 0.9]])  # votes up, very sure
    flipped = combine.combine_probabilities("majority_vote", [unsure, sure], [1.0, 1.0])
    assert flipped.label_index.tolist() == [2]


def test_regressors_combine_by_mean_weighted_mean_and_median() -> None:
    values = [np.array([1.0, 10.0]), np.array([2.0, 20.0]), np.array([6.0, 0.0])]
    np.testing.assert_allclose(combine.combine_values("mean", values, [1, 1, 1]), [3.0, 10.0])
    np.testing.assert_allclose(combine.combine_values("weighted_mean", values, [2, 1, 1]), [2.5, 10.0])
    np.testing.assert_allclose(combine.combine_values("median", values, [5, 1, 1]), [2.0, 10.0])


def test_weights_must_be_positive_and_one_per_member() -> None:
    with pytest.raises(ValueError, match="> 0"):
        combine.combine_probabilities("weighted_mean_proba", [P1, P2], [1.0, 0.0])
    with pytest.raises(ValueError, match="one weight per member"):
        combine.combine_values("mean", [np.array([1.0])], [1.0, 2.0])


def test_class_columns_are_aligned_by_label_name_not_position() -> None:
    order = combine.class_order(("up", "down", "flat"), ("down", "flat", "up"))
    member = np.array([[0.7, 0.1, 0.2]])  # up, down, flat
    np.testing.assert_allclose(member[:, order], [[0.1, 0.2, 0.7]])
    with pytest.raises(ValueError, match="are not"):
        combine.class_order(("0", "1"), ("down", "up"))


def test_the_stacking_matrix_puts_each_members_classes_side_by_side_then_the_features() -> None:
    assert combine.stacking_columns(["a", "b"], ["down", "up"]) == ["a__down", "a__up", "b__down", "b__up"]
    features = np.array([[7.0], [8.0]])
    matrix = combine.stacking_matrix([P1[:, :2], P2[:, :2]], features)
    np.testing.assert_allclose(matrix, np.hstack([P1[:, :2], P2[:, :2], features]))


# --- an ensemble of small real models ----------------------------------------------------------


class Softmax(LoadedModel):
    """A classifier whose scores are a softmax of fixed linear functions of its own columns."""

    framework = "test"

    def __init__(self, features: tuple[str, ...], classes: tuple[str, ...], weights: np.ndarray) -> None:
        super().__init__(ModelSignature.from_names(features, classes))
        self.weights = weights  # (features, classes)
        self.seen: list[np.ndarray] = []
        self.gate: threading.Event | None = None

    def predict_scores(self, matrix: np.ndarray) -> np.ndarray:
        self.seen.append(np.array(matrix))
        if self.gate is not None:
            self.gate.wait(10)
        logits = matrix @ self.weights
        exp = np.exp(logits - logits.max(axis=1, keepdims=True))
        return np.asarray(exp / exp.sum(axis=1, keepdims=True))


class Failing(Softmax):
    def predict_scores(self, matrix: np.ndarray) -> np.ndarray:
        raise RuntimeError("boom")


def cached_model(name: str, model: LoadedModel, version: str = "1") -> CachedModel:
    return CachedModel(
        resolved=ResolvedModel(name, version, f"models:/{name}/{version}", Path(".")),
        model=model,
        loader="test",
        loaded_at=datetime.now(UTC),
        load_seconds=0.0,
    )


CLASSES = ("down", "flat", "up")
RNG = np.random.default_rng(5)


@pytest.fixture
def executor() -> Iterator[ThreadPoolExecutor]:
    pool = ThreadPoolExecutor(8)
    yield pool
    pool.shutdown(wait=False, cancel_futures=True)


class Chaos:
    def __init__(self, failing: set[tuple[str, str | None]]) -> None:
        self.failing = failing
        self.calls: list[tuple[str, str | None]] = []

    def before_call(self, model: str, version: str | None) -> None:
        self.calls.append((model, version))
        if (model, version) in self.failing:
            raise PredictionFailed(f"chaos: injected failure of model {model}/{version}")


def build(
    executor: ThreadPoolExecutor,
    models: dict[str, LoadedModel],
    members: list[dict[str, Any]],
    chaos: Chaos | None = None,
    **config: Any,
) -> tuple[EnsembleModel, OpsMetrics, dict[str, CircuitBreaker]]:
    body = EnsembleCreate.model_validate({"name": "ens", "members": members, **config})
    by_target = {f"models:/{name}/1": cached_model(name, model) for name, model in models.items()}
    layout = plan_layout(body, [by_target[m.target].model for m in body.members], None)
    metrics = OpsMetrics()
    breakers = {m.name: CircuitBreaker(BreakerConfig(window_size=2, min_calls=2)) for m in body.members}
    runtime = MemberRuntime(by_target.__getitem__, executor, metrics, chaos)  # type: ignore[arg-type]
    return EnsembleModel("ens", body, layout, runtime, breakers), metrics, breakers


def three_members(**extra: Any) -> tuple[dict[str, LoadedModel], list[dict[str, Any]]]:
    models: dict[str, LoadedModel] = {
        "ma": Softmax(("a", "b"), CLASSES, RNG.normal(size=(2, 3))),
        "mb": Softmax(("c", "b"), ("up", "down", "flat"), RNG.normal(size=(2, 3))),
        "mc": Softmax(("a", "d"), CLASSES, RNG.normal(size=(2, 3))),
    }
    members = [
        {"name": "a", "target": "models:/ma/1", "weight": 0.5, **extra.get("a", {})},
        {"name": "b", "target": "models:/mb/1", "weight": 0.3, **extra.get("b", {})},
        {"name": "c", "target": "models:/mc/1", "weight": 0.2, **extra.get("c", {})},
    ]
    return models, members


def own(models: dict[str, LoadedModel], name: str, matrix: np.ndarray, columns: list[int]) -> np.ndarray:
    return models[name].predict(matrix[:, columns]).probabilities  # type: ignore[return-value]


def test_members_read_only_their_own_columns_of_the_union_and_align_classes_by_name(
    executor: ThreadPoolExecutor,
) -> None:
    models, members = three_members()
    ensemble, _, _ = build(executor, models, members, method="weighted_mean_proba")
    assert ensemble.signature.feature_names == ("a", "b", "c", "d")
    assert ensemble.signature.classes == CLASSES
    matrix = RNG.normal(size=(4, 4))
    output, detail = ensemble.predict_detailed(matrix)

    pa = own(models, "ma", matrix, [0, 1])
    pb = own(models, "mb", matrix, [2, 1])[:, [1, 2, 0]]  # up, down, flat → down, flat, up
    pc = own(models, "mc", matrix, [0, 3])
    expected = (0.5 * pa + 0.3 * pb + 0.2 * pc) / 1.0
    np.testing.assert_allclose(output.probabilities, expected)  # type: ignore[arg-type]
    assert output.predictions == [CLASSES[i] for i in np.argmax(expected, axis=1)]
    np.testing.assert_allclose(models["mb"].seen[0], matrix[:, [2, 1]])  # type: ignore[attr-defined]
    assert detail.members_used == 3
    assert [m["status"] for m in detail.as_list()] == ["ok", "ok", "ok"]


def test_an_optional_member_that_fails_is_dropped_and_the_weights_renormalized(
    executor: ThreadPoolExecutor,
) -> None:
    models, members = three_members()
    models["mb"] = Failing(("c", "b"), ("up", "down", "flat"), np.zeros((2, 3)))
    ensemble, metrics, _ = build(executor, models, members, method="weighted_mean_proba", min_members=2)
    matrix = RNG.normal(size=(2, 4))
    output, detail = ensemble.predict_detailed(matrix)
    expected = (0.5 * own(models, "ma", matrix, [0, 1]) + 0.2 * own(models, "mc", matrix, [0, 3])) / 0.7
    np.testing.assert_allclose(output.probabilities, expected)  # type: ignore[arg-type]
    assert detail.members_used == 2
    failed = detail.as_list()[1]
    assert (failed["name"], failed["status"], failed["label"]) == ("b", "error", None)
    assert "boom" in failed["error"]
    assert metrics.value("ensemble_member_failures", ("ens", "b", "error")) == 1


def test_a_required_member_failure_or_too_few_survivors_fails_the_answer(
    executor: ThreadPoolExecutor,
) -> None:
    models, members = three_members(a={"required": True})
    models["ma"] = Failing(("a", "b"), CLASSES, np.zeros((2, 3)))
    ensemble, _, _ = build(executor, models, members, method="mean_proba")
    with pytest.raises(PredictionFailed, match="required member a"):
        ensemble.predict_detailed(RNG.normal(size=(1, 4)))

    models, members = three_members()
    models["mb"] = Failing(("c", "b"), ("up", "down", "flat"), np.zeros((2, 3)))
    ensemble, _, _ = build(executor, models, members, method="mean_proba", min_members=3)
    with pytest.raises(PredictionFailed, match="2 members answered, 3 needed"):
        ensemble.predict(RNG.normal(size=(1, 4)))


def test_a_member_past_its_timeout_is_dropped_and_its_late_answer_ignored(
    executor: ThreadPoolExecutor,
) -> None:
    models, members = three_members()
    slow = models["mc"]
    assert isinstance(slow, Softmax)
    slow.gate = threading.Event()
    ensemble, metrics, _ = build(executor, models, members, method="mean_proba", member_timeout_ms=50)
    matrix = RNG.normal(size=(1, 4))
    try:
        output, detail = ensemble.predict_detailed(matrix)
    finally:
        slow.gate.set()
    expected = (own(models, "ma", matrix, [0, 1]) + own(models, "mb", matrix, [2, 1])[:, [1, 2, 0]]) / 2
    np.testing.assert_allclose(output.probabilities, expected)  # type: ignore[arg-type]
    assert [m["status"] for m in detail.as_list()] == ["ok", "ok", "timeout"]
    assert metrics.value("ensemble_member_failures", ("ens", "c", "timeout")) == 1


def test_an_open_member_breaker_skips_the_member_without_calling_it(executor: ThreadPoolExecutor) -> None:
    models, members = three_members()
    ensemble, metrics, breakers = build(executor, models, members, method="mean_proba")
    breakers["b"].force("force_open")
    _, detail = ensemble.predict_detailed(RNG.normal(size=(1, 4)))
    assert [m["status"] for m in detail.as_list()] == ["ok", "circuit_open", "ok"]
    assert models["mb"].seen == []  # type: ignore[attr-defined]
    assert metrics.value("ensemble_member_failures", ("ens", "b", "circuit_open")) == 1


def test_repeated_member_failures_open_its_breaker(executor: ThreadPoolExecutor) -> None:
    models, members = three_members()
    models["mb"] = Failing(("c", "b"), ("up", "down", "flat"), np.zeros((2, 3)))
    ensemble, _, breakers = build(executor, models, members, method="mean_proba")
    for _ in range(2):
        ensemble.predict(RNG.normal(size=(1, 4)))
    assert breakers["b"].state == "open"
    assert breakers["a"].state == "closed"


def test_chaos_is_asked_before_each_member_call_and_its_failure_drops_the_member(
    executor: ThreadPoolExecutor,
) -> None:
    models, members = three_members()
    chaos = Chaos({("mc", "1")})
    ensemble, _, _ = build(executor, models, members, chaos, method="majority_vote")
    matrix = RNG.normal(size=(1, 4))
    output, detail = ensemble.predict_detailed(matrix)
    assert sorted(chaos.calls) == [("ma", "1"), ("mb", "1"), ("mc", "1")]
    assert [m["status"] for m in detail.as_list()] == ["ok", "ok", "error"]
    votes = np.zeros(3)
    votes[np.argmax(own(models, "ma", matrix, [0, 1])[0])] += 0.5
    votes[np.argmax(own(models, "mb", matrix, [2, 1])[:, [1, 2, 0]][0])] += 0.3
    np.testing.assert_allclose(output.probabilities, [votes / 0.8])  # type: ignore[arg-type]


class Linear(LoadedModel):
    framework = "test"

    def __init__(self, features: tuple[str, ...], coef: np.ndarray) -> None:
        super().__init__(ModelSignature.from_names(features))
        self.coef = coef

    def predict_scores(self, matrix: np.ndarray) -> np.ndarray:
        return np.asarray(matrix @ self.coef)


def test_regressor_members_combine_their_values(executor: ThreadPoolExecutor) -> None:
    models: dict[str, LoadedModel] = {
        "ra": Linear(("x", "y"), np.array([1.0, 2.0])),
        "rb": Linear(("y",), np.array([3.0])),
    }
    members = [
        {"name": "a", "target": "models:/ra/1", "weight": 3},
        {"name": "b", "target": "models:/rb/1", "weight": 1},
    ]
    ensemble, _, _ = build(executor, models, members, method="weighted_mean")
    output = ensemble.predict(np.array([[1.0, 1.0], [2.0, 0.0]]))
    assert output.probabilities is None
    np.testing.assert_allclose(output.predictions, [(3 * 3 + 3) / 4, (3 * 2 + 0) / 4])


def mismatch(method: str, models: dict[str, LoadedModel], **config: Any) -> list[dict[str, str]]:
    members = [{"name": n, "target": f"models:/{n}/1"} for n in models]
    body = EnsembleCreate.model_validate({"name": "ens", "method": method, "members": members, **config})
    with pytest.raises(InvalidEnsemble) as raised:
        plan_layout(body, list(models.values()), None)
    details: list[dict[str, str]] = raised.value.details
    return details


def test_members_with_other_classes_a_mixed_task_or_an_unfit_method_are_refused() -> None:
    three = Softmax(("a",), CLASSES, np.ones((1, 3)))
    binary = Softmax(("a",), ("0", "1"), np.ones((1, 2)))
    regressor = Linear(("a",), np.ones(1))
    assert "differ" in mismatch("mean_proba", {"m1": three, "m2": binary})[0]["error"]
    assert (
        "mix classifiers and regressors" in mismatch("mean_proba", {"m1": three, "m2": regressor})[0]["error"]
    )
    assert mismatch("mean", {"m1": three})[0]["field"] == "method"
    assert mismatch("mean_proba", {"m1": regressor})[0]["field"] == "method"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"min_members": 3}, "min_members"),
        (
            {"members": [{"name": "a", "target": "models:/m/1"}, {"name": "a", "target": "models:/m/2"}]},
            "unique",
        ),
        ({"method": "stacking"}, "meta_model"),
        ({"meta_model": "models:/meta/1"}, "stacking only"),
        ({"members": [{"name": "a", "target": "models:/m/1", "weight": 0}]}, "greater than 0"),
        ({"members": [{"name": "a", "target": "ensemble:other"}]}, "pattern"),
    ],
)
def test_the_body_is_checked_before_any_model_is_loaded(change: dict[str, Any], message: str) -> None:
    body: dict[str, Any] = {
        "name": "ens",
        "method": "mean_proba",
        "members": [{"name": "a", "target": "models:/m/1"}, {"name": "b", "target": "models:/m/2"}],
        **change,
    }
    with pytest.raises(ValueError, match=message):
        EnsembleCreate.model_validate(body)
