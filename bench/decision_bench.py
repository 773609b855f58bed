"""How fast is a full trading decision (features, regime, specialist, sizing, risk)?

Measures, in one run:

1. in process, ``DecisionService.decide`` on the object the server builds:
   the latest bar (every cache warm), a new bar each call (point-in-time
   features and the regime filter computed afresh), and the latest bar against
   a stored trading account (a database read per decision);
2. the real server (``prediction-provider serve`` in a subprocess, its own
   SQLite database) under closed-loop load from ``loadgen.py``:
   ``POST /api/v1/predict`` at concurrency 1 and 8, with the paper account and
   with a stored account holding positions.

Target: P95 under 5 ms over HTTP at both concurrencies. Results also go to
``bench/results/decisions.json``.

Run: ``.venv/bin/python bench/decision_bench.py [--data-dir DIR] [--duration S]``.
The load generator runs on the same machine and takes CPU from the server.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

from loadgen import LoadResult, build_request, percentile, run_load
from serving_bench import HOST, report, run_meta, running_server

TARGET_P95_MS = 5.0
CONCURRENCIES = (1, 8)
RESULTS_PATH = Path(__file__).resolve().parent / "results" / "decisions.json"
WARM_MODEL = "models:/eurusd-direction@lightgbm"
ACCOUNT = "bench-account"

console = Console(width=None if sys.stdout.isatty() else 132)


@dataclass(frozen=True, slots=True)
class Workload:
    key: str
    label: str
    path: str
    body: dict[str, Any]
    concurrency: int


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--data-dir", type=Path, default=Path(".pp_data"), help="data dir (default .pp_data)")
    parser.add_argument("--symbol", default="EURUSD", help="symbol to decide on (default EURUSD)")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per server measurement")
    parser.add_argument("--warmup", type=float, default=1.0, help="unrecorded seconds before each one")
    parser.add_argument("--output", type=Path, default=RESULTS_PATH, help="where to write the JSON results")
    args = parser.parse_args(argv)
    if args.duration <= 0 or args.warmup < 0:
        parser.error("--duration must be positive and --warmup not negative")
    return args


def figures(samples_ns: list[int]) -> dict[str, float]:
    return {
        "calls": len(samples_ns),
        "p50_ms": percentile(samples_ns, 50) / 1e6,
        "p95_ms": percentile(samples_ns, 95) / 1e6,
        "p99_ms": percentile(samples_ns, 99) / 1e6,
    }


async def time_decisions(service: Any, requests: list[Any], principal: Any) -> list[int]:
    samples = []
    for request in requests:
        started = time.perf_counter_ns()
        await service.decide(request, principal)
        samples.append(time.perf_counter_ns() - started)
    return samples


def measure_in_process(data_dir: Path, symbol: str, database_url: str) -> dict[str, dict[str, float]]:
    """``decide`` without HTTP: cached, uncached (a new bar each call) and with a stored account."""
    from decimal import Decimal

    from prediction_provider.accounts.principal import Principal
    from prediction_provider.accounts.roles import Role
    from prediction_provider.app import build_services
    from prediction_provider.config import Settings
    from prediction_provider.trading.accounts import PositionUpdate
    from prediction_provider.trading.decisions import DecisionRequest

    settings = Settings(data_dir=data_dir, database_url=database_url, demo_mode=True, grpc_enabled=False)
    services = build_services(settings)
    service = services.decisions
    owner = services.accounts.create_user(
        "bench-owner", "owner@localhost.localdomain", "x" * 16, "client", active=True
    )
    principal = Principal(owner["id"], owner["username"], Role.CLIENT, "api_key")
    services.trading_accounts.create(principal, ACCOUNT, Decimal(1_000_000))
    services.trading_accounts.set_position(
        ACCOUNT, "GOOG", principal, PositionUpdate(Decimal(100), Decimal(700), Decimal(750), "technology")
    )
    latest = service.market.snapshot(symbol, None).data_as_of
    # Bars never asked for before, newest first: every call computes features and the regime afresh.
    bar_times = service.market.bars(symbol, latest, 1600).index[:-100][::-1]
    cached = [DecisionRequest(symbol)] * 3000
    fresh = [DecisionRequest(symbol, moment.to_pydatetime()) for moment in bar_times]
    with_account = [DecisionRequest(symbol, account=ACCOUNT)] * 2000

    async def run_all() -> dict[str, list[int]]:
        await time_decisions(service, cached[:300], principal)  # warm-up
        return {
            "cached": await time_decisions(service, cached, principal),
            "uncached": await time_decisions(service, fresh, principal),
            "account": await time_decisions(service, with_account, principal),
        }

    samples = asyncio.run(run_all())
    services.decisions.close()  # the decisions' records, written before the database goes away
    services.db.dispose()
    return {key: figures(values) for key, values in samples.items()}


def create_account(port: int, api_key: str) -> None:
    """A stored account with positions, made through the API as a client would."""
    headers = {"X-API-KEY": api_key}
    with httpx.Client(base_url=f"http://{HOST}:{port}", headers=headers, timeout=30) as http:
        http.post("/api/v1/accounts", json={"name": ACCOUNT, "equity": "1000000"}).raise_for_status()
        for symbol, quantity, price, sector in (
            ("GOOG", "100", "750", "technology"),
            ("MSFT", "-50", "280", None),
        ):
            body = {"quantity": quantity, "average_price": price, "market_price": price, "sector": sector}
            http.put(f"/api/v1/accounts/{ACCOUNT}/positions/{symbol}", json=body).raise_for_status()


def workloads(symbol: str) -> list[Workload]:
    """The decisions, and for reference one plain model call (``POST /predict``) on the same server:
    the difference is what the decision adds over serving a single prediction."""
    from prediction_provider.features.market_data import load_sample_bars
    from prediction_provider.features.pipeline import compute_features

    features = {k: float(v) for k, v in compute_features(load_sample_bars("EURUSD")).iloc[-1].items()}
    paper = {"symbol": symbol}
    stored = {"symbol": symbol, "account": ACCOUNT}
    plain = {"model": WARM_MODEL, "features": features}
    runs = [
        ("paper", "/api/v1/predict", paper),
        ("stored", "/api/v1/predict", stored),
        ("model", "/predict", plain),
    ]
    labels = {
        "paper": "decision, paper account",
        "stored": "decision, stored account",
        "model": "reference: /predict",
    }
    return [
        Workload(f"{kind}_c{c}", f"POST {path} ({labels[kind]}), c={c}", path, body, c)
        for kind, path, body in runs
        for c in CONCURRENCIES
    ]


def summary(load: LoadResult) -> dict[str, Any]:
    body = json.loads(load.sample_body) if load.sample_body else None
    return {
        "concurrency": load.concurrency,
        "requests": load.requests,
        "errors": {str(status): count for status, count in sorted(load.errors.items())},
        "requests_per_s": load.requests_per_s,
        "p50_ms": load.percentile_ms(50),
        "p95_ms": load.percentile_ms(95),
        "p99_ms": load.percentile_ms(99),
        "max_ms": load.percentile_ms(100),
        "sample_action": body.get("action") if body else None,
    }


def render(floor: dict[str, dict[str, float]], server: dict[str, dict[str, Any]]) -> Table:
    table = Table(
        title="Full trading decision (features, regime, specialist, sizing, risk)", title_justify="left"
    )
    for column in ("measurement", "req/s", "p50 ms", "p95 ms", "p99 ms", "target", "met"):
        table.add_column(column, justify="left" if column in ("measurement", "target") else "right")
    labels = {
        "cached": "decide(), in process, latest bar (caches warm)",
        "uncached": "decide(), in process, a new bar each call",
        "account": "decide(), in process, stored account (DB read)",
    }
    for key, label in labels.items():
        row = floor[key]
        table.add_row(
            label, "", f"{row['p50_ms']:.3f}", f"{row['p95_ms']:.3f}", f"{row['p99_ms']:.3f}", "", ""
        )
    table.add_section()
    for key, row in server.items():
        met = row["p95_ms"] < TARGET_P95_MS and not row["errors"]
        goal = "" if key.startswith("model") else f"p95 < {TARGET_P95_MS:g} ms"
        verdict = "" if not goal else "[green]yes" if met else "[red]NO"
        table.add_row(
            row["label"], f"{row['requests_per_s']:,.0f}", f"{row['p50_ms']:.3f}", f"{row['p95_ms']:.3f}",
            f"{row['p99_ms']:.3f}", goal, verdict,
        )  # fmt: skip
    return table


def ensure_models(data_dir: Path) -> None:
    from prediction_provider.config import Settings
    from prediction_provider.demo.training import train_demo_models

    train_demo_models(Settings(data_dir=data_dir), progress=lambda message: console.print(f"[dim]{message}"))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    ensure_models(args.data_dir)
    console.print(f"[bold]in process[/bold]: DecisionService.decide on {args.symbol}")
    with tempfile.TemporaryDirectory(prefix="pp-decision-bench-") as tmp:
        floor = measure_in_process(args.data_dir, args.symbol, f"sqlite:///{Path(tmp) / 'floor.db'}")

    console.print(f"[bold]starting the server[/bold] (data dir {args.data_dir})")
    server: dict[str, dict[str, Any]] = {}
    with running_server(args.data_dir, WARM_MODEL) as (port, ready_s, api_key):
        console.print(f"ready in {ready_s:.1f} s on port {port}")
        create_account(port, api_key)
        for work in workloads(args.symbol):
            console.print(f"  {work.label}: {args.warmup:g} s warm-up + {args.duration:g} s")
            request = build_request(
                "POST",
                work.path,
                HOST,
                port,
                json.dumps(work.body).encode(),
                headers={"X-API-KEY": api_key},
            )
            load = run_load(HOST, port, request, concurrency=work.concurrency, duration_s=args.duration,
                            warmup_s=args.warmup)  # fmt: skip
            server[work.key] = {"label": work.label, **summary(load)}

    problems = [f"{key}: non-200 statuses {row['errors']}" for key, row in server.items() if row["errors"]]
    problems += [f"{key}: no request completed" for key, row in server.items() if row["requests"] == 0]
    results = {
        "meta": run_meta(symbol=args.symbol, duration_s=args.duration, warmup_s=args.warmup),
        "in_process": floor,
        "server": server,
        "target_p95_ms": TARGET_P95_MS,
        "targets_met": {
            key: row["p95_ms"] < TARGET_P95_MS for key, row in server.items() if not key.startswith("model")
        },
        "problems": problems,
    }
    return report(args.output, results, render(floor, server), problems)


if __name__ == "__main__":
    sys.exit(main())
