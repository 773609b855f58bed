"""How much to trade: volatility targeting from a risk budget, shrunk by doubt.

For a BUY or SELL the position's notional value is

    equity x risk_budget x min(target_volatility / volatility, max_volatility_scale)
           x confidence x (1 - regime entropy)

where ``volatility`` is the instrument's annualised realised volatility. A
calm instrument gets a larger position and a wild one a smaller, so that each
full-confidence trade carries about ``risk_budget`` of the account's risk at
``target_volatility``; an uncertain model (low confidence) or an ambiguous
regime (high entropy) trades less. The quantity is notional / price, rounded
*down* to a multiple of ``lot_step`` (so rounding never adds risk). HOLD is 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import ROUND_FLOOR, Decimal, InvalidOperation

import numpy as np
import pandas as pd

SECONDS_PER_YEAR = 365.25 * 24 * 3600


@dataclass(frozen=True, slots=True)
class SizingPolicy:
    risk_budget: float = 0.1
    target_volatility: float = 0.1
    max_volatility_scale: float = 4.0
    lot_step: Decimal = Decimal(1)

    def __post_init__(self) -> None:
        if not (0 < self.risk_budget <= 1 and self.target_volatility > 0 and self.max_volatility_scale > 0):
            raise ValueError("risk_budget must be in (0, 1]; target_volatility and the scale positive")
        if self.lot_step <= 0:
            raise ValueError("lot_step must be positive")


def annualised_volatility(bars: pd.DataFrame) -> float:
    """Std of 1-bar log returns times sqrt(bars per year), the bar rate read off the timestamps.

    Reading the rate from the data makes hourly FX (about 6,200 bars a year, no
    weekends) and daily equities (about 252) come out right without a calendar.
    NaN when there are too few bars to tell.
    """
    if len(bars) < 3:
        return math.nan
    returns = np.diff(np.log(bars["close"].to_numpy(np.float64)))
    span = (bars.index[-1] - bars.index[0]).total_seconds()
    if span <= 0:
        return math.nan
    bars_per_year = (len(bars) - 1) * SECONDS_PER_YEAR / span
    return float(np.std(returns, ddof=1) * math.sqrt(bars_per_year))


def floor_to_lot(quantity: Decimal, lot_step: Decimal) -> Decimal:
    """Down to a multiple of ``lot_step``, never below zero."""
    if quantity <= 0:
        return Decimal(0) * lot_step
    return (quantity / lot_step).to_integral_value(rounding=ROUND_FLOOR) * lot_step


def recommended_quantity(
    *,
    trades: bool,
    equity: Decimal,
    price: float,
    volatility: float,
    confidence: float,
    entropy: float,
    policy: SizingPolicy,
) -> Decimal:
    """The unsigned quantity for a BUY or SELL (``trades``), zero for HOLD or unusable inputs."""
    zero = floor_to_lot(Decimal(0), policy.lot_step)
    if not trades or equity <= 0 or not (price > 0 and math.isfinite(price)):
        return zero
    if not (volatility > 0 and math.isfinite(volatility)):
        return zero  # no sensible size without a volatility estimate
    scale = min(policy.target_volatility / volatility, policy.max_volatility_scale)
    certainty = max(0.0, min(1.0, confidence)) * max(0.0, min(1.0, 1.0 - entropy))
    fraction = policy.risk_budget * scale * certainty
    try:
        notional = equity * Decimal(repr(fraction))
        return floor_to_lot(notional / Decimal(repr(price)), policy.lot_step)
    except InvalidOperation:
        return zero
