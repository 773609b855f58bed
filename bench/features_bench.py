"""Point-in-time feature latency on the real EURUSD hourly bars: cached and uncached snapshots.

    .venv/bin/python bench/features_bench.py [--symbol EURUSD] [--samples 2000]

Uncached: every call asks for a bar whose vector is not in the cache (a fresh
bar each time, cache_size 1), so it pays the feature computation on a
512-bar window. Cached: the same times asked again from a cache that holds
them. Also times the first load of the symbol (the feeder read) and, for
scale, ``compute_features`` on the whole history.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from datetime import datetime

from prediction_provider.features.feeders.samples import SampleFeeder
from prediction_provider.features.pipeline import WARMUP_BARS, compute_features
from prediction_provider.features.point_in_time import PointInTimeFeatures


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def timed_us(pit: PointInTimeFeatures, symbol: str, times: list[datetime | None]) -> list[float]:
    latencies = []
    for as_of in times:
        started = time.perf_counter()
        pit.snapshot(symbol, as_of)
        latencies.append((time.perf_counter() - started) * 1e6)
    return latencies


def report(label: str, latencies: list[float]) -> None:
    print(
        f"{label:<28} p50 {percentile(latencies, 0.50):8.1f} us   p95 {percentile(latencies, 0.95):8.1f} us"
        f"   p99 {percentile(latencies, 0.99):8.1f} us   mean {statistics.fmean(latencies):8.1f} us"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--symbol", default="EURUSD")
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()

    feeder = SampleFeeder()
    started = time.perf_counter()
    bars = feeder.bars(args.symbol, feeder.default_interval(args.symbol))
    print(f"{args.symbol}: {len(bars)} bars, first read {1e3 * (time.perf_counter() - started):.1f} ms")
    started = time.perf_counter()
    compute_features(bars)
    print(f"compute_features on the whole history: {1e3 * (time.perf_counter() - started):.2f} ms")

    usable = [stamp.to_pydatetime() for stamp in bars.index[WARMUP_BARS:]]
    rng = random.Random(args.seed)
    times = rng.sample(usable, min(args.samples, len(usable)))

    uncached = PointInTimeFeatures(feeder, cache_size=1)
    uncached.snapshot(args.symbol, usable[-1])  # load the series; not timed
    report("uncached snapshot", timed_us(uncached, args.symbol, list(times)))

    cached = PointInTimeFeatures(feeder, cache_size=len(usable))
    for as_of in times:
        cached.snapshot(args.symbol, as_of)
    report("cached snapshot", timed_us(cached, args.symbol, list(times)))
    report("cached snapshot, latest bar", timed_us(cached, args.symbol, [None] * len(times)))
    print(f"cache: {cached.hits} hits, {cached.misses} misses, {cached.cached_vectors()} vectors held")


if __name__ == "__main__":
    main()
