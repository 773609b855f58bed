"""Take-profit and stop-loss levels, and the one rule that says when a bar reached them.

Entry levels are given in points of ``pip_size`` (0.00001 by default): a
``tp`` or ``sl`` of zero or less means 5 and 10 points; the cost buffer is
``spread + slippage + 2 x commission_per_lot / (100000 x pip_size)`` points
when any of those costs is given (above zero: clients send 0 for "not given"),
else 5 points. Buy: TP = P + (tp + cost) x pip, SL = P - sl x pip; sell is the
mirror. Exit levels are absolute prices and get no buffer.

The comparison rule, free of tolerances: every number is taken as the decimal
it was written as (the shortest repr of its float: the request's JSON number,
the CSV's price text), a level is computed from those decimals exactly and
rounded once to the nearest float64, and a bar reaches it when its price, as
parsed (also the nearest float64 to its text), is >= (or <=) that float.
Rounding to nearest is monotone, and two different decimals of at most 15
significant digits never round to the same float64, so this is the exact
decimal comparison whenever the level has at most 15 significant digits, as
any whole or fractional number of points on a 5-decimal price does. Float
arithmetic instead misses about one level in four: ``1.23426 - 15 x 0.00001``
is 1.2341099999999998 in float64, and a bar at exactly 1.23411 would not
reach that sell target.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Context, Decimal
from enum import StrEnum

DEFAULT_TP_POINTS = Decimal(5)
DEFAULT_SL_POINTS = Decimal(10)
DEFAULT_COST_POINTS = Decimal(5)
UNITS_PER_LOT = Decimal(100_000)
# Far more digits than any price, distance or cost needs: the arithmetic below is exact in practice.
EXACT = Context(prec=60)


class Direction(StrEnum):
    BUY = "buy"
    SELL = "sell"


@dataclass(frozen=True, slots=True)
class TradeCosts:
    """Costs in points (spread, slippage) and account currency per 100 000 units (commission)."""

    spread_pips: float | None = None
    commission_per_lot: float | None = None
    slippage_pips: float | None = None

    def given(self) -> bool:
        return any(
            value is not None and value > 0
            for value in (self.spread_pips, self.commission_per_lot, self.slippage_pips)
        )


@dataclass(frozen=True, slots=True)
class Levels:
    direction: Direction
    take_profit: float
    stop_loss: float


def written(value: float) -> Decimal:
    """The decimal a float was written as: its shortest round-trip repr."""
    return Decimal(repr(float(value)))


def cost_buffer_points(costs: TradeCosts, pip_size: Decimal) -> Decimal:
    if not costs.given():
        return DEFAULT_COST_POINTS
    spread = written(costs.spread_pips or 0.0)
    slippage = written(costs.slippage_pips or 0.0)
    commission = written(costs.commission_per_lot or 0.0)
    commission_points = EXACT.divide(EXACT.multiply(Decimal(2), commission), UNITS_PER_LOT * pip_size)
    return EXACT.add(EXACT.add(spread, slippage), commission_points)


def entry_levels(
    price: float, tp_points: float, sl_points: float, costs: TradeCosts, pip_size: Decimal
) -> tuple[Levels, Levels]:
    """Buy and sell levels around ``price`` (the entry bar's close), judged independently."""
    tp = written(tp_points) if tp_points > 0 else DEFAULT_TP_POINTS
    sl = written(sl_points) if sl_points > 0 else DEFAULT_SL_POINTS
    target = EXACT.multiply(EXACT.add(tp, cost_buffer_points(costs, pip_size)), pip_size)
    stop = EXACT.multiply(sl, pip_size)
    p = written(price)
    buy = Levels(Direction.BUY, float(EXACT.add(p, target)), float(EXACT.subtract(p, stop)))
    sell = Levels(Direction.SELL, float(EXACT.subtract(p, target)), float(EXACT.add(p, stop)))
    return buy, sell
