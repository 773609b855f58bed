"""What do rate limits and in-flight caps shared by worker processes cost on the hot path?

Every authenticated request counts against its caller's rate limit, and every
prediction holds an in-flight slot. One process keeps both in memory; ``serve
--workers N`` without Redis keeps them in an LMDB file the workers share. Measures:

1. in process, per call: ``Throttle.request`` and one ``Throttle.in_flight`` slot
   taken and given back, memory against the shared store;
2. through the server: ``POST /predict`` p50 at concurrency 1, one server process
   with each store (``PP_LIMITS_DIR`` makes one process use the shared store), both
   servers running at once and measured in alternating rounds, so that load from
   elsewhere on the machine weighs on both alike.

Run: ``.venv/bin/python bench/limits_bench.py [--data-dir DIR] [--sessions N] [--rounds N]
[--duration S] [--skip-training]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from loadgen import run_load
from serving_bench import HOST, real_features, running_server, workloads

MODEL = "models:/eurusd-direction@lightgbm"
CALLS = 50_000


def per_call_us(action: Callable[[], object], calls: int = CALLS, rounds: int = 5) -> float:
    """The median over ``rounds`` of the mean time of one call, in microseconds."""
    means = []
    for _ in range(rounds):
        started = time.perf_counter()
        for _ in range(calls):
            action()
        means.append((time.perf_counter() - started) / calls * 1e6)
    return statistics.median(means)


def in_process(shared_dir: Path) -> dict[str, dict[str, float]]:
    from prediction_provider.accounts.throttle import Throttle

    figures = {}
    for name, directory in (("memory", None), ("shared store", shared_dir)):
        limits = Throttle(None, "1000000000/minute", "5/15 minutes", "30/minute", 1_000_000, directory)

        def slot(limits: Throttle = limits) -> None:
            with limits.in_flight("user:1"):
                pass

        figures[name] = {
            "request_us": per_call_us(lambda limits=limits: limits.request("user:1")),
            "in_flight_us": per_call_us(slot),
        }
    return figures


@contextmanager
def environment(**variables: str | None) -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in variables}
    for name, value in variables.items():
        os.environ.pop(name, None) if value is None else os.environ.__setitem__(name, value)
    try:
        yield
    finally:
        for name, value in saved.items():
            os.environ.pop(name, None) if value is None else os.environ.__setitem__(name, value)


def through_predict(
    data_dir: Path, shared_dir: Path, sessions: int, rounds: int, duration_s: float
) -> dict[str, float]:
    """Median p50 per store. Each session starts both servers afresh, in turn first, as a server's
    own luck (its CPUs, its memory layout) would otherwise be counted as its store's cost."""
    from prediction_provider.app import build_services
    from prediction_provider.config import Settings

    services = build_services(Settings(data_dir=data_dir, demo_mode=True, grpc_enabled=False))
    features = real_features(services.cache.get(MODEL).model.signature.feature_names)
    del services
    stores: list[tuple[str, str | None]] = [("memory", None), ("shared store", str(shared_dir))]
    p50s: dict[str, list[float]] = {name: [] for name, _ in stores}
    for session in range(sessions):
        with ExitStack() as servers:
            requests = {}
            for name, directory in stores[session % 2 :] + stores[: session % 2]:
                with environment(PP_LIMITS_DIR=directory, PP_REDIS_URL=None):
                    port, _, api_key = servers.enter_context(running_server(data_dir, MODEL))
                requests[name] = (port, workloads(MODEL, features, port, api_key)[0].request)
            for _ in range(rounds):
                for name, (port, request) in requests.items():
                    load = run_load(HOST, port, request, concurrency=1, duration_s=duration_s, warmup_s=0.3)
                    assert not load.errors, load.errors
                    p50s[name].append(load.percentile_ms(50))
    return {name: statistics.median(values) for name, values in p50s.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--data-dir", type=Path, default=Path(".pp_data"), help="data dir (default .pp_data)")
    parser.add_argument("--sessions", type=int, default=4, help="times both servers are started")
    parser.add_argument("--rounds", type=int, default=4, help="alternating rounds per session")
    parser.add_argument("--duration", type=float, default=2.0, help="seconds per round")
    parser.add_argument("--skip-training", action="store_true", help="the data dir has the demo models")
    args = parser.parse_args(argv)
    from prediction_provider.config import Settings
    from prediction_provider.demo.training import train_demo_models

    if not args.skip_training:
        train_demo_models(Settings(data_dir=args.data_dir, demo_mode=True), progress=lambda message: None)
    with tempfile.TemporaryDirectory(prefix="pp-limits-") as tmp:
        calls = in_process(Path(tmp) / "in-process")
        for name, figures in calls.items():
            print(f"in process, {name}: request {figures['request_us']:.2f} µs, "
                  f"in-flight slot {figures['in_flight_us']:.2f} µs")  # fmt: skip
        served = through_predict(
            args.data_dir, Path(tmp) / "server", args.sessions, args.rounds, args.duration
        )
        for name, p50 in served.items():
            print(f"POST /predict c=1 p50, {name}: {p50 * 1000:.0f} µs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
