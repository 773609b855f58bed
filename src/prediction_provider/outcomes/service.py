"""What the API asks of realized outcomes: the leaderboard, a model's performance per version, the
score of one prediction, and outcomes reported for answers without market context.

The leaderboard is a pure function of the current score rows (``outcomes.leaderboard``); a board
is kept per query until the next scoring transaction (``scoring_head.passes`` moves with every
one), so a cached board is the same bytes as a recomputed one.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from prediction_provider.accounts.principal import Principal
from prediction_provider.accounts.roles import Permission, allows
from prediction_provider.clock import Clock
from prediction_provider.config import Settings
from prediction_provider.db.market_models import Offer
from prediction_provider.db.models import PredictionJob, PredictionRecord, User
from prediction_provider.db.outcome_models import PredictionScore, ScoringHead
from prediction_provider.db.session import Database
from prediction_provider.errors import InvalidInput, PredictionNotFound
from prediction_provider.outcomes import metrics
from prediction_provider.outcomes.leaderboard import ScoredRecord, build_leaderboard, model_key
from prediction_provider.outcomes.scoring import MARKET_KINDS, benchmark_id

WINDOWS: dict[str, timedelta | None] = {
    "7d": timedelta(days=7),
    "30d": timedelta(days=30),
    "90d": timedelta(days=90),
    "all": None,
}
TARGETS = ("direction", "return", "quantiles", "entry_signal")
BOARD_CACHE = 64
MISSED = ("failed", "expired")


@dataclass(frozen=True, slots=True)
class BoardQuery:
    target: str = "direction"
    horizon: int | None = None
    symbol: str | None = None
    window: str = "all"
    group: str = "model"
    score_set: str = "organic"
    min_n: int = 30
    min_days: int = 5


def score_view(score: PredictionScore) -> dict[str, Any]:
    return {
        "request_id": score.request_id,
        "row": score.row,
        "version": score.version,
        "current": score.current,
        "status": score.status,
        "source": score.source,
        "model": {"name": score.model_name, "version": score.model_version},
        "symbol": score.symbol,
        "interval": score.interval,
        "horizon": score.horizon,
        "as_of": _iso(score.as_of),
        "target_time": _iso(score.target_time),
        "resolved_time": _iso(score.resolved_time),
        "realized_return": _finite(score.realized_return),
        "realized_log_return": _finite(score.realized_log_return),
        "realized_label": score.realized_label,
        "bars": score.bars,
        "metrics": score.metrics,
        "metric_version": score.metric_version,
        "eligible": score.eligible,
        "ineligible_reason": score.ineligible_reason,
        "set": score.score_set,
        "scored_at": _iso(score.scored_at),
    }


class Outcomes:
    def __init__(self, db: Database, clock: Clock, settings: Settings) -> None:
        self.db = db
        self.clock = clock
        self.settings = settings
        self._lock = threading.Lock()
        self._boards: OrderedDict[tuple[Any, ...], dict[str, Any]] = OrderedDict()

    # -- the leaderboard --------------------------------------------------------------------------

    def leaderboard(self, query: BoardQuery) -> dict[str, Any]:
        if query.target not in TARGETS:
            raise InvalidInput(
                f"unknown target {query.target!r}", [{"field": "target", "error": f"one of {TARGETS}"}]
            )
        if query.window not in WINDOWS:
            raise InvalidInput(
                f"unknown window {query.window!r}", [{"field": "window", "error": "7d, 30d, 90d or all"}]
            )
        now = self.clock.now()
        with self.db.session() as session:
            passes = session.scalar(select(ScoringHead.passes).where(ScoringHead.id == 1)) or 0
            since = None if WINDOWS[query.window] is None else now - WINDOWS[query.window]  # type: ignore[operator]
            # A window moves with the clock: the key holds its start to the hour, the rows decide the rest.
            key = (query, passes, None if since is None else since.replace(minute=0, second=0, microsecond=0))
            with self._lock:
                cached = self._boards.get(key)
            if cached is not None:
                return cached
            records = self._board_records(session, query, since)
            if query.score_set == "common" and query.target == "direction":
                records += self._missed_round_answers(session, query, since)
            fill = self._fill_rates(session, query, since)
            pending = self._pending_counts(session, query, since)
        board = build_leaderboard(
            records,
            target=query.target,
            group=query.group,
            min_n=query.min_n,
            min_days=query.min_days,
            fill_rates=fill,
        )
        for entry in (*board["entries"], *board["provisional"]):
            entry["n_pending"] = None if pending is None else pending.get(entry["key"], 0)
        board.update(
            {
                "pending": pending,
                "window": query.window,
                "set": query.score_set,
                "symbol": query.symbol,
                "horizon": query.horizon,
                "formula": metrics.METRIC_VERSION,
                "as_of": now.isoformat(),
            }
        )
        with self._lock:
            self._boards[key] = board
            while len(self._boards) > BOARD_CACHE:
                self._boards.popitem(last=False)
        return board

    def _board_records(
        self, session: Session, query: BoardQuery, since: datetime | None
    ) -> list[ScoredRecord]:
        statement = select(
            PredictionScore.id,
            PredictionScore.model_name,
            PredictionScore.model_version,
            PredictionScore.provider,
            PredictionScore.symbol,
            PredictionScore.horizon,
            PredictionScore.as_of,
            PredictionScore.target_time,
            PredictionScore.scored_at,
            PredictionScore.metrics,
            PredictionScore.context,
            PredictionScore.price,
        ).where(
            PredictionScore.current.is_(True),
            PredictionScore.status == "scored",
            PredictionScore.eligible.is_(True),
            PredictionScore.score_set == query.score_set,
        )
        if since is not None:
            statement = statement.where(PredictionScore.target_time >= since)
        if query.symbol:
            statement = statement.where(PredictionScore.symbol == query.symbol.upper())
        if query.horizon is not None:
            statement = statement.where(PredictionScore.horizon == query.horizon)
        found = []
        for row in session.execute(statement):
            judged = (row.metrics or {}).get(query.target)
            if judged is None:
                continue
            found.append(
                ScoredRecord(
                    row.id,
                    row.model_name,
                    row.model_version,
                    row.provider,
                    row.symbol or "",
                    row.horizon or 0,
                    row.as_of,
                    row.target_time,
                    row.scored_at,
                    judged,
                    row.context or {},
                    row.price,
                )
            )
        return found

    def _missed_round_answers(
        self, session: Session, query: BoardQuery, since: datetime | None
    ) -> list[ScoredRecord]:
        """A common round's question a model left unanswered (failed or expired) scores as a coin
        flip the first time and as the worst baseline after, on the outcome the question had (read
        from the other models' scores of it): missing rounds can never lift a model's rank."""
        benchmark = benchmark_id(session, self.settings)
        if benchmark is None:
            return []
        statement = select(PredictionJob).where(
            PredictionJob.owner_id == benchmark, PredictionJob.kind.in_(MARKET_KINDS),
            PredictionJob.status.in_(MISSED),
        )  # fmt: skip
        if since is not None:
            statement = statement.where(PredictionJob.target_time >= since)
        missed = sorted(
            session.scalars(statement).all(),
            key=lambda job: (str((job.parameters or {}).get("round")), job.id),
        )
        found: list[ScoredRecord] = []
        seen: set[str] = set()
        for number, job in enumerate(missed, start=1):
            asked = job.input or {}
            symbol, horizon = str(asked.get("symbol") or "").upper(), asked.get("horizon")
            if (query.symbol and symbol != query.symbol.upper()) or job.target_time is None:
                continue
            if query.horizon is not None and horizon != query.horizon:
                continue
            if (job.parameters or {}).get("target") != "direction":
                continue
            interval = (job.parameters or {}).get("interval")
            answered = session.scalars(
                select(PredictionScore).where(
                    PredictionScore.outcome_key == f"{symbol}|{interval}|{job.target_time.isoformat()}",
                    PredictionScore.current.is_(True), PredictionScore.status == "scored",
                ).limit(1)
            ).first()  # fmt: skip
            if answered is None or answered.realized_return is None:
                continue  # nobody answered either: the question has no outcome to score on
            key = model_key(job.model_name or "", job.model_version)
            context = answered.context or {}
            base_rate = float(context.get("base_rate", 0.5))
            persistence = 0.6 if context.get("last_up") else 0.4
            candidates = [0.5] if key not in seen else [0.5, base_rate, persistence]
            seen.add(key)
            judged = [
                m for m in (
                    metrics.direction_metrics(p, answered.realized_return, self.settings.flat_band)
                    for p in candidates
                ) if m is not None
            ]  # fmt: skip
            if not judged:
                continue
            worst = max(judged, key=lambda m: m["brier"])
            found.append(
                ScoredRecord(
                    -number, job.model_name or "", job.model_version, None, symbol, int(horizon or 0),
                    answered.as_of or job.target_time, job.target_time, answered.scored_at,
                    {**worst, "missed": True}, context, 0,
                )
            )  # fmt: skip
        return found

    def _pending_counts(
        self, session: Session, query: BoardQuery, since: datetime | None
    ) -> dict[str, int] | None:
        """Served forecasts in the window not resolved yet, per ``name@version``: shown apart from the
        resolved ``n`` and never counted in a score. None where they are not counted this way (entry
        signals, and the provider group, whose records name no provider until they are scored)."""
        if query.target == "entry_signal" or query.group != "model":
            return None
        resolved = (
            select(PredictionScore.id)
            .where(
                PredictionScore.request_id == PredictionRecord.request_id,
                PredictionScore.row == PredictionRecord.row,
                PredictionScore.current.is_(True),
            )
            .exists()
        )
        statement = (
            select(PredictionRecord.model_name, PredictionRecord.model_version, func.count())
            .where(
                PredictionRecord.symbol.is_not(None),
                PredictionRecord.target_time.is_not(None),
                PredictionRecord.role == "primary",
                ~resolved,
            )
            .group_by(PredictionRecord.model_name, PredictionRecord.model_version)
        )
        if since is not None:
            statement = statement.where(PredictionRecord.target_time >= since)
        if query.symbol:
            statement = statement.where(PredictionRecord.symbol == query.symbol.upper())
        if query.horizon is not None:
            statement = statement.where(PredictionRecord.horizon == query.horizon)
        return {model_key(name, version): int(count) for name, version, count in session.execute(statement)}

    def _fill_rates(
        self, session: Session, query: BoardQuery, since: datetime | None
    ) -> dict[str, float | None]:
        """Completed over completed, failed and expired marketplace requests, per model and provider:
        a request left to fail counts against its offer, so bad days cannot be hidden."""
        statement = (
            select(
                PredictionJob.model_name,
                PredictionJob.model_version,
                User.username,
                PredictionJob.status,
                func.count(),
            )
            .join(Offer, Offer.id == PredictionJob.offer_id)
            .join(User, User.id == Offer.provider_id)
            .where(PredictionJob.kind.in_(MARKET_KINDS), PredictionJob.status.in_(("completed", *MISSED)))
            .group_by(
                PredictionJob.model_name, PredictionJob.model_version, User.username, PredictionJob.status
            )
        )
        if since is not None:
            statement = statement.where(PredictionJob.created_at >= since)
        totals: dict[str, list[int]] = {}
        for name, version, provider, status, count in session.execute(statement):
            key = provider if query.group == "provider" else model_key(name or "", version)
            done_all = totals.setdefault(key, [0, 0])
            done_all[1] += count
            if status == "completed":
                done_all[0] += count
        return {key: (done / total if total else None) for key, (done, total) in totals.items()}

    # -- a model's realized performance -----------------------------------------------------------

    def performance(self, model_name: str, version: str | None, window: str) -> dict[str, Any]:
        if window not in WINDOWS:
            raise InvalidInput(
                f"unknown window {window!r}", [{"field": "window", "error": "7d, 30d, 90d or all"}]
            )
        now = self.clock.now()
        statement = select(PredictionScore).where(
            PredictionScore.model_name == model_name,
            PredictionScore.current.is_(True),
            PredictionScore.status == "scored",
        )
        if version is not None:
            statement = statement.where(PredictionScore.model_version == version)
        span = WINDOWS[window]
        if span is not None:
            statement = statement.where(PredictionScore.target_time >= now - span)
        with self.db.session() as session:
            scores = session.scalars(
                statement.order_by(PredictionScore.target_time, PredictionScore.id)
            ).all()
        versions: dict[str, list[PredictionScore]] = {}
        for score in scores:
            versions.setdefault(score.model_version or "", []).append(score)
        return {
            "model": model_name,
            "window": window,
            "as_of": now.isoformat(),
            "formula": metrics.METRIC_VERSION,
            "versions": [
                {"version": name or None, **_performance_of(rows)} for name, rows in sorted(versions.items())
            ],
        }

    # -- one prediction ---------------------------------------------------------------------------

    def score_of(self, request_id: str, principal: Principal) -> dict[str, Any]:
        """Every row of a prediction (a forecast id, a job id or a marketplace request id) with its
        score status: pending (not resolved yet), scored or void, and every version."""
        with self.db.session() as session:
            records = session.scalars(
                select(PredictionRecord)
                .where((PredictionRecord.request_id == request_id) | (PredictionRecord.job_id == request_id))
                .order_by(PredictionRecord.created_at, PredictionRecord.row)
            ).all()
            job = session.get(PredictionJob, request_id)
            owner = job.owner_id if job is not None else (records[0].user_id if records else None)
            if not records and job is None:
                raise PredictionNotFound(f"no prediction {request_id}", {"request_id": request_id})
            if not _may_read(principal, owner):
                raise PredictionNotFound(f"no prediction {request_id}", {"request_id": request_id})
            ids = sorted({record.request_id for record in records} | {request_id})
            scores = session.scalars(
                select(PredictionScore)
                .where(PredictionScore.request_id.in_(ids))
                .order_by(PredictionScore.request_id, PredictionScore.row, PredictionScore.version)
            ).all()
        by_key: dict[tuple[str, int], list[PredictionScore]] = {}
        for score in scores:
            by_key.setdefault((score.request_id, score.row), []).append(score)
        rows = []
        keys: list[tuple[str, int, PredictionRecord | None]] = [(r.request_id, r.row, r) for r in records]
        keys += [
            (rid, row, None) for (rid, row) in by_key if not any(k[0] == rid and k[1] == row for k in keys)
        ]
        for rid, row, record in keys:
            versions = by_key.get((rid, row), [])
            current = next((s for s in reversed(versions) if s.current), None)
            rows.append(
                {
                    "request_id": rid,
                    "row": row,
                    "horizon": record.horizon
                    if record is not None
                    else (current.horizon if current else None),
                    "target_time": _iso(record.target_time) if record is not None else None,
                    "status": "pending" if current is None else current.status,
                    "score": None if current is None else score_view(current),
                    "versions": [score_view(s) for s in versions],
                }
            )
        statuses = {row["status"] for row in rows}
        overall = (
            "pending" if not rows or "pending" in statuses else "scored" if "scored" in statuses else "void"
        )
        return {"request_id": request_id, "status": overall, "rows": rows}

    def summary(self, request_id: str) -> dict[str, Any] | None:
        with self.db.session() as session:
            return score_summary(session, request_id)

    # -- outcomes reported by people --------------------------------------------------------------

    def report(self, items: Sequence[dict[str, Any]], principal: Principal) -> list[dict[str, Any]]:
        """Outcomes of answers without market context. Evaluators and admins for any request, a
        client for its own only (another's is ``unknown``, never told apart). Per item: accepted,
        duplicate (the same outcome again), conflict (a different one; the first is kept), unknown, or
        refused for an answer with market context (the market's own outcome scores it)."""
        now = self.clock.now()
        answers: list[dict[str, Any]] = []
        anyone = allows(principal.role, Permission.EVALUATE) or allows(
            principal.role, Permission.MANAGE_USERS
        )
        with self.db.session() as session:
            session.execute(
                update(ScoringHead)
                .where(ScoringHead.id == 1)
                .values(passes=ScoringHead.passes + 1, updated_at=now)
                .execution_options(synchronize_session=False)
            )
            for item in items:
                answers.append(self._report_one(session, item, principal, anyone, now))
        return answers

    def _report_one(
        self, session: Session, item: dict[str, Any], principal: Principal, anyone: bool, now: datetime
    ) -> dict[str, Any]:
        request_id, row = str(item["request_id"]), int(item.get("row") or 0)
        base = {"request_id": request_id, "row": row}
        answer = _answer_of(session, request_id, row)
        if answer is None or (not anyone and answer.owner_id != principal.user_id):
            return {**base, "status": "unknown"}
        if answer.market_context:
            # Its outcome is what the market did, resolved from the bars; a report would compete.
            return {**base, "status": "refused", "reason": "scored_from_market"}
        outcome = {key: item.get(key) for key in ("label", "value", "realized_return")}
        existing = session.scalars(
            select(PredictionScore).where(
                PredictionScore.request_id == request_id,
                PredictionScore.row == row,
                PredictionScore.current.is_(True),
            )
        ).first()
        if existing is not None:
            same = (existing.context or {}).get("reported") == outcome
            return {**base, "status": "duplicate" if same else "conflict"}
        judged = _judge_reported(answer, outcome)
        session.add(
            PredictionScore(
                request_id=request_id,
                row=row,
                version=1,
                current=True,
                source="outcome",
                status="scored",
                model_name=answer.model_name,
                model_version=answer.model_version,
                client_id=answer.owner_id,
                job_id=answer.job_id,
                realized_return=_finite(outcome.get("realized_return")),
                realized_label=None if outcome["label"] is None else str(outcome["label"]),
                bars=[],
                context={"reported": outcome, "reported_by": principal.user_id},
                metrics=judged,
                metric_version=metrics.METRIC_VERSION,
                eligible=False,
                ineligible_reason="reported_outcome",
                score_set="organic",
                outcome_key=f"{request_id}|{row}",
                recorded_at=answer.recorded_at,
                scored_at=now,
            )
        )
        session.flush()
        return {**base, "status": "accepted"}


def score_summary(session: Session, request_id: str) -> dict[str, Any] | None:
    """The score block a job or marketplace request view carries: None until it has records, then
    pending until every row's outcome exists (scored or void)."""
    record_ids = session.scalars(
        select(PredictionRecord.request_id).where(PredictionRecord.job_id == request_id)
    ).all()
    ids = sorted({*record_ids, request_id})
    scores = session.scalars(
        select(PredictionScore).where(PredictionScore.request_id.in_(ids), PredictionScore.current.is_(True))
    ).all()
    if not scores:
        return {"status": "pending", "rows": []} if record_ids else None
    statuses = {score.status for score in scores}
    return {
        "status": "scored" if "scored" in statuses else "void",
        "rows": [score_view(score) for score in sorted(scores, key=lambda s: (s.request_id, s.row))],
    }


@dataclass(frozen=True, slots=True)
class _Answer:
    owner_id: int | None
    model_name: str
    model_version: str | None
    job_id: str | None
    label: Any
    probabilities: dict[str, float] | None
    value: float | None
    recorded_at: datetime
    market_context: bool = False


def _answer_of(session: Session, request_id: str, row: int) -> _Answer | None:
    """The answer a reported outcome is about: a recorded row, or a row of a rows job's result."""
    record = session.get(PredictionRecord, (request_id, row))
    if record is not None:
        return _Answer(
            record.user_id,
            record.model_name,
            record.model_version,
            record.job_id,
            record.label,
            record.probabilities,
            record.value,
            record.created_at,
            record.symbol is not None and record.target_time is not None,
        )
    job = session.get(PredictionJob, request_id)
    if job is None or job.status != "completed" or not isinstance(job.result, dict):
        return None
    result = job.result
    if "predictions" in result and isinstance(result["predictions"], list):
        predictions, probabilities = result["predictions"], result.get("probabilities")
        if not 0 <= row < len(predictions):
            return None
        label = predictions[row]
        probability = (
            probabilities[row] if isinstance(probabilities, list) and row < len(probabilities) else None
        )
    elif row == 0 and "prediction" in result:
        label, probability = result["prediction"], result.get("probabilities")
    else:
        return None
    value = float(label) if isinstance(label, int | float) and not isinstance(label, bool) else None
    return _Answer(
        job.owner_id,
        job.model_name or job.model_reference,
        job.model_version,
        job.id,
        label,
        probability if isinstance(probability, dict) else None,
        value,
        job.finished_at or job.created_at,
    )


def _judge_reported(answer: _Answer, outcome: dict[str, Any]) -> dict[str, Any]:
    judged: dict[str, Any] = {}
    label = outcome.get("label")
    if label is not None:
        entry: dict[str, Any] = {
            "predicted": answer.label,
            "label": label,
            "hit": int(str(answer.label) == str(label)),
        }
        if answer.probabilities:
            p = float(answer.probabilities.get(str(label), 0.0))
            clipped = min(max(p, 1e-15), 1 - 1e-15)
            entry["log_loss"] = -math.log(clipped)
            entry["brier"] = sum(
                (float(q) - (1.0 if name == str(label) else 0.0)) ** 2
                for name, q in answer.probabilities.items()
            )
        judged["label"] = entry
    value = outcome.get("value")
    if isinstance(value, int | float) and answer.value is not None:
        error = answer.value - float(value)
        judged["value"] = {
            "predicted": answer.value,
            "value": float(value),
            "squared_error": error * error,
            "absolute_error": abs(error),
        }
    return judged


def _performance_of(rows: Sequence[PredictionScore]) -> dict[str, Any]:
    """Realized metrics of one version: totals, per horizon, and per UTC day (the rolling view)."""

    def summary(group: Sequence[PredictionScore]) -> dict[str, Any]:
        direction = [r.metrics["direction"] for r in group if "direction" in (r.metrics or {})]
        returns = [r.metrics["return"] for r in group if "return" in (r.metrics or {})]
        quantiles = [r.metrics["quantiles"] for r in group if "quantiles" in (r.metrics or {})]
        hits = [d["hit"] for d in direction if d.get("hit") is not None]
        return {
            "n": len(group),
            "eligible": sum(1 for r in group if r.eligible),
            "accuracy": _mean(hits),
            "brier": _mean([d["brier"] for d in direction]),
            "log_loss": _mean([d["log_loss"] for d in direction]),
            "mae": _mean([d["absolute_error"] for d in returns]),
            "sign_hit": _mean([d["sign_hit"] for d in returns if d.get("sign_hit") is not None]),
            "coverage": _mean([d["covered"] for d in quantiles]),
            "pinball": _mean([d["pinball"] for d in quantiles]),
        }

    horizons: dict[int, list[PredictionScore]] = {}
    days: dict[str, list[PredictionScore]] = {}
    for row in rows:
        horizons.setdefault(row.horizon or 0, []).append(row)
        if row.target_time is not None:
            days.setdefault(row.target_time.date().isoformat(), []).append(row)
    return {
        **summary(rows),
        "horizons": [{"horizon": h, **summary(group)} for h, group in sorted(horizons.items())],
        "daily": [{"date": day, **summary(group)} for day, group in sorted(days.items())],
    }


def _may_read(principal: Principal, owner: int | None) -> bool:
    if allows(principal.role, Permission.READ_ALL_JOBS) or allows(principal.role, Permission.EVALUATE):
        return True
    return owner is not None and owner == principal.user_id


def _mean(values: Sequence[float]) -> float | None:
    finite = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    return sum(finite) / len(finite) if finite else None


def _finite(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()
