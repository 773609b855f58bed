"""What does the web dashboard cost the server?

On the embedded default (one ``serve`` process, SQLite), with ``--jobs`` (10,000) prediction jobs and
``--records`` (100,000) prediction records seeded in the database first:

1. **Page render time.** Every dashboard page a signed-in admin (and a client) can open, plus the
   jobs page filtered and paged: ``--repeat`` timed GETs each after two warm-ups, p50 and p95. Timed by
   the client over loopback with keep-alive, so the figure is the server's time plus ~0.2 ms.
2. **An open live page.** The server process's CPU time (``/proc/<pid>/stat``) over ``--idle`` seconds
   with no dashboard open, then with one live overview stream, then with five live streams (overview,
   metrics and jobs): the difference, as a share of one core.
3. **/predict c=64 with and without dashboards.** ``POST /predict`` (one real EURUSD row) at
   concurrency 64 for ``--duration`` seconds with no dashboard open, then with the five streams open,
   in the same run on the same server.

Run: ``.venv/bin/python bench/dashboard_bench.py [--jobs 10000] [--records 100000]``.
Client, load generator and server share this machine: compare runs made on the same machine.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table
from sqlalchemy import insert

from loadgen import LoadResult, build_request, run_load
from prediction_provider.app import account_service
from prediction_provider.config import Settings
from prediction_provider.dashboard.session import COOKIE, LOGIN_COOKIE
from prediction_provider.db import migrate
from prediction_provider.db.models import PredictionJob, PredictionRecord
from prediction_provider.db.session import Database
from prediction_provider.demo.training import train_demo_models
from prediction_provider.features.market_data import load_sample_bars
from prediction_provider.features.pipeline import compute_features
from serving_bench import HOST, free_port, server_command, wait_ready

MODEL = "models:/eurusd-direction@lightgbm"
PAGE_TARGET_MS = 100.0
LIVE_TARGET = 0.01  # of one core
STREAMS = ("/dashboard/stream/overview", "/dashboard/stream/metrics", "/dashboard/stream/jobs")
console = Console()
LOGIN_TOKEN = re.compile(r'name="csrf_token" value="([^"]+)"')
STATUSES = ("completed", "completed", "completed", "failed", "pending", "processing", "cancelled")


def job_row(owner_id: int, owner: str, status: str, created: datetime) -> dict[str, Any]:
    finished = status in ("completed", "failed", "cancelled")
    return {
        "id": str(uuid.uuid4()), "owner_id": owner_id, "owner_username": owner, "kind": "rows",
        "model_reference": MODEL, "model_name": "eurusd-direction", "model_version": "1",
        "input_hash": secrets.token_hex(32), "parameters": {}, "status": status, "attempts": 1,
        "progress": 1.0 if status == "completed" else 0.5, "created_at": created, "updated_at": created,
        "finished_at": created if finished else None,
        "error": {"code": "model_error", "message": "seeded"} if status == "failed" else None,
    }  # fmt: skip


def record_row(owner_id: int, owner: str, i: int, created: datetime) -> dict[str, Any]:
    return {
        "request_id": str(uuid.uuid4()), "row": 0, "created_at": created, "channel": "predict",
        "user_id": owner_id, "username": owner, "model_name": "eurusd-direction",
        "model_version": str(1 + i % 4), "feature_hash": secrets.token_hex(32),
        "label": ("down", "flat", "up")[i % 3], "answer": {"prediction": "up"}, "latency_ms": 1.0,
    }  # fmt: skip


def seed(database_url: str, owners: list[tuple[int, str]], jobs: int, records: int) -> None:
    """Bulk rows as the job store and the recorder would leave them, spread over the last 30 days."""
    db = Database(database_url)
    now = datetime.now(UTC)
    with db.session() as session:
        rows = []
        for i in range(jobs):
            owner_id, owner = owners[i % len(owners)]
            status = STATUSES[i % len(STATUSES)]
            created = now - timedelta(seconds=30 * 86400 * i / jobs)
            rows.append(job_row(owner_id, owner, status, created))
        for start in range(0, len(rows), 2000):
            session.execute(insert(PredictionJob), rows[start : start + 2000])
    with db.session() as session:
        batch = []
        for i in range(records):
            owner_id, owner = owners[i % len(owners)]
            created = now - timedelta(seconds=30 * 86400 * i / records)
            batch.append(record_row(owner_id, owner, i, created))
            if len(batch) == 5000:
                session.execute(insert(PredictionRecord), batch)
                batch = []
        if batch:
            session.execute(insert(PredictionRecord), batch)
    db.dispose()


def sign_in(base_url: str, username: str, password: str) -> httpx.Client:
    http = httpx.Client(base_url=base_url, timeout=60)
    form = http.get("/dashboard/login")
    token = LOGIN_TOKEN.search(form.text)
    nonce = form.cookies.get(LOGIN_COOKIE) or http.cookies.get(LOGIN_COOKIE)
    if token is None or nonce is None:
        raise RuntimeError(f"no sign-in form: {form.status_code}")
    answer = http.post(
        "/dashboard/login",
        data={"csrf_token": token.group(1), "username": username, "password": password},
        headers={"Cookie": f"{LOGIN_COOKIE}={nonce}"},
        follow_redirects=False,
    )
    if answer.status_code != 303:
        raise RuntimeError(f"sign-in failed: {answer.status_code}")
    session = answer.cookies.get(COOKIE)
    http.cookies.clear()
    http.headers["Cookie"] = f"{COOKIE}={session}"
    return http


def time_page(http: httpx.Client, path: str, repeat: int) -> dict[str, Any]:
    for _ in range(2):
        http.get(path)
    times, status = [], 0
    for _ in range(repeat):
        started = time.perf_counter()
        response = http.get(path)
        times.append((time.perf_counter() - started) * 1000)
        status = response.status_code
    times.sort()
    return {
        "path": path, "status": status, "p50_ms": statistics.median(times),
        "p95_ms": times[min(len(times) - 1, int(0.95 * len(times)))], "bytes": len(response.content),
    }  # fmt: skip


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_share(pid: int, seconds: float) -> float:
    before = cpu_seconds(pid)
    time.sleep(seconds)  # a benchmark measuring a span of time, not a test
    return (cpu_seconds(pid) - before) / seconds


@contextmanager
def open_streams(clients: list[tuple[httpx.Client, str]]) -> Iterator[list[int]]:
    """Live pages held open in threads (as browsers would): yields the events each has received."""
    stop = threading.Event()
    received = [0] * len(clients)

    def follow(index: int, http: httpx.Client, path: str) -> None:
        with http.stream("GET", path, timeout=None) as stream:
            for line in stream.iter_lines():
                if line.startswith("event:"):
                    received[index] += 1
                if stop.is_set():
                    return

    threads = [
        threading.Thread(target=follow, args=(i, http, path), daemon=True)
        for i, (http, path) in enumerate(clients)
    ]
    for thread in threads:
        thread.start()
    try:
        yield received
    finally:
        stop.set()
        for http, _ in clients:
            http.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, default=Path(".pp_data"))
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--idle", type=float, default=20.0)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=2, help="pairs of runs without and with dashboards")
    parser.add_argument("--output", type=Path, default=Path("bench/results/dashboard.json"))
    args = parser.parse_args()
    train_demo_models(Settings(data_dir=args.data_dir))
    features = compute_features(load_sample_bars("EURUSD")).iloc[-1:]
    row = {name: float(value) for name, value in features.iloc[-1].items()}
    results: dict[str, Any] = {"jobs": args.jobs, "records": args.records, "pages": []}
    with tempfile.TemporaryDirectory(prefix="pp-dashboard-bench-") as tmp:
        database_url = f"sqlite:///{Path(tmp) / 'provider.db'}"
        jwt_secret = secrets.token_urlsafe(48)
        migrate.upgrade(database_url)
        settings = Settings(data_dir=args.data_dir, database_url=database_url, jwt_secret=jwt_secret)
        accounts = account_service(settings)
        users: dict[str, tuple[int, str, str]] = {}
        for role in ("admin", "operator", "client"):
            password = secrets.token_urlsafe(18)
            made = accounts.create_user(
                f"bench-{role}", f"{role}@localhost.localdomain", password, role, active=True
            )
            users[role] = (made["id"], made["username"], password)
        api_key = str(accounts.regenerate_api_key(users["client"][0])["api_key"])
        accounts.db.dispose()
        started = time.perf_counter()
        seed(database_url, [(users["client"][0], users["client"][1]), (users["admin"][0], users["admin"][1])],
             args.jobs, args.records)  # fmt: skip
        console.print(
            f"seeded {args.jobs} jobs and {args.records} records in {time.perf_counter() - started:.1f} s"
        )
        port = free_port()
        env = {
            **os.environ,
            "PP_LOG_LEVEL": "warning",
            "PP_DATABASE_URL": database_url,
            "PP_JWT_SECRET": jwt_secret,
            "PP_GRPC_ENABLED": "false",
            "PP_RATE_LIMIT": "1000000/minute",
            "PP_MAX_CONCURRENT_PREDICTIONS": "1024",
            "PP_SCORING_INTERVAL_S": "0",
        }
        log_path = Path(tmp) / "server.log"
        with log_path.open("wb") as log_file:
            process = subprocess.Popen(
                server_command(args.data_dir, port, MODEL), stdout=log_file, stderr=subprocess.STDOUT, env=env
            )
            try:
                wait_ready(process, port, log_path, 180)
                base = f"http://{HOST}:{port}"
                measure(args, base, users, api_key, row, port, process.pid, results)
            finally:
                process.terminate()
                try:
                    process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    process.kill()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2, default=str))
    return 0


def measure(
    args: argparse.Namespace,
    base: str,
    users: dict[str, tuple[int, str, str]],
    api_key: str,
    row: dict[str, float],
    port: int,
    pid: int,
    results: dict[str, Any],
) -> None:
    admin = sign_in(base, users["admin"][1], users["admin"][2])
    client = sign_in(base, users["client"][1], users["client"][2])
    pages = [
        (admin, "admin", path)
        for path in (
            "/dashboard", "/dashboard/models", "/dashboard/models/eurusd-direction", "/dashboard/metrics",
            "/dashboard/jobs", "/dashboard/jobs?status=completed&offset=5000", "/dashboard/trading",
            "/dashboard/marketplace", "/dashboard/leaderboard", "/dashboard/drift", "/dashboard/experiments",
            "/dashboard/admin",
        )
    ] + [(client, "client", path) for path in ("/dashboard/jobs", "/dashboard/marketplace")]  # fmt: skip
    table = Table(title=f"Dashboard pages, {args.jobs} jobs and {args.records} records (SQLite)")
    for column in ("role", "page", "status", "p50 ms", "p95 ms", "KB", f"< {PAGE_TARGET_MS:g} ms"):
        table.add_column(column)
    for http, role, path in pages:
        figure = time_page(http, path, args.repeat)
        figure["role"] = role
        results["pages"].append(figure)
        table.add_row(
            role, path, str(figure["status"]), f"{figure['p50_ms']:.1f}", f"{figure['p95_ms']:.1f}",
            f"{figure['bytes'] / 1024:.0f}", "yes" if figure["p95_ms"] < PAGE_TARGET_MS else "NO",
        )  # fmt: skip
    console.print(table)

    time.sleep(5)  # let the page flood's background work (audit writes) settle first
    idle_before = cpu_share(pid, args.idle)
    one_stream = [(sign_in(base, users["operator"][1], users["operator"][2]), "/dashboard/stream/overview")]
    with open_streams(one_stream) as received:
        one = cpu_share(pid, args.idle)
        one_events = received[0]
    idle_after = cpu_share(pid, args.idle)
    idle = (idle_before + idle_after) / 2
    operator, admin_login = users["operator"], users["admin"]
    five = [((operator[1], operator[2]), path) for path in STREAMS] + [
        ((admin_login[1], admin_login[2]), path) for path in STREAMS[::2]
    ]
    body = json.dumps({"model": MODEL, "features": row}).encode()
    request = build_request("POST", "/predict", HOST, port, body, headers={"X-API-KEY": api_key})

    def load() -> LoadResult:
        return run_load(HOST, port, request, concurrency=64, duration_s=args.duration, warmup_s=1)

    load()  # warm-up, dropped
    # Alternated, so that the machine's drift over the run falls on both sides alike.
    without, with_five, five_cpu, five_events = [], [], [], 0
    for _ in range(args.rounds):
        without.append(load())
        with open_streams([(sign_in(base, *login), path) for login, path in five]) as received:
            five_cpu.append(cpu_share(pid, args.idle))
            with_five.append(load())
            five_events += sum(received)
    without.append(load())
    live = Table(title="Live pages (server CPU, share of one core)")
    for column in ("open live streams", "CPU", "over idle", "events", f"< {LIVE_TARGET:.0%} a page"):
        live.add_column(column)
    live.add_row("0 (before, after)", f"{idle_before:.2%}, {idle_after:.2%}", "-", "-", "-")
    verdict = "yes" if one - idle < LIVE_TARGET else "NO"
    live.add_row("1", f"{one:.2%}", f"{one - idle:+.2%}", str(one_events), verdict)
    five_mean = statistics.mean(five_cpu)
    per_page = (five_mean - idle) / 5
    verdict = "yes" if per_page < LIVE_TARGET else "NO"
    live.add_row("5", f"{five_mean:.2%}", f"{five_mean - idle:+.2%}", str(five_events), verdict)
    console.print(live)
    table = Table(title=f"POST /predict c=64, {args.duration:g} s each, same server, in this order")
    for column in ("dashboards open", "requests/s", "p50 ms", "p99 ms", "errors"):
        table.add_column(column)
    order = [run for pair in zip(without, with_five, strict=False) for run in pair] + [without[-1]]
    for run in order:
        label = "5 live streams" if any(run is other for other in with_five) else "0"
        table.add_row(label, f"{run.requests_per_s:.0f}", f"{run.percentile_ms(50):.2f}",
                      f"{run.percentile_ms(99):.2f}", str(run.error_count))  # fmt: skip
    console.print(table)
    baseline = statistics.mean(run.requests_per_s for run in without)
    ratio = statistics.mean(run.requests_per_s for run in with_five) / baseline
    console.print(f"throughput with five dashboards open: {ratio:.3f}x of the mean without")
    results["live"] = {
        "idle_cpu": idle, "idle_cpu_before": idle_before, "idle_cpu_after": idle_after,
        "one_stream_cpu": one, "five_streams_cpu": five_cpu, "per_page_over_idle": per_page,
        "one_stream_events": one_events, "five_stream_events": five_events,
    }  # fmt: skip
    results["predict_c64"] = {
        "without_rps": [run.requests_per_s for run in without],
        "with_five_rps": [run.requests_per_s for run in with_five],
        "ratio": ratio,
    }


if __name__ == "__main__":
    sys.exit(main())
