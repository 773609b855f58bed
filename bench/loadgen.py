"""A small closed-loop HTTP/1.1 load generator for benchmarking the server on loopback.

Why not an off-the-shelf client: httpx/aiohttp spend more CPU per request than
the server under test does on a small model, and on a 2-core machine the client
shares the CPU with the server. This generator keeps the client side as cheap
as it can be: the request bytes are built once, each connection is kept alive,
and a response is parsed only as far as its status line and Content-Length.

Closed loop: each of N connections sends a request, waits for the whole
response, records the latency and sends the next one, so the offered load is
N requests in flight at all times. Every loop is bounded by a deadline and by
a request count, and every read by a timeout.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass, field

LOOPBACK_HOSTS = frozenset({"127.0.0.1"})
MAX_HEADER_BYTES = 64 * 1024


@dataclass(slots=True)
class LoadResult:
    """Latencies of the measured requests and the statuses other than 200."""

    concurrency: int
    elapsed_s: float
    latencies_ns: list[int] = field(default_factory=list)
    errors: Counter[int] = field(default_factory=Counter)
    sample_body: bytes | None = None
    # Every OK answer of the run, warm-up included (what a paid run must have charged); None
    # where the generator cannot tell (h2load).
    answered: int | None = None

    @property
    def requests(self) -> int:
        return len(self.latencies_ns)

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    @property
    def requests_per_s(self) -> float:
        return self.requests / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def percentile_ms(self, q: float) -> float:
        """Nearest-rank latency percentile in milliseconds; NaN when nothing was measured."""
        return percentile(self.latencies_ns, q) / 1e6


def percentile(values: Sequence[int | float], q: float) -> float:
    """Nearest-rank percentile (an observed value, no interpolation); NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = min(len(ordered) - 1, max(0, math.ceil(q / 100.0 * len(ordered)) - 1))
    return float(ordered[rank])


