"""Per-record scoring rules (design 3.8) against independent references: scikit-learn and NumPy.

Each rule is checked record by record on a few hundred seeded random cases to 1e-12, plus the edge
cases users see in a score row (flat outcomes, abstentions, clipping, hold decisions).
"""

from __future__ import annotations

import json
import math
from decimal import Decimal
from typing import Any

import numpy as np
import pytest
from sklearn.metrics import (
    brier_score_loss,
    log_loss,
    mean_absolute_error,
    mean_pinball_loss,
    mean_squared_error,
)

from prediction_provider.outcomes.metrics import (
    METRIC_VERSION,
    decision_metrics,
    direction_metrics,
    p_up_of,
    quantile_metrics,
    realized_returns,
    return_metrics,
    signal_metrics,
)

CASES = 300
TOL = 1e-12


def assert_plain_json(value: Any) -> None:
    """Only str/float/int/bool/None (no numpy scalars, which subclass float), and no NaN."""
    if isinstance(value, dict):
        for k, v in value.items():
            assert type(k) is str
            assert_plain_json(v)
    elif isinstance(value, list):
        for v in value:
            assert_plain_json(v)
    else:
        assert value is None or type(value) in (str, float, int, bool), type(value)
    json.dumps(value, allow_nan=False)


def test_metric_version_is_one() -> None:
    assert METRIC_VERSION == "1"


def test_realized_returns_match_numpy() -> None:
    rng = np.random.default_rng(1)
    for c0, c1 in rng.uniform(0.5, 200.0, size=(CASES, 2)):
        simple, log = realized_returns(np.float64(c0), np.float64(c1))
        assert simple == pytest.approx(c1 / c0 - 1.0, abs=TOL)
        assert log == pytest.approx(float(np.log(c1) - np.log(c0)), abs=TOL)
        assert type(simple) is float
        assert type(log) is float


@pytest.mark.parametrize(("c0", "c1"), [(0.0, 1.0), (1.0, -2.0), (math.nan, 1.0), (1.0, math.inf)])
def test_realized_returns_reject_bad_closes(c0: float, c1: float) -> None:
    with pytest.raises(ValueError, match="close"):
        realized_returns(c0, c1)


def test_direction_metrics_match_sklearn_record_by_record() -> None:
    rng = np.random.default_rng(2)
    p_all = np.concatenate([rng.uniform(0.0, 1.0, CASES), [0.0, 1.0, 0.5, 1e-9, 1 - 1e-9]])
    r_all = rng.normal(0.0, 0.01, p_all.size)
    for p, r in zip(p_all, r_all, strict=True):
        out = direction_metrics(np.float64(p), np.float64(r))
        assert out is not None
        assert_plain_json(out)
        y = int(r > 0)
        assert out["y"] == y
        assert out["p"] == p
        assert out["brier"] == pytest.approx(brier_score_loss([y], [p], labels=[0, 1]), abs=TOL)
        clipped = float(np.clip(p, 1e-6, 1 - 1e-6))
        assert out["log_loss"] == pytest.approx(log_loss([y], [clipped], labels=[0, 1]), abs=TOL)
        expected_hit = None if p == 0.5 else int(np.sign(p - 0.5) == np.sign(y - 0.5))
        assert out["hit"] == expected_hit


def test_direction_log_loss_is_clipped_so_a_certain_miss_costs_ln_a_million() -> None:
    out = direction_metrics(0.0, 0.01)
    assert out is not None
    assert out["log_loss"] == pytest.approx(math.log(1e6), abs=1e-9)
    assert out["brier"] == 1.0
    assert out["hit"] == 0


def test_flat_outcomes_are_excluded_not_scored() -> None:
    assert direction_metrics(0.7, 0.0) is None
    assert direction_metrics(0.7, 0.0004, flat_band=0.0005) is None
    assert direction_metrics(0.7, -0.0005, flat_band=0.0005) is None  # the band is inclusive
    down = direction_metrics(0.7, -0.0006, flat_band=0.0005)
    assert down is not None
    assert down["y"] == 0
    assert down["hit"] == 0


def test_half_is_an_abstention_with_no_hit() -> None:
    out = direction_metrics(0.5, 0.02)
    assert out is not None
    assert out["hit"] is None
    assert out["brier"] == 0.25


