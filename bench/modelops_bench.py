"""What do model operations cost the request path?

Usage: ``.venv/bin/python bench/modelops_bench.py [--data-dir DIR] [--duration S] [--rounds N]
[--before REV]``.

Servers, each started fresh on its own SQLite database with the demo model warmed, driven with
``POST /predict`` (one real EURUSD row) at c=64 by ``loadgen.py``, in rounds so that the machine's
drift spreads over every configuration:

1. ``before``: the code at ``--before`` (default ``f69c5ba``, the last commit before model
   operations), checked out in a git worktree and served by this interpreter with that source
   first on ``PYTHONPATH``;
2. ``now``: today's code, no experiment running, drift counting every row (the default);
3. ``now_no_drift``: the same with ``PP_DRIFT=false``: 2 vs 3 is drift counting's cost;
4. ``now_shadow``: a pure shadow experiment copying 100 % of the model's traffic to another
   version (``percent: 100``, caps 4 in flight, queue 256): its p99 vs 2's is what a shadow costs
   the primary.

Targets (issue 20): 2 within noise of 1; 2 >= 0.95 x 3; 4's p99 <= 1.5 x 2's. Figures are printed
and written to ``bench/results/modelops.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).parent))
from loadgen import build_request, run_load
from serving_bench import HOST, free_port, real_features, server_command, wait_ready

MODEL = "eurusd-direction"
RESULTS = Path(__file__).parent / "results" / "modelops.json"
ACCOUNT_SCRIPT = """
import sys
from prediction_provider.app import account_service
from prediction_provider.config import Settings
accounts = account_service(Settings(data_dir=sys.argv[1], database_url=sys.argv[2], jwt_secret=sys.argv[3]))
for name, role in (("bench-client", "client"), ("bench-operator", "operator")):
    user = accounts.create_user(name, name + "@localhost.localdomain", "x" * 24, role, active=True)
    print(accounts.regenerate_api_key(user["id"])["api_key"])
"""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--data-dir", type=Path, default=Path(".pp_data"))
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per measurement")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--before", default="f69c5ba", help="the revision to compare with")
    parser.add_argument("--output", type=Path, default=RESULTS)
    return parser.parse_args(argv)


@contextmanager
def worktree(revision: str) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="pp-before-"))
    subprocess.run(["git", "worktree", "add", "-f", "-q", str(path), revision], check=True)
    try:
        yield path
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(path)], check=False)


@contextmanager
def server(data_dir: Path, source: Path | None, extra: dict[str, str]) -> Iterator[tuple[int, str, str]]:
    """A server of the code under ``source`` (None: this checkout); yields port, client and
    operator keys. The accounts are made by the same code, so its own migrations make the database."""
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="pp-modelops-") as tmp:
        env = {
            **os.environ,
            "PP_LOG_LEVEL": "warning",
            "PP_DATABASE_URL": f"sqlite:///{Path(tmp) / 'provider.db'}",
            "PP_JWT_SECRET": secrets.token_urlsafe(48),
            "PP_GRPC_PORT": "0",
            "PP_RATE_LIMIT": "1000000/minute",
            "PP_MAX_CONCURRENT_PREDICTIONS": "1024",
            **extra,
        }
        if source is not None:
            env["PYTHONPATH"] = str(source / "src")
        command = [
            sys.executable,
            "-c",
            ACCOUNT_SCRIPT,
            str(data_dir),
            env["PP_DATABASE_URL"],
            env["PP_JWT_SECRET"],
        ]
        keys = subprocess.run(command, env=env, check=True, capture_output=True, text=True).stdout.split()
        log_path = Path(tmp) / "server.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                server_command(data_dir, port, MODEL), stdout=log, stderr=subprocess.STDOUT, env=env
            )
            try:
                wait_ready(process, port, log_path, 180)
                yield port, keys[0], keys[1]
            finally:
                process.terminate()
                try:
                    process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout=15)


def start_shadow(port: int, operator_key: str) -> None:
    with httpx.Client(
        base_url=f"http://{HOST}:{port}", headers={"X-API-KEY": operator_key}, timeout=60
    ) as http:
        body = {
            "name": "bench-shadow",
            "model": MODEL,
            "variants": [{"name": "control", "target": MODEL}],
            "shadow": {"target": f"models:/{MODEL}/2", "percent": 100},
        }
        made = http.post("/api/v1/experiments", json=body)
        made.raise_for_status()
        http.post("/api/v1/experiments/bench-shadow/start").raise_for_status()


def measure(port: int, key: str, row: dict[str, float], args: argparse.Namespace) -> dict[str, Any]:
    body = json.dumps({"model": MODEL, "features": row}).encode()
    request = build_request("POST", "/predict", HOST, port, body, headers={"X-API-KEY": key})
    run_load(HOST, port, request, concurrency=args.concurrency, duration_s=2.0, warmup_s=0.5)  # warm
    load = run_load(HOST, port, request, concurrency=args.concurrency, duration_s=args.duration, warmup_s=1.0)
    if load.error_count:
        raise RuntimeError(f"non-200 answers: {dict(load.errors)}")
    return {"rps": load.requests_per_s, "p50_ms": load.percentile_ms(50), "p99_ms": load.percentile_ms(99)}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not (args.data_dir / "mlflow.db").exists():
        from prediction_provider.config import Settings
        from prediction_provider.demo.training import train_demo_models

        train_demo_models(Settings(data_dir=args.data_dir))
    from prediction_provider.features.pipeline import FEATURE_NAMES

    features = real_features(list(FEATURE_NAMES))
    row = {name: float(value) for name, value in features.iloc[-1].items()}
    runs: dict[str, list[dict[str, Any]]] = {}
    with worktree(args.before) as before:
        configs: list[tuple[str, Path | None, dict[str, str], bool]] = [
            ("before", before, {}, False),
            ("now", None, {}, False),
            ("now_no_drift", None, {"PP_DRIFT": "false"}, False),
            ("now_shadow", None, {}, True),
        ]
        for round_index in range(args.rounds):
            for name, source, extra, shadow in configs:
                with server(args.data_dir, source, extra) as (port, client_key, operator_key):
                    if shadow:
                        start_shadow(port, operator_key)
                        time.sleep(0.5)  # the stamp follower of the one process has it at once
                    figures = measure(port, client_key, row, args)
                runs.setdefault(name, []).append(figures)
                line = f"round {round_index + 1} {name:14s} {figures['rps']:8.0f} req/s"
                print(f"{line}  p50 {figures['p50_ms']:6.2f} ms  p99 {figures['p99_ms']:6.2f} ms", flush=True)
    median = {
        name: {key: statistics.median(run[key] for run in values) for key in values[0]}
        for name, values in runs.items()
    }
    ratios = {
        "now_vs_before_rps": median["now"]["rps"] / median["before"]["rps"],
        "drift_cost_rps": 1 - median["now"]["rps"] / median["now_no_drift"]["rps"],
        "shadow_p99_ratio": median["now_shadow"]["p99_ms"] / median["now"]["p99_ms"],
    }
    print(json.dumps({"median": median, "ratios": ratios}, indent=2))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps({"runs": runs, "median": median, "ratios": ratios}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
