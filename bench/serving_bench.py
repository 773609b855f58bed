"""How much does serving over HTTP cost on top of the model itself?

Measures, in one run:

1. the in-process floor: ``LoadedModel.predict`` on the very object the
   server builds (``build_services`` + ``ModelCache.get``), for 1 row and for
   1024 rows of real EURUSD features;
2. the real server (``prediction-provider serve`` in a subprocess) under a
   closed-loop load: ``POST /predict`` at concurrency 1 and 32, and
   ``POST /predict/batch`` with 1024 rows at concurrency 1.

Each server figure is printed next to the floor, with the two targets:
single-row p50 at c=1 under 1 ms above the model's own 1-row predict, and
batch-1024 rows/s at least 0.8 x the in-process rows/s. Results also go to
``bench/results/serving.json``.

Run: ``.venv/bin/python bench/serving_bench.py [--data-dir DIR] [--model REF] [--duration S]``.
The client runs on the same machine as the server and takes CPU from it, so
absolute figures on a small machine are a lower bound on what the server can do.
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import os
import platform
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from rich.console import Console
from rich.table import Table

from loadgen import LoadResult, build_request, percentile, run_load

if TYPE_CHECKING:
    from prediction_provider.api.deps import Services
    from prediction_provider.serving.cache import CachedModel

HOST = "127.0.0.1"
DEFAULT_MODEL = "models:/eurusd-direction@lightgbm"
BATCH_ROWS = 1024
HIGH_CONCURRENCY = 32
SINGLE_OVERHEAD_TARGET_MS = 1.0
BATCH_RATIO_TARGET = 0.8
READY_TIMEOUT_S = 120.0
RESULTS_PATH = Path(__file__).resolve().parent / "results" / "serving.json"

# Rich falls back to 80 columns when piped, too narrow for the table.
console = Console(width=None if sys.stdout.isatty() else 132)


def run_meta(**fields: Any) -> dict[str, Any]:
    """When and on what a benchmark ran, around its own ``fields``: the ``meta`` of every results file."""
    return {
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        **fields,
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def report(output: Path, results: dict[str, Any], table: Table, problems: list[str]) -> int:
    """Write the results, print the table and every problem; the exit status (1 if any problem)."""
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(results, indent=2) + "\n")
    console.print(table)
    console.print(f"[dim]{os.cpu_count()} CPUs; client and server share them. JSON: {output}")
    for problem in problems:
        console.print(f"[bold red]FAILED:[/bold red] {problem}")
    return 1 if problems else 0


@dataclass(frozen=True, slots=True)
class Floor:
    """In-process timings of the loaded model: what the server cannot beat."""

    predict_1row_p50_ms: float
    predict_1row_p99_ms: float
    predict_1row_calls: int
    predict_batch_p50_ms: float
    predict_batch_p99_ms: float
    predict_batch_rows_per_s: float
    predict_batch_calls: int
    # The server's own validation path (records -> matrix -> predict), without HTTP or JSON.
    records_1row_p50_ms: float
    records_1row_p99_ms: float
    records_batch_p50_ms: float
    records_batch_p99_ms: float
    records_batch_rows_per_s: float


@dataclass(frozen=True, slots=True)
class Workload:
    """One server measurement: a pre-built request and how hard to drive it."""

    key: str
    label: str
    request: bytes
    rows: int
    concurrency: int


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--data-dir", type=Path, default=Path(".pp_data"), help="data dir (default .pp_data)")
    parser.add_argument("--model", default=DEFAULT_MODEL, help=f"model reference (default {DEFAULT_MODEL})")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per server measurement")
    parser.add_argument("--warmup", type=float, default=1.0, help="unrecorded seconds before each one")
    parser.add_argument("--output", type=Path, default=RESULTS_PATH, help="where to write the JSON results")
    args = parser.parse_args(argv)
    if args.duration <= 0 or args.warmup < 0:
        parser.error("--duration must be positive and --warmup not negative")
    return args


def real_features(feature_names: tuple[str, ...] | list[str]) -> pd.DataFrame:
    """The latest EURUSD feature rows, in the model's column order, without NaNs."""
    from prediction_provider.features.market_data import load_sample_bars
    from prediction_provider.features.pipeline import compute_features

    features = compute_features(load_sample_bars("EURUSD")).loc[:, list(feature_names)].dropna()
    if len(features) < BATCH_ROWS:
        raise RuntimeError(f"only {len(features)} complete feature rows; need {BATCH_ROWS}")
    return features.iloc[-BATCH_ROWS:]


