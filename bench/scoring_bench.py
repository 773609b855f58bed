"""Does scoring keep up with what is served?

1. Throughput: a fresh database (SQLite in a temp dir, or ``--database postgresql`` for a fresh
   PostgreSQL database on the local server) holding ``--records`` forecast records as the
   recorder writes them (one row per step: probabilities down/flat/up, value, ``interval_80`` in
   the answer) on several symbols and horizons, real bars in memory (``backtesting.test``'s EURUSD
   hourly and GOOG daily, indexed by close time, and EURUSD's inverse as a third symbol), a
   ``ManualClock`` after every target. ``Scorer.run(limit=5000)`` passes are timed until nothing
   is left. Target: at least 5,000 records scored per second.
2. Recording overhead: the server (demo models, answers kept per bar) started once with
   ``PP_RECORD_FORECASTS=false`` and once with recording on and the embedded scorer every second
   (``PP_SCORING_INTERVAL_S=1``; the demo's bars end in 2018, so every record is due at once), in
   alternating order over ``--rounds`` rounds, each driven with ``POST /predict {"symbol":
   "EURUSD", "horizons": [1, 3]}`` at c=64 by ``loadgen.py``. Target: requests/s with recording
   at least 0.95x without (the median of the rounds' ratios).

Run: ``.venv/bin/python bench/scoring_bench.py [--records N] [--database sqlite|postgresql|URL]
[--duration S] [--rounds N] [--data-dir DIR] [--skip-server] [--profile]``.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import platform
import pstats
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from forecast_bench import environment
from loadgen import build_request, run_load
from serving_bench import HOST, running_server

RESULTS = Path(__file__).parent / "results" / "scoring.json"
MODEL = "models:/eurusd-direction@lightgbm"
PASS_LIMIT = 5000
RECORDS_PER_S_TARGET = 5000.0
RATIO_TARGET = 0.95
CONCURRENCY = 64
POSTGRES_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


# -- 1. scoring throughput from cached bars ---------------------------------------------------------


@dataclass(frozen=True)
class Market:
    """One symbol's real bars, indexed by close time, and the horizons its forecasts ask for."""

    symbol: str
    interval: str
    step: timedelta
    horizons: tuple[int, ...]
    frame: pd.DataFrame

    def closed(self, until: datetime) -> pd.DataFrame:
        """The bars closed by ``until``, as ``PointInTimeFeatures.closed_bars`` slices them."""
        end = int(np.searchsorted(self.frame.index.asi8, pd.Timestamp(until).value, "right"))
        return self.frame.iloc[:end].copy()


def real_markets() -> dict[str, Market]:
    from backtesting.test import EURUSD, GOOG

    def by_close(frame: pd.DataFrame, step: timedelta) -> pd.DataFrame:
        closes = pd.DataFrame({"close": frame["Close"].to_numpy(dtype=np.float64)})
        closes.index = (pd.DatetimeIndex(frame.index).tz_localize("UTC") + step).as_unit("ns")
        closes.index.name = "close_time"
        return closes

    hour, day = timedelta(hours=1), timedelta(days=1)
    eurusd = by_close(EURUSD, hour)
    usdeur = eurusd.assign(close=1.0 / eurusd["close"])
    return {
        "EURUSD": Market("EURUSD", "1h", hour, (1, 3, 6, 12, 24), eurusd),
        "USDEUR": Market("USDEUR", "1h", hour, (1, 3, 6, 12, 24), usdeur),
        "GOOG": Market("GOOG", "1d", day, (1, 5), by_close(GOOG, day)),
    }