def build_request(
    method: str,
    path: str,
    host: str,
    port: int,
    body: bytes = b"",
    content_type: str = "application/json",
    headers: Mapping[str, str] | None = None,
) -> bytes:
    """The full request, built once so that the loop only writes bytes; ``headers`` are added as given."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}:{port}", "Connection: keep-alive"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    if body or method in {"POST", "PUT", "PATCH"}:
        lines += [f"Content-Type: {content_type}", f"Content-Length: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii") + body


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """Status and body of one response; only Content-Length framing is supported.

    Uvicorn frames every Starlette ``Response`` with Content-Length, so chunked
    encoding is reported as an error rather than parsed.
    """
    head = await reader.readuntil(b"\r\n\r\n")
    status_line, _, header_block = head.partition(b"\r\n")
    parts = status_line.split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
        raise ConnectionError(f"malformed status line: {status_line[:100]!r}")
    status = int(parts[1])
    length: int | None = None
    for line in header_block.split(b"\r\n"):
        name, _, value = line.partition(b":")
        lowered = name.strip().lower()
        if lowered == b"content-length":
            length = int(value.strip())
        elif lowered == b"transfer-encoding" and value.strip().lower() != b"identity":
            raise ConnectionError(f"unsupported transfer-encoding {value.strip()!r}")
    if length is None:
        raise ConnectionError("response without Content-Length")
    body = await reader.readexactly(length) if length else b""
    return status, body


@dataclass(slots=True)
class ClosedLoop:
    """State shared by the workers of one closed-loop run (one event loop, so no locks).

    Transport-independent, so that other load generators (``grpc_loadgen.py``)
    share the same budget, warm-up and recording rules as this one.
    """

    request: bytes
    measure_from_ns: int
    deadline_ns: int
    remaining: int
    timeout_s: float
    result: LoadResult
    last_done_ns: int = 0

    @classmethod
    def start(
        cls,
        host: str,
        request: bytes,
        *,
        concurrency: int,
        duration_s: float,
        warmup_s: float,
        max_requests: int,
        timeout_s: float,
    ) -> ClosedLoop:
        """Check the arguments and start the clock: the warm-up begins now."""
        if host not in LOOPBACK_HOSTS:
            raise ValueError(f"this load generator only targets loopback, not {host!r}")
        if concurrency < 1 or duration_s <= 0 or warmup_s < 0 or max_requests < 1:
            raise ValueError("concurrency, duration and max_requests must be positive")
        measure_from = time.perf_counter_ns() + int(warmup_s * 1e9)
        return cls(
            request=request,
            measure_from_ns=measure_from,
            deadline_ns=measure_from + int(duration_s * 1e9),
            remaining=max_requests,
            timeout_s=timeout_s,
            result=LoadResult(concurrency=concurrency, elapsed_s=0.0, answered=0),
        )

    def take(self) -> bool:
        """Claim one request from the count budget, unless the deadline has passed."""
        if self.remaining <= 0 or time.perf_counter_ns() >= self.deadline_ns:
            return False
        self.remaining -= 1
        return True

    def record(
        self, started_ns: int, done_ns: int, status: int, body: bytes, *, ok_status: int = 200
    ) -> None:
        """Record one answered request, unless it started during the warm-up."""
        if status == ok_status and self.result.answered is not None:
            self.result.answered += 1
        if started_ns < self.measure_from_ns:
            return  # warm-up: connections, caches and the allocator settle first
        self.result.latencies_ns.append(done_ns - started_ns)
        self.last_done_ns = max(self.last_done_ns, done_ns)
        if status != ok_status:
            self.result.errors[status] += 1
        elif self.result.sample_body is None:
            self.result.sample_body = body

    def finish(self) -> LoadResult:
        """The result, its throughput measured from the end of the warm-up to the last response."""
        if self.last_done_ns > self.measure_from_ns:
            self.result.elapsed_s = (self.last_done_ns - self.measure_from_ns) / 1e9
        return self.result


async def _connection(host: str, port: int, run: ClosedLoop) -> None:
    async with asyncio.timeout(run.timeout_s):
        reader, writer = await asyncio.open_connection(host, port, limit=MAX_HEADER_BYTES)
    try:
        while run.take():
            started = time.perf_counter_ns()
            async with asyncio.timeout(run.timeout_s):
                writer.write(run.request)
                await writer.drain()
                status, body = await read_response(reader)
            run.record(started, time.perf_counter_ns(), status, body)
    finally:
        writer.close()
        with suppress(OSError):
            await writer.wait_closed()


async def run_load_async(
    host: str,
    port: int,
    request: bytes,
    *,
    concurrency: int,
    duration_s: float,
    warmup_s: float = 1.0,
    max_requests: int = 1_000_000,
    timeout_s: float = 30.0,
) -> LoadResult:
    """Drive ``concurrency`` keep-alive connections for ``warmup_s + duration_s`` seconds.

    Requests started during the warm-up are sent but not recorded; ``max_requests``
    counts them too. Throughput is the recorded requests over the time from the
    end of the warm-up to the last recorded response.
    """
    run = ClosedLoop.start(
        host,
        request,
        concurrency=concurrency,
        duration_s=duration_s,
        warmup_s=warmup_s,
        max_requests=max_requests,
        timeout_s=timeout_s,
    )
    async with asyncio.TaskGroup() as group:
        for _ in range(concurrency):
            group.create_task(_connection(host, port, run))
    return run.finish()


def run_load(
    host: str,
    port: int,
    request: bytes,
    *,
    concurrency: int,
    duration_s: float,
    warmup_s: float = 1.0,
    max_requests: int = 1_000_000,
    timeout_s: float = 30.0,
) -> LoadResult:
    """Synchronous wrapper of ``run_load_async`` with its own event loop.

    uvloop, when installed, cuts the client's CPU time per request; on a small
    machine the client shares the cores with the server, so that matters.
    """
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(
            run_load_async(
                host,
                port,
                request,
                concurrency=concurrency,
                duration_s=duration_s,
                warmup_s=warmup_s,
                max_requests=max_requests,
                timeout_s=timeout_s,
            )
        )


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's event loop factory when it is installed, else None (asyncio's default loop)."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop
