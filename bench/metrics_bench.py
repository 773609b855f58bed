"""What do the Prometheus metrics add to every request?

Measures, in one run:

1. ``HttpMetrics.observe`` alone, the whole per-request hook (route label, one
   counter and one histogram update) on a scope as the router leaves it, in
   the default single-process mode and, in a child process, in prometheus-client's
   multiprocess mode (``serve --workers N``: values in memory-mapped files);
2. ``RequestEnvelope`` (the outermost middleware) in front of a one-route FastAPI
   app, called straight through ASGI with and without the metrics, interleaved in
   rounds so that drift on a shared machine hits both sides alike;
3. one scrape (``AppMetrics.exposition``) after a realistic number of series.

For scale: a single-row ``POST /predict`` costs about 0.6 ms in total
(``bench/serving_bench.py``).

Run: ``.venv/bin/python bench/metrics_bench.py [--calls N] [--rounds R]``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

from fastapi import FastAPI

from prediction_provider.api.middleware import RequestEnvelope
from prediction_provider.observability.metrics import AppMetrics, multiprocess_enabled


def one_route_app() -> FastAPI:
    app = FastAPI()

    @app.get("/api/v1/predictions/{job_id}")
    async def job(job_id: str) -> dict[str, str]:
        return {"id": job_id}

    return app


def routed_scope(app: FastAPI) -> dict[str, Any]:
    """A scope as it is after routing, with the route the router matched."""
    route = next(r for r in app.router.routes if getattr(r, "path", "") == "/api/v1/predictions/{job_id}")
    return {"type": "http", "method": "GET", "path": "/api/v1/predictions/abc", "route": route}


def time_observe(calls: int) -> float:
    """Microseconds per call, the best of 7 runs: on a shared machine, the least disturbed one."""
    metrics = AppMetrics(lambda: None).http
    scope = routed_scope(one_route_app())
    runs = []
    for _ in range(7):
        started = time.perf_counter()
        for _ in range(calls):
            metrics.observe(scope, 200, 0.0006)
        runs.append((time.perf_counter() - started) / calls * 1e6)
    return min(runs)


def observe_in_multiprocess_mode(calls: int) -> float:
    """The same, in a child whose prometheus-client starts in multiprocess mode."""
    with tempfile.TemporaryDirectory() as directory:
        command = [sys.executable, __file__, "--observe-only", "--calls", str(calls)]
        env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": directory}
        out = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
        return float(out.stdout.strip().splitlines()[-1])


async def _request(app: Any, scope: dict[str, Any]) -> None:
    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        return None

    await app(dict(scope), receive, send)


async def time_middleware(calls: int, rounds: int) -> tuple[float, float, float]:
    """Per-request microseconds through RequestEnvelope without and with the metrics: the best round
    of each, and the median of the paired differences (each pair ran back to back, in turns)."""
    plain_app, measured_app = one_route_app(), one_route_app()
    plain_app.add_middleware(RequestEnvelope)
    measured_app.add_middleware(RequestEnvelope, metrics=AppMetrics(lambda: None).http)
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
        "path": "/api/v1/predictions/abc", "raw_path": b"/api/v1/predictions/abc", "root_path": "",
        "query_string": b"", "headers": [(b"host", b"bench")], "client": ("127.0.0.1", 1),
        "server": ("bench", 80),
    }  # fmt: skip
    timings: dict[str, list[float]] = {"plain": [], "measured": []}
    order = [("plain", plain_app), ("measured", measured_app)]
    for _ in range(rounds):
        order.reverse()  # ABBA: neither side always runs second
        for name, app in order:
            started = time.perf_counter()
            for _ in range(calls):
                await _request(app, scope)
            timings[name].append((time.perf_counter() - started) / calls * 1e6)
    paired = [m - p for p, m in zip(timings["plain"], timings["measured"], strict=True)]
    return min(timings["plain"]), min(timings["measured"]), statistics.median(paired)


def time_scrape(routes: int) -> tuple[float, int]:
    """Milliseconds for one exposition with ``routes`` x 3 statuses of HTTP series, and its size."""
    metrics = AppMetrics(lambda: None)
    app = FastAPI()
    for index in range(routes):
        app.add_api_route(f"/route{index}/{{item}}", lambda item: item)
    for route in app.router.routes:
        for status in (200, 404, 422):
            metrics.http.observe({"method": "GET", "route": route}, status, 0.001)
    started = time.perf_counter()
    body = metrics.exposition()
    return (time.perf_counter() - started) * 1e3, len(body)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=201)
    parser.add_argument("--observe-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.observe_only:  # the multiprocess-mode child
        assert multiprocess_enabled()
        print(time_observe(args.calls))
        return
    single = time_observe(args.calls)
    multi = observe_in_multiprocess_mode(args.calls)
    plain, measured, paired = asyncio.run(time_middleware(500, args.rounds))
    scrape_ms, scrape_bytes = time_scrape(60)
    print(f"observe() per request, single process      {single:8.2f} µs")
    print(f"observe() per request, multiprocess mode   {multi:8.2f} µs")
    print(f"RequestEnvelope without metrics (best)     {plain:8.2f} µs/request")
    print(f"RequestEnvelope with metrics (best)        {measured:8.2f} µs/request")
    print(f"  difference of the best rounds            {measured - plain:8.2f} µs/request")
    print(f"  median difference of paired rounds       {paired:8.2f} µs/request")
    print(f"one scrape, 60 routes x 3 statuses         {scrape_ms:8.2f} ms ({scrape_bytes / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
