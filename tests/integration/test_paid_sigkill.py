"""A paid answer is never lost or charged twice when the server is killed with SIGKILL under load.

A real ``prediction-provider serve`` process sells a priced model (a provider's LightGBM upload with
a platform offer) to a funded client; sixteen threads fire paid single-row ``/predict`` calls and
record every answered ``X-Charge-Id``; once a good share of them were answered the server is killed
with SIGKILL mid-flight. The database is then read directly: every answered charge is in the
journal at exactly its price, in one transfer, never two, the wallet is the deposit less
every charge, and the ledger check passes; restarted on the same database, the server sells again.
What was charged but never answered (killed between commit and response) costs the client, but it
is in the journal, so the balance still adds up to the micro-unit.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from prediction_provider.app import account_service
from prediction_provider.cli import settings_env
from prediction_provider.clock import SystemClock
from prediction_provider.config import Settings
from prediction_provider.db import migrate
from prediction_provider.db.ledger_models import LedgerTransfer
from prediction_provider.db.session import Database
from prediction_provider.ledger.checks import check_ledger
from prediction_provider.ledger.journal import Journal
from prediction_provider.ledger.money import split
from tests.conftest import TEST_JWT_SECRET
from tests.integration.database_fixtures import sqlite_url
from tests.processes import free_port, stop, wait_until_healthy
from tests.upload_models import lightgbm_text, probe_row

PRICE = 1000  # micro-units: 0.001 USD a row
DEPOSIT = 2_000_000  # 2 USD: more than every call below can spend
CALLS = 600
CONCURRENCY = 16
KILL_AFTER = 150  # answered calls before the SIGKILL; the rest are in flight or never sent


@dataclass(frozen=True)
class User:
    user_id: int
    username: str
    api_key: str

    @property
    def headers(self) -> dict[str, str]:
        return {"X-API-KEY": self.api_key}


def make_user(settings: Settings, role: str) -> User:
    service = account_service(settings)
    name = f"{role}-{uuid.uuid4().hex[:8]}"
    user = service.create_user(name, f"{name}@example.com", f"{name}-password", role, active=True)
    key: str = service.regenerate_api_key(user["id"])["api_key"]
    service.db.dispose()
    return User(int(user["id"]), name, key)


class Server:
    """``prediction-provider serve`` (one process, so SIGKILL of its pid kills the server)."""

    def __init__(self, settings: Settings, log: Path) -> None:
        self.settings, self.log = settings, log
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {**os.environ, **settings_env(self.settings), "PP_JWT_SECRET": TEST_JWT_SECRET}
        command = [sys.executable, "-m", "prediction_provider.cli", "serve", "--port", str(self.port)]
        with self.log.open("ab") as sink:
            self.process = subprocess.Popen(command, env=env, stdout=sink, stderr=subprocess.STDOUT)
        wait_until_healthy(self.process, f"{self.url}/health/ready", self.log)

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            stop(self.process)


@pytest.fixture(params=["sqlite", "postgresql"])
def paid_settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    if request.param == "sqlite":
        url = sqlite_url(tmp_path)
    else:
        url = request.getfixturevalue("postgres_databases")()
        migrate.upgrade(url)
    return Settings(
        data_dir=tmp_path / "data",
        database_url=url,
        jwt_secret=TEST_JWT_SECRET,
        grpc_enabled=False,
        rate_limit="1000000/minute",
        login_lockout="100000/minute",
        login_failure_limit="100000/minute",
        max_concurrent_predictions=1000,
        job_workers=0,
    )


@pytest.fixture
def server(paid_settings: Settings, tmp_path: Path) -> Iterator[Server]:
    started = Server(paid_settings, tmp_path / "server.log")
    try:
        yield started
    finally:
        started.stop()


def sell_a_model(server: Server, provider: User) -> str:
    name = f"paid-{uuid.uuid4().hex[:8]}"
    with httpx.Client(base_url=server.url, timeout=60, headers=provider.headers) as http:
        uploaded = http.post(
            "/api/v1/provider/models",
            data={"name": name, "format": "lightgbm"},
            files={"file": ("model.txt", lightgbm_text(), "text/plain")},
        )
        assert uploaded.status_code == 201, uploaded.text
        offer = http.post(
            "/api/v1/market/offers",
            json={"model": name, "target": "direction", "symbols": ["EURUSD"], "horizons": [1],
                  "price": "0.001"},
        )  # fmt: skip
        assert offer.status_code == 201, offer.text
    return name


def deposit(server: Server, admin: User, client: User) -> None:
    with httpx.Client(base_url=server.url, timeout=60) as http:
        made = http.post(
            f"/api/v1/admin/wallets/{client.username}/deposits",
            json={"amount": "2.000000", "currency": "USD"},
            headers={**admin.headers, "Idempotency-Key": f"fund-{client.username}"},
        )
    assert made.status_code == 201, made.text


def wait_until_charged(server: Server, client: User, model: str) -> None:
    """The server's price list is re-read every second: poll until the model is sold."""
    body = {"model": model, "features": probe_row()}
    with httpx.Client(base_url=server.url, timeout=60, headers=client.headers) as http:
        for _ in range(200):
            answer = http.post("/predict", json=body)
            assert answer.status_code == 200, answer.text
            if "X-Charge-Id" in answer.headers:
                return
    raise AssertionError("the model was never charged for")


