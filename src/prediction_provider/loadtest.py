"""``prediction-provider loadtest``: drive ``POST /api/v1/predict`` and report latency and outcomes.

A closed loop: ``concurrency`` workers share one budget of ``requests``; each
sends a decision request, waits for the whole answer, records it and sends the
next. Latency is measured per request on the client, so it includes the
network and the client itself (httpx costs a few hundred microseconds a
request; ``bench/decision_bench.py`` uses a leaner client for server figures).

The report: mean, median, min, max and the 50/75/90/95/99th percentiles of
latency (nearest rank, in milliseconds), the success rate (2xx answers over
requests sent), every status seen, and the distribution of actions over the
successful decisions. Risk rejections (403 ``risk_rejected``) are counted as
such, apart from other failures.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import statistics
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import orjson
import typer

DECISION_PATH = "/api/v1/predict"
PERCENTILES = (50, 75, 90, 95, 99)


def decision_url(url: str) -> str:
    """A bare server address gets the decision path; a URL with a path is used as given."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"expected an http(s) URL, got {url!r}")
    if parts.path in ("", "/"):
        parts = parts._replace(path=DECISION_PATH)
    return urlunsplit(parts)


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile: an observed value, no interpolation; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))
    return ordered[rank]


@dataclass(slots=True)
class LoadTestResult:
    url: str
    concurrency: int
    latencies_ms: list[float] = field(default_factory=list)
    statuses: Counter[str] = field(default_factory=Counter)
    actions: Counter[str] = field(default_factory=Counter)
    risk_rejections: int = 0
    elapsed_s: float = 0.0

    @property
    def requests(self) -> int:
        return sum(self.statuses.values())

    @property
    def successes(self) -> int:
        return sum(count for status, count in self.statuses.items() if status.startswith("2"))

    def summary(self) -> dict[str, Any]:
        latencies = self.latencies_ms
        successes = self.successes
        stats: dict[str, float | None] = {
            "mean": statistics.fmean(latencies) if latencies else None,
            "median": statistics.median(latencies) if latencies else None,
            "min": min(latencies) if latencies else None,
            "max": max(latencies) if latencies else None,
        }
        stats.update({f"p{q}": percentile(latencies, q) if latencies else None for q in PERCENTILES})
        return {
            "url": self.url,
            "requests": self.requests,
            "concurrency": self.concurrency,
            "successes": successes,
            "success_rate": successes / self.requests if self.requests else 0.0,
            "risk_rejections": self.risk_rejections,
            "statuses": dict(sorted(self.statuses.items())),
            "actions": {
                action: {"count": count, "share": count / successes if successes else 0.0}
                for action, count in sorted(self.actions.items())
            },
            "latency_ms": stats,
            "elapsed_s": self.elapsed_s,
            "requests_per_s": self.requests / self.elapsed_s if self.elapsed_s > 0 else 0.0,
        }


def decision_bodies(
    symbols: Sequence[str], account: str | None = None, explain: bool = False, risk_check: bool = True
) -> list[bytes]:
    """One request body per symbol; workers take them in turn."""
    if not symbols:
        raise ValueError("name at least one symbol")
    bodies = []
    for symbol in symbols:
        body: dict[str, Any] = {"symbol": symbol, "risk_check": risk_check, "explain": explain}
        if account:
            body["account"] = account
        bodies.append(orjson.dumps(body))
    return bodies


async def run_loadtest(
    url: str,
    *,
    requests: int,
    concurrency: int,
    bodies: Sequence[bytes],
    api_key: str | None = None,
    timeout_s: float = 30.0,
) -> LoadTestResult:
    if requests < 1 or concurrency < 1:
        raise ValueError("requests and concurrency must be at least 1")
    target = decision_url(url)
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["X-API-KEY"] = api_key
    result = LoadTestResult(url=target, concurrency=concurrency)
    budget = itertools.count()
    rotation = itertools.cycle(bodies)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async def worker(client: httpx.AsyncClient) -> None:
        while next(budget) < requests:
            body = next(rotation)
            started = time.perf_counter()
            try:
                response = await client.post(target, content=body, headers=headers)
            except httpx.HTTPError as exc:
                result.statuses[type(exc).__name__] += 1
                continue
            result.latencies_ms.append((time.perf_counter() - started) * 1000.0)
            result.statuses[str(response.status_code)] += 1
            _record_outcome(result, response)

    started = time.perf_counter()
    async with httpx.AsyncClient(timeout=timeout_s, limits=limits) as client, asyncio.TaskGroup() as group:
        for _ in range(min(concurrency, requests)):
            group.create_task(worker(client))
    result.elapsed_s = time.perf_counter() - started
    return result


def _record_outcome(result: LoadTestResult, response: httpx.Response) -> None:
    try:
        body = response.json()
    except ValueError:
        return
    if not isinstance(body, dict):
        return
    if response.is_success and isinstance(body.get("action"), str):
        result.actions[body["action"]] += 1
    elif response.status_code == 403:
        error = body.get("error")
        if isinstance(error, dict) and error.get("code") == "risk_rejected":
            result.risk_rejections += 1


def render(summary: dict[str, Any]) -> Any:
    """The summary as a rich table: latency figures, then outcomes."""
    from rich.table import Table

    table = Table("figure", "value", title=f"{summary['requests']} requests to {summary['url']}")
    for name, value in summary["latency_ms"].items():
        table.add_row(f"latency {name} (ms)", "-" if value is None else f"{value:,.3f}")
    table.add_row("success rate", f"{summary['success_rate']:.1%}")
    table.add_row("requests/s", f"{summary['requests_per_s']:,.1f}")
    table.add_row(
        "statuses", ", ".join(f"{status}: {count}" for status, count in summary["statuses"].items())
    )
    table.add_row("risk rejections", str(summary["risk_rejections"]))
    for action, share in summary["actions"].items():
        table.add_row(f"action {action}", f"{share['count']} ({share['share']:.1%})")
    return table


def loadtest_command(
    url: Annotated[str, typer.Option(help="Server address (http://host:port) or the full decision URL.")],
    requests: Annotated[int, typer.Option(min=1, help="Requests to send in all.")] = 1000,
    concurrency: Annotated[int, typer.Option(min=1, help="Requests in flight at once.")] = 8,
    output: Annotated[Path | None, typer.Option(help="Write the summary here as JSON.")] = None,
    api_key: Annotated[
        str | None, typer.Option(envvar="PP_API_KEY", help="Sent as X-API-KEY (or set PP_API_KEY).")
    ] = None,
    symbol: Annotated[list[str] | None, typer.Option(help="Symbol to decide on (repeatable).")] = None,
    account: Annotated[str | None, typer.Option(help="Trading account to size and check against.")] = None,
    explain: Annotated[bool, typer.Option(help="Ask for per-feature contributions too.")] = False,
    timeout: Annotated[float, typer.Option(min=0.1, help="Seconds before one request gives up.")] = 30.0,
) -> None:
    """Load-test POST /api/v1/predict: latency percentiles, success rate, action distribution."""
    from rich.console import Console

    console = Console()
    try:
        bodies = decision_bodies(symbol or ["EURUSD"], account, explain)
        result = asyncio.run(
            run_loadtest(
                url,
                requests=requests,
                concurrency=concurrency,
                bodies=bodies,
                api_key=api_key,
                timeout_s=timeout,
            )
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    summary = result.summary()
    console.print(render(summary))
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_bytes(orjson.dumps(summary, option=orjson.OPT_INDENT_2))
        console.print(f"summary written to {output}")
    if result.successes == 0:
        raise typer.Exit(1)