def forecast_rows(
    markets: dict[str, Market], records: int, user_id: int, seed: int = 19
) -> list[dict[str, Any]]:
    """``records`` rows as ``forecasts.records.record_rows`` writes them: one forecast per asked
    bar, one row per horizon step, ``data_as_of`` the close time of the bar the features read."""
    rng = np.random.default_rng(seed)
    rows: list[dict[str, Any]] = []
    names = list(markets)
    while len(rows) < records:
        market = markets[names[len(rows) % len(names)]]
        times = market.frame.index
        at = int(rng.integers(300, len(times) - max(market.horizons) - 1))
        data_as_of = times[at].to_pydatetime()
        created_at = data_as_of + timedelta(seconds=float(rng.uniform(0.5, 30)))
        forecast_id = str(uuid.uuid4())
        for row, horizon in enumerate(market.horizons):
            p_up = float(rng.uniform(0.2, 0.8))
            flat = float(rng.uniform(0.05, 0.2))
            probabilities = {"down": (1 - p_up) * (1 - flat), "flat": flat, "up": p_up * (1 - flat)}
            expected = float(rng.normal(0, 0.001 * horizon**0.5))
            interval_80 = [expected - 0.002 * horizon**0.5, expected + 0.002 * horizon**0.5]
            direction = max(probabilities, key=probabilities.__getitem__)
            target_time = data_as_of + horizon * market.step
            rows.append(
                {
                    "request_id": forecast_id, "row": row, "created_at": created_at, "channel": "predict",
                    "job_id": None, "user_id": user_id, "username": "bench-client",
                    "model_name": f"{market.symbol.lower()}-{market.interval}-forecast", "model_version": "1",
                    "role": "primary", "served_by": "primary", "symbol": market.symbol,
                    "interval": market.interval, "as_of": created_at, "data_as_of": data_as_of,
                    "horizon": horizon, "target_time": target_time, "feature_hash": "f" * 64,
                    "label": direction, "probabilities": probabilities, "value": expected,
                    "answer": {
                        "step": horizon, "target_time": target_time.isoformat(),
                        "direction": direction, "probabilities": probabilities,
                        "expected_return": expected, "interval_80": interval_80,
                    },
                    "latency_ms": 1.0, "status": "ok",
                }
            )  # fmt: skip
    return rows[:records]


@contextmanager
def fresh_database(choice: str) -> Iterator[str]:
    """A migrated, empty database: SQLite in a temp dir, a new PostgreSQL database (dropped after),
    or the URL given (which must be empty)."""
    from prediction_provider.db import migrate

    if choice == "sqlite":
        with tempfile.TemporaryDirectory(prefix="pp-scoring-bench-") as tmp:
            url = f"sqlite:///{Path(tmp) / 'provider.db'}"
            migrate.upgrade(url)
            yield url
        return
    if choice != "postgresql":
        migrate.upgrade(choice)
        yield choice
        return
    import psycopg

    admin = POSTGRES_ADMIN_URL.replace("postgresql+psycopg://", "postgresql://")
    name = f"pp_bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin, autocommit=True, connect_timeout=5) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    try:
        url = f"{POSTGRES_ADMIN_URL.rsplit('/', 1)[0]}/{name}"
        migrate.upgrade(url)
        yield url
    finally:
        with psycopg.connect(admin, autocommit=True, connect_timeout=5) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def throughput(records: int, database: str, profile: bool) -> dict[str, Any]:
    from sqlalchemy import func, insert, select

    from prediction_provider.clock import ManualClock
    from prediction_provider.config import Settings
    from prediction_provider.db.models import PredictionRecord, User
    from prediction_provider.db.outcome_models import PredictionScore
    from prediction_provider.db.session import Database
    from prediction_provider.outcomes.scoring import Scorer

    markets = real_markets()
    with fresh_database(database) as url, tempfile.TemporaryDirectory(prefix="pp-scoring-data-") as data:
        db = Database(url)
        with db.session() as session:
            user = User(username="bench-client", email="bench@localhost.localdomain", role="client",
                        is_active=True, password_hash="-")  # fmt: skip
            session.add(user)
            session.flush()
            user_id = user.id
        rows = forecast_rows(markets, records, user_id)
        started = time.perf_counter()
        with db.session() as session:
            for start in range(0, len(rows), 2000):
                session.execute(insert(PredictionRecord), rows[start : start + 2000])
        insert_s = time.perf_counter() - started
        last_close = max(market.frame.index[-1] for market in markets.values()).to_pydatetime()
        clock = ManualClock(last_close + timedelta(hours=1))
        settings = Settings(data_dir=Path(data), scoring_interval_s=0, database_url=url)

        def bars_of(symbol: str, interval: str | None, until: datetime) -> pd.DataFrame:
            return markets[symbol].closed(until)

        scorer = Scorer(db, clock, settings, bars_of, lambda symbol: markets[symbol].interval)
        profiler = cProfile.Profile() if profile else None
        passes: list[dict[str, Any]] = []
        while True:
            started, cpu = time.perf_counter(), time.process_time()
            if profiler is not None:
                profiler.enable()
            report = scorer.run(limit=PASS_LIMIT)
            if profiler is not None:
                profiler.disable()
            elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
            done = report.scored + report.void
            if done == 0:
                break
            passes.append({"records": done, "scored": report.scored, "void": report.void,
                           "pending": report.pending, "ms": elapsed * 1000,
                           "cpu_ms": cpu * 1000})  # fmt: skip
        with db.session() as session:
            total_scores = session.scalar(select(func.count()).select_from(PredictionScore))
        db.dispose()
    scored = sum(p["records"] for p in passes)
    total_s = sum(p["ms"] for p in passes) / 1000
    cpu_s = sum(p["cpu_ms"] for p in passes) / 1000
    found: dict[str, Any] = {
        "database": url.split(":", 1)[0] if database in ("sqlite", "postgresql") else database,
        "records": records,
        "insert_records_per_s": records / insert_s,
        "scored": scored,
        "score_rows": total_scores,
        "void": sum(p["void"] for p in passes),
        "passes": passes,
        "records_per_s": scored / total_s if total_s else 0.0,
        "records_per_cpu_s": scored / cpu_s if cpu_s else 0.0,
        "pass_ms_median": statistics.median(p["ms"] for p in passes) if passes else 0.0,
    }
    if profiler is not None:
        text = io.StringIO()
        pstats.Stats(profiler, stream=text).sort_stats("cumulative").print_stats(40)
        found["profile"] = text.getvalue()
    return found


