"""Amounts: integers of micro-units (10⁻⁶ of a currency) inside, decimal strings outside.

There is one rounding rule in the whole product: the platform fee is ``floor(price * bps / 10 000)``
micro-units and the provider takes the remainder, so the legs of a split always sum to the price.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from prediction_provider.errors import InvalidInput

MICROS = 1_000_000
SCALE = Decimal(MICROS)
MAX_AMOUNT = 10**15  # a billion units: far beyond any price, well inside BIGINT
CURRENCY = re.compile(r"^[A-Z]{3}$")


class InvalidAmount(InvalidInput):
    code = "invalid_amount"


def parse_amount(value: object, field: str = "amount", *, positive: bool = False) -> int:
    """Micro-units of a decimal string, an int or a JSON number (read through its shortest repr).

    More than six fractional digits, negatives, NaN and infinities are refused rather than rounded.
    """
    if isinstance(value, bool) or value is None:
        raise InvalidAmount(f"{field} must be a decimal string", {"field": field})
    try:
        amount = Decimal(value) if isinstance(value, str | int | Decimal) else Decimal(str(value))
    except (InvalidOperation, ValueError, TypeError):
        raise InvalidAmount(f"{field} is not a decimal number: {value!r}", {"field": field}) from None
    if not amount.is_finite():
        raise InvalidAmount(f"{field} must be finite", {"field": field})
    if amount < 0:
        raise InvalidAmount(f"{field} must not be negative", {"field": field})
    micros = amount * SCALE
    if micros != micros.to_integral_value():
        raise InvalidAmount(f"{field} has more than 6 fractional digits", {"field": field})
    if micros > MAX_AMOUNT:
        raise InvalidAmount(f"{field} is too large", {"field": field})
    if positive and micros == 0:
        raise InvalidAmount(f"{field} must be positive", {"field": field})
    return int(micros)


def format_amount(micros: int) -> str:
    """``"0.500000"``: six fractional digits, signed when negative."""
    sign = "-" if micros < 0 else ""
    whole, fraction = divmod(abs(micros), MICROS)
    return f"{sign}{whole}.{fraction:06d}"


def as_decimal(micros: int) -> Decimal:
    return Decimal(micros) / SCALE


def parse_currency(value: object, allowed: frozenset[str] | None = None) -> str:
    code = str(value or "").upper()
    if not CURRENCY.match(code) or (allowed is not None and code not in allowed):
        raise InvalidInput(
            f"unknown currency {value!r}", {"field": "currency", "allowed": sorted(allowed or ())}
        )
    return code


@dataclass(frozen=True, slots=True)
class Split:
    provider: int
    evaluator: int
    platform_fee: int

    @property
    def total(self) -> int:
        return self.provider + self.evaluator + self.platform_fee


def split(price: int, fee_bps: int, evaluator_fee: int = 0) -> Split:
    """The legs of a price; the provider's is what remains, so they always sum to ``price``."""
    fee = price * fee_bps // 10_000
    provider = price - fee - evaluator_fee
    if provider < 0:
        raise InvalidInput(
            "the evaluator fee leaves the provider less than nothing",
            {"price": format_amount(price), "evaluator_fee": format_amount(evaluator_fee),
             "platform_fee": format_amount(fee)},
        )  # fmt: skip
    return Split(provider, evaluator_fee, fee)
