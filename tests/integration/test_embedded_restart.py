"""The embedded executor survives a killed API process: the jobs it left are finished after a restart."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pandas as pd
from sqlalchemy import func, select

from prediction_provider.cli import settings_env
from prediction_provider.config import Settings
from prediction_provider.db.models import PredictionJob, PredictionJobEvent
from prediction_provider.db.session import Database
from tests.conftest import MODEL, TEST_JWT_SECRET
from tests.processes import free_port, new_api_key, stop, wait_until_healthy


def serve(settings: Settings, port: int, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, **settings_env(settings), "PP_JWT_SECRET": TEST_JWT_SECRET}
    command = [sys.executable, "-m", "prediction_provider.cli", "serve", "--port", str(port)]
    with log.open("ab") as sink:
        process = subprocess.Popen(command, env=env, stdout=sink, stderr=subprocess.STDOUT)
    wait_until_healthy(process, f"http://127.0.0.1:{port}/health/live", log)
    return process


def statuses(db: Database) -> dict[str, int]:
    with db.session() as session:
        rows = session.execute(
            select(PredictionJob.status, func.count()).group_by(PredictionJob.status)
        ).all()
    return {status: int(count) for status, count in rows}


def test_jobs_left_by_a_killed_api_process_complete_once_after_restart(
    settings: Settings, tmp_path: Path, feature_rows: list[dict[str, float]]
) -> None:
    # The suite's PostgreSQL database when it runs on one, else a SQLite file of its own.
    database_url = settings.database_url or f"sqlite:///{tmp_path / 'restart.db'}"
    own = settings.model_copy(
        update={
            "database_url": database_url,
            "job_workers": 1,
            "grpc_enabled": False,
            "job_lease_seconds": 600,
        }
    )
    key = new_api_key(own, "client")
    db = Database(own.database)
    log = tmp_path / "server.log"
    port = free_port()
    first = serve(own, port, log)
    rows = pd.DataFrame(feature_rows * 200)  # 40,000 rows in one chunk keep the executor busy
    datasets_dir = own.data_dir / "datasets"
    datasets_dir.mkdir(parents=True, exist_ok=True)
    rows.to_parquet(datasets_dir / "restart.parquet")
    ids: list[str] = []
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"X-API-KEY": key}, timeout=60) as http:
        batch = {
            "model": "models:/eurusd-direction/3",
            "dataset_path": "restart.parquet",
            "chunk_rows": 100_000,
        }
        ids.append(http.post("/api/v1/predictions/batch", json=batch).json()["id"])
        for row in feature_rows[:100]:
            ids.append(http.post("/api/v1/predictions", json={"model": MODEL, "features": row}).json()["id"])
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=30)
    with db.session() as session:
        unfinished = session.scalar(
            select(func.count())
            .select_from(PredictionJob)
            .where(PredictionJob.id.in_(ids), PredictionJob.status.in_(["pending", "processing"]))
        )
    assert unfinished, "every job finished before the kill; the test would prove nothing"

    second = serve(own, port, log)
    try:
        deadline = time.monotonic() + 180
        while True:
            with db.session() as session:
                jobs = list(session.scalars(select(PredictionJob).where(PredictionJob.id.in_(ids))))
            if all(job.status == "completed" for job in jobs):
                break
            assert time.monotonic() < deadline, f"{statuses(db)}\n{log.read_text()[-3000:]}"
            time.sleep(0.2)
    finally:
        stop(second)
    with db.session() as session:
        completed = dict(
            session.execute(
                select(PredictionJobEvent.job_id, func.count())
                .where(PredictionJobEvent.job_id.in_(ids), PredictionJobEvent.status == "completed")
                .group_by(PredictionJobEvent.job_id)
            ).all()
        )
    assert completed == dict.fromkeys(ids, 1)
    assert len(jobs) == 101
    db.dispose()