def time_calls(call: Callable[[int], object], *, count: int, warmup: int, budget_s: float) -> list[int]:
    """Per-call wall times in ns, after ``warmup`` unrecorded calls; stops at ``count`` or ``budget_s``."""
    for index in range(warmup):
        call(index)
    samples: list[int] = []
    deadline = time.perf_counter() + budget_s
    for index in range(count):
        started = time.perf_counter_ns()
        call(index)
        samples.append(time.perf_counter_ns() - started)
        if time.perf_counter() >= deadline:
            break
    return samples


def median_ms(samples: list[int]) -> float:
    return statistics.median(samples) / 1e6


def measure_floor(services: Services, cached: CachedModel, features: pd.DataFrame, budget_s: float) -> Floor:
    """Time the model alone, then the service's records path, on the same real rows."""
    model = cached.model
    matrix = np.ascontiguousarray(features.to_numpy(dtype=np.float64))
    single_rows = [np.ascontiguousarray(matrix[i : i + 1]) for i in range(len(matrix))]
    records = features.to_dict(orient="records")
    predictions = services.predictions

    single = time_calls(
        lambda i: model.predict(single_rows[i % len(single_rows)]), count=2000, warmup=200, budget_s=budget_s
    )
    batch = time_calls(lambda _: model.predict(matrix), count=50, warmup=5, budget_s=budget_s)
    records_single = time_calls(
        lambda i: predictions.predict_records(cached, [records[i % len(records)]], "features", 0.0),
        count=2000,
        warmup=200,
        budget_s=budget_s,
    )
    records_batch = time_calls(
        lambda _: predictions.predict_records(cached, records, "features_list", 0.0),
        count=50,
        warmup=5,
        budget_s=budget_s,
    )
    return Floor(
        predict_1row_p50_ms=median_ms(single),
        predict_1row_p99_ms=percentile(single, 99) / 1e6,
        predict_1row_calls=len(single),
        predict_batch_p50_ms=median_ms(batch),
        predict_batch_p99_ms=percentile(batch, 99) / 1e6,
        predict_batch_rows_per_s=len(matrix) / (median_ms(batch) / 1e3),
        predict_batch_calls=len(batch),
        records_1row_p50_ms=median_ms(records_single),
        records_1row_p99_ms=percentile(records_single, 99) / 1e6,
        records_batch_p50_ms=median_ms(records_batch),
        records_batch_p99_ms=percentile(records_batch, 99) / 1e6,
        records_batch_rows_per_s=len(records) / (median_ms(records_batch) / 1e3),
    )