@pytest.mark.parametrize("p", [-0.1, 1.2, math.nan])
def test_direction_rejects_non_probabilities(p: float) -> None:
    with pytest.raises(ValueError, match="p_up"):
        direction_metrics(p, 0.01)


def test_p_up_is_up_given_not_flat() -> None:
    assert p_up_of({"down": 0.2, "flat": 0.5, "up": 0.3}) == pytest.approx(0.6, abs=TOL)
    assert p_up_of({"up": 0.7, "down": 0.3}) == pytest.approx(0.7, abs=TOL)
    assert p_up_of({"up": 0.4, "flat": 0.6}) == 1.0  # no mass on down: certain up, given not flat
    assert p_up_of({"flat": 1.0}) is None
    assert p_up_of({"up": 0.0, "down": 0.0, "flat": 1.0}) is None


def test_p_up_from_random_three_class_answers() -> None:
    rng = np.random.default_rng(3)
    for down, flat, up in rng.dirichlet([1.0, 1.0, 1.0], CASES):
        p = p_up_of({"down": float(down), "flat": float(flat), "up": float(up)})
        assert p == pytest.approx(up / (up + down), abs=TOL)


def test_return_metrics_match_sklearn_and_numpy() -> None:
    rng = np.random.default_rng(4)
    pairs = np.vstack([rng.normal(0.0, 0.02, (CASES, 2)), [[0.0, 0.01], [0.01, 0.0], [0.0, 0.0]]])
    for e, r in pairs:
        out = return_metrics(np.float64(e), np.float64(r))
        assert_plain_json(out)
        assert out["expected"] == e
        assert out["realized"] == r
        assert out["squared_error"] == pytest.approx(mean_squared_error([r], [e]), abs=TOL)
        assert out["absolute_error"] == pytest.approx(mean_absolute_error([r], [e]), abs=TOL)
        assert out["signal_return"] == pytest.approx(float(np.sign(e) * r), abs=TOL)
        expected_hit = None if e == 0 or r == 0 else int(np.sign(e) == np.sign(r))
        assert out["sign_hit"] == expected_hit


def test_quantile_metrics_match_sklearn_pinball() -> None:
    rng = np.random.default_rng(5)
    for _ in range(CASES):
        count = int(rng.integers(2, 6))
        levels = np.sort(rng.choice(np.arange(1, 100), size=count, replace=False) / 100.0)
        values = np.sort(rng.normal(0.0, 0.02, count))
        y = float(rng.normal(0.0, 0.02))
        # given unordered and keyed by the decimal strings the answers carry
        q = {str(level): float(value) for level, value in reversed(list(zip(levels, values, strict=True)))}
        out = quantile_metrics(q, y)
        assert_plain_json(out)
        reference = np.mean(
            [mean_pinball_loss([y], [v], alpha=a) for a, v in zip(levels, values, strict=True)]
        )
        assert out["pinball"] == pytest.approx(float(reference), abs=TOL)
        assert out["covered"] == int(values[0] <= y <= values[-1])
        assert out["lower"] == values[0]
        assert out["upper"] == values[-1]
        assert out["levels"] == [float(level) for level in levels]


def test_the_80_percent_interval_is_inclusive() -> None:
    q = {0.1: -0.01, 0.5: 0.0, 0.9: 0.01}
    assert quantile_metrics(q, 0.01)["covered"] == 1
    assert quantile_metrics(q, -0.01)["covered"] == 1
    assert quantile_metrics(q, 0.0101)["covered"] == 0


def test_a_single_quantile_has_no_coverage() -> None:
    out = quantile_metrics({0.5: 0.0}, 0.02)
    assert out["covered"] is None
    assert out["pinball"] == pytest.approx(0.5 * 0.02, abs=TOL)


@pytest.mark.parametrize("q", [{}, {0.0: 1.0}, {1.0: 1.0}, {"1.5": 0.1}])
def test_quantile_levels_must_lie_in_the_open_unit_interval(q: dict[Any, float]) -> None:
    with pytest.raises(ValueError, match="level"):
        quantile_metrics(q, 0.0)


