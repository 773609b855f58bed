"""Scoring served answers against what the market then did: one pass finds what has come due,
resolves it from closed bars and writes the scores, in one transaction.

What is scored: every ``prediction_records`` row with market context (symbol forecasts on every
channel, marketplace requests executed by the platform or by evaluators, entry signals) and every
trading decision. A pass reads candidates and bars outside any transaction, then takes the
``scoring_head`` row (the first statement of the write: a row lock on PostgreSQL, the write lock on
SQLite), keeps the candidates nobody scored meanwhile and inserts their scores. Several workers,
the embedded thread and the Celery beat task may all run passes: each record is scored once.

Revisions: the bars a score read are kept in ``outcome_bars`` with a version. A pass compares
the recent kept bars with the feeder's; a corrected close is version n+1, and every current score
that read the old version is scored again as version n+1 (the old row stays, not current).
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import numpy as np
from sqlalchemy import Row, exists, insert, select, update
from sqlalchemy.orm import Session

from prediction_provider.clock import Clock
from prediction_provider.config import Settings
from prediction_provider.db.market_models import ModelOwner, Offer
from prediction_provider.db.models import PredictionJob, PredictionRecord, TradingDecision, User
from prediction_provider.db.outcome_models import OutcomeBar, PredictionScore, ScoringHead
from prediction_provider.db.session import Database
from prediction_provider.features.feeders.intervals import Interval
from prediction_provider.outcomes import metrics
from prediction_provider.outcomes.resolution import (
    ClosedBars,
    Resolution,
    periods_per_year,
    point_in_time_context,
    resolve,
)

# The job kinds of marketplace requests (platform- and evaluator-executed; marketplace.settlement).
MARKET_KINDS = ("market", "evaluation")

log = logging.getLogger(__name__)

PASS_LIMIT = 5000
# Kept bars closing this long before the clock are compared with the feeder on every pass.
REVISION_WINDOW = timedelta(days=30)


@dataclass(frozen=True, slots=True)
class Candidate:
    """One answer to score, from a record or a trading decision."""

    request_id: str
    row: int
    source: str  # forecast | market | decision | signal
    recorded_at: datetime
    user_id: int | None
    model_name: str
    model_version: str | None
    symbol: str
    interval: str | None
    as_of: datetime
    target_time: datetime | None
    horizon: int
    answer: dict[str, Any]
    probabilities: dict[str, float] | None = None
    value: float | None = None
    job_id: str | None = None
    role: str = "primary"
    served_by: str = "primary"
    action: str | None = None
    quantity: Decimal | None = None


@dataclass(slots=True)
class Market:
    """The money and people behind a record of a marketplace request."""

    offer_id: str | None
    price: int | None
    currency: str | None
    target: str | None
    client_id: int | None
    provider_id: int | None
    evaluator_id: int | None
    on_time: bool
    webhook_url: str | None = None


@dataclass(slots=True)
class PassReport:
    scored: int = 0
    void: int = 0
    pending: int = 0
    rescored: int = 0
    revised_bars: int = 0
    skipped: int = 0  # scored by another pass meanwhile

    def as_dict(self) -> dict[str, int]:
        return {
            "scored": self.scored,
            "void": self.void,
            "pending": self.pending,
            "rescored": self.rescored,
            "revised_bars": self.revised_bars,
            "skipped": self.skipped,
        }


BarsSource = Callable[[str, str | None, datetime], Any]
NO_BARS = ClosedBars(np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float64))
# An entry signal's outcome as of a time: None while pending, else a dict with "status" (scored |
# void), "metrics" ({"entry_signal": ...}), and optionally "reason", "resolved_time",
# "realized_label", "realized_return", "bars" and "context".
SignalJudge = Callable[["Candidate", datetime], dict[str, Any] | None]


class Scorer:
    """Scoring passes. ``bars_of(symbol, interval, until)`` gives the symbol's closed bars (a frame
    indexed by close time, none closing after ``until``), ``interval_of(symbol)`` its interval when
    a record does not say (trading decisions)."""

    def __init__(
        self,
        db: Database,
        clock: Clock,
        settings: Settings,
        bars_of: BarsSource,
        interval_of: Callable[[str], str],
        *,
        on_scored: Callable[[PassReport], None] | None = None,
        signal_judge: SignalJudge | None = None,
    ) -> None:
        self.signal_judge = signal_judge
        self.db = db
        self.clock = clock
        self.settings = settings
        self.bars_of = bars_of
        self.interval_of = interval_of
        self.on_scored = on_scored
        self._pass_lock = threading.Lock()
        # The point-in-time context of an as-of bar, shared by every answer made from it (all steps
        # of a forecast, every request on the same bar): keyed by id() of the bars, which each
        # entry keeps alive (so the id is not reused) and checks; emptied after each pass.
        self._contexts: dict[tuple[int, int, str], tuple[ClosedBars, dict[str, object]]] = {}
        # Likewise the resolution of an (as-of bar, target time): every request on the same bar
        # and horizon has the same outcome.
        self._resolutions: dict[tuple[int, datetime, datetime, datetime], tuple[ClosedBars, Resolution]] = {}
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    # -- the periodic pass ------------------------------------------------------------------------

    def start(self) -> None:
        """Run a pass every ``scoring_interval_s`` in a thread of this process, unless
        ``scoring_embedded`` is off (a deployment where Celery beat schedules the passes)."""
        if not self.settings.scoring_embedded:
            return
        if self.settings.scoring_interval_s > 0 and self._thread is None:
            self._thread = threading.Thread(target=self._run, name="scorer", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None

    def _run(self) -> None:
        while not self._stopping.wait(self.settings.scoring_interval_s):
            try:
                self.run()
            except Exception:  # a bad pass (database away, feeder down) must not end the thread
                log.exception("scoring pass failed")

    # -- one pass ---------------------------------------------------------------------------------

    def run(self, limit: int = PASS_LIMIT) -> PassReport:
        """Resolve and score what has come due by the clock, then rescore what a revised bar changed."""
        with self._pass_lock:
            now = self.clock.now()
            report = PassReport()
            due = self._due(now - timedelta(seconds=self.settings.resolve_lag_s), limit)
            try:
                if due:
                    self._score(due, now, report)
                self._rescore_revisions(now, report)
            finally:
                self._contexts.clear()
                self._resolutions.clear()
            if self.on_scored is not None and (report.scored or report.void or report.rescored):
                self.on_scored(report)
            return report

    def _due(self, cutoff: datetime, limit: int) -> list[Candidate]:
        with self.db.session() as session:
            scored = exists().where(
                PredictionScore.request_id == PredictionRecord.request_id,
                PredictionScore.row == PredictionRecord.row,
            )
            # Columns, not entities: a pass of thousands of candidates skips the ORM's identity map.
            records = session.execute(
                select(*CANDIDATE_COLUMNS)
                .where(
                    PredictionRecord.symbol.is_not(None),
                    PredictionRecord.target_time.is_not(None),
                    PredictionRecord.data_as_of.is_not(None),
                    PredictionRecord.target_time <= cutoff,
                    PredictionRecord.status == "ok",
                    ~scored,
                )
                .order_by(PredictionRecord.target_time, PredictionRecord.request_id, PredictionRecord.row)
                .limit(limit)
            ).all()
            decided = exists().where(
                PredictionScore.request_id == TradingDecision.decision_id, PredictionScore.row == 0
            )
            decisions = session.scalars(
                select(TradingDecision)
                .where(TradingDecision.data_as_of <= cutoff, ~decided)
                .order_by(TradingDecision.data_as_of, TradingDecision.decision_id)
                .limit(limit)
            ).all()
            return [*(candidate_of_record(r) for r in records), *self._decision_candidates(decisions)]

    def _decision_candidates(self, decisions: Sequence[TradingDecision]) -> Iterable[Candidate]:
        horizon = self.settings.decision_horizon_bars
        for decision in decisions:
            try:
                interval = self.interval_of(decision.symbol)
                step = timedelta(seconds=Interval.parse(interval).seconds)
            except Exception as exc:  # noqa: BLE001 - a symbol no feeder serves any more stays unscored
                log.debug("decision %s not scored: %s", decision.decision_id, exc)
                continue
            yield Candidate(
                request_id=decision.decision_id,
                row=0,
                source="decision",
                recorded_at=decision.created_at,
                user_id=decision.user_id,
                model_name=decision.model_name,
                model_version=decision.model_version,
                symbol=decision.symbol,
                interval=interval,
                as_of=decision.data_as_of,
                target_time=decision.data_as_of + horizon * step,
                horizon=horizon,
                answer={"action": decision.action, "confidence": decision.confidence},
                action=decision.action,
                quantity=Decimal(decision.recommended_quantity),
            )

    def _score(self, due: list[Candidate], now: datetime, report: PassReport) -> None:
        computed: list[dict[str, Any]] = []
        bars_cache: dict[tuple[str, str | None], ClosedBars | None] = {}
        with self.db.session() as session:
            markets = self._markets(session, due)
            owners = self._owners(session, {c.model_name for c in due})
            benchmark = benchmark_id(session, self.settings)
        for candidate in due:
            key = (candidate.symbol, candidate.interval)
            if candidate.source == "signal":  # judged on the signal bars by ``signal_judge``
                key = ("", "signal")
                bars_cache.setdefault(key, NO_BARS)
            if key not in bars_cache:
                bars_cache[key] = self._closed_bars(candidate.symbol, candidate.interval, now)
            bars = bars_cache[key]
            if bars is None:
                # The feeder fails: pending, until the outcome is overdue (then void, never stuck).
                overdue = candidate.target_time is not None and now >= candidate.target_time + timedelta(
                    seconds=self.settings.max_resolve_delay_s
                )
                if not overdue:
                    report.pending += 1
                    continue
                bars = NO_BARS
            row = self.score_row(candidate, bars, now, markets.get(candidate.job_id or ""), owners, benchmark)
            if row is not None and bars is NO_BARS and candidate.source != "signal":
                row["ineligible_reason"] = "no_bars"
            if row is None:
                report.pending += 1
                continue
            computed.append(row)
        if not computed:
            return
        with self.db.session() as session:
            self._take_head(session, now)
            taken = self._already_scored(session, [(r["request_id"], r["row"]) for r in computed])
            fresh = [r for r in computed if (r["request_id"], r["row"]) not in taken]
            report.skipped += len(computed) - len(fresh)
            versions = BarVersions(session, fresh, now)
            for row in fresh:
                if row["source"] != "signal":  # signal bars are the oracle's file, not the feeder's
                    row["bars"] = versions.of(row["symbol"], row["interval"], row["bars"])
                if row["status"] == "void":
                    report.void += 1
                else:
                    report.scored += 1
            versions.write()
            if fresh:  # one executemany per set of keys (scored, void), not an ORM object per row
                session.execute(insert(PredictionScore), fresh)
            for row in fresh:  # the client hears of its paid request's score in the same transaction
                self._announce(session, row, markets.get(row["job_id"] or ""), "prediction_request.scored")

    def _announce(self, session: Session, row: dict[str, Any], market: Market | None, event: str) -> None:
        """A marketplace request's score (or new score version) into the webhook outbox."""
        if market is None or market.client_id is None or row.get("job_id") is None:
            return
        from prediction_provider.webhooks.outbox import announce

        data = {
            "request_id": row["job_id"], "status": row["status"], "version": row["version"],
            "target": market.target, "realized_return": row.get("realized_return"),
            "metrics": row.get("metrics", {}), "metric_version": row["metric_version"],
            "ineligible_reason": row.get("ineligible_reason"),
        }  # fmt: skip
        announce(session, clock=self.clock, user_id=market.client_id, event_type=event, data=data,
                 webhook_url=market.webhook_url)  # fmt: skip

    def _closed_bars(self, symbol: str, interval: str | None, now: datetime) -> ClosedBars | None:
        try:
            frame = self.bars_of(symbol, interval, now)
        except Exception as exc:  # noqa: BLE001 - a feeder down leaves its records pending
            log.warning("no bars for %s %s to score against: %s", symbol, interval, exc)
            return None
        return ClosedBars.from_frame(frame)

    # -- one record -------------------------------------------------------------------------------

    def score_row(
        self,
        candidate: Candidate,
        bars: ClosedBars,
        now: datetime,
        market: Market | None,
        owners: dict[str, tuple[int, str]],
        benchmark_id: int | None,
        version: int = 1,
    ) -> dict[str, Any] | None:
        """The score row of ``candidate`` as of ``now`` (None while its outcome does not exist)."""
        assert candidate.target_time is not None
        max_delay = timedelta(seconds=self.settings.max_resolve_delay_s)
        judged_signal: dict[str, Any] | None = None
        if candidate.source == "signal":
            # Entry signals are judged by the oracle's TP/SL rule on the signal bars, not on returns.
            judged_signal = None if self.signal_judge is None else self.signal_judge(candidate, now)
            if judged_signal is None:
                return None
            resolution = Resolution(str(judged_signal["status"]), reason=judged_signal.get("reason"))
        else:
            resolution_key = (id(bars), candidate.as_of, candidate.target_time, now)
            known = self._resolutions.get(resolution_key)
            if known is not None and known[0] is bars:
                resolution = known[1]
            else:
                resolution = resolve(bars, candidate.as_of, candidate.target_time, now, max_delay)
                if len(self._resolutions) < 100_000:
                    self._resolutions[resolution_key] = (bars, resolution)
        if resolution.status == "pending":
            return None
        interval = candidate.interval or self.interval_of(candidate.symbol)
        owner = owners.get(candidate.model_name)
        provider_id = (
            market.provider_id if market and market.provider_id is not None else (owner or (None,))[0]
        )
        provider = owner[1] if owner and owner[0] == provider_id else None
        row: dict[str, Any] = {
            "request_id": candidate.request_id,
            "row": candidate.row,
            "version": version,
            "current": True,
            "source": candidate.source,
            "model_name": candidate.model_name,
            "model_version": candidate.model_version,
            "provider_id": provider_id,
            "provider": provider,
            "client_id": market.client_id if market else candidate.user_id,
            "evaluator_id": market.evaluator_id if market else None,
            "job_id": candidate.job_id,
            "offer_id": market.offer_id if market else None,
            "price": market.price if market else None,
            "currency": market.currency if market else None,
            "symbol": candidate.symbol,
            "interval": interval,
            "horizon": candidate.horizon,
            "as_of": candidate.as_of,
            "target_time": candidate.target_time,
            "metric_version": metrics.METRIC_VERSION,
            "recorded_at": candidate.recorded_at,
            "scored_at": now,
            "outcome_key": f"{candidate.symbol}|{interval}|{candidate.target_time.isoformat()}",
            "score_set": "common"
            if benchmark_id is not None and candidate.user_id == benchmark_id
            else "organic",
        }
        if resolution.status == "void":
            return {
                **row,
                "status": "void",
                "bars": [],
                "context": {},
                "metrics": {},
                "eligible": False,
                "ineligible_reason": resolution.reason,
            }
        if judged_signal is not None:
            reason = self._ineligible(candidate, market, owners)
            return {
                **row, "status": "scored", "resolved_time": judged_signal.get("resolved_time"),
                "realized_return": judged_signal.get("realized_return"), "realized_log_return": None,
                "realized_label": judged_signal.get("realized_label"), "bars": judged_signal.get("bars", []),
                "context": judged_signal.get("context", {}), "metrics": judged_signal["metrics"],
                "eligible": reason is None, "ineligible_reason": reason,
            }  # fmt: skip
        assert resolution.as_of_position is not None
        assert resolution.target_position is not None
        context_key = (id(bars), resolution.as_of_position, interval)
        kept = self._contexts.get(context_key)
        if kept is not None and kept[0] is bars:
            context = kept[1]
        else:
            context = point_in_time_context(bars, resolution.as_of_position, _periods_per_year(interval))
            if len(self._contexts) < 100_000:
                self._contexts[context_key] = (bars, context)
        simple, log_return = resolution.simple_return, resolution.log_return
        judged = self._metrics(candidate, resolution, market)
        reason = self._ineligible(candidate, market, owners)
        return {
            **row,
            "status": "scored",
            "resolved_time": resolution.resolved_time,
            "realized_return": simple,
            "realized_log_return": log_return,
            "realized_label": "up"
            if simple > self.settings.flat_band
            else "down"
            if simple < -self.settings.flat_band
            else "flat",
            "bars": [
                {
                    "role": "as_of",
                    "close_time": candidate.as_of.isoformat(),
                    "close": repr(resolution.as_of_close),
                },
                {
                    "role": "target",
                    "close_time": resolution.resolved_time.isoformat() if resolution.resolved_time else None,
                    "close": repr(resolution.target_close),
                },
            ],
            "context": context,
            "metrics": judged,
            "eligible": reason is None,
            "ineligible_reason": reason,
        }

    def _metrics(self, candidate: Candidate, resolution: Resolution, market: Market | None) -> dict[str, Any]:
        simple, log_return = resolution.simple_return, resolution.log_return
        judged: dict[str, Any] = {}
        if candidate.source == "decision":
            assert candidate.action is not None
            assert candidate.quantity is not None
            judged["decision"] = metrics.decision_metrics(
                candidate.action,
                candidate.quantity,
                Decimal(repr(resolution.as_of_close)),
                Decimal(repr(resolution.target_close)),
                spread=self.settings.decision_spread,
                commission=self.settings.decision_commission,
            )
            return judged
        answer = candidate.answer or {}
        p_up = metrics.p_up_of(candidate.probabilities or {})
        if p_up is None and isinstance(answer.get("p_up"), int | float):
            p_up = float(answer["p_up"])
        if p_up is not None:
            direction = metrics.direction_metrics(p_up, simple, self.settings.flat_band)
            if direction is not None:
                judged["direction"] = direction
        expected = candidate.value if candidate.value is not None else answer.get("expected_return")
        if isinstance(expected, int | float):
            judged["return"] = metrics.return_metrics(float(expected), log_return)
        quantiles = _quantiles_of(answer, expected)
        if quantiles:
            judged["quantiles"] = metrics.quantile_metrics(quantiles, log_return)
        if market is not None and market.target:  # a paid request is judged on what was bought
            judged = {name: value for name, value in judged.items() if name == market.target}
        return judged

    def _ineligible(
        self, candidate: Candidate, market: Market | None, owners: dict[str, tuple[int, str]]
    ) -> str | None:
        if candidate.role == "oracle":
            return "look_ahead"  # the oracle knows the future bars by design
        if candidate.role == "unclosed":
            return "unclosed_bar"  # answered from a bar that had not closed yet
        if candidate.role != "primary":
            return "shadow"
        if candidate.served_by.startswith("forced"):
            return "forced_variant"
        if candidate.recorded_at - candidate.as_of > timedelta(seconds=self.settings.live_max_staleness_s):
            return "stale_data"
        if market is not None:
            if not market.on_time:
                return "late"
            if market.client_id is not None and market.client_id == market.provider_id:
                return "self_dealing_provider"
            if market.client_id is not None and market.client_id == market.evaluator_id:
                return "self_dealing_evaluator"
            return None
        owner = owners.get(candidate.model_name)
        if owner is not None and candidate.user_id is not None and owner[0] == candidate.user_id:
            return "self_dealing_provider"
        return None

    # -- lookups ----------------------------------------------------------------------------------

    @staticmethod
    def _markets(session: Session, due: Sequence[Candidate]) -> dict[str, Market]:
        job_ids = sorted({c.job_id for c in due if c.job_id})
        found: dict[str, Market] = {}
        for start in range(0, len(job_ids), 500):
            rows = session.execute(
                select(PredictionJob, Offer.provider_id)
                .outerjoin(Offer, Offer.id == PredictionJob.offer_id)
                .where(
                    PredictionJob.id.in_(job_ids[start : start + 500]), PredictionJob.kind.in_(MARKET_KINDS)
                )
            ).all()
            for job, provider_id in rows:
                on_time = job.status == "completed" and (
                    job.deadline_at is None or job.finished_at is None or job.finished_at <= job.deadline_at
                )
                found[job.id] = Market(
                    job.offer_id,
                    job.price,
                    job.currency,
                    (job.parameters or {}).get("target"),
                    job.owner_id,
                    provider_id,
                    job.executed_by,
                    on_time,
                    job.webhook_url,
                )
        return found

    @staticmethod
    def _owners(session: Session, names: set[str]) -> dict[str, tuple[int, str]]:
        if not names:
            return {}
        rows = session.execute(
            select(ModelOwner.model_name, ModelOwner.provider_id, User.username)
            .join(User, User.id == ModelOwner.provider_id)
            .where(ModelOwner.model_name.in_(sorted(names)))
        ).all()
        return {name: (provider_id, username) for name, provider_id, username in rows}

    @staticmethod
    def _take_head(session: Session, now: datetime) -> None:
        session.execute(
            update(ScoringHead)
            .where(ScoringHead.id == 1)
            .values(passes=ScoringHead.passes + 1, updated_at=now)
            .execution_options(synchronize_session=False)
        )

    @staticmethod
    def _already_scored(session: Session, keys: list[tuple[str, int]]) -> set[tuple[str, int]]:
        taken: set[tuple[str, int]] = set()
        ids = sorted({request_id for request_id, _ in keys})
        for start in range(0, len(ids), 500):
            taken.update(
                session.execute(
                    select(PredictionScore.request_id, PredictionScore.row).where(
                        PredictionScore.request_id.in_(ids[start : start + 500])
                    )
                ).all()
            )
        return {key for key in keys if key in taken}

    # -- revisions --------------------------------------------------------------------------------

    def _rescore_revisions(self, now: datetime, report: PassReport) -> None:
        with self.db.session() as session:
            kept = session.execute(
                select(OutcomeBar.symbol, OutcomeBar.interval, OutcomeBar.close_time, OutcomeBar.close)
                .where(OutcomeBar.close_time >= now - REVISION_WINDOW)
                .order_by(OutcomeBar.symbol, OutcomeBar.interval, OutcomeBar.close_time, OutcomeBar.version)
            ).all()
        latest: dict[tuple[str, str], dict[datetime, str]] = {}
        for symbol, interval, when, close in kept:
            latest.setdefault((symbol, interval), {})[when] = close
        revised: dict[tuple[str, str], set[datetime]] = {}
        for (symbol, interval), closes in latest.items():
            bars = self._closed_bars(symbol, interval, now)
            if bars is None:
                continue
            for when, close in closes.items():
                at = bars.position(when)
                if at is not None and repr(float(bars.closes[at])) != close:
                    revised.setdefault((symbol, interval), set()).add(when)
        for (symbol, interval), times in revised.items():
            report.revised_bars += len(times)
            self._rescore(symbol, interval, times, now, report)

    def _rescore(
        self, symbol: str, interval: str, times: set[datetime], now: datetime, report: PassReport
    ) -> None:
        bars = self._closed_bars(symbol, interval, now)
        if bars is None:
            return
        with self.db.session() as session:
            affected = session.scalars(
                select(PredictionScore).where(
                    PredictionScore.current.is_(True),
                    PredictionScore.status == "scored",
                    PredictionScore.symbol == symbol,
                    PredictionScore.interval == interval,
                    PredictionScore.as_of.in_(times) | PredictionScore.resolved_time.in_(times),
                )
            ).all()
            if not affected:
                return
            candidates = self._candidates_of_scores(session, affected)
            markets = self._markets(session, list(candidates.values()))
            owners = self._owners(session, {c.model_name for c in candidates.values()})
            benchmark = benchmark_id(session, self.settings)
        with self.db.session() as session:
            self._take_head(session, now)
            for old in affected:
                candidate = candidates.get((old.request_id, old.row))
                if candidate is None:
                    continue
                row = self.score_row(
                    candidate,
                    bars,
                    now,
                    markets.get(candidate.job_id or ""),
                    owners,
                    benchmark,
                    version=old.version + 1,
                )
                if row is None:
                    continue
                still = session.execute(
                    update(PredictionScore)
                    .where(PredictionScore.id == old.id, PredictionScore.current.is_(True))
                    .values(current=False)
                    .execution_options(synchronize_session=False)
                )
                if still.rowcount != 1:  # type: ignore[attr-defined]
                    continue  # another pass rescored it first
                versions = BarVersions(session, [row], now)
                row["bars"] = versions.of(symbol, interval, row["bars"])
                versions.write()
                session.add(PredictionScore(**row))
                self._announce(
                    session, row, markets.get(candidate.job_id or ""), "prediction_request.rescored"
                )
                report.rescored += 1

    def _candidates_of_scores(
        self, session: Session, scores: Sequence[PredictionScore]
    ) -> dict[tuple[str, int], Candidate]:
        found: dict[tuple[str, int], Candidate] = {}
        record_keys = [(s.request_id, s.row) for s in scores if s.source != "decision"]
        for request_id, row in record_keys:
            record = session.get(PredictionRecord, (request_id, row))
            if record is not None:
                found[(request_id, row)] = candidate_of_record(record)
        decision_ids = [s.request_id for s in scores if s.source == "decision"]
        if decision_ids:
            decisions = session.scalars(
                select(TradingDecision).where(TradingDecision.decision_id.in_(decision_ids))
            ).all()
            for candidate in self._decision_candidates(decisions):
                found[(candidate.request_id, 0)] = candidate
        return found


