"""Fault injection for tests (``PP_CHAOS=1``, design §3.7): a rule in ``chaos_rules`` makes one
model version fail with probability ``fail_rate`` and answer ``delay_ms`` late, in every worker,
until it expires.

Rules are cached per process and reloaded through the ops stamp. ``before_call`` runs inside the
resilience guard, after the breaker and the bulkhead let the call through, so an injected delay
meets the deadline and an injected failure counts against the breaker; each such call is a hit.
Hits are counted in memory and added to the rows off the request path, every ``flush_interval_s``
and before a listing.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import delete, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from prediction_provider.clock import Clock, SystemClock
from prediction_provider.db.base import utcnow
from prediction_provider.db.modelops_models import ChaosRule
from prediction_provider.db.session import Database
from prediction_provider.errors import PredictionFailed
from prediction_provider.modelops import stamp

log = logging.getLogger(__name__)


class ChaosRuleIn(BaseModel):
    """The body of ``PUT /api/v1/admin/chaos/{model}/{version}``."""

    model_config = ConfigDict(extra="forbid")

    fail_rate: float = Field(default=0.0, ge=0, le=1, description="Share of calls that fail (0-1).")
    delay_ms: int = Field(default=0, ge=0, le=60_000, description="Added before every call.")
    ttl_s: float = Field(default=120.0, gt=0, le=86_400, description="The rule expires after this.")


@dataclass(frozen=True, slots=True)
class Fault:
    fail_rate: float
    delay_ms: int
    expires_at: datetime


def rule_view(row: ChaosRule, now: datetime) -> dict[str, Any]:
    return {
        "model": row.model,
        "version": row.version,
        "fail_rate": row.fail_rate,
        "delay_ms": row.delay_ms,
        "expires_at": row.expires_at,
        "active": row.expires_at > now,
        "hits": row.hits,
        "created_by": row.created_by,
        "created_at": row.created_at,
    }


class Chaos:
    """This process's copy of the chaos rules, the injection itself, and the rules' store."""

    def __init__(
        self,
        db: Database,
        clock: Clock | None = None,
        rng: random.Random | None = None,
        sleep: Callable[[float], None] = time.sleep,
        flush_interval_s: float = 1.0,
    ) -> None:
        self.db = db
        self.clock: Clock = clock or SystemClock()
        self._rng = rng or random.Random()  # noqa: S311 - fault injection, not security
        self._sleep = sleep
        self.flush_interval_s = flush_interval_s
        self._rules: dict[tuple[str, str], Fault] = {}
        self._hits: dict[tuple[str, str], int] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- the request path ----------------------------------------------------------------------

    def rule(self, model: str, version: str | None) -> Fault | None:
        """The live rule of this version, if any (an expired one is none)."""
        fault = self._rules.get((model, version or ""))
        if fault is None or self.clock.now() >= fault.expires_at:
            return None
        return fault

    def before_call(self, model: str, version: str | None) -> None:
        """Sleeps ``delay_ms`` (blocking: run it in a thread), then fails with ``fail_rate``."""
        fault = self.rule(model, version)
        if fault is None:
            return
        key = (model, version or "")
        with self._lock:
            self._hits[key] = self._hits.get(key, 0) + 1
            failing = self._rng.random() < fault.fail_rate
        if fault.delay_ms > 0:
            self._sleep(fault.delay_ms / 1000.0)
        if failing:
            raise PredictionFailed(
                f"chaos: injected failure of model {model}/{version}", {"model": model, "version": version}
            )

    # --- following the database ----------------------------------------------------------------

    def reload(self, session: Session) -> None:
        self._rules = {
            (row.model, row.version): Fault(row.fail_rate, row.delay_ms, row.expires_at)
            for row in session.scalars(select(ChaosRule))
        }

    def flush(self) -> None:
        """Add the hits counted here since the last flush to the rules' rows."""
        with self._lock:
            hits, self._hits = self._hits, {}
        if not hits:
            return
        try:
            with self.db.session() as session:
                for (model, version), count in hits.items():
                    session.execute(
                        update(ChaosRule)
                        .where(ChaosRule.model == model, ChaosRule.version == version)
                        .values(hits=ChaosRule.hits + count)
                    )
        except SQLAlchemyError:
            with self._lock:  # keep them for the next flush
                for key, count in hits.items():
                    self._hits[key] = self._hits.get(key, 0) + count
            raise

    def start(self) -> None:
        if self._thread is None and self.flush_interval_s > 0:
            self._thread = threading.Thread(target=self._run, name="chaos-hits", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.flush_interval_s):
            try:
                self.flush()
            except SQLAlchemyError as exc:
                log.warning("chaos: could not write hits: %s", exc)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        try:
            self.flush()
        except SQLAlchemyError as exc:
            log.warning("chaos: could not write hits: %s", exc)

    # --- the store (admin routes) --------------------------------------------------------------

    def put(
        self, session: Session, model: str, version: str, body: ChaosRuleIn, actor: str | None
    ) -> ChaosRule:
        """Set (or replace, hits from 0) the rule of one version."""
        now = self.clock.now()
        row = session.get(ChaosRule, (model, version))
        if row is None:
            row = ChaosRule(model=model, version=version)
            session.add(row)
        row.fail_rate, row.delay_ms = body.fail_rate, body.delay_ms
        row.expires_at = now + timedelta(seconds=body.ttl_s)
        row.hits, row.created_by, row.created_at = 0, actor, utcnow()
        with self._lock:
            self._hits.pop((model, version), None)
        stamp.bump(session)
        session.flush()
        return row

    def get(self, session: Session, model: str, version: str) -> ChaosRule | None:
        return session.get(ChaosRule, (model, version))

    def list(self, session: Session) -> list[ChaosRule]:
        return list(session.scalars(select(ChaosRule).order_by(ChaosRule.model, ChaosRule.version)))

    def delete(self, session: Session, model: str, version: str) -> bool:
        result = session.execute(
            delete(ChaosRule).where(ChaosRule.model == model, ChaosRule.version == version)
        )
        removed = int(result.rowcount)  # type: ignore[attr-defined]
        if removed:
            stamp.bump(session)
        return bool(removed)
