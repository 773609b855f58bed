"""Per-record scoring rules of design 3.8 (``metric_version`` "1"): plain numbers in, JSON-ready dicts out.

Every function here is pure and cheap: the scorer calls them once per resolved forecast and stores
the returned dict in the score row, so the output holds only ``str``/``float``/``int``/``bool``/``None``
(never numpy scalars) and a stored score never changes meaning. A rule change bumps ``METRIC_VERSION``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

METRIC_VERSION = "1"

# log loss clips p so that one confident miss costs ln(10^6) ≈ 13.8, not infinity.
LOG_LOSS_EPS = 1e-6

ENTRY_ACTIONS = ("buy", "sell", "hold")


def _finite(value: float, name: str) -> float:
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return number


def _probability(value: float, name: str) -> float:
    number = _finite(value, name)
    if not 0.0 <= number <= 1.0:
        raise ValueError(f"{name} is a probability in [0, 1], got {value!r}")
    return number


def _sign(value: float) -> int:
    return (value > 0) - (value < 0)


def realized_returns(close_as_of: float, close_target: float) -> tuple[float, float]:
    """(simple return c1/c0 - 1, log return ln(c1/c0)) between the as-of close and the target close.

    Both closes must be positive and finite: a zero or negative price is a data error, not a return.
    """
    c0 = _finite(close_as_of, "close_as_of")
    c1 = _finite(close_target, "close_target")
    if c0 <= 0.0 or c1 <= 0.0:
        raise ValueError(f"closes must be positive, got {close_as_of!r} and {close_target!r}")
    return c1 / c0 - 1.0, math.log(c1 / c0)


def direction_metrics(p_up: float, realized_return: float, flat_band: float = 0.0) -> dict[str, Any] | None:
    """Brier, log loss and hit of a probability of "up" against the realized return.

    ``None`` when the outcome is flat (|r| ≤ ``flat_band``; with the default band 0 only r == 0 is
    flat): a flat bar is neither up nor down, so it is excluded rather than scored as a miss.
    ``hit`` is ``None`` for p == 0.5, an abstention that counts neither for nor against the hit rate.
    """
    p = _probability(p_up, "p_up")
    r = _finite(realized_return, "realized_return")
    band = _finite(flat_band, "flat_band")
    if band < 0.0:
        raise ValueError(f"flat_band must not be negative, got {flat_band!r}")
    if abs(r) <= band:
        return None
    y = 1 if r > band else 0
    clipped = min(max(p, LOG_LOSS_EPS), 1.0 - LOG_LOSS_EPS)
    log_loss = -math.log(clipped) if y == 1 else -math.log(1.0 - clipped)
    hit: int | None = None if p == 0.5 else int((p > 0.5) == (y == 1))
    return {"p": p, "y": y, "brier": (p - y) ** 2, "log_loss": log_loss, "hit": hit}


def p_up_of(probabilities: Mapping[str, float]) -> float | None:
    """The probability of "up" to score against a non-flat outcome: P(up) / (P(up) + P(down)).

    The forecast models answer three classes (down, flat, up), but flat outcomes are excluded from
    direction scoring (see :func:`direction_metrics`), so the forecast being scored is "up, given not
    flat". Using raw P(up) would punish a model for every unit of mass it put on "flat" even though
    the flat case never reaches the score. A binary {"up", "down"} map (summing to 1) gives P(up)
    unchanged. A class missing from the map has probability 0 (classifiers list every class they
    give mass to). ``None`` when neither "up" nor "down" is present, or both are 0: the model then
    made no directional statement to score.
    """
    if "up" not in probabilities and "down" not in probabilities:
        return None
    up = _probability(probabilities.get("up", 0.0), "P(up)")
    down = _probability(probabilities.get("down", 0.0), "P(down)")
    total = up + down
    if total == 0.0:
        return None
    return up / total


def return_metrics(expected: float, realized: float) -> dict[str, Any]:
    """Errors of an expected return, its sign hit, and the return of trading its sign.

    ``sign_hit`` is ``None`` when either sign is 0 (no call made, or nothing happened).
    ``signal_return`` = sign(expected) · realized: the one-period return of going long/short by sign.
    """
    e = _finite(expected, "expected")
    r = _finite(realized, "realized")
    error = e - r
    se, sr = _sign(e), _sign(r)
    sign_hit: int | None = None if se == 0 or sr == 0 else int(se == sr)
    return {
        "expected": e,
        "realized": r,
        "squared_error": error * error,
        "absolute_error": abs(error),
        "sign_hit": sign_hit,
        "signal_return": float(se) * r,
    }


def quantile_metrics(
    quantiles: Mapping[float, float] | Mapping[str, float], realized: float
) -> dict[str, Any]:
    """Mean pinball loss over the given levels and coverage of the outer pair.

    Levels may be floats or the decimal strings the answers carry ("0.1"). The pinball loss at level
    τ for quantile q is τ·(y - q) when y ≥ q, else (1 - τ)·(q - y). ``covered`` is 1 when the realized
    value lies in [value at the lowest level, value at the highest level] (inclusive; the forecasts'
    80 % interval is the (0.1, 0.9) pair), ``None`` with fewer than two levels.
    """
    y = _finite(realized, "realized")
    pairs = sorted(
        (_finite(float(level), "quantile level"), _finite(q, "quantile value"))
        for level, q in quantiles.items()
    )
    if not pairs:
        raise ValueError("quantiles must give at least one level")
    for level, _ in pairs:
        if not 0.0 < level < 1.0:
            raise ValueError(f"quantile level {level!r} is outside (0, 1)")
    losses = [tau * (y - q) if y >= q else (1.0 - tau) * (q - y) for tau, q in pairs]
    two_sided = len(pairs) >= 2
    lower, upper = pairs[0][1], pairs[-1][1]
    return {
        "pinball": math.fsum(losses) / len(losses),
        "covered": int(lower <= y <= upper) if two_sided else None,
        "lower": lower if two_sided else None,
        "upper": upper if two_sided else None,
        "levels": [level for level, _ in pairs],
    }


def _decimal_text(value: Decimal) -> str:
    # Fixed-point text: str(Decimal) can answer "1E+2" or "0E-10", which clients misread.
    return format(value, "f")


def decision_metrics(
    action: str,
    quantity: Decimal,
    entry_close: Decimal,
    exit_close: Decimal,
    *,
    spread: Decimal,
    commission: Decimal,
) -> dict[str, Any]:
    """Realized P&L of following a trading decision for one round trip, in Decimal.

    A buy opens at ``entry_close`` + spread/2 and closes at ``exit_close`` - spread/2, a sell the
    mirror image, so the spread costs q·spread per round trip; ``commission`` is charged per fill
    (twice). pnl = gross - costs with gross = q·(exit - entry) for a buy and q·(entry - exit) for a
    sell. ``hold`` or a zero quantity trades nothing: P&L 0 and no costs. ``return`` is
    pnl / (q·entry), ``None`` when nothing was traded.
    """
    side = action.strip().lower()
    if side not in ENTRY_ACTIONS:
        raise ValueError(f"action must be one of {ENTRY_ACTIONS}, got {action!r}")
    values = {"quantity": quantity, "entry_close": entry_close, "exit_close": exit_close}
    values |= {"spread": spread, "commission": commission}
    for name, value in values.items():
        if not isinstance(value, Decimal) or not value.is_finite():
            raise ValueError(f"{name} must be a finite Decimal, got {value!r}")
        if value < 0:
            raise ValueError(f"{name} must not be negative, got {value!r}")
    zero = Decimal(0)
    if side == "hold" or quantity == 0:
        gross = costs = pnl = zero
        ret: float | None = None
    else:
        move = exit_close - entry_close if side == "buy" else entry_close - exit_close
        gross = quantity * move
        costs = quantity * spread + 2 * commission
        pnl = gross - costs
        notional = quantity * entry_close
        ret = float(pnl / notional) if notional != 0 else None
    return {
        "action": side,
        "quantity": _decimal_text(quantity),
        "pnl": _decimal_text(pnl),
        "pnl_float": float(pnl),
        "gross": _decimal_text(gross),
        "costs": _decimal_text(costs),
        "return": ret,
    }


def signal_metrics(
    predicted: Mapping[str, int],
    realized: Mapping[str, int],
    confidences: Mapping[str, float] | None = None,
) -> dict[str, Any]:
    """Per-side accuracy of binary entry/exit signals ("buy"/"sell" entries, "exit") and their Brier.

    Each side is a yes/no answer scored against the label of the reference TP/SL engine. The sides
    scored are those in ``predicted``; each must have a realized label. ``accuracy`` is the mean of
    the per-side hits; ``brier`` is the mean of (confidence - realized)² over the sides that carry a
    confidence (the confidence is the probability the side's answer is 1), and is present only when
    ``confidences`` is given and covers at least one scored side.
    """
    if not predicted:
        raise ValueError("predicted must name at least one side")
    out: dict[str, Any] = {}
    hits: list[int] = []
    squared: list[float] = []
    for side in sorted(predicted):
        if side not in realized:
            raise ValueError(f"no realized label for side {side!r}")
        answer, label = predicted[side], realized[side]
        if answer not in (0, 1) or label not in (0, 1):
            raise ValueError(f"side {side!r}: signals and labels are 0 or 1, got {answer!r} and {label!r}")
        hit = int(int(answer) == int(label))
        out[f"{side}_hit"] = hit
        hits.append(hit)
        if confidences is not None and confidences.get(side) is not None:
            c = _probability(confidences[side], f"confidence of {side!r}")
            squared.append((c - int(label)) ** 2)
    out["accuracy"] = sum(hits) / len(hits)
    if confidences is not None and squared:
        out["brier"] = math.fsum(squared) / len(squared)
    return out
