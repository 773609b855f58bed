"""Common rounds (design 3.9, ``set=common``): on a schedule, the platform's benchmark account asks
every opted-in offer the same questions, as of the same data, at no charge, so models are also
compared on identical questions that gaming organic traffic cannot distort.

A round is named by its time (``round_id``, ISO UTC to the second) and every question's
Idempotency-Key is derived from it, so a round run twice, or by two workers at once, asks each
question once. A question left unanswered (the request failed or expired) stays as that failed
job, owned by the benchmark account with ``parameters["round"]``: that is how the leaderboard
finds the missed answers it scores as a coin flip the first time and the worst baseline after.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from prediction_provider.accounts.principal import Principal
from prediction_provider.accounts.roles import Role
from prediction_provider.clock import Clock
from prediction_provider.config import Settings
from prediction_provider.db.models import PredictionJob, User
from prediction_provider.db.session import Database
from prediction_provider.marketplace.offers import OfferBook, Priced, Spec
from prediction_provider.marketplace.requests import RequestBook

log = logging.getLogger(__name__)
# Not an argon2 hash, so no password verifies against it: the benchmark account never signs in.
UNUSABLE_HASH = "!benchmark-account-never-signs-in"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

Created = Callable[[PredictionJob], None]  # e.g. hand a platform request to the job dispatcher


@dataclass(slots=True)
class RoundReport:
    round_id: str
    data_time: datetime  # the clock time every question's data_as_of is taken at
    created: list[str] = field(default_factory=list)  # request ids made by this run
    existing: list[str] = field(default_factory=list)  # asked by an earlier run of the same round
    skipped: list[dict[str, Any]] = field(default_factory=list)  # questions that could not be asked

    def as_dict(self) -> dict[str, Any]:
        return {
            "round_id": self.round_id,
            "data_time": self.data_time.isoformat(),
            "created": len(self.created),
            "existing": len(self.existing),
            "skipped": self.skipped,
            "request_ids": sorted(self.created + self.existing),
        }


def round_key(round_id: str, offer_id: str, symbol: str, horizon: int) -> str:
    """The Idempotency-Key of one question of one round (at most 128 characters)."""
    return f"round:{round_id}:{offer_id}:{symbol.upper()}:{horizon}"


def round_boundary(now: datetime, interval_s: float) -> datetime:
    """The latest round time at or before ``now``: multiples of ``interval_s`` since the UTC epoch,
    so the daily default falls on 00:00 UTC (and hourly rounds on the hour)."""
    step = timedelta(seconds=interval_s)
    return EPOCH + ((now - EPOCH) // step) * step


class CommonRounds:
    def __init__(
        self, db: Database, clock: Clock, settings: Settings, offers: OfferBook, requests: RequestBook,
        created: Created | None = None,
    ) -> None:  # fmt: skip
        self.db = db
        self.clock = clock
        self.settings = settings
        self.offers = offers
        self.requests = requests
        self.created = created
        self._lock = threading.Lock()
        self._next: datetime | None = None  # the next scheduled round; the first is the next boundary

    # -- the benchmark account --------------------------------------------------------------------

    def benchmark(self) -> Principal:
        """The platform's benchmark account (role client), made on first use. Inactive and with an
        unusable password hash: it cannot sign in, and holds no API key."""
        username = self.settings.benchmark_username
        with self.db.session() as session:
            user = session.scalar(select(User).where(User.username == username))
            if user is not None:
                return Principal(user.id, user.username, Role.CLIENT, "system")
        try:
            with self.db.session() as session:
                user = User(
                    username=username, email=f"{username}@benchmark.invalid", full_name="Common rounds",
                    role=Role.CLIENT.value, is_active=False, password_hash=UNUSABLE_HASH,
                    created_at=self.clock.now(), updated_at=self.clock.now(),
                )  # fmt: skip
                session.add(user)
                session.flush()
                return Principal(user.id, user.username, Role.CLIENT, "system")
        except IntegrityError:  # another worker made it first
            with self.db.session() as session:
                user = session.scalar(select(User).where(User.username == username))
                assert user is not None
                return Principal(user.id, user.username, Role.CLIENT, "system")

    # -- a round ----------------------------------------------------------------------------------

    def run(self, now: datetime | None = None) -> RoundReport:
        """One round at ``now`` (default: the clock now, to the second): one price-0, no-hold
        request to every active offer with ``benchmark_opt_in``, for each of its symbols and
        horizons, every one as of the data known at ``now``. Running the same round again makes
        nothing new. A question an offer cannot be asked (no data for the symbol) is skipped and
        reported; it never stops the others."""
        at = (self.clock.now() if now is None else now).astimezone(UTC).replace(microsecond=0)
        round_id = at.strftime("%Y-%m-%dT%H:%M:%SZ")
        report = RoundReport(round_id, at)
        opted = [p for p in self.offers.search() if p.offer.benchmark_opt_in]
        if not opted:
            return report
        owner = self.benchmark()
        for priced in sorted(opted, key=lambda p: p.offer.id):
            for symbol in sorted({s.upper() for s in priced.offer.symbols}):
                for horizon in sorted(set(priced.offer.horizons)):
                    self._ask(report, owner, priced, Spec(symbol, horizon))
        return report

    def _ask(self, report: RoundReport, owner: Principal, priced: Priced, spec: Spec) -> None:
        key = round_key(report.round_id, priced.offer.id, spec.symbol, spec.horizon)
        try:
            job, made = self.requests.submit_round(
                owner, priced, spec, key, report.round_id, report.data_time
            )
        except Exception as exc:  # one offer's missing data must not stop the round
            log.warning(
                "common round %s: %s %s not asked", report.round_id, priced.offer.id, spec, exc_info=True
            )
            report.skipped.append(
                {
                    "offer_id": priced.offer.id,
                    "symbol": spec.symbol,
                    "horizon": spec.horizon,
                    "error": str(exc),
                }
            )
            return
        (report.created if made else report.existing).append(job.id)
        if made and self.created is not None:
            self.created(job)

    # -- the schedule -----------------------------------------------------------------------------

    def due(self, now: datetime) -> int:
        """Run the scheduled round whose time has come (the sweeper calls this every pass): every
        ``scoring_round_interval_s`` on boundaries since the epoch (daily: 00:00 UTC), the first one
        at the next boundary after this process started. The round is named by its boundary, so
        every worker's run of it is the same round. How many requests it made."""
        interval = self.settings.scoring_round_interval_s
        if interval <= 0:
            return 0
        with self._lock:
            if self._next is None:
                self._next = round_boundary(now, interval) + timedelta(seconds=interval)
            if now < self._next:
                return 0
            at = round_boundary(now, interval)  # a missed boundary runs once, at the latest
            self._next = at + timedelta(seconds=interval)
        return len(self.run(at).created)
