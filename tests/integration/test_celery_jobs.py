"""Scale-out under faults, on the real brokers: the API on PostgreSQL, two Celery worker processes.

Each broker (Redis, RabbitMQ) gets the same checks: a thousand concurrent submits
all complete exactly once; a worker process killed with SIGKILL in the middle of
a job has it redelivered and completed once; an unreachable broker answers 503
and stores nothing, and submits work again when it is back, without a restart.
"""

from __future__ import annotations

import asyncio
import io
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
from sqlalchemy import func, select

from prediction_provider.config import Settings
from prediction_provider.db import migrate
from prediction_provider.db.models import PredictionJob, PredictionJobEvent, PredictionRecord
from prediction_provider.db.session import Database
from tests.conftest import MODEL, TEST_JWT_SECRET, Account, LiveServer
from tests.integration.database_fixtures import services_required
from tests.integration.tcp_proxy import TcpProxy
from tests.processes import new_api_key

BROKERS = {
    "redis": ("redis://127.0.0.1:6379/0", ("127.0.0.1", 6379)),
    "rabbitmq": ("amqp://guest:guest@127.0.0.1:5672//", ("127.0.0.1", 5672)),
}
LEASE_SECONDS = 3
pytestmark = pytest.mark.scale_out


def _reachable(address: tuple[str, int]) -> bool:
    import socket

    try:
        socket.create_connection(address, timeout=2).close()
    except OSError:
        return False
    return True


@pytest.fixture(scope="module", params=sorted(BROKERS))
def broker(request: pytest.FixtureRequest) -> tuple[str, str]:
    url, address = BROKERS[request.param]
    if not _reachable(address):
        if services_required():
            pytest.fail(f"{request.param} is required (CI or PP_REQUIRE_SERVICES=1) but unreachable")
        pytest.skip(f"{request.param} unreachable")
    return request.param, url


@pytest.fixture(scope="module")
def scale_settings(
    broker: tuple[str, str], settings: Settings, postgres_databases: Callable[[], str]
) -> Settings:
    """The API's and the workers' settings: one fresh PostgreSQL database and queue per broker."""
    url = postgres_databases()
    migrate.upgrade(url)
    return settings.model_copy(
        update={
            "database_url": url,
            "job_backend": "celery",
            "broker_url": broker[1],
            "job_queue": f"test-{broker[0]}-{uuid.uuid4().hex[:8]}",
            "job_lease_seconds": LEASE_SECONDS,
            "broker_visibility_timeout": 60,
            "job_time_limit_seconds": 50,
            "warm_models": [MODEL],
            "grpc_enabled": False,
        }
    )


class Workers:
    """``prediction-provider worker`` processes, as an operator would start them."""

    def __init__(self, settings: Settings, log_dir: Path) -> None:
        from prediction_provider.cli import settings_env

        self.env = {**os.environ, **settings_env(settings), "PP_JWT_SECRET": TEST_JWT_SECRET}
        self.log_dir = log_dir
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(self, count: int) -> None:
        for _ in range(count):
            number = len(self.processes)
            command = [sys.executable, "-m", "prediction_provider.cli", "worker", "--concurrency", "2"]
            command += ["--hostname", f"w{number}@%h", "--loglevel", "warning"]
            with (self.log_dir / f"worker-{number}.log").open("wb") as log:
                self.processes.append(
                    subprocess.Popen(
                        command, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
                    )
                )

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=30)

    def logs(self) -> str:
        return "\n".join(
            path.read_text(errors="replace")[-3000:] for path in sorted(self.log_dir.glob("*.log"))
        )


@pytest.fixture(scope="module")
def workers(scale_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workers]:
    started = Workers(scale_settings, tmp_path_factory.mktemp("workers"))
    started.start(2)
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture(scope="module")
def api(scale_settings: Settings, accounts: dict[str, Account]) -> Iterator[LiveServer]:
    # The suite's accounts live in the suite's database; this API has its own.
    key = new_api_key(scale_settings, "client")
    with LiveServer(scale_settings) as server:
        server.api_key = key  # type: ignore[attr-defined]
        yield server


@pytest.fixture
def database(scale_settings: Settings) -> Iterator[Database]:
    db = Database(scale_settings.database)
    yield db
    db.dispose()


def headers(api: LiveServer) -> dict[str, str]:
    return {"X-API-KEY": api.api_key}  # type: ignore[attr-defined]


def wait_for_jobs(
    db: Database, ids: list[str], workers: Workers, timeout: float = 180
) -> dict[str, PredictionJob]:
    deadline = time.monotonic() + timeout
    while True:
        with db.session() as session:
            jobs = {
                job.id: job for job in session.scalars(select(PredictionJob).where(PredictionJob.id.in_(ids)))
            }
        if all(job.status in ("completed", "failed", "cancelled") for job in jobs.values()) and len(
            jobs
        ) == len(ids):
            return jobs
        if time.monotonic() > deadline:
            states = pd.Series([job.status for job in jobs.values()]).value_counts().to_dict()
            raise AssertionError(f"jobs unfinished after {timeout} s: {states}\n{workers.logs()}")
        time.sleep(0.2)