def free_port() -> int:
    """A port the kernel just handed out; the tiny race with other processes is acceptable here."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def server_command(data_dir: Path, port: int, model_ref: str) -> list[str]:
    """The installed console script next to this interpreter, else the CLI module."""
    script = Path(sys.executable).with_name("prediction-provider")
    prefix = [str(script)] if script.exists() else [sys.executable, "-m", "prediction_provider.cli"]
    return [
        *prefix,
        "serve",
        "--data-dir",
        str(data_dir),
        "--host",
        HOST,
        "--port",
        str(port),
        "--warm",
        model_ref,
    ]


def log_tail(path: Path, lines: int = 30) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def wait_ready(process: subprocess.Popen[bytes], port: int, log_path: Path, timeout_s: float) -> float:
    """Poll ``/health/ready`` until 200; returns the seconds it took. Fails fast if the server exits."""
    started = time.perf_counter()
    deadline = started + timeout_s
    last = "no answer yet"
    while time.perf_counter() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}:\n{log_tail(log_path)}")
        connection = http.client.HTTPConnection(HOST, port, timeout=5)
        try:
            connection.request("GET", "/health/ready")
            response = connection.getresponse()
            body = response.read()
            if response.status == 200:
                return time.perf_counter() - started
            last = f"{response.status} {body[:300]!r}"
        except OSError as exc:
            last = repr(exc)
        finally:
            connection.close()
        time.sleep(0.25)
    raise TimeoutError(f"server not ready after {timeout_s:.0f} s ({last}):\n{log_tail(log_path)}")


def bench_account(data_dir: Path, database_url: str, jwt_secret: str) -> str:
    """A client account with an API key, in the benchmark's own database: every prediction
    route requires credentials, and nothing the benchmark does lands in the data dir's database."""
    from prediction_provider.app import account_service
    from prediction_provider.config import Settings

    accounts = account_service(Settings(data_dir=data_dir, database_url=database_url, jwt_secret=jwt_secret))
    password = secrets.token_urlsafe(24)
    user = accounts.create_user(
        "bench-client", "bench@localhost.localdomain", password, "client", active=True
    )
    key = str(accounts.regenerate_api_key(user["id"])["api_key"])
    accounts.db.dispose()
    return key


@contextmanager
def running_server(data_dir: Path, model_ref: str) -> Iterator[tuple[int, float, str]]:
    """Start the server with the model warmed; always stop it (terminate, then kill)."""
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="pp-bench-") as tmp:
        database_url = f"sqlite:///{Path(tmp) / 'provider.db'}"
        jwt_secret = secrets.token_urlsafe(48)
        api_key = bench_account(data_dir, database_url, jwt_secret)
        env = {
            **os.environ,
            "PP_LOG_LEVEL": "warning",
            "PP_DATABASE_URL": database_url,
            "PP_JWT_SECRET": jwt_secret,
            "PP_GRPC_PORT": "0",
            # Limits no benchmark run can reach: they are measured by tests, not here.
            "PP_RATE_LIMIT": "1000000/minute",
            "PP_MAX_CONCURRENT_PREDICTIONS": "1024",
        }
        log_path = Path(tmp) / "server.log"
        with log_path.open("wb") as log_file:
            process = subprocess.Popen(
                server_command(data_dir, port, model_ref), stdout=log_file, stderr=subprocess.STDOUT, env=env
            )
            try:
                ready_s = wait_ready(process, port, log_path, READY_TIMEOUT_S)
                yield port, ready_s, api_key
            finally:
                process.terminate()
                try:
                    process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout=15)


def workloads(model_ref: str, features: pd.DataFrame, port: int, api_key: str) -> list[Workload]:
    """Request bytes built once: the last real row for /predict, all rows for /predict/batch."""
    rows = [{name: float(value) for name, value in row.items()} for row in features.to_dict(orient="records")]
    single = json.dumps({"model": model_ref, "features": rows[-1], "return_proba": True}).encode()
    batch = json.dumps({"model": model_ref, "features_list": rows, "return_proba": False}).encode()
    headers = {"X-API-KEY": api_key}
    single_request = build_request("POST", "/predict", HOST, port, single, headers=headers)
    batch_request = build_request("POST", "/predict/batch", HOST, port, batch, headers=headers)
    return [
        Workload("predict_c1", "POST /predict, c=1", single_request, 1, 1),
        Workload(
            f"predict_c{HIGH_CONCURRENCY}",
            f"POST /predict, c={HIGH_CONCURRENCY}",
            single_request,
            1,
            HIGH_CONCURRENCY,
        ),
        Workload("batch_c1", f"POST /predict/batch {len(rows)} rows, c=1", batch_request, len(rows), 1),
    ]


