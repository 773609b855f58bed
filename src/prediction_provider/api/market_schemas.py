"""Bodies of the marketplace routes. Amounts come in as decimal strings (or JSON numbers, read
through their shortest decimal form) and go out as strings with six decimals."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

Amount = Annotated[str | int | float, Field(description='A decimal amount, e.g. "0.0025" (≤ 6 decimals).')]
Symbol = Annotated[str, Field(min_length=1, max_length=20, pattern=r"^[A-Za-z0-9._=^-]+$")]
Target = Literal["direction", "return", "quantiles", "entry_signal"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class OfferCreate(Strict):
    model: str = Field(min_length=1, max_length=256, description="A model name, or name@version.")
    target: Target
    symbols: list[Symbol] = Field(min_length=1, max_length=100)
    interval: str | None = Field(default=None, max_length=8)
    horizons: list[Annotated[int, Field(ge=1, le=10_000)]] = Field(min_length=1, max_length=100)
    price: Amount
    currency: str | None = Field(default=None, min_length=3, max_length=3)
    execution: Literal["platform", "evaluators"] = "platform"
    evaluator_fee: Amount | None = None
    benchmark_opt_in: bool = False


class OfferUpdate(Strict):
    benchmark_opt_in: bool = False


class PriceChange(Strict):
    price: Amount


class QuoteCreate(Strict):
    offer_id: str | None = Field(default=None, max_length=36)
    symbol: Symbol | None = None
    horizon: int | None = Field(default=None, ge=1, le=10_000)
    target: Target | None = None
    route: Literal["cheapest", "best"] = "cheapest"
    currency: str | None = Field(default=None, min_length=3, max_length=3)
    features: dict[str, Any] | None = None


class RequestCreate(QuoteCreate):
    quote_id: str | None = Field(default=None, max_length=36)
    max_cost: Amount
    webhook_url: str | None = Field(default=None, max_length=2048)
    priority: Literal["low", "normal", "high"] | None = None


class RefundCreate(Strict):
    request_id: str = Field(max_length=36)
    amount: Amount | None = None
    reason: str = Field(min_length=1, max_length=500)


class ClockSet(Strict):
    now: AwareDatetime | None = None
    advance_s: float | None = Field(default=None, ge=0)
