"""Pre-trade risk checks of a decision against an account's positions and the day's P&L.

Every check looks at the account *after* the proposed trade, valued at the
decision's price for the traded symbol and at each position's stored market
price for the others, as a fraction of equity:

- ``position_limit``: the symbol's position (``position_limit_exceeded``; 25 % by default);
- ``concentration``: the symbol's sector, all positions in it together
  (``sector_exposure_exceeded``; 50 %);
- ``leverage``: gross exposure, every position's absolute value (``leverage_exceeded``; 1.5x);
- ``daily_loss_limit``: the day's loss, the worse of equity against the day's
  start and realised P&L, over the day's starting equity (``daily_loss_limit_reached``; 2 %).

A trade that only reduces a position never fails a check: cutting risk is
always allowed. A failed size check says, in ``allowed_quantity``, the largest
quantity (rounded down to the lot step) that would have passed it; the
decision's ``allowed_quantity`` is the smallest of those.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from prediction_provider.trading.sizing import floor_to_lot

NEAR_LIMIT = Decimal("0.8")  # a passing check above this share of its limit is reported as a warning


@dataclass(frozen=True, slots=True)
class PositionState:
    symbol: str
    sector: str | None
    quantity: Decimal  # signed: negative is short
    market_price: Decimal

    @property
    def exposure(self) -> Decimal:
        return abs(self.quantity * self.market_price)


@dataclass(frozen=True, slots=True)
class AccountState:
    name: str
    equity: Decimal
    day_start_equity: Decimal
    realized_pnl_today: Decimal
    positions: tuple[PositionState, ...] = ()

    def position(self, symbol: str) -> PositionState | None:
        return next((p for p in self.positions if p.symbol == symbol), None)


@dataclass(frozen=True, slots=True)
class RiskLimits:
    max_position: Decimal = Decimal("0.25")
    max_sector: Decimal = Decimal("0.5")
    max_leverage: Decimal = Decimal("1.5")
    max_daily_loss: Decimal = Decimal("0.02")


@dataclass(frozen=True, slots=True)
class CheckResult:
    passed: bool
    code: str | None
    value: Decimal
    limit: Decimal
    message: str
    allowed_quantity: Decimal | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "code": self.code,
            "value": float(round(self.value, 6)),
            "limit": float(self.limit),
            "message": self.message,
            "allowed_quantity": None if self.allowed_quantity is None else float(self.allowed_quantity),
        }


@dataclass(frozen=True, slots=True)
class RiskValidation:
    approved: bool
    warnings: tuple[str, ...]
    checks: dict[str, CheckResult]

    @property
    def allowed_quantity(self) -> Decimal | None:
        hints = [c.allowed_quantity for c in self.checks.values() if c.allowed_quantity is not None]
        return min(hints) if hints else None

    @property
    def reasons(self) -> list[dict[str, Any]]:
        return [{"check": name, **c.as_dict()} for name, c in self.checks.items() if not c.passed]

    def as_dict(self) -> dict[str, Any]:
        return {
            "approved": self.approved,
            "warnings": list(self.warnings),
            "checks": {name: check.as_dict() for name, check in self.checks.items()},
        }


@dataclass(frozen=True, slots=True)
class ProposedTrade:
    symbol: str
    sector: str | None
    signed_quantity: Decimal  # + buys, - sells, 0 holds
    price: Decimal
    lot_step: Decimal


def _percent(value: Decimal) -> str:
    return f"{float(value) * 100:.1f}%"


def _allowed(current: Decimal, direction: int, cap_units: Decimal, lot_step: Decimal) -> Decimal:
    """The largest quantity in ``direction`` leaving ``|position| <= cap_units``."""
    toward = current * direction >= 0  # adding to the position (or opening it)
    room = cap_units - abs(current) if toward else abs(current) + max(cap_units, Decimal(0))
    return floor_to_lot(room, lot_step)


def _size_check(
    name: str, code: str, trade: ProposedTrade, account: AccountState, limit: Decimal, others: Decimal
) -> CheckResult:
    """One exposure check: ``others`` is what the check counts besides the traded symbol."""
    current = account.position(trade.symbol)
    held = current.quantity if current else Decimal(0)
    after = held + trade.signed_quantity
    value = (others + abs(after) * trade.price) / account.equity
    increases = abs(after) > abs(held)
    label = name.replace("_", " ")
    if value <= limit:
        return CheckResult(
            True, None, value, limit, f"{label} {_percent(value)} of equity, limit {_percent(limit)}"
        )
    if not increases:
        over = f"{label} {_percent(value)} of equity is over the {_percent(limit)} limit"
        message = f"{over}, but this trade does not add to it"
        return CheckResult(True, None, value, limit, message)
    direction = 1 if trade.signed_quantity > 0 else -1
    cap_units = (limit * account.equity - others) / trade.price
    allowed = _allowed(held, direction, cap_units, trade.lot_step)
    return CheckResult(
        False,
        code,
        value,
        limit,
        f"{label} would be {_percent(value)} of equity, over the {_percent(limit)} limit",
        allowed,
    )


def _daily_loss(trade: ProposedTrade, account: AccountState, limit: Decimal) -> CheckResult:
    drawdown = account.day_start_equity - account.equity
    loss = max(drawdown, -account.realized_pnl_today, Decimal(0))
    base = account.day_start_equity if account.day_start_equity > 0 else account.equity
    value = loss / base if base > 0 else Decimal(0)
    current = account.position(trade.symbol)
    held = current.quantity if current else Decimal(0)
    increases = abs(held + trade.signed_quantity) > abs(held)
    if value < limit or not increases:
        return CheckResult(True, None, value, limit, f"day's loss {_percent(value)}, limit {_percent(limit)}")
    return CheckResult(
        False,
        "daily_loss_limit_reached",
        value,
        limit,
        f"day's loss {_percent(value)} has reached the {_percent(limit)} limit: only trades that reduce "
        "a position are allowed today",
        floor_to_lot(Decimal(0), trade.lot_step),
    )


def validate(
    trade: ProposedTrade, account: AccountState, limits: RiskLimits, notes: Sequence[str] = ()
) -> RiskValidation:
    """Run every check; ``notes`` are warnings from earlier steps, carried into the result."""
    current = account.position(trade.symbol)
    if account.equity <= 0:
        held = current.quantity if current else Decimal(0)
        increases = abs(held + trade.signed_quantity) > abs(held)
        message = "the account has no equity: only trades that reduce a position are allowed"
        check = CheckResult(
            not increases, "no_equity" if increases else None, Decimal(0), Decimal(0), message,
            floor_to_lot(Decimal(0), trade.lot_step) if increases else None,
        )  # fmt: skip
        return RiskValidation(check.passed, (*notes, message), {"equity": check})
    others = [p for p in account.positions if p.symbol != trade.symbol]
    sector = (current.sector if current and current.sector else None) or trade.sector
    same_sector = sum((p.exposure for p in others if sector is not None and p.sector == sector), Decimal(0))
    gross_others = sum((p.exposure for p in others), Decimal(0))
    checks = {
        "position_limit": _size_check(
            "position_limit", "position_limit_exceeded", trade, account, limits.max_position, Decimal(0)
        ),
        "concentration": _size_check(
            "concentration", "sector_exposure_exceeded", trade, account, limits.max_sector, same_sector
        ),
        "leverage": _size_check(
            "leverage", "leverage_exceeded", trade, account, limits.max_leverage, gross_others
        ),
        "daily_loss_limit": _daily_loss(trade, account, limits.max_daily_loss),
    }
    warnings = list(notes)
    if sector is None and trade.signed_quantity != 0:
        warnings.append(f"no sector known for {trade.symbol}: its sector exposure is its own position")
    for name, check in checks.items():
        if not check.passed:
            warnings.append(f"{check.code}: {check.message}")
        elif check.limit > 0 and check.value > check.limit * NEAR_LIMIT:
            warnings.append(f"{name} near its limit: {check.message}")
    return RiskValidation(all(c.passed for c in checks.values()), tuple(warnings), checks)