class Load:
    """Paid calls from a thread pool; every 200 answer's charge id and amount is recorded."""

    def __init__(self, server: Server, client: User, model: str) -> None:
        self.server, self.client, self.model = server, client, model
        self.answered: dict[str, str] = {}
        self.refused: list[int] = []
        self.lock = threading.Lock()
        self.enough = threading.Event()
        self.local = threading.local()
        self.clients: list[httpx.Client] = []

    def call(self, seed: int) -> None:
        http = getattr(self.local, "http", None)
        if http is None:
            http = self.local.http = httpx.Client(
                base_url=self.server.url, timeout=30, headers=self.client.headers
            )
            with self.lock:
                self.clients.append(http)
        try:
            answer = http.post("/predict", json={"model": self.model, "features": probe_row(seed)})
        except httpx.TransportError:  # the server is gone: nothing was answered
            return
        with self.lock:
            if answer.status_code == 200:
                self.answered[answer.headers["X-Charge-Id"]] = answer.headers["X-Charged"]
                if len(self.answered) >= KILL_AFTER:
                    self.enough.set()
            else:
                self.refused.append(answer.status_code)


def charge_sums(db: Database) -> dict[str, tuple[int, int]]:
    """Per charge id: the number of its transfers and their total."""
    with db.session() as session:
        rows = session.execute(
            select(LedgerTransfer.request_id, func.count(), func.sum(LedgerTransfer.amount))
            .where(LedgerTransfer.kind == "charge")
            .group_by(LedgerTransfer.request_id)
        ).all()
    return {str(request_id): (int(count), int(total)) for request_id, count, total in rows}


def test_sigkill_under_paid_load_loses_no_answered_charge_and_charges_nothing_twice(
    paid_settings: Settings, server: Server
) -> None:
    admin, provider, client = (make_user(paid_settings, role) for role in ("admin", "provider", "client"))
    server.start()
    model = sell_a_model(server, provider)
    deposit(server, admin, client)
    wait_until_charged(server, client, model)

    load = Load(server, client, model)
    pool = ThreadPoolExecutor(CONCURRENCY)
    try:
        futures = [pool.submit(load.call, seed) for seed in range(CALLS)]
        assert load.enough.wait(timeout=300), f"only {len(load.answered)} answers; {load.refused[:5]}"
        server.kill()  # SIGKILL while calls are in flight
        for future in futures:
            future.result(timeout=120)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        for http in load.clients:
            http.close()
    assert load.refused == []  # the wallet covers every call: nothing but 200 or a dropped call
    answered = dict(load.answered)
    assert len(answered) >= KILL_AFTER
    assert set(answered.values()) == {"0.001000"}

    db = Database(paid_settings.database)
    try:
        legs = charge_sums(db)
        expected_legs = 1  # one transfer per answer (the platform's share moves once per batch)
        # Never lost: every answered charge is in the journal at exactly its price.
        missing = [charge_id for charge_id in answered if charge_id not in legs]
        assert missing == []
        assert {legs[charge_id] for charge_id in answered} == {(expected_legs, PRICE)}
        # Never twice: each charge id has one set of legs; none charged more than its price.
        assert {value for value in legs.values()} == {(expected_legs, PRICE)}
        with db.session() as session:
            transfers = session.scalar(
                select(func.count()).select_from(LedgerTransfer).where(LedgerTransfer.kind == "charge")
            )
            ids = session.scalar(
                select(func.count(func.distinct(LedgerTransfer.request_id))).where(
                    LedgerTransfer.kind == "charge"
                )
            )
            assert transfers == expected_legs * ids == expected_legs * len(legs)
            # The warm-up call of wait_until_charged is charged too: it is one of ``legs``.
            balance = Journal(SystemClock()).balance(session, f"client:{client.user_id}", "USD")
            assert balance.available == DEPOSIT - PRICE * len(legs)
            assert balance.held == 0
            report = check_ledger(session)
            assert report.ok, report.as_dict()
            # The platform's share of every charge, floored per answer, reached the fees account.
            fees = Journal(SystemClock()).balance(session, "platform:fees", "USD").posted
            assert fees == split(PRICE, paid_settings.platform_fee_bps).platform_fee * len(legs)
    finally:
        db.dispose()

    server.start()  # the same database, after the crash
    with httpx.Client(base_url=server.url, timeout=60, headers=client.headers) as http:
        answer = http.post("/predict", json={"model": model, "features": probe_row()})
    assert answer.status_code == 200, answer.text
    charge_id = answer.headers["X-Charge-Id"]
    db = Database(paid_settings.database)
    try:
        after = charge_sums(db)
        assert after[charge_id] == (expected_legs, PRICE)
        assert len(after) == len(legs) + 1
        with db.session() as session:
            balance = Journal(SystemClock()).balance(session, f"client:{client.user_id}", "USD")
            assert balance.available == DEPOSIT - PRICE * len(after)
            report = check_ledger(session)
            assert report.ok, report.as_dict()
    finally:
        db.dispose()
