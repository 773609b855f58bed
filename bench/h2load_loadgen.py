"""Closed-loop load from h2load (Debian's ``nghttp2-client``): one C client for HTTP/1.1 and gRPC.

Why a C client: on a 2-core machine the client shares the cores with the
server under test, so its CPU cost per request lowers every figure. The
asyncio HTTP/1.1 client (``loadgen.py``) is cheap; the ``grpc.aio`` client
(``grpc_loadgen.py``) is not, and took a third of a core at 2,500 calls/s, so
gRPC servers were measured with less CPU left than REST servers. h2load speaks
both (``--h1`` for HTTP/1.1; gRPC is HTTP/2 with a 5-byte frame around each
message), so every server and protocol is driven by the same client.

Closed loop, with the other generators' rules (``loadgen.ClosedLoop``):
``concurrency`` connections with one request in flight each (``-c N -m 1``),
for ``warmup_s + duration_s``; the requests that started during the warm-up
are sent but not recorded, and throughput is the recorded requests over the
time from the end of the warm-up to the last recorded answer. h2load's
per-request log (``--log-file``: start, status, duration) gives all of that.

h2load does not read gRPC trailers, so a gRPC error (HTTP 200 with a
``grpc-status`` trailer and no message) would count as a success. Every
answer to a given request has the same size here, so the answers that did not
bring ``reply_bytes`` of DATA are counted as errors instead.
"""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from loadgen import LOOPBACK_HOSTS, LoadResult

H2LOAD = "h2load"
GRPC_HEADERS = {"content-type": "application/grpc", "te": "trailers"}
# gRPC status for answers that came without the expected message: UNKNOWN.
NO_MESSAGE = 2
# HTTP status slot for requests that got no HTTP answer at all (reset, refused, timed out).
NO_ANSWER = 0

_DONE = re.compile(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
                   r"(\d+) errored, (\d+) timeout")  # fmt: skip
_DATA = re.compile(r"traffic: .* \((\d+)\) data")


class H2LoadUnavailable(RuntimeError):
    """h2load is not installed (``apt install nghttp2-client``)."""


def h2load_path() -> str:
    path = shutil.which(H2LOAD)
    if path is None:
        raise H2LoadUnavailable("h2load is not on PATH; install it with: apt install nghttp2-client")
    return path


def h2load_version() -> str:
    """``nghttp2/1.52.0``, for the results file."""
    out = subprocess.run([h2load_path(), "--version"], capture_output=True, text=True, check=True, timeout=10)
    return out.stdout.strip().removeprefix("h2load ").strip()


def grpc_frame(message: bytes) -> bytes:
    """The message as gRPC sends it over HTTP/2: uncompressed flag, big-endian length, bytes."""
    return b"\x00" + struct.pack(">I", len(message)) + message


@dataclass(frozen=True, slots=True)
class H2Request:
    """What every request of one run sends: path, body and headers (gRPC metadata included)."""

    path: str
    body: bytes
    headers: Mapping[str, str] = field(default_factory=dict)
    grpc: bool = False
    reply_bytes: int | None = None  # gRPC: the DATA bytes of one good answer (frame included)

    def __post_init__(self) -> None:
        if self.grpc and not self.reply_bytes:
            raise ValueError("a gRPC run needs reply_bytes, the size of a good answer")


def h2load_command(
    host: str, port: int, request: H2Request, body_file: Path, concurrency: int, duration_s: float,
    log_file: Path, timeout_s: float,
) -> list[str]:  # fmt: skip
    headers = {**(GRPC_HEADERS if request.grpc else {"content-type": "application/json"}), **request.headers}
    command = [
        h2load_path(),
        "--clients", str(concurrency),
        "--max-concurrent-streams", "1",
        "--threads", "1",
        "--duration", f"{max(1, round(duration_s * 1000))}ms",
        "--connection-inactivity-timeout", f"{max(1, round(timeout_s))}",
        "--data", str(body_file),
    ]  # fmt: skip
    if not request.grpc:
        command.append("--h1")
    command.append(f"--log-file={log_file}")
    for name, value in headers.items():
        command += ["--header", f"{name}: {value}"]
    return [*command, f"http://{host}:{port}{request.path}"]


