"""A real marketplace over a migrated database, without HTTP: users from the account service, a
model owned by a provider, an evaluator-executed offer, a manual clock, and the settle paths the
product uses (completion under the journal lock with a conditional update, cancel through a
``JobStore``, sweeps through the sweeper). Shared by the ledger state machine and concurrency tests."""

from __future__ import annotations

import itertools
import sqlite3
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import select, update

from prediction_provider.accounts.principal import Principal
from prediction_provider.accounts.roles import Role
from prediction_provider.app import account_service
from prediction_provider.clock import ManualClock
from prediction_provider.config import Settings
from prediction_provider.db import migrate
from prediction_provider.db.ledger_models import LedgerAccount
from prediction_provider.db.market_models import ModelOwner
from prediction_provider.db.models import PredictionJob
from prediction_provider.db.session import Database
from prediction_provider.jobs.records import JobStatus, record_event
from prediction_provider.jobs.store import JobStore
from prediction_provider.ledger.journal import Journal
from prediction_provider.ledger.service import LedgerService
from prediction_provider.marketplace.offers import NewOffer, Priced, Spec
from prediction_provider.marketplace.requests import Submission
from prediction_provider.marketplace.service import Marketplace
from tests.integration.database_fixtures import POSTGRES_ADMIN_URL

START = datetime(2031, 3, 3, 12, 0, tzinfo=UTC)
CURRENCY = "USD"
MODEL = "ledger-test-model"
SPEC = Spec("EURUSD", 1)
# The forecast is one hour out: the deadline is target - result_margin_s (60 s) = 3540 s after submit.
TARGET_AFTER = timedelta(hours=1)


@dataclass
class World:
    settings: Settings
    db: Database
    clock: ManualClock
    marketplace: Marketplace
    store: JobStore
    ledger: LedgerService
    admin: Principal
    client: Principal
    provider: Principal
    evaluator: Principal
    offer_id: str
    times: FixedTimes

    def close(self) -> None:
        self.marketplace.close()
        self.db.dispose()

    # -- what the product does, driven by the test ----------------------------------------------

    def deposit(self, amount: int, key: str) -> dict:
        assert self.client.username is not None
        return self.ledger.deposit(self.admin, self.client.username, amount, CURRENCY, key)

    def submit(self, max_cost: int, key: str) -> tuple[PredictionJob, bool]:
        return self.marketplace.submit(
            self.client, Submission(SPEC, max_cost, CURRENCY, offer_id=self.offer_id), key
        )

    def complete(self, request_id: str, executed_by: int | None) -> bool:
        """An evaluator's result: the job turns completed and its hold is captured and split, in one
        transaction; ``False`` when the request had already ended."""
        now = self.clock.now()
        with self.db.session() as session:
            self.marketplace.settlement.lock(session)
            updated = session.execute(
                update(PredictionJob)
                .where(
                    PredictionJob.id == request_id,
                    PredictionJob.status.in_([JobStatus.PENDING, JobStatus.PROCESSING]),
                )
                .values(status=JobStatus.COMPLETED, executed_by=executed_by, claim_token=None,
                        result={"direction": "up"}, finished_at=now, updated_at=now)
            )  # fmt: skip
            if updated.rowcount != 1:  # type: ignore[attr-defined]
                return False
            record_event(session, request_id, JobStatus.COMPLETED, None, "result accepted")
            self.marketplace.settlement.settle(session, request_id, JobStatus.COMPLETED)
        return True

    def accounts(self) -> dict[str, tuple[int, int, int, int]]:
        with self.db.session() as session:
            return {
                a.code: (a.debits_pending, a.debits_posted, a.credits_pending, a.credits_posted)
                for a in session.scalars(select(LedgerAccount).where(LedgerAccount.currency == CURRENCY))
            }


class FixedTimes:
    """The request's (data_as_of, target_time) without market data: the last bar an hour ago and
    the target an hour ahead, or (``historical``) a target already past, whose outcome is recorded."""

    def __init__(self) -> None:
        self.historical = False

    def __call__(self, _priced: Priced, _spec: Spec, now: datetime) -> tuple[datetime, datetime]:
        if self.historical:
            return now - timedelta(hours=3), now - timedelta(hours=2)
        return now - timedelta(hours=1), now + TARGET_AFTER


