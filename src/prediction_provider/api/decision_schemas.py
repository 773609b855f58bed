"""Request and response bodies of the trading decision and trading account routes.

Money, prices and quantities of accounts are exact decimals: they are accepted
as JSON numbers or strings and answered as strings. A decision's
``recommended_quantity`` is a JSON number, already rounded to the lot step.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

from prediction_provider.api.account_schemas import USERNAME

SYMBOL = r"^[A-Z0-9._/-]{1,20}$"
ACCOUNT_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
SECTOR = r"^[A-Za-z0-9][A-Za-z0-9 _.&/-]{0,63}$"
MAX_AMOUNT = Decimal("1e15")


def _upper(value: Any) -> Any:
    return value.upper() if isinstance(value, str) else value


def _utc(value: datetime) -> datetime:
    """Naive timestamps are read as UTC; aware ones are converted to it."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError as exc:
        raise ValueError("timestamp out of range") from exc


Symbol = Annotated[
    str,
    BeforeValidator(_upper),
    Field(min_length=1, max_length=20, pattern=SYMBOL, description="Upper-cased; A-Z 0-9 . _ - /"),
]
UTCTimestamp = Annotated[datetime, AfterValidator(_utc)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DecisionBody(Strict):
    symbol: Symbol = Field(examples=["EURUSD"])
    timestamp: UTCTimestamp | None = Field(
        default=None,
        description="Decide as of this time (naive = UTC); default now. Bars after it are unseen.",
    )
    strategy_override: str | None = Field(
        default=None,
        max_length=64,
        description="bull_specialist, bear_specialist, sideways_specialist or universal; "
        "default: the specialist of the most likely regime.",
    )
    risk_check: bool = True
    explain: bool = Field(default=False, description="Add per-feature contributions (TreeSHAP).")
    account: str | None = Field(
        default=None,
        pattern=ACCOUNT_NAME,
        description="Trading account to size and check against; default: a flat paper account.",
    )


class RegimeProbabilitiesPublic(BaseModel):
    bull: float
    bear: float
    sideways: float
    entropy: float = Field(
        description="Shannon entropy over log(3): 0 certain, 1 all regimes equally likely."
    )


class StrategyWeightsPublic(BaseModel):
    bull_specialist: float
    bear_specialist: float
    sideways_specialist: float


class RiskCheckPublic(BaseModel):
    passed: bool
    code: str | None
    value: float
    limit: float
    message: str
    allowed_quantity: float | None


class RiskValidationPublic(BaseModel):
    approved: bool
    warnings: list[str]
    checks: dict[str, RiskCheckPublic] = Field(
        description="position_limit, concentration, leverage, daily_loss_limit (empty when risk_check=false)."
    )


class DecisionMetadata(BaseModel):
    model_version: str
    latency_ms: float
    timestamp: datetime
    data_as_of: datetime
    feature_hash: str = Field(
        description="SHA-256 of the model's float64 feature vector; with decision_id and data_as_of it "
        "matches this answer to its record at GET /api/v1/decisions/{decision_id}."
    )


class ExplanationPublic(BaseModel):
    model: str
    class_: str = Field(alias="class")
    base_value: float
    contributions: dict[str, float]
    method: str


class DecisionPublic(BaseModel):
    decision_id: str
    symbol: str
    action: Literal["BUY", "SELL", "HOLD"]
    confidence: float
    recommended_quantity: float
    regime_probabilities: RegimeProbabilitiesPublic
    strategy_weights: StrategyWeightsPublic
    risk_validation: RiskValidationPublic
    metadata: DecisionMetadata
    explanation: ExplanationPublic | None = None


Amount = Annotated[Decimal, Field(gt=0, le=MAX_AMOUNT, decimal_places=8, allow_inf_nan=False)]
SignedAmount = Annotated[Decimal, Field(ge=-MAX_AMOUNT, le=MAX_AMOUNT, decimal_places=8, allow_inf_nan=False)]
Price = Annotated[Decimal, Field(gt=0, le=MAX_AMOUNT, decimal_places=10, allow_inf_nan=False)]


class AccountCreate(Strict):
    name: str = Field(pattern=ACCOUNT_NAME)
    equity: Amount
    currency: str = Field(default="USD", pattern=r"^[A-Z]{3}$")
    owner: str | None = Field(
        default=None, pattern=USERNAME, description="Admins only: open the account for this user."
    )


class AccountChange(Strict):
    equity: Amount | None = None
    day_start_equity: Amount | None = None
    realized_pnl_today: SignedAmount | None = None


class PositionSet(Strict):
    quantity: SignedAmount = Field(description="Signed: negative is short; 0 closes the position.")
    average_price: Price
    market_price: Price
    sector: str | None = Field(default=None, pattern=SECTOR)


class PositionPublic(BaseModel):
    symbol: str
    sector: str | None
    quantity: str
    average_price: str
    market_price: str
    market_value: str
    unrealized_pnl: str


class AccountPublic(BaseModel):
    name: str
    owner: str | None
    currency: str
    equity: str
    day_start_equity: str
    realized_pnl_today: str
    pnl_date: date
    gross_exposure: str
    leverage: str | None
    positions: list[PositionPublic]
    created_at: datetime
    updated_at: datetime


class AccountPage(BaseModel):
    items: list[AccountPublic]
    total: int
    limit: int
    offset: int