def parse_summary(output: str) -> tuple[dict[str, int], int]:
    """h2load's request counters and the DATA bytes it received."""
    done = _DONE.search(output)
    data = _DATA.search(output)
    if done is None or data is None:
        raise RuntimeError(f"unexpected h2load output:\n{output[-2000:]}")
    names = ("total", "started", "done", "succeeded", "failed", "errored", "timeout")
    return dict(zip(names, map(int, done.groups()), strict=True)), int(data.group(1))


def parse_log(text: str) -> list[tuple[int, int, int]]:
    """``--log-file`` lines: start (µs since the epoch), HTTP status, duration (µs)."""
    entries = []
    for line in text.splitlines():
        if line.strip():
            start, status, duration = line.split("\t")[:3]
            entries.append((int(start), int(status), int(duration)))
    return entries


def measured(entries: list[tuple[int, int, int]], warmup_s: float, concurrency: int) -> LoadResult:
    """Latencies and throughput of the requests that started after the warm-up, as ``ClosedLoop``
    records them; errors are left to the caller, which counts them over the whole run."""
    result = LoadResult(concurrency=concurrency, elapsed_s=0.0)
    if not entries:
        return result
    measure_from = min(start for start, _, _ in entries) + round(warmup_s * 1e6)
    last_done = measure_from
    for start, _, duration in entries:
        if start >= measure_from:
            result.latencies_ns.append(duration * 1000)
            last_done = max(last_done, start + duration)
    result.elapsed_s = (last_done - measure_from) / 1e6
    return result


def run_h2load(
    host: str,
    port: int,
    request: H2Request,
    *,
    concurrency: int,
    duration_s: float,
    warmup_s: float = 1.0,
    timeout_s: float = 30.0,
) -> LoadResult:
    """One h2load run of ``warmup_s + duration_s``; errors keyed by HTTP status (``NO_ANSWER``
    for none), or ``NO_MESSAGE`` for gRPC answers without a message.

    Errors are counted over the whole run, warm-up included: the byte count that
    reveals gRPC errors covers every answer.
    """
    if host not in LOOPBACK_HOSTS:
        raise ValueError(f"this load generator only targets loopback, not {host!r}")
    if concurrency < 1 or duration_s <= 0 or warmup_s < 0:
        raise ValueError("concurrency and duration must be positive, warm-up not negative")
    with tempfile.TemporaryDirectory(prefix="h2load-") as scratch:
        body_file = Path(scratch) / "body"
        body_file.write_bytes(grpc_frame(request.body) if request.grpc else request.body)
        log_file = Path(scratch) / "requests.log"
        seconds = warmup_s + duration_s
        command = h2load_command(host, port, request, body_file, concurrency, seconds, log_file, timeout_s)
        finished = subprocess.run(command, capture_output=True, text=True, timeout=seconds + timeout_s + 30)
        if finished.returncode != 0:
            raise RuntimeError(f"h2load exited with {finished.returncode}:\n{finished.stderr[-2000:]}")
        counts, data_bytes = parse_summary(finished.stdout)
        entries = parse_log(log_file.read_text())
    if len(entries) != counts["done"]:
        raise RuntimeError(f"h2load logged {len(entries)} requests but reports {counts['done']} done")
    result = measured(entries, warmup_s, concurrency)
    result.errors.update(status for _, status, _ in entries if status != 200)
    if counts["errored"] or counts["timeout"]:
        result.errors[NO_ANSWER] += counts["errored"] + counts["timeout"]
    if request.grpc and request.reply_bytes:
        answered = sum(1 for _, status, _ in entries if status == 200)
        if data_bytes != answered * request.reply_bytes:
            with_message = min(answered, data_bytes // request.reply_bytes)
            result.errors[NO_MESSAGE] += max(1, answered - with_message)
    return result
