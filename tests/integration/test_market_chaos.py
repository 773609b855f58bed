"""Chaos on the paid path: two API processes and two Celery workers on PostgreSQL and Redis take
several hundred marketplace requests while a random one of them is killed with SIGKILL (and
restarted) again and again; then everything is killed and restarted once more, and the sweepers and
redispatchers finish what was left. Whatever was interrupted, the ledger check passes, each
completed request was captured exactly once, nothing else was, and the client paid exactly the
price of what it got.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from prediction_provider.cli import settings_env
from prediction_provider.clock import SystemClock
from prediction_provider.config import Settings
from prediction_provider.db import migrate
from prediction_provider.db.ledger_models import LedgerTransfer
from prediction_provider.db.market_models import ModelOwner
from prediction_provider.db.models import PredictionJob
from prediction_provider.db.session import Database
from prediction_provider.demo.training import DemoSummary
from prediction_provider.jobs.records import TERMINAL
from prediction_provider.ledger.journal import Journal
from tests.conftest import TEST_JWT_SECRET
from tests.integration.database_fixtures import services_required
from tests.integration.test_paid_sigkill import User, make_user
from tests.processes import free_port, wait_until_healthy

pytestmark = [pytest.mark.scale_out, pytest.mark.services]

MODEL = "eurusd-1h-forecast"
# 500 was asked for; on a 2-core machine four processes restarting under load (an API start takes
# up to 30 s there) get through about 200 in the two minutes this test may take.
REQUESTS = 200
PRICE = 2500  # micro-units: 0.0025 USD a request
DEPOSIT = 10_000_000  # 10 USD: covers every request
REDIS = ("127.0.0.1", 6379)
SUBMITTERS = 8
SETTLE_S = 150  # the cap on the wait for every request to end, after the final restart


class Process:
    """One ``prediction-provider`` process in a session of its own, so SIGKILL takes its children."""

    def __init__(self, name: str, command: list[str], env: dict[str, str], log: Path) -> None:
        self.name, self.command, self.env, self.log = name, command, env, log
        self.process: subprocess.Popen[bytes] | None = None
        self.kills = 0

    def start(self) -> None:
        with self.log.open("ab") as sink:
            self.process = subprocess.Popen(
                self.command, env=self.env, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True
            )

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)
            self.kills += 1

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=30)


class Api(Process):
    def __init__(self, name: str, env: dict[str, str], log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        command = [sys.executable, "-m", "prediction_provider.cli", "serve", "--port", str(self.port)]
        super().__init__(name, [*command, "--workers", "1"], env, log)

    def start(self) -> None:
        super().start()
        assert self.process is not None
        wait_until_healthy(self.process, f"{self.url}/health/ready", self.log)


class Worker(Process):
    def __init__(self, name: str, env: dict[str, str], log: Path) -> None:
        command = [sys.executable, "-m", "prediction_provider.cli", "worker", "--concurrency", "1"]
        super().__init__(name, [*command, "--hostname", f"{name}@%h", "--loglevel", "warning"], env, log)


class Cluster:
    def __init__(self, settings: Settings, log_dir: Path) -> None:
        env = {**os.environ, **settings_env(settings), "PP_JWT_SECRET": TEST_JWT_SECRET}
        self.apis = [Api(f"api{i}", env, log_dir / f"api{i}.log") for i in range(2)]
        self.workers = [Worker(f"w{i}", env, log_dir / f"worker{i}.log") for i in range(2)]
        self.log_dir = log_dir

    @property
    def everyone(self) -> list[Process]:
        return [*self.apis, *self.workers]

    def start(self) -> None:
        for worker in self.workers:
            worker.start()
        for api in self.apis:
            api.start()

    def stop(self) -> None:
        for process in self.everyone:
            process.stop()

    def logs(self) -> str:
        return "\n".join(
            f"== {path.name}\n" + path.read_text(errors="replace")[-2000:]
            for path in sorted(self.log_dir.glob("*.log"))
        )


@pytest.fixture
def chaos_settings(
    settings: Settings, demo_summary: DemoSummary, postgres_databases: Callable[[], str]
) -> Settings:
    try:
        socket.create_connection(REDIS, timeout=2).close()
    except OSError as exc:
        if services_required():
            pytest.fail(f"Redis is required (CI or PP_REQUIRE_SERVICES=1) but unreachable: {exc}")
        pytest.skip(f"Redis unreachable: {exc}")
    url = postgres_databases()
    migrate.upgrade(url)
    return settings.model_copy(
        update={
            "database_url": url,
            "job_backend": "celery",
            "broker_url": "redis://127.0.0.1:6379/7",
            "job_queue": f"chaos-{uuid.uuid4().hex[:8]}",
            # A killed worker's job may be taken back after 3 s; a job whose message was lost (its
            # API killed before dispatch, its worker killed while running it) is re-sent after 15 s.
            "job_lease_seconds": 3,
            "job_redispatch_seconds": 15,
            "broker_visibility_timeout": 60,
            "job_time_limit_seconds": 50,
            "job_max_attempts": 10,  # killed runs count as attempts: let most requests finish
            "sweep_interval_s": 2,
            "max_open_requests": 100_000,
            "warm_models": [],
            "grpc_enabled": False,
        }
    )


@pytest.fixture
def cluster(chaos_settings: Settings, tmp_path: Path) -> Iterator[Cluster]:
    started = Cluster(chaos_settings, tmp_path)
    try:
        yield started
    finally:
        started.stop()


def publish_offer(cluster: Cluster, db: Database, provider: User) -> str:
    with db.session() as session:
        session.add(ModelOwner(model_name=MODEL, provider_id=provider.user_id, assigned_by="test"))
    with httpx.Client(base_url=cluster.apis[0].url, timeout=60, headers=provider.headers) as http:
        made = http.post(
            "/api/v1/market/offers",
            json={"model": MODEL, "target": "direction", "symbols": ["EURUSD"], "interval": "1h",
                  "horizons": [1], "price": "0.0025", "execution": "platform"},
        )  # fmt: skip
    assert made.status_code == 201, made.text
    return str(made.json()["offer_id"])


def fund(cluster: Cluster, admin: User, client: User) -> None:
    with httpx.Client(base_url=cluster.apis[1].url, timeout=60) as http:
        made = http.post(
            f"/api/v1/admin/wallets/{client.username}/deposits",
            json={"amount": "10.000000", "currency": "USD"},
            headers={**admin.headers, "Idempotency-Key": f"fund-{client.username}"},
        )
    assert made.status_code == 201, made.text


class Submitter:
    """Submits request ``n`` with key ``chaos-n`` to API ``n % 2``; a dropped or refused-by-crash
    call is retried with the same key, on the other API (a replay answers the first request)."""

    def __init__(self, cluster: Cluster, db: Database, client: User, offer_id: str) -> None:
        self.cluster, self.db, self.client, self.offer_id = cluster, db, client, offer_id
        self.abandoned = 0
        self.local = threading.local()
        self.clients: list[httpx.Client] = []
        self.replays = 0
        self.lock = threading.Lock()

    def http(self) -> httpx.Client:
        found: httpx.Client | None = getattr(self.local, "http", None)
        if found is None:
            found = self.local.http = httpx.Client(timeout=30, headers=self.client.headers)
            with self.lock:
                self.clients.append(found)
        return found

    def stuck(self, key: str) -> str | None:
        """A key whose first call died with its API stays in progress for 5 minutes (the
        idempotency claim's ``stale_after``): the request exists if that call committed it."""
        with self.db.session() as session:
            return session.scalar(
                select(PredictionJob.id).where(
                    PredictionJob.owner_id == self.client.user_id, PredictionJob.idempotency_key == key
                )
            )

    def submit(self, n: int) -> str | None:
        body = {"offer_id": self.offer_id, "symbol": "EURUSD", "horizon": 1, "max_cost": "0.01"}
        headers = {"Idempotency-Key": f"chaos-{n}"}
        deadline = time.monotonic() + 180
        attempt, in_progress_since = 0, None
        while True:
            api = self.cluster.apis[(n + attempt) % 2]
            attempt += 1
            try:
                answer = self.http().post(f"{api.url}/api/v1/market/requests", json=body, headers=headers)
            except httpx.TransportError:
                answer = None
            if answer is not None and answer.status_code in (200, 201):
                if answer.status_code == 200:
                    with self.lock:
                        self.replays += 1
                return str(answer.json()["request_id"])
            if answer is not None and answer.status_code not in (409, 500, 502, 503):
                raise AssertionError(f"request {n}: {answer.status_code} {answer.text}")
            if answer is not None and answer.status_code == 409:
                in_progress_since = in_progress_since or time.monotonic()
                if time.monotonic() - in_progress_since > 15:
                    made = self.stuck(headers["Idempotency-Key"])
                    if made is None:  # killed before its commit: never made, nothing held
                        with self.lock:
                            self.abandoned += 1
                    return made
            if time.monotonic() > deadline:
                raise AssertionError(f"request {n} never accepted: {answer and answer.text}")
            time.sleep(0.2)  # the other API may be restarting too


def chaos(cluster: Cluster, stop: threading.Event, rng: random.Random, first_two: threading.Event) -> None:
    """Kill a random process every few seconds and restart it; the first two, soon after the
    submits start, are a worker and an API, so both kinds die at least once."""
    victims: list[Process] = [rng.choice(cluster.workers), rng.choice(cluster.apis)]
    while not stop.wait(rng.uniform(0.3, 1.0) if victims else rng.uniform(2.0, 5.0)):
        victim = victims.pop(0) if victims else rng.choice(cluster.everyone)
        victim.kill()
        victim.start()
        if not victims:
            first_two.set()


def wait_until_terminal(db: Database, ids: list[str], cluster: Cluster) -> dict[str, str]:
    deadline = time.monotonic() + SETTLE_S
    while True:
        with db.session() as session:
            rows = session.execute(
                select(PredictionJob.id, PredictionJob.status).where(PredictionJob.id.in_(ids))
            ).all()
            statuses = {str(rid): str(status) for rid, status in rows}
        if len(statuses) == len(ids) and all(status in TERMINAL for status in statuses.values()):
            return statuses
        if time.monotonic() > deadline:
            counts = Counter(statuses.values())
            raise AssertionError(f"requests unfinished after {SETTLE_S} s: {counts}\n{cluster.logs()}")
        time.sleep(0.5)


def test_kill_9_of_apis_and_workers_leaves_every_request_paid_exactly_once(
    chaos_settings: Settings, cluster: Cluster
) -> None:
    admin, provider, client = (make_user(chaos_settings, role) for role in ("admin", "provider", "client"))
    db = Database(chaos_settings.database)
    try:
        cluster.start()
        offer_id = publish_offer(cluster, db, provider)
        fund(cluster, admin, client)

        submitter = Submitter(cluster, db, client, offer_id)
        stop, first_two = threading.Event(), threading.Event()
        rng = random.Random(18)
        monkey = threading.Thread(target=chaos, args=(cluster, stop, rng, first_two), daemon=True)
        monkey.start()
        try:
            with ThreadPoolExecutor(SUBMITTERS) as pool:
                made = list(pool.map(submitter.submit, range(REQUESTS)))
            # Fast submits may end first: the kills go on among the running requests meanwhile.
            assert first_two.wait(timeout=120), cluster.logs()
        finally:
            for http in submitter.clients:
                http.close()
            stop.set()
            monkey.join(timeout=120)
        ids = [rid for rid in made if rid is not None]
        # Distinct keys, distinct requests; a retried key, the same one. A key whose first call
        # died uncommitted with its API is abandoned (its claim frees only after 5 minutes).
        assert len(set(ids)) == len(ids) == REQUESTS - submitter.abandoned
        killed = {process.name: process.kills for process in cluster.everyone}
        assert sum(killed[api.name] for api in cluster.apis) >= 1, killed
        assert sum(killed[worker.name] for worker in cluster.workers) >= 1, killed

        for process in cluster.everyone:  # and once more, everything at once
            process.kill()
        for process in cluster.everyone:
            process.start()
        statuses = wait_until_terminal(db, ids, cluster)
        completed = {rid for rid, status in statuses.items() if status == "completed"}
        assert completed, Counter(statuses.values())

        with httpx.Client(base_url=cluster.apis[0].url, timeout=120, headers=admin.headers) as http:
            check = http.get("/api/v1/admin/ledger/check")
        assert check.status_code == 200, check.text
        assert check.json()["ok"] is True, check.json()
        with db.session() as session:
            captured = Counter(
                session.scalars(select(LedgerTransfer.request_id).where(LedgerTransfer.kind == "capture"))
            )
            holds = session.scalar(
                select(func.count()).select_from(LedgerTransfer).where(LedgerTransfer.kind == "hold")
            )
            balance = Journal(SystemClock()).balance(session, f"client:{client.user_id}", "USD")
        assert sum(captured.values()) == len(completed)
        assert set(captured) == completed
        assert set(captured.values()) == {1}
        assert holds == len(ids)  # one hold per request, however often its submit was retried
        assert balance.available == DEPOSIT - PRICE * len(completed)
        assert balance.held == 0
    finally:
        db.dispose()