def summary(load: LoadResult, rows: int) -> dict[str, Any]:
    return {
        "concurrency": load.concurrency,
        "requests": load.requests,
        "errors": {str(status): count for status, count in sorted(load.errors.items())},
        "elapsed_s": round(load.elapsed_s, 3),
        "requests_per_s": load.requests_per_s,
        "rows_per_s": load.requests_per_s * rows,
        "p50_ms": load.percentile_ms(50),
        "p90_ms": load.percentile_ms(90),
        "p99_ms": load.percentile_ms(99),
        "max_ms": load.percentile_ms(100),
    }


def check_responses(loads: dict[str, LoadResult], expected_batch: list[Any]) -> list[str]:
    """Every status 200, and the server answers the batch as the in-process model does."""
    problems = []
    for key, load in loads.items():
        if load.requests == 0:
            problems.append(f"{key}: no request completed")
        if load.errors:
            problems.append(f"{key}: non-200 statuses {dict(load.errors)}")
    single = loads["predict_c1"].sample_body
    if single is not None and "prediction" not in json.loads(single):
        problems.append(f"predict_c1: unexpected body {single[:200]!r}")
    batch = loads["batch_c1"].sample_body
    if batch is not None and json.loads(batch).get("predictions") != expected_batch:
        problems.append("batch_c1: server predictions differ from the in-process model's")
    return problems


