"""Volatility-targeted sizing: scaled by confidence and regime certainty, rounded down to lots."""

from __future__ import annotations

import math
from decimal import Decimal

import numpy as np
import pandas as pd
import pytest

from prediction_provider.trading.sizing import (
    SizingPolicy,
    annualised_volatility,
    floor_to_lot,
    recommended_quantity,
)

POLICY = SizingPolicy(risk_budget=0.1, target_volatility=0.1, lot_step=Decimal("0.01"))


def size(**overrides: object) -> Decimal:
    arguments: dict[str, object] = {
        "trades": True,
        "equity": Decimal(100_000),
        "price": 50.0,
        "volatility": 0.2,
        "confidence": 1.0,
        "entropy": 0.0,
        "policy": POLICY,
    }
    arguments.update(overrides)
    return recommended_quantity(**arguments)  # type: ignore[arg-type]


def test_full_confidence_position_is_the_budget_at_target_volatility() -> None:
    # 100,000 x 0.1 x (0.1 / 0.2) = 5,000 of notional, at 50 a unit.
    assert size() == Decimal("100.00")


def test_hold_is_zero() -> None:
    assert size(trades=False) == 0


def test_size_scales_with_confidence_and_regime_certainty() -> None:
    assert size(confidence=0.5) == Decimal("50.00")
    assert size(entropy=0.75) == Decimal("25.00")
    assert size(confidence=0.5, entropy=0.5) == Decimal("25.00")
    assert size(entropy=1.0) == 0


def test_wilder_instruments_get_smaller_positions() -> None:
    assert size(volatility=0.4) == Decimal("50.00")
    assert size(volatility=0.1) == Decimal("200.00")


def test_volatility_scale_is_capped() -> None:
    calm = size(volatility=0.001)
    assert calm == size(volatility=0.1 / POLICY.max_volatility_scale)


@pytest.mark.parametrize("volatility", [0.0, math.nan, math.inf, -0.1])
def test_no_usable_volatility_means_no_position(volatility: float) -> None:
    assert size(volatility=volatility) == 0


def test_quantity_is_rounded_down_to_the_lot_step() -> None:
    quantity = size(price=33.0)  # 5,000 / 33 = 151.5151...
    assert quantity == Decimal("151.51")
    assert quantity * Decimal(33) <= Decimal(5000)
    whole_lots = SizingPolicy(lot_step=Decimal(1000), risk_budget=0.1, target_volatility=0.1)
    assert size(price=1.2, policy=whole_lots) == Decimal(4000)  # 4,166.67 units, in lots of 1,000


def test_floor_to_lot_never_rounds_up_or_goes_negative() -> None:
    assert floor_to_lot(Decimal("9.999"), Decimal("0.01")) == Decimal("9.99")
    assert floor_to_lot(Decimal("-5"), Decimal("1")) == 0


def test_policy_refuses_nonsense() -> None:
    with pytest.raises(ValueError, match="risk_budget"):
        SizingPolicy(risk_budget=0)
    with pytest.raises(ValueError, match="lot_step"):
        SizingPolicy(lot_step=Decimal(0))


def synthetic_bars(freq: str, periods: int, per_bar_std: float, seed: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    index = pd.date_range("2020-01-06", periods=periods, freq=freq, tz="UTC")
    close = 100 * np.exp(np.cumsum(rng.normal(0, per_bar_std, periods)))
    return pd.DataFrame({"close": close}, index=index)


def test_annualised_volatility_reads_the_bar_rate_off_the_timestamps() -> None:
    daily = synthetic_bars("D", 2000, 0.01)
    hourly = synthetic_bars("h", 2000, 0.01)
    # Calendar days: 365.25 bars a year; hours: 8,766 bars a year.
    assert annualised_volatility(daily) == pytest.approx(0.01 * math.sqrt(365.25), rel=0.05)
    assert annualised_volatility(hourly) == pytest.approx(0.01 * math.sqrt(8766), rel=0.05)


def test_business_day_bars_annualise_at_about_252_a_year() -> None:
    business = synthetic_bars("B", 2000, 0.01)
    assert annualised_volatility(business) == pytest.approx(0.01 * math.sqrt(261), rel=0.06)


def test_annualised_volatility_needs_a_few_bars() -> None:
    assert math.isnan(annualised_volatility(synthetic_bars("D", 2, 0.01)))