# -- 2. recording overhead through the server --------------------------------------------------------


@contextmanager
def server(data_dir: Path, record: bool) -> Iterator[tuple[int, str, Path]]:
    """``running_server`` with recording on (scorer every second) or off; also yields the path of
    the server's SQLite database, found under a temp dir of our own."""
    variables = {"PP_RECORD_FORECASTS": "true" if record else "false", "PP_SCORING_INTERVAL_S": "1"}
    with tempfile.TemporaryDirectory(prefix="pp-scoring-server-") as parent, environment(**variables):
        saved = tempfile.tempdir
        tempfile.tempdir = parent  # running_server makes its database in a temp dir: ours
        try:
            with running_server(data_dir, MODEL) as (port, _, api_key):
                [database] = Path(parent).glob("pp-bench-*/provider.db")
                yield port, api_key, database
        finally:
            tempfile.tempdir = saved


def counts(database: Path) -> tuple[int, int]:
    """Records written and scores written so far, read beside the server (SQLite WAL readers)."""
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=10) as connection:
        recorded = connection.execute("SELECT count(*) FROM prediction_records").fetchone()[0]
        scored = connection.execute("SELECT count(*) FROM prediction_scores").fetchone()[0]
    return int(recorded), int(scored)


def server_pid() -> int:
    """The server ``running_server`` started: our child process whose command line says ``serve``."""
    children: list[int] = []
    for task in Path(f"/proc/{os.getpid()}/task").iterdir():
        children += [int(pid) for pid in (task / "children").read_text().split()]
    for pid in children:
        if b"serve" in Path(f"/proc/{pid}/cmdline").read_bytes():
            return pid
    raise RuntimeError("the server process was not found")


def cpu_s(pid: int) -> float:
    """User plus system CPU seconds of a process, all its threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(data_dir: Path, record: bool, duration_s: float, warmup_s: float) -> dict[str, Any]:
    """One server under load; with recording, also until every answer is recorded and scored, so
    that the server's CPU per answer counts the deferred work (writer and scorer) too."""
    body = json.dumps({"symbol": "EURUSD", "horizons": [1, 3]}).encode()
    with server(data_dir, record) as (port, api_key, database):
        pid = server_pid()
        request = build_request("POST", "/predict", HOST, port, body, headers={"X-API-KEY": api_key})
        run_load(HOST, port, request, concurrency=8, duration_s=1.0, warmup_s=0.5)  # warm, unrecorded
        recorded, scored = counts(database)
        settled = time.perf_counter() + 60
        while record and (scored < recorded or recorded == 0) and time.perf_counter() < settled:
            time.sleep(0.2)  # the warm-up's records scored first
            recorded, scored = counts(database)
        before, cpu = recorded, cpu_s(pid)
        load = run_load(
            HOST, port, request, concurrency=CONCURRENCY, duration_s=duration_s, warmup_s=warmup_s
        )
        answered = load.answered or load.requests
        found: dict[str, Any] = {
            "record": record,
            "requests_per_s": load.requests_per_s,
            "p50_ms": load.percentile_ms(50),
            "p99_ms": load.percentile_ms(99),
            "requests": load.requests,
            "answered": answered,
            "errors": {str(status): count for status, count in load.errors.items()},
        }
        recorded, scored = counts(database)
        found["records_at_end"], found["scores_at_end"] = recorded - before, scored - before
        found["cpu_ms_per_answer_load"] = (cpu_s(pid) - cpu) * 1000 / answered
        if record:
            expected = before + 2 * answered  # two horizons, two records an answer
            waited = time.perf_counter()
            while (recorded < expected or scored < recorded) and time.perf_counter() - waited < 120:
                time.sleep(0.2)
                recorded, scored = counts(database)
            found["drain_s"] = time.perf_counter() - waited
            found["records"], found["scores"] = recorded - before, scored - before
        found["cpu_ms_per_answer"] = (cpu_s(pid) - cpu) * 1000 / answered
    return found


