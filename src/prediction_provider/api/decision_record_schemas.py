"""Bodies of ``GET /api/v1/decisions``: recorded trading decisions, as stored.

``recommended_quantity`` is the exact stored decimal, as a string (the
decision's own answer gives it as a JSON number).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from prediction_provider.api.decision_schemas import (
    RegimeProbabilitiesPublic,
    RiskCheckPublic,
    StrategyWeightsPublic,
)
from prediction_provider.db.models import TradingDecision
from prediction_provider.trading.accounts import plain


class DecisionRecordPublic(BaseModel):
    decision_id: str
    created_at: datetime
    user_id: int | None = Field(description="None once the user was deleted, or for anonymous callers.")
    username: str | None
    symbol: str
    action: Literal["BUY", "SELL", "HOLD"]
    confidence: float
    recommended_quantity: str
    account: str | None = Field(description="The trading account it was checked against; None: paper.")
    approved: bool = Field(description="False: refused by the risk checks (answered 403 risk_rejected).")
    risk_warnings: list[str]
    reason_codes: list[str] = Field(description="Codes of the failed risk checks.")
    risk_checks: dict[str, RiskCheckPublic]
    regime_probabilities: RegimeProbabilitiesPublic
    strategy_weights: StrategyWeightsPublic
    strategy: str = Field(description="The strategy that decided (its model may be the universal one).")
    model_name: str
    model_version: str = Field(
        description="The model file's content hash; the answer's metadata.model_version is name:version."
    )
    feature_hash: str = Field(description="SHA-256 of the model's float64 feature vector.")
    data_as_of: datetime = Field(description="Open time of the last bar the features read.")
    latency_ms: float

    @classmethod
    def of(cls, record: TradingDecision) -> DecisionRecordPublic:
        checks: dict[str, dict[str, Any]] = record.risk_checks
        return cls.model_validate(
            {
                **{name: getattr(record, name) for name in STORED_AS_IS},
                "recommended_quantity": plain(record.recommended_quantity),
                "account": record.account_name,
                "reason_codes": [str(check["code"]) for check in checks.values() if not check["passed"]],
            }
        )


STORED_AS_IS = tuple(
    name
    for name in DecisionRecordPublic.model_fields
    if name not in ("recommended_quantity", "account", "reason_codes")
)


class DecisionRecordPage(BaseModel):
    items: list[DecisionRecordPublic]
    total: int
    limit: int
    offset: int