def test_a_buy_pays_the_spread_and_two_commissions() -> None:
    out = decision_metrics(
        "buy",
        Decimal("1000"),
        Decimal("1.1000"),
        Decimal("1.1050"),
        spread=Decimal("0.0002"),
        commission=Decimal("0.5"),
    )
    assert_plain_json(out)
    assert Decimal(out["gross"]) == Decimal("5")
    assert Decimal(out["costs"]) == Decimal("1.2")
    assert Decimal(out["pnl"]) == Decimal("3.8")
    assert out["pnl_float"] == 3.8
    assert out["return"] == pytest.approx(3.8 / 1100.0, abs=TOL)
    assert out["action"] == "buy"
    assert out["quantity"] == "1000"


def test_decision_pnl_equals_filling_at_the_half_spread_quotes() -> None:
    """Independent derivation: buy at ask = close + s/2, sell at bid = close - s/2, pay each fill."""
    rng = np.random.default_rng(6)
    for _ in range(CASES):
        q = Decimal(int(rng.integers(1, 100_000)))
        entry = Decimal(int(rng.integers(90_000, 130_000))) / Decimal(100_000)
        exit_ = Decimal(int(rng.integers(90_000, 130_000))) / Decimal(100_000)
        spread = Decimal(int(rng.integers(0, 30))) / Decimal(100_000)
        commission = Decimal(int(rng.integers(0, 500))) / Decimal(100)
        half = spread / 2
        for action in ("buy", "sell"):
            if action == "buy":
                cash = q * (exit_ - half) - q * (entry + half)
            else:
                cash = q * (entry - half) - q * (exit_ + half)
            reference = cash - 2 * commission
            out = decision_metrics(action, q, entry, exit_, spread=spread, commission=commission)
            assert Decimal(out["pnl"]) == reference
            assert Decimal(out["gross"]) - Decimal(out["costs"]) == reference
            assert out["return"] == pytest.approx(float(reference / (q * entry)), abs=TOL)


@pytest.mark.parametrize(("action", "quantity"), [("hold", Decimal("500")), ("buy", Decimal("0"))])
def test_holding_or_trading_nothing_costs_nothing(action: str, quantity: Decimal) -> None:
    out = decision_metrics(
        action, quantity, Decimal("1.1"), Decimal("1.2"), spread=Decimal("0.001"), commission=Decimal("3")
    )
    assert Decimal(out["pnl"]) == 0
    assert Decimal(out["costs"]) == 0
    assert out["return"] is None


def test_decision_rejects_unknown_actions_and_floats() -> None:
    with pytest.raises(ValueError, match="action"):
        decision_metrics(
            "short", Decimal(1), Decimal(1), Decimal(1), spread=Decimal(0), commission=Decimal(0)
        )
    with pytest.raises(ValueError, match="Decimal"):
        decision_metrics("buy", 1.0, Decimal(1), Decimal(1), spread=Decimal(0), commission=Decimal(0))  # type: ignore[arg-type]


def test_signal_metrics_match_numpy_and_sklearn() -> None:
    rng = np.random.default_rng(7)
    sides = ["buy", "sell", "exit"]
    for _ in range(CASES):
        predicted = {s: int(v) for s, v in zip(sides, rng.integers(0, 2, 3), strict=True)}
        realized = {s: int(v) for s, v in zip(sides, rng.integers(0, 2, 3), strict=True)}
        with_confidence = [s for s in sides if rng.random() < 0.7]
        confidences = {s: float(rng.random()) for s in with_confidence}
        out = signal_metrics(predicted, realized, confidences)
        assert_plain_json(out)
        for s in sides:
            assert out[f"{s}_hit"] == int(predicted[s] == realized[s])
        assert out["accuracy"] == pytest.approx(
            float(np.mean([predicted[s] == realized[s] for s in sides])), abs=TOL
        )
        if with_confidence:
            reference = brier_score_loss(
                [realized[s] for s in with_confidence],
                [confidences[s] for s in with_confidence],
                labels=[0, 1],
            )
            assert out["brier"] == pytest.approx(reference, abs=TOL)
        else:
            assert "brier" not in out


def test_signals_without_confidences_have_no_brier() -> None:
    out = signal_metrics({"buy": 1, "sell": 0}, {"buy": 0, "sell": 0})
    assert out == {"buy_hit": 0, "sell_hit": 1, "accuracy": 0.5}


def test_a_side_without_a_label_is_an_error() -> None:
    with pytest.raises(ValueError, match="exit"):
        signal_metrics({"buy": 1, "exit": 1}, {"buy": 1})