def overhead(data_dir: Path, rounds: int, duration_s: float, warmup_s: float) -> dict[str, Any]:
    runs: list[dict[str, Any]] = []
    ratios: list[float] = []
    costs: list[float] = []  # server CPU per answer, off over on
    for index in range(rounds):
        order = (True, False) if index % 2 == 0 else (False, True)
        pair = {record: measure(data_dir, record, duration_s, warmup_s) for record in order}
        runs.extend(pair[record] for record in order)
        ratios.append(pair[True]["requests_per_s"] / pair[False]["requests_per_s"])
        costs.append(pair[False]["cpu_ms_per_answer"] / pair[True]["cpu_ms_per_answer"])
        print(f"  round {index + 1}: on {pair[True]['requests_per_s']:.0f} req/s, "
              f"off {pair[False]['requests_per_s']:.0f} req/s, ratio {ratios[-1]:.3f}; server CPU "
              f"per answer on {pair[True]['cpu_ms_per_answer']:.3f} ms (recorded and scored), "
              f"off {pair[False]['cpu_ms_per_answer']:.3f} ms, off/on {costs[-1]:.3f}")  # fmt: skip
    return {"runs": runs, "ratios": ratios, "ratio_median": statistics.median(ratios),
            "cpu_ratios": costs, "cpu_ratio_median": statistics.median(costs)}  # fmt: skip


# -- report --------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--records", type=int, default=20_000, help="forecast records to score")
    parser.add_argument("--database", default="sqlite", help="sqlite | postgresql | a URL (empty db)")
    parser.add_argument("--profile", action="store_true", help="cProfile the scoring passes")
    parser.add_argument("--data-dir", type=Path, default=Path(".pp_data"), help="data dir (default .pp_data)")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per server measurement")
    parser.add_argument("--warmup", type=float, default=1.0, help="unrecorded seconds before each")
    parser.add_argument("--rounds", type=int, default=4, help="on/off rounds, order alternating")
    parser.add_argument("--skip-server", action="store_true", help="throughput only")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    results: dict[str, Any] = {"machine": platform.node(), "at": datetime.now(UTC).isoformat()}
    print(f"Scoring {args.records} records from cached bars ({args.database}), passes of {PASS_LIMIT}:")
    scoring = throughput(args.records, args.database, args.profile)
    results["throughput"] = {name: value for name, value in scoring.items() if name != "profile"}
    for number, one in enumerate(scoring["passes"], 1):
        print(
            f"  pass {number}: {one['records']} records ({one['void']} void) in {one['ms']:.0f} ms "
            f"({one['cpu_ms']:.0f} ms CPU)"
        )
    verdict = "met" if scoring["records_per_s"] >= RECORDS_PER_S_TARGET else "NOT met"
    print(f"  {scoring['records_per_s']:.0f} records/s, median pass {scoring['pass_ms_median']:.0f} ms "
          f"(target >= {RECORDS_PER_S_TARGET:.0f}/s: {verdict}); {scoring['records_per_cpu_s']:.0f} records "
          f"per CPU second; {scoring['score_rows']} score rows")  # fmt: skip
    if "profile" in scoring:
        print(scoring["profile"])
    failed = scoring["score_rows"] != args.records
    if not args.skip_server:
        from prediction_provider.config import Settings
        from prediction_provider.demo.training import train_demo_models

        train_demo_models(Settings(data_dir=args.data_dir, demo_mode=True), progress=lambda message: None)
        print(f"POST /predict EURUSD horizons [1, 3] at c={CONCURRENCY}, "
              "recording on (scorer every 1 s) / off:")  # fmt: skip
        served = overhead(args.data_dir, args.rounds, args.duration, args.warmup)
        results["overhead"] = served
        for run in served["runs"]:
            line = (f"  recording {'on ' if run['record'] else 'off'}: {run['requests_per_s']:.0f} req/s, "
                    f"p50 {run['p50_ms']:.2f} ms, p99 {run['p99_ms']:.2f} ms, "
                    f"{run['answered']} answers, at end of load {run['records_at_end']} recorded "
                    f"and {run['scores_at_end']} scored")  # fmt: skip
            if run["record"]:
                line += f", all {run['scores']} scored {run['drain_s']:.1f} s later"
            print(line)
            failed = failed or bool(run["errors"])
        verdict = "met" if served["ratio_median"] >= RATIO_TARGET else "NOT met"
        print(f"  median ratio on/off {served['ratio_median']:.3f} (target >= {RATIO_TARGET}: {verdict}); "
              f"median server CPU per answer, off/on {served['cpu_ratio_median']:.3f}")  # fmt: skip
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2, default=str))
    print(f"written {args.output}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
