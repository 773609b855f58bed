"""Prometheus figures of realized outcomes: how often each model version's direction was right
and how much better its probabilities were than the point-in-time base rate, per horizon.

They are computed from the score rows, never from a process's memory: scores are written by the
embedded thread, by any API process and by Celery workers, and a scrape of any process must show
the same figures. A computation is kept as a snapshot per database and recomputed after every
scoring pass of this process that wrote something (``realized_gauges_refresher``, the scorer's
``on_scored``) and, at scrape time, whenever ``scoring_head.passes`` moved since the snapshot (a
pass of another process or of a worker), so the figures follow scoring wherever it runs.

Definitions (over current ``scored`` rows whose target time is within ``WINDOW`` of the clock,
and that carry a ``direction`` metric):

- accuracy: mean ``hit`` over the rows with a hit (a p of exactly 0.5 abstains, ``hit`` None);
- Brier skill: ``1 - mean(brier) / mean((base_rate - y)^2)`` over the rows whose context holds the
  point-in-time ``base_rate`` (undefined, so not exported, when the base rate was never wrong);
- ``pp_scored_total``: every score row ever written (all versions) by source and status; rows are
  never deleted, so it only grows, and it is the same from any process.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError

from prediction_provider.clock import Clock, SystemClock
from prediction_provider.db.outcome_models import PredictionScore, ScoringHead
from prediction_provider.db.session import Database

if TYPE_CHECKING:
    from prediction_provider.outcomes.scoring import PassReport

log = logging.getLogger(__name__)

WINDOW = timedelta(days=30)
LABELS = ("model", "version", "horizon")


@dataclass(frozen=True, slots=True)
class RealizedFigure:
    """The realized direction figures of one (model, version, horizon)."""

    model: str
    version: str  # "" for a record without a version
    horizon: int
    records: int  # rows with a direction metric
    accuracy: float | None  # None: every row abstained
    brier_skill: float | None  # None: no base rate, or the base rate was never wrong

    @property
    def labels(self) -> list[str]:
        return [self.model, self.version, str(self.horizon)]


@dataclass(frozen=True, slots=True)
class RealizedSnapshot:
    """One computation: the figures, the score rows by (source, status), and the scoring head's
    pass count read before computing (a later pass makes the snapshot stale)."""

    figures: tuple[RealizedFigure, ...]
    scored: dict[tuple[str, str], int]
    passes: int | None
    computed_at: datetime


_snapshots: dict[str, RealizedSnapshot] = {}
_snapshots_lock = threading.Lock()


def refresh_realized_gauges(db: Database, clock: Clock, window: timedelta = WINDOW) -> RealizedSnapshot:
    """Compute the realized figures from the score rows now and keep them as ``db``'s snapshot, the
    one the metrics of every app on that database expose."""
    now = clock.now()
    with db.session() as session:
        passes = _passes(session)
        rows = session.execute(
            select(
                PredictionScore.model_name,
                PredictionScore.model_version,
                PredictionScore.horizon,
                PredictionScore.metrics,
                PredictionScore.context,
            ).where(
                PredictionScore.current.is_(True),
                PredictionScore.status == "scored",
                PredictionScore.target_time >= now - window,
            )
        ).all()
        scored = {
            (source, status): int(count)
            for source, status, count in session.execute(
                select(PredictionScore.source, PredictionScore.status, func.count()).group_by(
                    PredictionScore.source, PredictionScore.status
                )
            ).all()
        }
    snapshot = RealizedSnapshot(realized_figures(rows), scored, passes, now)
    with _snapshots_lock:
        _snapshots[db.url] = snapshot
    return snapshot


def realized_figures(rows: Any) -> tuple[RealizedFigure, ...]:
    """Figures of ``(model, version, horizon, metrics, context)`` rows, ordered by their labels."""
    groups: dict[tuple[str, str, int], list[tuple[dict[str, Any], dict[str, Any]]]] = {}
    for model, version, horizon, metrics, context in rows:
        direction = (metrics or {}).get("direction")
        if not isinstance(direction, dict):
            continue
        groups.setdefault((model, version or "", int(horizon or 0)), []).append((direction, context or {}))
    figures = []
    for (model, version, horizon), scored in sorted(groups.items()):
        hits = [int(d["hit"]) for d, _ in scored if d.get("hit") is not None]
        with_base = [(d, c) for d, c in scored if c.get("base_rate") is not None]
        skill = None
        if with_base:
            brier = sum(float(d["brier"]) for d, _ in with_base) / len(with_base)
            reference = sum((float(c["base_rate"]) - float(d["y"])) ** 2 for d, c in with_base) / len(
                with_base
            )
            if reference > 0:
                skill = 1.0 - brier / reference
        figures.append(
            RealizedFigure(
                model,
                version,
                horizon,
                len(scored),
                sum(hits) / len(hits) if hits else None,
                skill if skill is None or math.isfinite(skill) else None,
            )
        )
    return tuple(figures)


def latest_realized(db: Database) -> RealizedSnapshot | None:
    with _snapshots_lock:
        return _snapshots.get(db.url)


def realized_gauges_refresher(db: Database, clock: Clock) -> Callable[[PassReport], None]:
    """The scorer's ``on_scored``: recompute after a pass that wrote scores. It never raises: the
    pass has committed its scores, a failed refresh must not read as a failed pass."""

    def refresh(report: PassReport) -> None:
        try:
            refresh_realized_gauges(db, clock)
        except Exception:  # the next scrape recomputes (its head count moved)
            log.exception("could not refresh the realized-outcome gauges")

    return refresh


def current_realized(db: Database, clock: Clock) -> RealizedSnapshot:
    """``db``'s snapshot, recomputed first if none exists or a scoring pass ran since (in any
    process: the head's pass count moved)."""
    snapshot = latest_realized(db)
    if snapshot is not None:
        with db.session() as session:
            if _passes(session) == snapshot.passes:
                return snapshot
    return refresh_realized_gauges(db, clock)


