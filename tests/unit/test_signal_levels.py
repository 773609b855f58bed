"""Entry levels in points with the cost buffer, and the models' calendar horizon."""

from __future__ import annotations

from decimal import Decimal

import numpy as np
import pandas as pd
import pytest

from prediction_provider.signals.horizon import calendar_bars_remaining
from prediction_provider.signals.levels import Direction, TradeCosts, cost_buffer_points, entry_levels

PIP = Decimal("0.00001")


@pytest.mark.parametrize(
    ("costs", "points"),
    [
        (TradeCosts(), Decimal(5)),
        (TradeCosts(0.0, 0.0, 0.0), Decimal(5)),
        (TradeCosts(spread_pips=2.0), Decimal(2)),
        (TradeCosts(slippage_pips=0.5), Decimal("0.5")),
        (TradeCosts(commission_per_lot=7.0), Decimal(14)),
        (TradeCosts(spread_pips=2.0, commission_per_lot=7.0, slippage_pips=1.0), Decimal(17)),
        (TradeCosts(spread_pips=1.5, commission_per_lot=3.5), Decimal("8.5")),
    ],
)
def test_the_cost_buffer_is_spread_plus_slippage_plus_twice_the_commission_in_points(
    costs: TradeCosts, points: Decimal
) -> None:
    assert cost_buffer_points(costs, PIP) == points


def test_the_commission_in_points_depends_on_the_pip_size() -> None:
    assert cost_buffer_points(TradeCosts(commission_per_lot=7.0), Decimal("0.0001")) == Decimal("1.4")


def test_buy_and_sell_levels_mirror_each_other_around_the_close() -> None:
    buy, sell = entry_levels(1.10000, 20, 15, TradeCosts(spread_pips=2.0, commission_per_lot=7.0), PIP)
    # cost 2 + 14 = 16 points, target 36 points away, stop 15.
    assert (buy.direction, buy.take_profit, buy.stop_loss) == (Direction.BUY, 1.10036, 1.09985)
    assert (sell.direction, sell.take_profit, sell.stop_loss) == (Direction.SELL, 1.09964, 1.10015)


def test_levels_are_the_nearest_floats_to_the_exact_decimals() -> None:
    rng = np.random.default_rng(3)
    for price_text, tp, sl in zip(
        (f"{value:.5f}" for value in rng.uniform(0.8, 1.6, 2000)),
        rng.integers(-5, 400, 2000),
        rng.integers(-5, 400, 2000),
        strict=True,
    ):
        buy, sell = entry_levels(float(price_text), float(tp), float(sl), TradeCosts(), PIP)
        p, tp_points, sl_points = (
            Decimal(price_text),
            Decimal(int(tp) if tp > 0 else 5),
            Decimal(int(sl) if sl > 0 else 10),
        )
        assert buy.take_profit == float(p + (tp_points + 5) * PIP)
        assert buy.stop_loss == float(p - sl_points * PIP)
        assert sell.take_profit == float(p - (tp_points + 5) * PIP)
        assert sell.stop_loss == float(p + sl_points * PIP)


@pytest.mark.parametrize(
    ("moment", "bars"),
    [
        ("2024-01-08T00:00:00Z", 4 * 24 + 20),  # Monday 00:00 to Friday 20:00
        ("2024-01-12T19:00:00Z", 1),
        ("2024-01-12T19:30:00Z", 1),
        ("2024-01-12T20:00:00Z", 1),
        ("2024-01-12T22:00:00Z", 1),
        ("2024-01-14T22:00:00Z", 2 + 4 * 24 + 20),  # Sunday evening counts towards the coming week
        ("2024-01-13T12:00:00Z", 12 + 24 + 4 * 24 + 20),
    ],
)
def test_the_calendar_horizon_counts_hourly_bars_to_friday_20_00(moment: str, bars: int) -> None:
    times = np.array([pd.Timestamp(moment).value], dtype=np.int64)
    assert calendar_bars_remaining(times, 3_600_000_000_000).tolist() == [bars]


def test_the_calendar_horizon_follows_the_bar_spacing() -> None:
    monday = np.array([pd.Timestamp("2024-01-08T00:00:00Z").value], dtype=np.int64)
    assert calendar_bars_remaining(monday, 4 * 3_600_000_000_000).tolist() == [29]  # 116 h / 4 h
    assert calendar_bars_remaining(monday, 24 * 3_600_000_000_000).tolist() == [5]
