"""How fast do asynchronous jobs go through each executor?

For the embedded executor (one ``serve`` process, PP_JOB_WORKERS threads) and
for Celery on Redis and on RabbitMQ (one ``serve`` process, two ``worker``
processes), on the real PostgreSQL:

1. ``--jobs`` single-row jobs submitted at concurrency 32: submits/s, the time
   until the last one completed (jobs/s end to end), and each job's latency
   from submit to completion (p50/p95/p99, from the rows' own timestamps);
2. one batch-scoring job over ``--rows`` rows of real EURUSD features, in
   chunks of 20,000: rows/s end to end, next to the in-process floor (the
   model's own predict over the same rows, single-threaded).

Run: ``.venv/bin/python bench/jobs_bench.py [--jobs 1000] [--rows 200000] [--backends inprocess,redis]``.
Everything (client, API, workers, databases, brokers) shares this machine.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import psycopg
from rich.console import Console
from rich.table import Table
from sqlalchemy import select

from prediction_provider.cli import settings_env
from prediction_provider.config import Settings
from prediction_provider.db import migrate
from prediction_provider.db.models import PredictionJob
from prediction_provider.db.session import Database
from prediction_provider.demo.training import train_demo_models
from prediction_provider.features.market_data import load_sample_bars
from prediction_provider.features.pipeline import compute_features

MODEL = "models:/eurusd-direction@lightgbm"
POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432"
BROKERS = {"redis": "redis://127.0.0.1:6379/0", "rabbitmq": "amqp://guest:guest@127.0.0.1:5672//"}
console = Console()


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def fresh_database() -> str:
    name = f"pp_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(f"{POSTGRES.replace('+psycopg', '')}/test", autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = f"{POSTGRES}/{name}"
    migrate.upgrade(url)
    return url


def api_key(settings: Settings) -> str:
    from prediction_provider.app import account_service

    service = account_service(settings)
    user = service.create_user("bench", "bench@example.com", "bench-password-123", "client", active=True)
    key: str = service.regenerate_api_key(user["id"])["api_key"]
    service.db.dispose()
    return key


@contextmanager
def stack(settings: Settings, workers: int, log_dir: Path) -> Iterator[str]:
    env = {**os.environ, **settings_env(settings)}
    port = 8200 + secrets.randbelow(500)
    commands = [[sys.executable, "-m", "prediction_provider.cli", "serve", "--port", str(port)]]
    for index in range(workers):
        commands.append(
            [sys.executable, "-m", "prediction_provider.cli", "worker", "--concurrency", "2", "--hostname",
             f"bench{index}@%h", "--loglevel", "warning"]
        )  # fmt: skip
    processes = []
    for index, command in enumerate(commands):
        with (log_dir / f"p{index}.log").open("wb") as log:
            processes.append(subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT))
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{url}/health/live", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError((log_dir / "p0.log").read_text()[-2000:])
            time.sleep(0.3)
        time.sleep(3 if workers else 0)  # let the workers connect before the clock starts
        yield url
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            process.wait(timeout=60)


async def submit(url: str, key: str, bodies: list[dict[str, Any]]) -> list[str]:
    limit = asyncio.Semaphore(32)
    async with httpx.AsyncClient(base_url=url, headers={"X-API-KEY": key}, timeout=120) as http:

        async def one(body: dict[str, Any]) -> str:
            async with limit:
                response = await http.post("/api/v1/predictions", json=body)
                response.raise_for_status()
                return str(response.json()["id"])

        return await asyncio.gather(*(one(body) for body in bodies))


def wait_done(db: Database, ids: list[str], timeout: float = 900) -> list[PredictionJob]:
    deadline = time.monotonic() + timeout
    while True:
        with db.session() as session:
            jobs = list(session.scalars(select(PredictionJob).where(PredictionJob.id.in_(ids))))
        if len(jobs) == len(ids) and all(job.status == "completed" for job in jobs):
            return jobs
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"not all completed: {pd.Series([j.status for j in jobs]).value_counts().to_dict()}"
            )
        time.sleep(0.05)


def run_backend(
    name: str, base: Settings, features: pd.DataFrame, jobs: int, rows: int, log_dir: Path
) -> dict[str, Any]:
    settings = base.model_copy(update={"database_url": fresh_database()})
    if name != "inprocess":
        settings = settings.model_copy(
            update={
                "job_backend": "celery",
                "broker_url": BROKERS[name],
                "job_queue": f"bench-{uuid.uuid4().hex[:6]}",
            }
        )
    key = api_key(settings)
    db = Database(settings.database)
    records = [{k: float(v) for k, v in row.items()} for _, row in features.iloc[-500:].iterrows()]
    bodies = [{"model": MODEL, "features": records[i % len(records)]} for i in range(jobs)]
    dataset = settings.data_dir / "datasets" / f"bench-{uuid.uuid4().hex[:6]}.parquet"
    dataset.parent.mkdir(parents=True, exist_ok=True)
    pd.concat([features] * (rows // len(features) + 1)).iloc[:rows].reset_index(drop=True).to_parquet(dataset)
    with stack(settings, 0 if name == "inprocess" else 2, log_dir) as url:
        started = time.perf_counter()
        ids = asyncio.run(submit(url, key, bodies))
        submitted = time.perf_counter() - started
        done = wait_done(db, ids)
        total = time.perf_counter() - started
        latencies = [
            (job.finished_at - job.created_at).total_seconds() * 1000 for job in done if job.finished_at
        ]
        started = time.perf_counter()
        body = {"model": MODEL, "dataset_path": dataset.name, "chunk_rows": 20_000}
        batch_id = httpx.post(
            f"{url}/api/v1/predictions/batch", json=body, headers={"X-API-KEY": key}
        ).json()["id"]
        wait_done(db, [batch_id])
        batch_s = time.perf_counter() - started
    db.dispose()
    return {
        "backend": name,
        "submits_per_s": jobs / submitted,
        "jobs_per_s": jobs / total,
        "p50_ms": percentile(latencies, 50),
        "p95_ms": percentile(latencies, 95),
        "p99_ms": percentile(latencies, 99),
        "batch_rows_per_s": rows / batch_s,
    }


def floor_rows_per_s(settings: Settings, features: pd.DataFrame, rows: int) -> float:
    from prediction_provider.serving.factory import build_model_serving

    serving = build_model_serving(settings)
    cached = serving.cache.get(MODEL)
    matrix = np.ascontiguousarray(
        pd.concat([features] * (rows // len(features) + 1)).iloc[:rows].to_numpy(dtype="float64")
    )
    started = time.perf_counter()
    for start in range(0, rows, 20_000):
        serving.predictions.run_matrix(cached, matrix[start : start + 20_000])
    return rows / (time.perf_counter() - started)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--backends", default="inprocess,redis,rabbitmq")
    parser.add_argument("--data-dir", type=Path, default=None)
    args = parser.parse_args()
    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="pp-jobs-bench-"))
    base = Settings(
        data_dir=data_dir,
        jwt_secret=secrets.token_hex(32),
        grpc_enabled=False,
        warm_models=[MODEL],
        rate_limit="1000000/minute",
        max_concurrent_predictions=1000,
        log_level="warning",
    )
    with console.status("training the demo models (skipped when present)..."):
        train_demo_models(base)
    features = compute_features(load_sample_bars("EURUSD"))
    floor = floor_rows_per_s(base, features, args.rows)
    table = Table(
        "backend", "submits/s", "jobs/s end to end", "p50 ms", "p95 ms", "p99 ms", "batch rows/s", "vs floor"
    )
    for name in args.backends.split(","):
        with tempfile.TemporaryDirectory() as logs:
            result = run_backend(name, base, features, args.jobs, args.rows, Path(logs))
        table.add_row(
            name,
            f"{result['submits_per_s']:,.0f}",
            f"{result['jobs_per_s']:,.0f}",
            f"{result['p50_ms']:.1f}",
            f"{result['p95_ms']:.1f}",
            f"{result['p99_ms']:.1f}",
            f"{result['batch_rows_per_s']:,.0f}",
            f"{result['batch_rows_per_s'] / floor:.2f}x",
        )
    console.print(table)
    console.print(f"in-process floor: {floor:,.0f} rows/s ({MODEL}, single-threaded, chunks of 20,000)")
    console.print(f"load average: {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