def targets(floor: Floor, server: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    overhead = server["predict_c1"]["p50_ms"] - floor.predict_1row_p50_ms
    ratio = server["batch_c1"]["rows_per_s"] / floor.predict_batch_rows_per_s
    return {
        "single_p50_overhead_ms": {
            "value": overhead,
            "target": f"< {SINGLE_OVERHEAD_TARGET_MS}",
            "met": overhead < SINGLE_OVERHEAD_TARGET_MS,
        },
        "batch_rows_per_s_ratio": {
            "value": ratio,
            "target": f">= {BATCH_RATIO_TARGET}",
            "met": ratio >= BATCH_RATIO_TARGET,
        },
    }


def fmt(value: float, digits: int = 3, *, signed: bool = False) -> str:
    """Thousands separators, a sign when asked, and "-" for NaN (nothing measured)."""
    if math.isnan(value):
        return "-"
    return f"{value:+,.{digits}f}" if signed else f"{value:,.{digits}f}"


def verdict(met: bool) -> str:
    return "[green]yes[/green]" if met else "[red]NO[/red]"


COLUMNS = ("measurement", "req/s", "rows/s", "p50 ms", "p99 ms", "vs in-process floor", "target", "met")


def render(model_ref: str, floor: Floor, server: dict[str, dict[str, Any]], goals: dict[str, Any]) -> Table:
    """One row per figure; server rows say how far they are from the floor and whether targets hold."""
    single_rate = 1e3 / floor.predict_1row_p50_ms
    batch_rate = floor.predict_batch_rows_per_s
    single_goal, batch_goal = goals["single_p50_overhead_ms"], goals["batch_rows_per_s_ratio"]
    c1, cn, batch = server["predict_c1"], server[f"predict_c{HIGH_CONCURRENCY}"], server["batch_c1"]
    in_process = [
        (
            "model.predict, 1 row (floor)",
            "",
            fmt(single_rate, 0),
            fmt(floor.predict_1row_p50_ms, 4),
            fmt(floor.predict_1row_p99_ms, 4),
            "1.00x",
            "",
            "",
        ),
        (
            f"model.predict, {BATCH_ROWS} rows (floor)",
            "",
            fmt(batch_rate, 0),
            fmt(floor.predict_batch_p50_ms),
            fmt(floor.predict_batch_p99_ms),
            "1.00x",
            "",
            "",
        ),
        (
            "predict_records, 1 row (in-process)",
            "",
            fmt(1e3 / floor.records_1row_p50_ms, 0),
            fmt(floor.records_1row_p50_ms, 4),
            fmt(floor.records_1row_p99_ms, 4),
            f"{fmt(floor.records_1row_p50_ms - floor.predict_1row_p50_ms, signed=True)} ms",
            "",
            "",
        ),
        (
            f"predict_records, {BATCH_ROWS} rows (in-process)",
            "",
            fmt(floor.records_batch_rows_per_s, 0),
            fmt(floor.records_batch_p50_ms),
            fmt(floor.records_batch_p99_ms),
            f"{floor.records_batch_rows_per_s / batch_rate:.2f}x rows/s",
            "",
            "",
        ),
    ]
    over_http = [
        (
            "POST /predict, c=1",
            fmt(c1["requests_per_s"], 0),
            fmt(c1["rows_per_s"], 0),
            fmt(c1["p50_ms"]),
            fmt(c1["p99_ms"]),
            f"{fmt(single_goal['value'], signed=True)} ms p50",
            f"< +{SINGLE_OVERHEAD_TARGET_MS:g} ms",
            verdict(single_goal["met"]),
        ),
        (
            f"POST /predict, c={HIGH_CONCURRENCY}",
            fmt(cn["requests_per_s"], 0),
            fmt(cn["rows_per_s"], 0),
            fmt(cn["p50_ms"]),
            fmt(cn["p99_ms"]),
            f"{cn['rows_per_s'] / single_rate:.2f}x rows/s",
            "",
            "",
        ),
        (
            f"POST /predict/batch {BATCH_ROWS} rows, c=1",
            fmt(batch["requests_per_s"], 1),
            fmt(batch["rows_per_s"], 0),
            fmt(batch["p50_ms"]),
            fmt(batch["p99_ms"]),
            f"{batch_goal['value']:.2f}x rows/s",
            f">= {BATCH_RATIO_TARGET:g}x",
            verdict(batch_goal["met"]),
        ),
    ]
    table = Table(title=f"Serving overhead: {model_ref}", title_justify="left")
    for column in COLUMNS:
        table.add_column(column, justify="left" if column in {"measurement", "target"} else "right")
    for row in in_process:
        table.add_row(*row)
    table.add_section()
    for row in over_http:
        table.add_row(*row)
    return table


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from prediction_provider.app import build_services
    from prediction_provider.config import Settings
    from prediction_provider.demo.training import train_demo_models

    # The in-process floor issues no tokens: demo mode's throwaway secret is enough.
    settings = Settings(data_dir=args.data_dir, demo_mode=True, grpc_enabled=False)
    train_demo_models(settings, progress=lambda message: console.print(f"[dim]{message}"))

    console.print(f"[bold]in-process floor[/bold] for {args.model}")
    services = build_services(settings)
    cached = services.cache.get(args.model)
    features = real_features(cached.model.signature.feature_names)
    floor = measure_floor(services, cached, features, budget_s=max(args.duration, 2.0))
    expected_batch = cached.model.predict(np.ascontiguousarray(features.to_numpy(np.float64))).predictions
    for entry in services.cache.entries():
        entry.model.unload()
    del services, cached

    console.print(f"[bold]starting the server[/bold] (data dir {args.data_dir})")
    loads: dict[str, LoadResult] = {}
    rows: dict[str, int] = {}
    with running_server(args.data_dir, args.model) as (port, ready_s, api_key):
        console.print(f"ready in {ready_s:.1f} s on port {port}")
        for work in workloads(args.model, features, port, api_key):
            console.print(f"  {work.label}: {args.warmup:g} s warm-up + {args.duration:g} s")
            loads[work.key] = run_load(
                HOST,
                port,
                work.request,
                concurrency=work.concurrency,
                duration_s=args.duration,
                warmup_s=args.warmup,
            )
            rows[work.key] = work.rows

    server = {key: summary(load, rows[key]) for key, load in loads.items()}
    goals = targets(floor, server)
    problems = check_responses(loads, expected_batch)
    results = {
        "meta": run_meta(
            model=args.model,
            duration_s=args.duration,
            warmup_s=args.warmup,
            batch_rows=BATCH_ROWS,
            server_ready_s=round(ready_s, 2),
        ),
        "floor": asdict(floor),
        "server": server,
        "targets": goals,
        "problems": problems,
    }
    return report(args.output, results, render(args.model, floor, server, goals), problems)


if __name__ == "__main__":
    sys.exit(main())
