"""The rollout controller: steps a canary's weight, promotes it, or rolls it back.

One pass (``run``) looks at every running experiment with a rollout:

- **fast abort** first, without waiting for the interval: the candidate's breaker opened in this
  process, or at least ``fast_abort.error_rate`` of its last ``window`` recorded calls failed;
- then, when ``interval_s`` has passed since the step began or since its last evaluation, an
  evaluation over the shared records of the step (``results.window_stats``, never per-process
  counters), judged by ``canary.evaluate`` and acted on as ``canary.decide`` says.

Exactly once: each experiment is evaluated inside a transaction that locks its row and checks
again that the evaluation is due, so two processes (or a pass on demand and the loop) never both
act on one evaluation. The loop runs under a leader lease (``leader_leases``), so one process does
the work; ``POST /api/v1/admin/rollouts/run`` runs a pass on demand (tests with the manual clock).
"""

from __future__ import annotations

import logging
import threading
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session

from prediction_provider.clock import Clock
from prediction_provider.db.base import utcnow
from prediction_provider.db.modelops_models import Experiment, LeaderLease
from prediction_provider.db.models import PredictionRecord
from prediction_provider.db.session import Database
from prediction_provider.modelops.canary import RolloutConfig, decide, evaluate, fast_abort
from prediction_provider.modelops.experiment_config import ExperimentCreate
from prediction_provider.modelops.experiments import Experiments
from prediction_provider.modelops.results import window_stats

if TYPE_CHECKING:
    from prediction_provider.modelops.resilience import Resilience

log = logging.getLogger(__name__)

LEASE = "rollout-controller"
LEASE_S = 10.0


@dataclass
class PassReport:
    evaluated: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"evaluated": self.evaluated}


