"""Latency of the entry/exit signal routes over HTTP, per signal predictor.

For each predictor (``binary_ideal_oracle``, ``lightgbm``, ``mc_dropout``) it
starts the real server (``prediction-provider serve`` in a subprocess, as
``serving_bench`` does) with ``PP_SIGNAL_PREDICTOR`` set, and drives
``POST /api/v1/predict/entry`` and ``POST /api/v1/predict/exit`` with the
closed-loop ``loadgen`` at concurrency 1 and 8. Each request asks about a
Monday 10:00 bar, so the oracle scans most of a week. The predictor's own
answer time, in-process, is printed beside the server figures, and so is
``POST /predict`` (one real row, the LightGBM demo model) on the same server
at the same time: a reference for what the machine's load allows.

Target: P95 under 2 ms. Results also go to ``bench/results/signals.json``.

Run: ``.venv/bin/python bench/signals_bench.py [--data-dir DIR] [--duration S] [--predictor NAME ...]``.
The first run trains the demo models (the signal models with them) if the
data dir has none. Client and server share the machine's CPUs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from loadgen import LoadResult, build_request, percentile, run_load
from serving_bench import HOST, report, run_meta, running_server

PREDICTORS = ("binary_ideal_oracle", "lightgbm", "mc_dropout")
CONCURRENCY = (1, 8)
P95_TARGET_MS = 2.0
WARM_MODEL = "models:/eurusd-direction@lightgbm"
WHEN = "05.02.2018 10:00:00.000"
BODIES: dict[str, dict[str, Any]] = {
    "entry": {"datetime": WHEN, "tp": 50, "sl": 25, "spread_pips": 1.0},
    "exit": {"datetime": WHEN, "direction": "buy", "tp_price": 1.25, "sl_price": 1.23},
}
PATHS = {"entry": "/api/v1/predict/entry", "exit": "/api/v1/predict/exit", "reference": "/predict"}
FIELDS = {
    "entry": {"buy_entry_binary", "sell_entry_binary", "bars_remaining", "buy_confidence", "sell_confidence"},
    "exit": {"exit_binary", "exit_confidence"},
    "reference": {"prediction", "probability"},
}
RESULTS_PATH = Path(__file__).resolve().parent / "results" / "signals.json"

console = Console(width=None if sys.stdout.isatty() else 132)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--data-dir", type=Path, default=Path(".pp_data"), help="data dir (default .pp_data)")
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per measurement")
    parser.add_argument("--warmup", type=float, default=1.0, help="unrecorded seconds before each one")
    parser.add_argument("--predictor", action="append", choices=PREDICTORS, help="repeatable; default all")
    parser.add_argument("--output", type=Path, default=RESULTS_PATH, help="where to write the JSON results")
    args = parser.parse_args(argv)
    if args.duration <= 0 or args.warmup < 0:
        parser.error("--duration must be positive and --warmup not negative")
    return args


def selection(name: str, data_dir: Path) -> dict[str, str]:
    """The settings that select the predictor (the oracle reads the demo's EURUSD CSV)."""
    chosen = {"signal_predictor": name}
    if name == "binary_ideal_oracle":
        chosen["oracle_csv"] = str((data_dir / "oracle" / "EURUSD_1h.csv").resolve())
    return chosen


def environment(name: str, data_dir: Path) -> dict[str, str]:
    return {f"PP_{key.upper()}": value for key, value in selection(name, data_dir).items()}


@contextmanager
def environ(values: dict[str, str]) -> Iterator[None]:
    """``running_server`` hands its own environment to the server: set the selection there."""
    previous = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def in_process_ms(name: str, data_dir: Path, budget_s: float) -> dict[str, dict[str, float]]:
    """P50/P95 of the predictor's own ``entry``/``exit`` calls, without HTTP."""
    from prediction_provider.config import Settings
    from prediction_provider.signals.levels import Direction, TradeCosts
    from prediction_provider.signals.predictor import EntryQuery, ExitQuery
    from prediction_provider.signals.registry import build_signal_predictor
    from prediction_provider.signals.request_fields import parse_request_time

    settings = Settings(data_dir=data_dir, **selection(name, data_dir))  # type: ignore[arg-type]
    predictor = build_signal_predictor(settings)
    at = parse_request_time(WHEN)
    calls: dict[str, Callable[[], object]] = {
        "entry": lambda: predictor.entry(EntryQuery(at, 50.0, 25.0, TradeCosts(spread_pips=1.0))),
        "exit": lambda: predictor.exit(ExitQuery(at, Direction.BUY, 1.25, 1.23)),
    }
    figures = {}
    for route, call in calls.items():
        for _ in range(50):
            call()
        samples: list[int] = []
        deadline = time.perf_counter() + budget_s
        while len(samples) < 5000 and time.perf_counter() < deadline:
            started = time.perf_counter_ns()
            call()
            samples.append(time.perf_counter_ns() - started)
        figures[route] = {"p50_ms": percentile(samples, 50) / 1e6, "p95_ms": percentile(samples, 95) / 1e6}
    return figures


def summary(load: LoadResult) -> dict[str, Any]:
    return {
        "concurrency": load.concurrency,
        "requests": load.requests,
        "errors": {str(status): count for status, count in sorted(load.errors.items())},
        "requests_per_s": load.requests_per_s,
        "p50_ms": load.percentile_ms(50),
        "p95_ms": load.percentile_ms(95),
        "p99_ms": load.percentile_ms(99),
        "max_ms": load.percentile_ms(100),
    }


def reference_body() -> dict[str, Any]:
    """``POST /predict`` with the latest real EURUSD feature row, for the warmed demo model."""
    from prediction_provider.features.market_data import load_sample_bars
    from prediction_provider.features.pipeline import compute_features

    row = compute_features(load_sample_bars("EURUSD")).iloc[-1]
    return {"model": WARM_MODEL, "features": {name: float(value) for name, value in row.items()}}


def measure_server(name: str, args: argparse.Namespace) -> tuple[dict[str, dict[str, Any]], list[str]]:
    results: dict[str, dict[str, Any]] = {}
    problems: list[str] = []
    with environ(environment(name, args.data_dir)), running_server(args.data_dir, WARM_MODEL) as served:
        port, ready_s, api_key = served
        console.print(f"[bold]{name}[/bold]: server ready in {ready_s:.1f} s on port {port}")
        for route, body in {**BODIES, "reference": reference_body()}.items():
            request = build_request(
                "POST",
                PATHS[route],
                HOST,
                port,
                json.dumps(body).encode(),
                headers={"X-API-KEY": api_key},
            )
            for concurrency in CONCURRENCY:
                load = run_load(
                    HOST,
                    port,
                    request,
                    concurrency=concurrency,
                    duration_s=args.duration,
                    warmup_s=args.warmup,
                )
                key = f"{route}_c{concurrency}"
                results[key] = summary(load)
                if load.requests == 0 or load.errors:
                    problems.append(f"{name} {key}: {load.requests} requests, errors {dict(load.errors)}")
                elif load.sample_body is not None and not FIELDS[route] <= set(json.loads(load.sample_body)):
                    problems.append(f"{name} {key}: unexpected body {load.sample_body[:200]!r}")
    return results, problems


def render(
    server: dict[str, dict[str, dict[str, Any]]], floor: dict[str, dict[str, dict[str, float]]]
) -> Table:
    table = Table(title="Entry/exit signals over HTTP", title_justify="left")
    for column in (
        "predictor",
        "route",
        "c",
        "req/s",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "in-process p50",
        "p95 < 2 ms",
    ):
        table.add_column(column, justify="left" if column in {"predictor", "route"} else "right")
    for name, figures in server.items():
        for key, figure in figures.items():
            route, concurrency = key.split("_c")
            met = figure["p95_ms"] < P95_TARGET_MS
            in_process = floor[name].get(route)
            table.add_row(
                name if route != "reference" else f"({name} server)",
                f"POST {PATHS[route]}",
                concurrency,
                f"{figure['requests_per_s']:,.0f}",
                f"{figure['p50_ms']:.3f}",
                f"{figure['p95_ms']:.3f}",
                f"{figure['p99_ms']:.3f}",
                f"{in_process['p50_ms']:.3f}" if in_process else "",
                ("[green]yes[/green]" if met else "[red]NO[/red]") if in_process else "(reference)",
            )
        table.add_section()
    return table


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from prediction_provider.config import Settings
    from prediction_provider.demo.training import train_demo_models

    train_demo_models(
        Settings(data_dir=args.data_dir), progress=lambda message: console.print(f"[dim]{message}")
    )
    names = args.predictor or list(PREDICTORS)
    floor = {name: in_process_ms(name, args.data_dir, budget_s=2.0) for name in names}
    server: dict[str, dict[str, dict[str, Any]]] = {}
    problems: list[str] = []
    for name in names:
        server[name], found = measure_server(name, args)
        problems.extend(found)
    results = {
        "meta": run_meta(request_time=WHEN, duration_s=args.duration, warmup_s=args.warmup),
        "in_process": floor,
        "server": server,
        "p95_target_ms": P95_TARGET_MS,
        "problems": problems,
    }
    return report(args.output, results, render(server, floor), problems)


if __name__ == "__main__":
    sys.exit(main())