def completions_by_job(db: Database, ids: list[str]) -> dict[str, int]:
    with db.session() as session:
        rows = session.execute(
            select(PredictionJobEvent.job_id, func.count())
            .where(PredictionJobEvent.job_id.in_(ids), PredictionJobEvent.status == "completed")
            .group_by(PredictionJobEvent.job_id)
        ).all()
    return {job_id: int(count) for job_id, count in rows}


async def _submit_all(
    url: str, key: str, bodies: list[dict[str, Any]], concurrency: int
) -> list[httpx.Response]:
    limit = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(base_url=url, headers={"X-API-KEY": key}, timeout=60) as http:

        async def submit(body: dict[str, Any]) -> httpx.Response:
            async with limit:
                return await http.post("/api/v1/predictions", json=body)

        return await asyncio.gather(*(submit(body) for body in bodies))


def test_a_thousand_concurrent_jobs_all_complete_exactly_once(
    api: LiveServer, workers: Workers, database: Database, feature_rows: list[dict[str, float]]
) -> None:
    bodies = [{"model": MODEL, "features": feature_rows[i % len(feature_rows)]} for i in range(1000)]
    responses = asyncio.run(_submit_all(api.url, api.api_key, bodies, concurrency=50))  # type: ignore[attr-defined]
    assert [response.status_code for response in responses] == [202] * 1000
    ids = [response.json()["id"] for response in responses]
    assert len(set(ids)) == 1000
    jobs = wait_for_jobs(database, ids, workers)
    assert {job.status for job in jobs.values()} == {"completed"}
    assert all(job.attempts == 1 for job in jobs.values())
    assert completions_by_job(database, ids) == dict.fromkeys(ids, 1)
    # Same input, same answer: the workers ran the model the API would have.
    with httpx.Client(base_url=api.url, headers=headers(api)) as http:
        direct = http.post("/predict", json=bodies[7]).json()
    assert jobs[ids[7]].result["prediction"] == direct["prediction"]


def test_symbol_jobs_run_on_the_workers_and_record_their_forecasts(
    api: LiveServer, workers: Workers, database: Database
) -> None:
    bodies = [
        {"symbol": "EURUSD", "as_of": f"2018-01-{day:02d}T12:00:00Z", "horizons": [1, 6]}
        for day in range(2, 22)
    ]
    responses = asyncio.run(_submit_all(api.url, api.api_key, bodies, concurrency=10))  # type: ignore[attr-defined]
    assert [response.status_code for response in responses] == [201] * len(bodies), responses[0].text
    ids = [response.json()["id"] for response in responses]
    jobs = wait_for_jobs(database, ids, workers)
    assert {job.status for job in jobs.values()} == {"completed"}, [job.error for job in jobs.values()]
    assert all(job.worker is not None and job.worker.startswith("celery@") for job in jobs.values())
    # The worker's answer is the API's own for the same question.
    with httpx.Client(base_url=api.url, headers=headers(api)) as http:
        direct = http.post(
            "/predict", json={**bodies[3], "timestamp": bodies[3]["as_of"], "as_of": None}
        ).json()
    assert jobs[ids[3]].result["forecasts"] == direct["forecasts"]
    forecast_ids = [job.result["forecast_id"] for job in jobs.values()]
    deadline = time.monotonic() + 30
    while True:  # the workers' recorders flush on their own schedule
        with database.session() as session:
            rows = session.scalars(
                select(PredictionRecord).where(PredictionRecord.request_id.in_(forecast_ids))
            ).all()
        if len(rows) == 2 * len(ids) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert len(rows) == 2 * len(ids)
    assert {(row.channel, row.symbol) for row in rows} == {("job", "EURUSD")}
    assert {row.job_id for row in rows} == set(ids)


