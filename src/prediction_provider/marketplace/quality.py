"""Marketplace reputations from realized outcomes: an evaluator's ``quality_score`` and a
provider's ``performance_rating``, read from the current score rows (``prediction_scores``),
never from what an evaluator or a provider says of itself.

Formula (one per row, then the mean): the row's **hit** against the realized market move, in
[0, 1] — ``direction``: ``hit`` (p > 0.5 and the market rose, or p < 0.5 and it fell; p = 0.5 is an
abstention and the row does not count); ``return``: ``sign_hit`` (the sign of the expected return
was the sign of the realized one; a zero on either side does not count); ``entry_signal``: the
per-side ``accuracy`` against the reference TP/SL engine. A row judged on several targets (a
symbol forecast) counts once, by the first of direction, return, entry_signal it has. Quantile
answers have no hit (their coverage is meant to be 80 %, not 100 %) and do not count. Only current,
scored, eligible rows count (self-dealing, late, stale and shadow answers are left out), so the
score is the hit rate over the answers the leaderboard would also accept. ``None`` with no such row.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from prediction_provider.db.outcome_models import PredictionScore

FORMULA = "hit rate of current eligible scored answers (direction hit, return sign hit, signal accuracy)"


@dataclass(frozen=True, slots=True)
class Quality:
    value: float | None  # the mean hit in [0, 1]; None when nothing is scored yet
    n: int  # the rows that counted


def row_hit(judged: dict[str, Any]) -> float | None:
    """The hit of one score row's ``metrics``, by the module's formula (None: the row does not count)."""
    direction = judged.get("direction")
    if isinstance(direction, dict) and direction.get("hit") is not None:
        return float(direction["hit"])
    returned = judged.get("return")
    if isinstance(returned, dict) and returned.get("sign_hit") is not None:
        return float(returned["sign_hit"])
    signal = judged.get("entry_signal")
    if isinstance(signal, dict) and isinstance(signal.get("accuracy"), int | float):
        return float(signal["accuracy"])
    return None


def realized_quality(
    session: Session,
    *,
    evaluator_id: int | None = None,
    provider_id: int | None = None,
    model_name: str | None = None,
    since: datetime | None = None,
) -> Quality:
    """The quality of the answers an evaluator executed (``evaluator_id``) or a provider's models
    gave (``provider_id``, optionally one ``model_name``), whose target time is at or after
    ``since``: see the module's formula."""
    if evaluator_id is None and provider_id is None:
        raise ValueError("name an evaluator or a provider")
    statement = select(PredictionScore.metrics).where(
        PredictionScore.current.is_(True),
        PredictionScore.status == "scored",
        PredictionScore.eligible.is_(True),
    )
    if evaluator_id is not None:
        statement = statement.where(PredictionScore.evaluator_id == evaluator_id)
    if provider_id is not None:
        statement = statement.where(PredictionScore.provider_id == provider_id)
    if model_name is not None:
        statement = statement.where(PredictionScore.model_name == model_name)
    if since is not None:
        statement = statement.where(PredictionScore.target_time >= since)
    hits = [hit for judged in session.scalars(statement) if (hit := row_hit(judged or {})) is not None]
    if not hits:
        return Quality(None, 0)
    return Quality(math.fsum(hits) / len(hits), len(hits))
