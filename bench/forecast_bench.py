"""What does a forecast by symbol cost, next to a prediction from given features?

1. Through two servers (``serve``, the demo models, the bars cached after warm-up;
   one keeps forecast answers per bar, the default, one runs the model for every
   request), alternating rounds so that load from elsewhere weighs on all alike:
   ``POST /predict`` with given features (the LightGBM direction model) and
   ``POST /predict {"symbol": "EURUSD"}`` (features computed by the server, all
   five horizons), at c=1 (p50) and c=8 (p50, P95). Targets: the symbol forecast's
   c=1 p50 within 1 ms of the features one; its c=8 P95 under 5 ms.
2. A job by symbol end to end on the embedded executor: submit, then poll
   ``GET /api/v1/predictions/{id}`` until it completes; p50 of the wall time over
   sequential jobs. Target: under 50 ms.
3. In process: ``ForecastService.forecast`` per call with and without the record
   (``prediction_records`` through the batch writer), and the writer's insert rate.

Run: ``.venv/bin/python bench/forecast_bench.py [--data-dir DIR] [--rounds N] [--duration S]
[--jobs N] [--skip-training]``.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from loadgen import build_request, percentile, run_load
from serving_bench import HOST, real_features, running_server

MODEL = "models:/eurusd-direction@lightgbm"
SYMBOL_BODY = {"symbol": "EURUSD"}


def through_server(data_dir: Path, rounds: int, duration_s: float, jobs: int) -> dict[str, float]:
    """Two servers at once, one keeping forecast answers (the default) and one running the model
    for every request (``PP_FORECAST_ANSWER_CACHE=0``), measured in alternating rounds."""
    from prediction_provider.app import build_services, close_services
    from prediction_provider.config import Settings

    services = build_services(Settings(data_dir=data_dir, demo_mode=True, grpc_enabled=False))
    feature_names = services.cache.get(MODEL).model.signature.feature_names
    close_services(services)
    row = real_features(feature_names).iloc[-1]
    features_body = {"model": MODEL, "features": {name: float(value) for name, value in row.items()}}
    figures: dict[str, list[float]] = {}
    with ExitStack() as servers:
        kept = servers.enter_context(running_server(data_dir, MODEL))
        with environment(PP_FORECAST_ANSWER_CACHE="0"):
            fresh = servers.enter_context(running_server(data_dir, MODEL))

        def request(server: tuple[int, float, str], body: dict[str, object]) -> tuple[int, bytes]:
            port, _, api_key = server
            payload = json.dumps(body).encode()
            return port, build_request(
                "POST", "/predict", HOST, port, payload, headers={"X-API-KEY": api_key}
            )

        cases = {
            "features": request(kept, features_body),
            "symbol": request(kept, SYMBOL_BODY),
            "symbol_fresh": request(fresh, SYMBOL_BODY),
        }
        for _ in range(rounds):
            for name, (port, payload) in cases.items():
                for concurrency in (1, 8):
                    load = run_load(
                        HOST, port, payload, concurrency=concurrency, duration_s=duration_s, warmup_s=0.3
                    )
                    assert not load.errors, load.errors
                    figures.setdefault(f"{name}_c{concurrency}_p50", []).append(load.percentile_ms(50))
                    figures.setdefault(f"{name}_c{concurrency}_p95", []).append(load.percentile_ms(95))
                    figures.setdefault(f"{name}_c{concurrency}_rps", []).append(load.requests_per_s)
        figures["job_ms"] = job_latencies(kept[0], kept[2], jobs)
    medians = {name: statistics.median(values) for name, values in figures.items() if name != "job_ms"}
    medians["job_p50"] = percentile(figures["job_ms"], 50)
    medians["job_p95"] = percentile(figures["job_ms"], 95)
    return medians


@contextmanager
def environment(**variables: str) -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in variables}
    os.environ.update(variables)
    try:
        yield
    finally:
        for name, value in saved.items():
            os.environ.pop(name, None) if value is None else os.environ.__setitem__(name, value)


def job_latencies(port: int, api_key: str, jobs: int) -> list[float]:
    """Submit-to-completed wall times (ms) of sequential symbol jobs, polled as a client would."""
    connection = http.client.HTTPConnection(HOST, port, timeout=30)
    headers = {"X-API-KEY": api_key, "Content-Type": "application/json"}
    body = json.dumps({"symbol": "EURUSD", "prediction_horizon": 6})
    times = []
    for index in range(jobs + 3):
        started = time.perf_counter()
        connection.request("POST", "/api/v1/predictions", body, headers)
        created = connection.getresponse()
        job = json.loads(created.read())
        assert created.status == 201, job
        while True:
            connection.request("GET", f"/api/v1/predictions/{job['id']}", headers=headers)
            answer = connection.getresponse()
            state = json.loads(answer.read())
            if state["status"] in ("completed", "failed"):
                break
        assert state["status"] == "completed", state
        if index >= 3:  # the first jobs warm the executor's connections
            times.append((time.perf_counter() - started) * 1000)
    connection.close()
    return times


def in_process(data_dir: Path, calls: int) -> dict[str, float]:
    from prediction_provider.app import build_services, close_services
    from prediction_provider.config import Settings
    from prediction_provider.forecasts.records import Requester
    from prediction_provider.forecasts.service import ForecastRequest, ForecastService

    with tempfile.TemporaryDirectory(prefix="pp-forecast-bench-") as tmp:
        database_url = f"sqlite:///{Path(tmp) / 'records.db'}"
        settings = Settings(data_dir=data_dir, demo_mode=True, grpc_enabled=False, database_url=database_url)
        from prediction_provider.db import migrate

        migrate.upgrade(database_url)
        services = build_services(settings)
        recording = services.forecasts
        assert recording is not None
        silent = ForecastService(recording.cache, recording.catalog, recording.market, None)
        fresh = ForecastService(recording.cache, recording.catalog, recording.market, None, answer_cache=0)
        request = ForecastRequest("EURUSD", "1h")
        requester = Requester(None, None, "predict")
        figures = {}
        cases = (("without record", silent), ("with record", recording), ("model every time", fresh))
        for name, service in cases:
            for _ in range(200):
                service.forecast(request, requester)
            rounds = []
            for _ in range(5):
                started = time.perf_counter()
                for _ in range(calls):
                    service.forecast(request, requester)
                rounds.append((time.perf_counter() - started) / calls * 1e6)
            figures[f"forecast_us_{name}"] = statistics.median(rounds)
        assert recording.recorder is not None
        recording.recorder.flush()
        started = time.perf_counter()
        for _ in range(calls):
            recording.forecast(request, requester)
        recording.recorder.flush()
        figures["records_per_s"] = calls * 5 / (time.perf_counter() - started)
        close_services(services)
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--data-dir", type=Path, default=Path(".pp_data"), help="data dir (default .pp_data)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds")
    parser.add_argument("--duration", type=float, default=2.0, help="seconds per measurement")
    parser.add_argument("--jobs", type=int, default=50, help="sequential symbol jobs timed")
    parser.add_argument("--calls", type=int, default=2000, help="in-process calls per round")
    parser.add_argument("--skip-training", action="store_true", help="the data dir has the demo models")
    args = parser.parse_args(argv)
    from prediction_provider.config import Settings
    from prediction_provider.demo.training import train_demo_models

    if not args.skip_training:
        train_demo_models(Settings(data_dir=args.data_dir, demo_mode=True), progress=lambda message: None)
    local = in_process(args.data_dir, args.calls)
    served = through_server(args.data_dir, args.rounds, args.duration, args.jobs)
    rows = [
        "| measure | given features | by symbol, kept answers | by symbol, model every time |",
        "|---|---|---|---|",
    ]
    for concurrency in (1, 8):
        for stat in ("p50", "p95"):
            key = f"c{concurrency}_{stat}"
            cells = " | ".join(
                f"{served[f'{case}_{key}']:.3f} ms" for case in ("features", "symbol", "symbol_fresh")
            )
            rows.append(f"| POST /predict c={concurrency} {stat} | {cells} |")
        key = f"c{concurrency}_rps"
        cells = " | ".join(
            f"{served[f'{case}_{key}']:.0f}" for case in ("features", "symbol", "symbol_fresh")
        )
        rows.append(f"| POST /predict c={concurrency} req/s | {cells} |")
    rows.append(f"| symbol job, submit to completed (embedded executor), p50 / p95 | | "
                f"{served['job_p50']:.1f} / {served['job_p95']:.1f} ms | |")  # fmt: skip
    kept_us, fresh_us = local["forecast_us_without record"], local["forecast_us_model every time"]
    rows.append(
        f"| ForecastService.forecast in process, no record | | {kept_us:.1f} µs | {fresh_us:.1f} µs |"
    )
    rows.append(
        f"| ForecastService.forecast in process, recorded | | {local['forecast_us_with record']:.1f} µs | |"
    )
    rows.append(
        f"| prediction_records rows written (SQLite, writer thread) | | {local['records_per_s']:.0f}/s | |"
    )
    print("\n".join(rows))
    for case in ("symbol", "symbol_fresh"):
        gap = served[f"{case}_c1_p50"] - served["features_c1_p50"]
        print(f"{case}: minus features at c=1 p50 {gap:.3f} ms (target < 1 ms); "
              f"c=8 P95 {served[f'{case}_c8_p95']:.3f} ms (target < 5 ms)")  # fmt: skip
    print(f"job p50 {served['job_p50']:.1f} ms (target < 50 ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