# What ``candidate_of_record`` reads of a record: ``_due`` selects these columns only.
CANDIDATE_COLUMNS = (
    PredictionRecord.request_id,
    PredictionRecord.row,
    PredictionRecord.channel,
    PredictionRecord.created_at,
    PredictionRecord.user_id,
    PredictionRecord.model_name,
    PredictionRecord.model_version,
    PredictionRecord.symbol,
    PredictionRecord.interval,
    PredictionRecord.data_as_of,
    PredictionRecord.target_time,
    PredictionRecord.horizon,
    PredictionRecord.answer,
    PredictionRecord.probabilities,
    PredictionRecord.value,
    PredictionRecord.job_id,
    PredictionRecord.role,
    PredictionRecord.served_by,
)


def benchmark_id(session: Session, settings: Settings) -> int | None:
    """The user id of the platform account that asks the common rounds (None before the first)."""
    found: int | None = session.scalar(select(User.id).where(User.username == settings.benchmark_username))
    return found


def candidate_of_record(record: PredictionRecord | Row[Any]) -> Candidate:
    """The candidate of a record, or of a row of ``CANDIDATE_COLUMNS`` (same attribute names)."""
    assert record.symbol is not None
    assert record.data_as_of is not None
    source = {"market": "market", "signal": "signal"}.get(record.channel, "forecast")
    return Candidate(
        request_id=record.request_id,
        row=record.row,
        source=source,
        recorded_at=record.created_at,
        user_id=record.user_id,
        model_name=record.model_name,
        model_version=record.model_version,
        symbol=record.symbol,
        interval=record.interval,
        as_of=record.data_as_of,
        target_time=record.target_time,
        horizon=record.horizon or 0,
        answer=record.answer or {},
        probabilities=record.probabilities,
        value=record.value,
        job_id=record.job_id,
        role=record.role,
        served_by=record.served_by,
    )