class RolloutController:
    def __init__(
        self,
        db: Database,
        clock: Clock,
        experiments: Experiments,
        resilience: Resilience | None,
        interval_s: float,
        flush: Any = None,
        retention: Any = None,
    ) -> None:
        self.db = db
        self.clock = clock
        self.experiments = experiments
        self.resilience = resilience
        self.interval_s = interval_s
        self.flush = flush  # this process's record writer, flushed before an on-demand pass
        self.retention = retention  # deletes experiment records past their retention (daily)
        self._retained_on: str | None = None
        self.holder = uuid.uuid4().hex[:16]
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- the loop -------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is None and self.interval_s > 0:
            self._thread = threading.Thread(target=self._loop, name="rollout-controller", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                if self._lease():
                    self.run(flush=False)
                    self._retain()
            except SQLAlchemyError as exc:
                log.warning("rollout controller: database error: %s", exc)
            except Exception:
                log.exception("rollout controller pass failed")

    def _lease(self) -> bool:
        """Take or renew the leader lease (wall time: leases are about processes, not markets)."""
        now = utcnow()
        expires = now + timedelta(seconds=LEASE_S)
        with self.db.session() as session:
            taken = session.execute(  # type: ignore[attr-defined]
                update(LeaderLease)
                .where(
                    LeaderLease.name == LEASE,
                    (LeaderLease.holder == self.holder) | (LeaderLease.expires_at < now),
                )
                .values(holder=self.holder, expires_at=expires)
            ).rowcount
            if taken:
                session.commit()
                return True
            if session.get(LeaderLease, LEASE) is not None:
                return False
            session.add(LeaderLease(name=LEASE, holder=self.holder, expires_at=expires))
            try:
                session.commit()
            except IntegrityError:
                return False
            return True

    def _retain(self) -> None:
        """Once a day (by the clock), by the leader: experiment records past their retention go."""
        now = self.clock.now()
        today = now.date().isoformat()
        if self.retention is None or self._retained_on == today:
            return
        self._retained_on = today
        deleted = self.retention(now)
        if deleted:
            log.info("experiment records past retention deleted: %d", deleted)

    # -- one pass -------------------------------------------------------------------------

    def run(self, flush: bool = True) -> PassReport:
        if flush and self.flush is not None:
            self.flush()
        report = PassReport()
        with self.db.session() as session:
            names = session.scalars(select(Experiment.name).where(Experiment.state == "running")).all()
        for name in names:
            try:
                outcome = self._step(name)
            except Exception:
                log.exception("rollout of %s could not be evaluated", name)
                continue
            if outcome is not None:
                report.evaluated.append(outcome)
        return report

    def _step(self, name: str) -> dict[str, Any] | None:
        changed = False
        with self.db.session() as session:
            row = session.scalar(select(Experiment).where(Experiment.name == name).with_for_update())
            if row is None or row.state != "running" or not row.config.get("rollout") or row.step is None:
                return None
            config = RolloutConfig.model_validate(row.config["rollout"])
            body = ExperimentCreate.model_validate(row.config)
            control = body.control.name
            candidate = next(v.name for v in body.variants if not v.control)
            now = self.clock.now()
            abort = self._fast_abort(session, row, config, candidate)
            if abort is not None:
                self.experiments.roll_back(session, row, abort, None)
                session.commit()
                outcome: dict[str, Any] | None = {"experiment": name, "action": "rollback", "reason": abort}
                changed = True
            else:
                outcome = self._evaluate_if_due(session, row, config, control, candidate, now)
                changed = outcome is not None and outcome.get("action") != "stay"
                if outcome is not None:
                    session.commit()
        if changed:
            self.experiments._changed()
        return outcome

    def _evaluate_if_due(
        self,
        session: Session,
        row: Experiment,
        config: RolloutConfig,
        control: str,
        candidate: str,
        now: datetime,
    ) -> dict[str, Any] | None:
        evaluations = dict(row.evaluations or {})
        last = evaluations.get("last_at")
        since = datetime.fromisoformat(last) if isinstance(last, str) else row.step_started_at
        if since is None or now < since + timedelta(seconds=config.interval_s):
            return None
        assert row.step_started_at is not None
        windows = window_stats(session, row, row.step_started_at, outcomes_since=row.started_at)
        from prediction_provider.modelops.canary import VariantWindow

        evaluation = evaluate(
            config,
            windows.get(candidate) or VariantWindow(candidate),
            windows.get(control) or VariantWindow(control),
        )
        step = row.step or 0
        decision = decide(config, step, evaluations, evaluation, step == len(config.steps) - 1)
        detail = {"evaluation": evaluation.as_dict(), "decision": decision.as_dict()}
        action = decision.action
        if action == "advance":
            self.experiments.set_step(
                session, row, decision.step, round(decision.weight * 100), "step_advanced"
            )
            row.evaluations = {**decision.counts, "last_at": now.isoformat()}
        elif action == "rollback":
            self.experiments.roll_back(session, row, decision.reason, None)
        elif action == "promote":
            self.experiments.promote(session, row, decision.reason, None)
        elif action == "hold":
            self.experiments._set_state(session, row, "paused", decision.reason, None, detail)
        elif action == "await_promotion":
            self.experiments._set_state(session, row, "awaiting_promotion", decision.reason, None, detail)
        if action in ("stay", "hold", "await_promotion", "rollback", "promote"):
            row.evaluations = {**decision.counts, "last_at": now.isoformat(), "last": evaluation.verdict}
        return {"experiment": row.name, "action": action, "reason": decision.reason, **detail}

    def _fast_abort(
        self, session: Session, row: Experiment, config: RolloutConfig, candidate: str
    ) -> str | None:
        if config.fast_abort is None:
            return None
        frozen = (row.resolved or {}).get(candidate) or {}
        breaker_state = None
        if self.resilience is not None and frozen.get("name"):
            breaker_state = self.resilience.breaker(frozen["name"], frozen.get("version")).state
        statuses = session.scalars(
            select(PredictionRecord.status)
            .where(
                PredictionRecord.experiment == row.name,
                PredictionRecord.variant == candidate,
                PredictionRecord.role == "primary",
                PredictionRecord.forced.is_(False),
            )
            .order_by(PredictionRecord.created_at.desc())
            .limit(config.fast_abort.window)
        ).all()
        recent = list(reversed(statuses))
        return fast_abort(config, recent, breaker_state)