def test_a_worker_killed_mid_job_has_the_job_redelivered_and_completed_once(
    api: LiveServer,
    workers: Workers,
    database: Database,
    feature_rows: list[dict[str, float]],
    scale_settings: Settings,
) -> None:
    rows = pd.DataFrame(feature_rows * 600)  # 120,000 rows in 3 chunks: seconds of work each
    datasets_dir = scale_settings.data_dir / "datasets"
    datasets_dir.mkdir(parents=True, exist_ok=True)
    path = datasets_dir / f"kill-{uuid.uuid4().hex[:6]}.parquet"
    rows.to_parquet(path)
    with httpx.Client(base_url=api.url, headers=headers(api), timeout=60) as http:
        body = {"model": "models:/eurusd-direction/3", "dataset_path": path.name, "chunk_rows": 40_000}
        accepted = http.post("/api/v1/predictions/batch", json=body)
    assert accepted.status_code == 202, accepted.text
    parent_id = accepted.json()["id"]
    victim = _running_chunk(database, parent_id, workers)
    os.kill(victim.pid, signal.SIGKILL)
    jobs = wait_for_jobs(database, [parent_id], workers)
    assert jobs[parent_id].status == "completed", jobs[parent_id].error
    assert jobs[parent_id].result["rows"] == 120_000
    with database.session() as session:
        chunks = list(session.scalars(select(PredictionJob).where(PredictionJob.parent_id == parent_id)))
    assert {chunk.status for chunk in chunks} == {"completed"}
    killed = next(chunk for chunk in chunks if chunk.id == victim.job_id)
    assert killed.attempts == 2
    assert killed.worker != victim.worker
    ids = [chunk.id for chunk in chunks] + [parent_id]
    assert completions_by_job(database, ids) == dict.fromkeys(ids, 1)
    with httpx.Client(base_url=api.url, headers=headers(api), timeout=60) as http:
        download = http.get(f"/api/v1/predictions/{parent_id}/download/predictions.parquet")
    assert len(pd.read_parquet(io.BytesIO(download.content))) == 120_000


class _Victim:
    def __init__(self, job_id: str, worker: str) -> None:
        self.job_id, self.worker = job_id, worker
        self.pid = int(worker.rsplit(":", 1)[1])


def _running_chunk(db: Database, parent_id: str, workers: Workers) -> _Victim:
    """Freeze the process running one of the job's chunks, confirm the chunk is still unfinished,
    and hand it over to be killed; a chunk that finished in between is let go and another is tried."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        running = _processing_chunk(db, parent_id)
        if running is not None and running.worker:
            victim = _Victim(running.id, running.worker)
            os.kill(victim.pid, signal.SIGSTOP)
            again = _chunk(db, victim.job_id)
            if again.status == "processing" and again.worker == victim.worker:
                return victim
            os.kill(victim.pid, signal.SIGCONT)
        time.sleep(0.01)
    raise AssertionError(f"no chunk caught running within 120 s\n{workers.logs()}")


def _processing_chunk(db: Database, parent_id: str) -> PredictionJob | None:
    with db.session() as session:
        return session.scalars(
            select(PredictionJob).where(
                PredictionJob.parent_id == parent_id, PredictionJob.status == "processing"
            )
        ).first()


def _chunk(db: Database, job_id: str) -> PredictionJob:
    with db.session() as session:
        job = session.get(PredictionJob, job_id)
    assert job is not None
    return job


def test_an_unreachable_broker_answers_503_and_stores_nothing_then_recovers(
    broker: tuple[str, str],
    scale_settings: Settings,
    workers: Workers,
    database: Database,
    feature_rows: list[dict[str, float]],
) -> None:
    name, url = broker
    host, port = BROKERS[name][1]
    with TcpProxy((host, port)) as proxy:
        proxied_url = url.replace(f"127.0.0.1:{port}", f"127.0.0.1:{proxy.port}")
        settings = scale_settings.model_copy(update={"broker_url": proxied_url})
        key = new_api_key(settings, "client")
        with (
            LiveServer(settings) as server,
            httpx.Client(base_url=server.url, headers={"X-API-KEY": key}, timeout=60) as http,
        ):
            body = {"model": MODEL, "features": feature_rows[0]}
            assert http.post("/api/v1/predictions", json=body).status_code == 202
            proxy.go_down()
            before = _job_count(database)
            refused = http.post("/api/v1/predictions", json=body)
            assert refused.status_code == 503, refused.text
            assert refused.json()["error"]["code"] == "broker_unavailable"
            assert "guest:guest" not in refused.text
            assert _job_count(database) == before
            proxy.come_back()
            accepted = http.post("/api/v1/predictions", json=body)
            assert accepted.status_code == 202, accepted.text
            job = wait_for_jobs(database, [accepted.json()["id"]], workers)
            assert job[accepted.json()["id"]].status == "completed"


def _job_count(db: Database) -> int:
    with db.session() as session:
        return int(session.scalar(select(func.count()).select_from(PredictionJob)) or 0)


def test_monitoring_lists_the_live_workers_and_their_queue(
    api: LiveServer, workers: Workers, scale_settings: Settings, accounts: dict[str, Account]
) -> None:
    key = new_api_key(scale_settings, "operator")
    with httpx.Client(base_url=api.url, headers={"X-API-KEY": key}, timeout=60) as http:
        deadline = time.monotonic() + 60
        while True:
            found = http.get("/monitoring/workers").json()
            if len(found["workers"]) >= 2 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert found["backend"] == "celery"
        assert len(found["workers"]) >= 2, workers.logs()
        assert all(scale_settings.job_queue in worker["queues"] for worker in found["workers"])
        queue = http.get("/monitoring/queue").json()
        assert queue["backend"] == "celery"
        assert queue["pending"] >= 0