@functools.lru_cache(maxsize=64)
def _periods_per_year(interval: str) -> float:
    return periods_per_year(Interval.parse(interval).seconds)


def _quantiles_of(answer: dict[str, Any], expected: Any) -> dict[float, float]:
    """Quantile levels -> values of an answer: a forecast's 80 % interval with its median, or a
    marketplace quantiles answer ``{"q": {"0.1": ..}}``."""
    interval = answer.get("interval_80")
    if isinstance(interval, list | tuple) and len(interval) == 2:
        found = {0.1: float(interval[0]), 0.9: float(interval[1])}
        if isinstance(expected, int | float):
            found[0.5] = float(expected)
        return found
    q = answer.get("q")
    if isinstance(q, dict):
        return {float(level): float(value) for level, value in q.items()}
    return {}


class BarVersions:
    """The ``outcome_bars`` versions of the bars a batch of scores read, loaded in one query per
    symbol: a first reading is version 1, a close that differs from the latest kept is version n+1."""

    def __init__(self, session: Session, rows: Sequence[dict[str, Any]], now: datetime) -> None:
        self.session = session
        self.now = now
        self._new: list[dict[str, Any]] = []  # bars first read, or revised, by this batch
        self._latest: dict[tuple[str, str, datetime], tuple[int, str]] = {}
        wanted: dict[tuple[str, str], set[datetime]] = {}
        for row in rows:
            for bar in row["bars"]:
                if bar.get("close_time"):
                    wanted.setdefault((row["symbol"], row["interval"]), set()).add(
                        datetime.fromisoformat(bar["close_time"])
                    )
        for (symbol, interval), times in wanted.items():
            ordered = sorted(times)
            for start in range(0, len(ordered), 500):
                for bar in session.scalars(
                    select(OutcomeBar)
                    .where(
                        OutcomeBar.symbol == symbol,
                        OutcomeBar.interval == interval,
                        OutcomeBar.close_time.in_(ordered[start : start + 500]),
                    )
                    .order_by(OutcomeBar.version)
                ):
                    self._latest[(symbol, interval, bar.close_time)] = (bar.version, bar.close)

    def of(self, symbol: str, interval: str, bars: list[dict[str, Any]]) -> list[dict[str, Any]]:
        kept = []
        for bar in bars:
            if not bar.get("close_time"):
                kept.append(bar)
                continue
            key = (symbol, interval, datetime.fromisoformat(bar["close_time"]))
            latest = self._latest.get(key)
            if latest is None or latest[1] != bar["close"]:
                version = 1 if latest is None else latest[0] + 1
                self._new.append(
                    {
                        "symbol": symbol,
                        "interval": interval,
                        "close_time": key[2],
                        "version": version,
                        "close": bar["close"],
                        "recorded_at": self.now,
                    }
                )
                self._latest[key] = (version, bar["close"])
            else:
                version = latest[0]
            kept.append({**bar, "version": version})
        return kept

    def write(self) -> None:
        """Insert the new bar versions ``of`` found, in one statement, in the caller's transaction."""
        if self._new:
            self.session.execute(insert(OutcomeBar), self._new)
            self._new = []
