"""Every trading decision, recorded: who asked, what was decided, and from what.

A record names the model and its version, a SHA-256 of the feature vector the
model saw (``feature_hash``) and the open time of the last bar those features
read (``data_as_of``), so a decision can be traced to its inputs and
reproduced. The same hash and time are in the response's ``metadata``, which
lets a client match an answer to its record. Decisions the risk checks refused
are recorded as well.

Recording costs a request one queue put: a background thread turns decisions
into rows and inserts them in batches (``db.batch_writer``). A record is
therefore readable a moment after its decision is answered; ``flush`` waits
for it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
from sqlalchemy import func, select

from prediction_provider.accounts.principal import Principal
from prediction_provider.accounts.roles import Permission, allows
from prediction_provider.db.batch_writer import BatchWriter
from prediction_provider.db.models import TradingDecision
from prediction_provider.db.session import Database
from prediction_provider.errors import DecisionNotFound

if TYPE_CHECKING:
    from prediction_provider.trading.decisions import Decision

# Whoever may see every user's prediction jobs may see every user's decisions (admins, operators).
READ_ALL_DECISIONS = Permission.READ_ALL_JOBS


def feature_hash(row: npt.NDArray[np.float64]) -> str:
    """SHA-256 of the features as the model saw them: float64, little-endian, in the model's feature
    order. The same values give the same hash on any machine; -0.0 and 0.0 hash apart."""
    return hashlib.sha256(np.ascontiguousarray(row, dtype="<f8").tobytes()).hexdigest()


@dataclass(frozen=True, slots=True)
class RecordedDecision:
    """A decision and who it was made for, as queued; turned into a row off the request path."""

    decision: Decision
    user_id: int | None
    username: str | None
    account: str | None


def decision_row(recorded: RecordedDecision) -> dict[str, Any]:
    decision = recorded.decision
    return {
        "decision_id": decision.decision_id,
        "created_at": decision.decided_at,
        "user_id": recorded.user_id,
        "username": recorded.username,
        "symbol": decision.symbol,
        "action": decision.action,
        "confidence": decision.confidence,
        "recommended_quantity": decision.quantity,
        "account_name": recorded.account,
        "approved": decision.approved,
        "risk_warnings": list(decision.risk.warnings),
        "risk_checks": {name: check.as_dict() for name, check in decision.risk.checks.items()},
        "regime_probabilities": decision.regime.as_dict(),
        "strategy_weights": dict(decision.strategy_weights),
        "strategy": decision.strategy,
        "model_name": decision.model.name,
        "model_version": decision.model.version,
        "feature_hash": decision.feature_hash,
        "data_as_of": decision.data_as_of,
        "latency_ms": decision.latency_ms,
    }


class DecisionRecorder(BatchWriter[RecordedDecision]):
    """Writes decisions to ``trading_decisions`` in batches, from a thread of its own."""

    def __init__(self, db: Database, flush_interval_s: float = 0.2) -> None:
        super().__init__(
            db, TradingDecision, decision_row, name="decision-recorder", flush_interval_s=flush_interval_s
        )

    def record_decision(self, decision: Decision, principal: Principal, account: str | None) -> None:
        self.record(RecordedDecision(decision, principal.user_id, principal.username, account))


def sees_every_decision(principal: Principal) -> bool:
    return allows(principal.role, READ_ALL_DECISIONS)


def find_decision(db: Database, decision_id: str, principal: Principal) -> TradingDecision:
    """The caller's own decision, or anyone's for callers who may see every decision; someone else's
    decision is not found, exactly like one that does not exist."""
    with db.session() as session:
        record = session.get(TradingDecision, decision_id)
    if record is None or not (sees_every_decision(principal) or _owns(principal, record)):
        raise DecisionNotFound(f"no decision {decision_id}", {"decision_id": decision_id})
    return record


@dataclass(frozen=True, slots=True)
class DecisionFilter:
    symbol: str | None = None
    username: str | None = None


def search_decisions(
    db: Database, principal: Principal, filters: DecisionFilter, limit: int, offset: int
) -> tuple[list[TradingDecision], int]:
    """Newest first, and the number matching; only the caller's own unless it may see every one."""
    query = select(TradingDecision)
    if not sees_every_decision(principal):
        query = query.where(TradingDecision.user_id == _user_id(principal))
    if filters.symbol is not None:
        query = query.where(TradingDecision.symbol == filters.symbol)
    if filters.username is not None:
        query = query.where(TradingDecision.username == filters.username)
    with db.session() as session:
        total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
        rows = session.scalars(
            query.order_by(TradingDecision.created_at.desc(), TradingDecision.decision_id.desc())
            .offset(offset)
            .limit(limit)
        ).all()
    return list(rows), total


def action_counts(db: Database, principal: Principal, filters: DecisionFilter) -> dict[str, int]:
    """How many decisions ``search_decisions`` would list per action (BUY, SELL, HOLD), counted in
    the database: the same visibility and filters, without reading the rows."""
    query = select(TradingDecision.action, func.count()).group_by(TradingDecision.action)
    if not sees_every_decision(principal):
        query = query.where(TradingDecision.user_id == _user_id(principal))
    if filters.symbol is not None:
        query = query.where(TradingDecision.symbol == filters.symbol)
    if filters.username is not None:
        query = query.where(TradingDecision.username == filters.username)
    counts = {"BUY": 0, "SELL": 0, "HOLD": 0}
    with db.session() as session:
        counts.update({str(action): int(count) for action, count in session.execute(query).all()})
    return counts


def _user_id(principal: Principal) -> int:
    # Anonymous callers own nothing: no row has user id -1, while NULL would match every guest's.
    return principal.user_id if principal.user_id is not None else -1


def _owns(principal: Principal, record: TradingDecision) -> bool:
    return record.user_id is not None and record.user_id == principal.user_id