def build_world(url: str, data_dir: Path, *, price: int, evaluator_fee: int, **changes: object) -> World:
    migrate.upgrade(url)
    settings = Settings(data_dir=data_dir, database_url=url, clock="manual", **changes)  # type: ignore[arg-type]
    accounts = account_service(settings)
    tag = uuid.uuid4().hex[:8]
    people = {}
    for role in ("admin", "client", "provider", "evaluator"):
        user = accounts.create_user(f"{role}-{tag}", f"{role}-{tag}@example.com", "password-123456", role,
                                    active=True)  # fmt: skip
        people[role] = Principal(user["id"], user["username"], Role(role), "api_key")
    accounts.db.dispose()
    owners = Database(url)
    with owners.session() as session:
        session.add(ModelOwner(model_name=MODEL, provider_id=people["provider"].user_id, assigned_by="test",
                               assigned_at=START))  # fmt: skip
    owners.dispose()
    world = open_world(settings, url, people["admin"], people["client"], people["provider"],
                       people["evaluator"], "")  # fmt: skip
    offer = world.marketplace.offers.publish(
        people["provider"],
        NewOffer(MODEL, None, "direction", ("EURUSD",), "1h", (1,), price, CURRENCY, "evaluators",
                 evaluator_fee=evaluator_fee),
    )  # fmt: skip
    world.offer_id = offer.offer.id
    return world


def open_world(
    settings: Settings, url: str, admin: Principal, client: Principal, provider: Principal,
    evaluator: Principal, offer_id: str,
) -> World:  # fmt: skip
    """The marketplace wired over ``url`` (a database made by :func:`build_world`, or a copy)."""
    settings = settings.model_copy(update={"database_url": url})
    db = Database(url)
    clock = ManualClock(START)
    journal = Journal(clock)
    marketplace = Marketplace(settings, db, clock, journal, None, None, None)
    times = FixedTimes()
    marketplace.requests.times_of = times
    store = JobStore(db, timedelta(seconds=settings.lease_s), settings.market_max_attempts)
    marketplace.attach(store, None)
    return World(
        settings, db, clock, marketplace, store, LedgerService(db, journal, clock, settings),
        admin, client, provider, evaluator, offer_id, times,
    )  # fmt: skip


def reopen(template: World, url: str) -> World:
    """The same people and offer over another database (a copy of the template's)."""
    return open_world(template.settings, url, template.admin, template.client, template.provider,
                      template.evaluator, template.offer_id)  # fmt: skip


def sqlite_copies(template: World, directory: Path) -> Callable[[], tuple[World, Callable[[], None]]]:
    """Fresh worlds from a SQLite template: each one a copy of the file (the backup API)."""
    source = template.settings.database_url or ""
    source_path = source.removeprefix("sqlite:///")
    counter = itertools.count()

    def fresh() -> tuple[World, Callable[[], None]]:
        path = directory / f"copy-{next(counter)}.db"
        with sqlite3.connect(source_path) as src, sqlite3.connect(path) as dst:
            src.backup(dst)
        world = reopen(template, f"sqlite:///{path}")

        def drop() -> None:
            world.close()
            path.unlink(missing_ok=True)

        return world, drop

    return fresh


def postgres_copies(template: World) -> Callable[[], tuple[World, Callable[[], None]]]:
    """Fresh worlds from a PostgreSQL template: ``CREATE DATABASE ... TEMPLATE`` (the template's
    connections are closed first, as PostgreSQL requires); each copy is dropped when done."""
    import psycopg

    url = template.settings.database_url or ""
    base, name = url.rsplit("/", 1)
    admin_url = POSTGRES_ADMIN_URL.replace("postgresql+psycopg://", "postgresql://")
    template.close()

    def fresh() -> tuple[World, Callable[[], None]]:
        copy = f"{name}_c{uuid.uuid4().hex[:8]}"
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{copy}" TEMPLATE "{name}"')
        world = reopen(template, f"{base}/{copy}")

        def drop() -> None:
            world.close()
            with psycopg.connect(admin_url, autocommit=True) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{copy}" WITH (FORCE)')

        return world, drop

    return fresh