def _passes(session: Any) -> int | None:
    passes = session.scalar(select(ScoringHead.passes).where(ScoringHead.id == 1))
    return None if passes is None else int(passes)


class RealizedCollector(Collector):
    """The realized-outcome families of one app, read from ``services()`` (its ``db`` and
    ``clock``) at scrape time; nothing before the services exist."""

    def __init__(self, services: Callable[[], Any]) -> None:
        self._services = services

    def describe(self) -> list[Metric]:
        return []  # registering must not collect (the services do not exist yet)

    def collect(self) -> Iterator[Metric]:
        services = self._services()
        db = getattr(services, "db", None)
        if not isinstance(db, Database):
            return
        clock = getattr(services, "clock", None) or SystemClock()
        try:
            snapshot = current_realized(db, clock)
        except SQLAlchemyError as exc:
            # The rest of the scrape still answers; the missing series is what an alert can watch.
            log.warning("metrics: could not read the realized outcomes: %s", exc)
            return
        yield from realized_metrics(snapshot)


def realized_metrics(snapshot: RealizedSnapshot) -> Iterator[Metric]:
    accuracy = GaugeMetricFamily(
        "pp_realized_accuracy",
        "Share of direction answers that were right, over the scores of the last 30 days of target "
        "time, by model, version and horizon (answers of p = 0.5 abstain).",
        labels=LABELS,
    )
    skill = GaugeMetricFamily(
        "pp_realized_brier_skill",
        "1 - mean Brier / mean Brier of the point-in-time base rate, over the same scores.",
        labels=LABELS,
    )
    records = GaugeMetricFamily(
        "pp_realized_records", "Direction scores the realized figures are computed from.", labels=LABELS
    )
    for figure in snapshot.figures:
        records.add_metric(figure.labels, figure.records)
        if figure.accuracy is not None:
            accuracy.add_metric(figure.labels, figure.accuracy)
        if figure.brier_skill is not None:
            skill.add_metric(figure.labels, figure.brier_skill)
    scored = CounterMetricFamily(
        "pp_scored", "Score rows written (every version), by source and status.", labels=["source", "status"]
    )
    for (source, status), count in sorted(snapshot.scored.items()):
        scored.add_metric([source, status], count)
    yield from (accuracy, skill, records, scored)
