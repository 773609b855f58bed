"""Prediction Provider's three protocols against MLServer 1.7, on the same LightGBM model.

Measures, in one run:

1. the in-process floor: ``model.predict`` on the object the server builds,
   1 real EURUSD row (p50) and 1024 rows (rows/s);
2. Prediction Provider (``prediction-provider serve`` in a subprocess) over its
   native REST API (``/predict``, ``/predict/batch``), Open Inference Protocol
   v2 REST and v2 gRPC, in its configurations: 1 and 2 worker processes, each
   unpinned and pinned (``--pin-workers``: each worker on a CPU of its own), and,
   when ``scripts/build_grpc_frontend.sh`` has built it, each again with the native
   gRPC front end (``--grpc-frontend native``), which changes gRPC alone and so is
   measured over gRPC only;
3. MLServer 1.7.1 (its own virtual environment under ``bench/results``, made on
   the first run) serving the same ``model.lgb`` over v2 REST and v2 gRPC, in eight
   configurations: parallel workers 0, 1, 2, each with adaptive batching off and on,
   and its single process (workers 0) pinned to one CPU, as pinning helps a server
   whose threads hand work to each other; batching off and on;
4. a bare grpcio server (``bare_grpc_server.py``) that answers every call with
   one fixed reply: the most any Python grpcio server can do on this machine;
5. with ``--paid``, paid predictions: one more Prediction Provider server (workers=1) on the
   bench database, native REST ``/predict`` of 1 row at c=1, 8 and 64 with the model free, then
   priced (a platform offer at 0.0001 USD, set while the server runs; the bench client funded),
   each answer charged and durable before the response; then the charges in the journal
   against the answers the load generator counted, warm-up included, and ``check_ledger``.

Every server gets the same closed loads: 1 row at concurrency 1, 8 and 64, and
1024 rows at concurrency 1 (the bare server: single rows only). The run prints
one table of every figure, then each server in its best configuration per load
(Prediction Provider against MLServer over v2 REST, which the targets use, and
gRPC against MLServer's gRPC), and the targets. Results also go to ``bench/results/protocols.json``.

Every load comes from the same generator: h2load (``h2load_loadgen.py``) when it
is installed, else (or with ``--client python``) the Python clients, ``loadgen.py``
for REST and ``grpc_loadgen.py`` for gRPC.

Run: ``.venv/bin/python bench/protocols_bench.py [--duration S] [--skip-mlserver]``.
The client runs on the same machine as the servers and takes CPU from them, so
on a small machine the high-concurrency figures measure client and server together.
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import os
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import venv
from collections import Counter
from collections.abc import Collection, Iterator, Sequence
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import pandas as pd
from rich.console import Console
from rich.table import Table

import grpc_loadgen
from grpc_loadgen import CHANNEL_OPTIONS, model_infer_method, model_infer_request, run_grpc_load
from h2load_loadgen import H2LOAD, H2Request, grpc_frame, h2load_version, run_h2load
from loadgen import LoadResult, build_request, percentile, run_load
from serving_bench import fmt, log_tail, real_features, run_meta, time_calls, verdict

if TYPE_CHECKING:
    from prediction_provider.config import Settings

HOST = "127.0.0.1"
MODEL_NAME = "eurusd-direction"
MODEL_VERSION = "lightgbm"  # an alias: Prediction Provider and MLServer both answer to it in the v2 path
MODEL_REF = f"models:/{MODEL_NAME}@{MODEL_VERSION}"
INPUT_NAME = "input-0"
V2_INFER_PATH = f"/v2/models/{MODEL_NAME}/versions/{MODEL_VERSION}/infer"
BATCH_ROWS = 1024
SINGLE_ROW_CONCURRENCIES = (1, 8, 64)

PP = "Prediction Provider"
MLSERVER = "MLServer"
BARE_GRPC = "bare grpcio"
NATIVE_REST, V2_REST, V2_GRPC = "native REST", "v2 REST", "v2 gRPC"
PP_PROTOCOLS = (NATIVE_REST, V2_REST, V2_GRPC)

MLSERVER_REQUIREMENTS = ("mlserver==1.7.1", "mlserver-lightgbm==1.7.1", "uvloop==0.21.0")
MLSERVER_WORKERS = (0, 1, 2)
# Prediction Provider is measured in its configurations too (worker processes), as MLServer is in
# its own: each server's best configuration per load is what the targets compare.
PP_WORKERS = (1, 2)
PIN_CHOICES = ("off", "on")
GRPC_FRONTENDS = ("python", "native")
# Adaptive batching "on" uses Prediction Provider's own defaults: 64 requests, 2 ms.
MLSERVER_MAX_BATCH_SIZE = 64
MLSERVER_MAX_BATCH_TIME_S = 0.002

HIGH_CONCURRENCY = max(SINGLE_ROW_CONCURRENCIES)
THROUGHPUT_RATIO_TARGET = 2.0  # at HIGH_CONCURRENCY: PP req/s >= 2x MLServer's best
P99_RATIO_TARGET = 0.5  # at HIGH_CONCURRENCY: PP p99 <= 0.5x that configuration's p99
FLOOR_RATIO_TARGET = 0.95  # 1024 rows: PP rows/s >= 0.95x in-process model.predict
PROBABILITY_TOLERANCE = 1e-9
BUSY_LOAD_AVERAGE = 0.7  # 1-min load average at start above which the run warns that it had company

# Prediction Provider authenticates every prediction. "api-key": the benchmark's own user sends
# X-API-KEY (gRPC metadata x-api-key), as a client would; "anonymous": PP_REQUIRE_AUTH=false.
AUTH_MODES = ("api-key", "anonymous")
PYTHON_CLIENTS = "python"
CLIENTS = (H2LOAD, PYTHON_CLIENTS)
BENCH_USER = "protocols-bench"
# Limits no run here can reach: this measures serving, not the rate limiter refusing a single user.
BENCH_RATE_LIMIT = "1000000/minute"
BENCH_MAX_IN_FLIGHT = 1024

READY_TIMEOUT_S = 120.0
STOP_GRACE_S = 15.0
INSTALL_TIMEOUT_S = 1200.0
RESULTS_DIR = Path(__file__).resolve().parent / "results"
RESULTS_PATH = RESULTS_DIR / "protocols.json"
MLSERVER_VENV = RESULTS_DIR / "mlserver-venv"
LOGS_DIRNAME = "protocols-logs"  # next to the JSON: server logs and MLServer's model repositories

# Rich falls back to 80 columns when piped, too narrow for the tables.
console = Console(width=None if sys.stdout.isatty() else 200)


@dataclass(frozen=True, slots=True)
class Load:
    """One closed load: rows per request and requests in flight."""

    rows: int
    concurrency: int

    @property
    def key(self) -> str:
        return f"{self.rows}row{'s' if self.rows > 1 else ''}_c{self.concurrency}"

    @property
    def label(self) -> str:
        return f"{self.rows} row{'s' if self.rows > 1 else ''}, c={self.concurrency}"


LOADS = (*(Load(1, c) for c in SINGLE_ROW_CONCURRENCIES), Load(BATCH_ROWS, 1))
SINGLE_C1, SINGLE_HIGH, BATCH = Load(1, 1), Load(1, HIGH_CONCURRENCY), Load(BATCH_ROWS, 1)


@dataclass(frozen=True, slots=True)
class Call:
    """One request: its HTTP path (or gRPC method) and body (or serialized message)."""

    path: str
    body: bytes


@dataclass(frozen=True, slots=True)
class Target:
    """Where a load goes: one protocol of one server, with its call for 1 and for 1024 rows.

    ``headers`` go with every call: HTTP headers, or gRPC metadata (lower-case keys).
    """

    server: str
    protocol: str
    config: str
    port: int
    calls: dict[int, Call]
    headers: dict[str, str] = field(default_factory=dict)
    grpc: bool = False


@dataclass(frozen=True, slots=True)
class Measurement:
    """The figures of one load on one target."""

    server: str
    protocol: str
    config: str
    load: str
    rows: int
    concurrency: int
    requests: int
    errors: dict[str, int]
    requests_per_s: float
    rows_per_s: float
    p50_ms: float
    p99_ms: float

    @property
    def clean(self) -> bool:
        return self.requests > 0 and not self.errors


@dataclass(frozen=True, slots=True)
class Floor:
    """In-process ``model.predict`` timings: what no server can beat."""

    predict_1row_p50_ms: float
    predict_1row_p99_ms: float
    predict_1row_calls: int
    predict_batch_p50_ms: float
    predict_batch_p99_ms: float
    predict_batch_rows_per_s: float
    predict_batch_calls: int
    # Prediction Provider's ``predict_threads``: the threads LightGBM may use per call (0 = all).
    threads: int


@dataclass(frozen=True, slots=True)
class Inputs:
    """The real rows every server is sent, and the in-process model's class probabilities for them."""

    features: pd.DataFrame
    matrix: npt.NDArray[np.float64]
    expected: npt.NDArray[np.float64]

    @property
    def single(self) -> npt.NDArray[np.float64]:
        return self.matrix[-1:]

    @property
    def v2_single_body(self) -> bytes:
        """The one-row v2 request every server's first answer is checked with."""
        return v2_body(self.single)


@dataclass(slots=True)
class Report:
    """Everything measured and noticed; what goes to the JSON file."""

    measurements: list[Measurement] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    servers: dict[str, Any] = field(default_factory=dict)

    def flag(self, server: str, message: str) -> None:
        """Prediction Provider's problems fail the run; MLServer's are warnings (it is the reference)."""
        (self.problems if server == PP else self.warnings).append(message)


class MLServerUnavailable(RuntimeError):
    """MLServer could not be installed or started; the run goes on without it."""


def native_frontend_built() -> bool:
    """Whether ``pp-grpc-frontend`` is where the server looks for it."""
    from prediction_provider.api.grpc.native_frontend import find_binary

    return find_binary(None) is not None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--data-dir", type=Path, default=Path(".pp_data"), help="data dir (default .pp_data)")
    parser.add_argument("--duration", type=float, default=4.0, help="seconds per measurement (default 4)")
    parser.add_argument(
        "--warmup", type=float, default=1.0, help="unrecorded seconds before each (default 1)"
    )
    parser.add_argument("--skip-mlserver", action="store_true", help="measure Prediction Provider only")
    parser.add_argument(
        "--paid",
        action="store_true",
        help="also measure paid /predict (workers=1): the same loads unpaid, then with the model priced, "
        "each answer charged; then charges against answers and the ledger check",
    )
    parser.add_argument(
        "--pp-workers",
        type=int,
        nargs="+",
        default=list(PP_WORKERS),
        help="Prediction Provider's configurations: worker processes (serve --workers), one run each "
        f"(default {' '.join(map(str, PP_WORKERS))})",
    )
    parser.add_argument(
        "--pp-pin",
        choices=PIN_CHOICES,
        nargs="+",
        default=list(PIN_CHOICES),
        help="Prediction Provider's worker pinning (serve --pin-workers) in each workers configuration "
        "(default: off on)",
    )
    parser.add_argument(
        "--pp-grpc-frontend",
        choices=GRPC_FRONTENDS,
        nargs="+",
        default=None,
        help="Prediction Provider's gRPC front end (serve --grpc-frontend) in each configuration "
        "(default: python native; python alone when pp-grpc-frontend is not built)",
    )
    parser.add_argument(
        "--auth", choices=AUTH_MODES, default=AUTH_MODES[0], help="how the client reaches Prediction Provider"
    )
    parser.add_argument(
        "--client",
        choices=CLIENTS,
        default=H2LOAD if shutil.which(H2LOAD) else PYTHON_CLIENTS,
        help="load generator for every server and protocol: h2load (C, apt install nghttp2-client; the "
        "default when installed) or the Python clients (asyncio HTTP/1.1, grpc.aio)",
    )
    parser.add_argument("--mlserver-venv", type=Path, default=MLSERVER_VENV, help="MLServer's virtualenv")
    parser.add_argument("--output", type=Path, default=RESULTS_PATH, help="where to write the JSON results")
    args = parser.parse_args(argv)
    if args.duration <= 0 or args.warmup < 0:
        parser.error("--duration must be positive and --warmup not negative")
    if args.pp_grpc_frontend is None:
        args.pp_grpc_frontend = list(GRPC_FRONTENDS) if native_frontend_built() else ["python"]
    if min(args.pp_workers) < 1:
        parser.error("--pp-workers must be positive")
    if args.client == H2LOAD and shutil.which(H2LOAD) is None:
        parser.error("--client h2load: h2load is not on PATH (apt install nghttp2-client)")
    return args


# --- set-up and in-process floor --------------------------------------------------------------------------


def measure_floor(model: Any, matrix: npt.NDArray[np.float64], threads: int, budget_s: float) -> Floor:
    """Time ``model.predict`` alone on 1 real row (rotating through the rows) and on all of them."""
    rows = [np.ascontiguousarray(matrix[i : i + 1]) for i in range(len(matrix))]
    single = time_calls(
        lambda i: model.predict(rows[i % len(rows)]), count=2000, warmup=200, budget_s=budget_s
    )
    batch = time_calls(lambda _: model.predict(matrix), count=50, warmup=5, budget_s=budget_s)
    batch_p50_ms = statistics.median(batch) / 1e6
    return Floor(
        predict_1row_p50_ms=statistics.median(single) / 1e6,
        predict_1row_p99_ms=percentile(single, 99) / 1e6,
        predict_1row_calls=len(single),
        predict_batch_p50_ms=batch_p50_ms,
        predict_batch_p99_ms=percentile(batch, 99) / 1e6,
        predict_batch_rows_per_s=len(matrix) / (batch_p50_ms / 1e3),
        predict_batch_calls=len(batch),
        threads=threads,
    )


def prepare(settings: Settings, auth: str, budget_s: float) -> tuple[Inputs, Floor, Path, str | None]:
    """Train the demo models if needed, then time the model the way the server loads it.

    Also returns the LightGBM file the registry resolves the reference to, so
    that MLServer serves exactly the model Prediction Provider serves, and the
    API key of the benchmark's user in the server's database (None when anonymous).
    """
    from prediction_provider.app import build_services
    from prediction_provider.demo.training import train_demo_models
    from prediction_provider.serving.references import parse_model_reference
    from prediction_provider.serving.registry import ModelRegistry

    train_demo_models(settings, progress=lambda message: console.print(f"[dim]{message}"))
    services = build_services(settings)
    cached = services.cache.get(MODEL_REF)
    features = real_features(cached.model.signature.feature_names)
    matrix = np.ascontiguousarray(features.to_numpy(dtype=np.float64))
    floor = measure_floor(cached.model, matrix, settings.predict_threads, budget_s)
    probabilities = cached.model.predict(matrix).probabilities
    if probabilities is None:
        raise RuntimeError(f"{MODEL_REF} is not a classifier; this benchmark compares probabilities")
    api_key = bench_api_key(services.accounts) if auth == "api-key" else None
    for entry in services.cache.entries():
        entry.model.unload()  # its threads and memory would compete with the servers
    services.audit.close()
    services.db.dispose()
    model_file = ModelRegistry(settings).resolve(parse_model_reference(MODEL_REF)).location / "model.lgb"
    inputs = Inputs(features, matrix, np.asarray(probabilities, dtype=np.float64))
    return inputs, floor, model_file, api_key


def pp_settings(data_dir: Path, auth: str, workdir: Path) -> dict[str, Any]:
    """The benchmark's server settings: a database of its own (no user or audit row lands in the
    data dir's), a fresh JWT secret, and rate limits no run here can reach."""
    return {
        "data_dir": data_dir.resolve(),
        "database_url": f"sqlite:///{(workdir / 'provider.db').resolve()}",
        "jwt_secret": secrets.token_urlsafe(48),
        "require_auth": auth == "api-key",
        "rate_limit": BENCH_RATE_LIMIT,
        "max_concurrent_predictions": BENCH_MAX_IN_FLIGHT,
    }


def settings_env(values: dict[str, Any]) -> dict[str, str]:
    """The same settings as ``PP_*`` variables, for the server process."""
    return {
        f"PP_{name.upper()}": str(v).lower() if isinstance(v, bool) else str(v) for name, v in values.items()
    }


def bench_api_key(accounts: Any) -> str:
    """An active client account with its first API key, in the benchmark's own database."""
    password = secrets.token_urlsafe(24)
    accounts.create_user(
        BENCH_USER, f"{BENCH_USER}@localhost.localdomain", password, role="client", active=True
    )
    return str(accounts.api_key_from_password(BENCH_USER, password)["api_key"])


# --- requests ---------------------------------------------------------------------------------------------


def v2_body(matrix: npt.NDArray[np.float64]) -> bytes:
    """One FP64 ``[rows, features]`` tensor, row-major, as JSON: the same for both servers."""
    tensor = {
        "name": INPUT_NAME,
        "datatype": "FP64",
        "shape": list(matrix.shape),
        "data": matrix.ravel().tolist(),
    }
    return json.dumps({"inputs": [tensor]}).encode()


def native_bodies(features: pd.DataFrame) -> dict[int, tuple[str, bytes]]:
    """Prediction Provider's own API: named features, one record or a list of them."""
    records = [{name: float(value) for name, value in row.items()} for row in features.to_dict("records")]
    single = json.dumps({"model": MODEL_REF, "features": records[-1]}).encode()
    batch = json.dumps({"model": MODEL_REF, "features_list": records}).encode()
    return {1: ("/predict", single), len(records): ("/predict/batch", batch)}


def credentials(api_key: str | None) -> dict[str, str]:
    """The header (gRPC metadata, lower-cased) that authenticates a call; none when anonymous."""
    return {"x-api-key": api_key} if api_key else {}


def v2_rest_target(
    server: str, config: str, port: int, inputs: Inputs, headers: dict[str, str] | None = None
) -> Target:
    calls = {len(matrix): Call(V2_INFER_PATH, v2_body(matrix)) for matrix in (inputs.single, inputs.matrix)}
    return Target(server, V2_REST, config, port, calls, headers or {})


def v2_grpc_target(
    server: str, config: str, port: int, inputs: Inputs, metadata: dict[str, str] | None = None
) -> Target:
    method = model_infer_method()
    calls = {
        len(matrix): Call(method, model_infer_request(MODEL_NAME, MODEL_VERSION, matrix, INPUT_NAME))
        for matrix in (inputs.single, inputs.matrix)
    }
    return Target(server, V2_GRPC, config, port, calls, metadata or {}, grpc=True)


@dataclass(frozen=True, slots=True)
class PPConfig:
    """One way of running ``prediction-provider serve``: its worker processes, whether they are
    pinned, and what terminates gRPC (grpcio in the worker, or the native front end)."""

    workers: int
    pinned: bool = False
    grpc_frontend: str = "python"

    @property
    def label(self) -> str:
        pinned = ", pinned" if self.pinned else ""
        frontend = ", native gRPC" if self.grpc_frontend == "native" else ""
        return f"workers={self.workers}{pinned}{frontend}"

    @property
    def dirname(self) -> str:
        pinned = "-pinned" if self.pinned else ""
        frontend = "-native-grpc" if self.grpc_frontend == "native" else ""
        return f"prediction-provider-w{self.workers}{pinned}{frontend}"

    @property
    def flags(self) -> list[str]:
        pin = "--pin-workers" if self.pinned else "--no-pin-workers"
        return ["--workers", str(self.workers), pin, "--grpc-frontend", self.grpc_frontend]


def pp_configs(args: argparse.Namespace) -> list[PPConfig]:
    """Workers x pinning x gRPC front end. The native front end changes only gRPC, so its
    configurations measure gRPC alone (see ``pp_targets``)."""
    return [
        PPConfig(workers, pin == "on", frontend)
        for workers in args.pp_workers
        for pin in args.pp_pin
        for frontend in args.pp_grpc_frontend
    ]


def pp_targets(
    config: PPConfig, http_port: int, grpc_port: int, inputs: Inputs, api_key: str | None
) -> list[Target]:
    headers = credentials(api_key)
    grpc_target = v2_grpc_target(PP, config.label, grpc_port, inputs, headers)
    if config.grpc_frontend == "native":
        return [grpc_target]
    native = {rows: Call(path, body) for rows, (path, body) in native_bodies(inputs.features).items()}
    return [
        Target(PP, NATIVE_REST, config.label, http_port, native, headers),
        v2_rest_target(PP, config.label, http_port, inputs, headers),
        grpc_target,
    ]


# --- answers ----------------------------------------------------------------------------------------------


def probability_matrix(values: Any, shape: Sequence[int]) -> npt.NDArray[np.float64]:
    """``[rows, classes]`` probabilities; a binary booster's bare P(class 1) per row becomes two columns."""
    matrix = np.asarray(values, dtype=np.float64).reshape(list(shape))
    if matrix.ndim == 1 or matrix.shape[1] == 1:
        positive = matrix.reshape(-1)
        return np.column_stack((1.0 - positive, positive))
    return matrix


def v2_probabilities(body: bytes) -> npt.NDArray[np.float64]:
    """Class probabilities per row from a v2 JSON answer.

    Prediction Provider answers ``probabilities`` ``[rows, classes]``; MLServer's
    LightGBM runtime answers ``predict``, the booster's own output: the same
    matrix for a multiclass model (this one has three classes), P(class 1) for a binary one.
    """
    outputs = {output["name"]: output for output in json.loads(body)["outputs"]}
    tensor = outputs["probabilities"] if "probabilities" in outputs else outputs["predict"]
    return probability_matrix(tensor["data"], tensor["shape"])


GRPC_FLOAT_TYPES = {"FP64": ("<f8", "fp64_contents"), "FP32": ("<f4", "fp32_contents")}


def grpc_probabilities(body: bytes) -> npt.NDArray[np.float64]:
    """Class probabilities per row from a serialized ``ModelInferResponse``.

    Prediction Provider answers ``probabilities`` as raw little-endian bytes, as
    Triton does; MLServer answers ``predict`` in the typed ``contents`` fields.
    """
    from prediction_provider.api.grpc import open_inference_pb2 as pb

    reply = pb.ModelInferResponse.FromString(body)
    names = [output.name for output in reply.outputs]
    name = "probabilities" if "probabilities" in names else "predict"
    if name not in names:
        raise ValueError(f"no probabilities among {names}")
    index = names.index(name)
    output = reply.outputs[index]
    dtype, contents = GRPC_FLOAT_TYPES[output.datatype]
    if reply.raw_output_contents:
        values: Any = np.frombuffer(reply.raw_output_contents[index], dtype=dtype)
    else:
        values = list(getattr(output.contents, contents))
    return probability_matrix(values, output.shape)


def fixed_grpc_reply(probabilities: npt.NDArray[np.float64]) -> bytes:
    """The bare server's one answer: the probabilities of one row, shaped as Prediction Provider's."""
    from prediction_provider.api.grpc import open_inference_pb2 as pb

    reply = pb.ModelInferResponse(model_name=MODEL_NAME, model_version=MODEL_VERSION)
    reply.outputs.add(name="probabilities", datatype="FP64", shape=list(probabilities.shape))
    reply.raw_output_contents.append(np.ascontiguousarray(probabilities).astype("<f8").tobytes())
    return reply.SerializeToString()


def same_probabilities(got: npt.NDArray[np.float64], expected: npt.NDArray[np.float64]) -> bool:
    return got.shape == expected.shape and bool(
        np.allclose(got, expected, rtol=0, atol=PROBABILITY_TOLERANCE)
    )


def http_call(
    port: int, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, bytes]:
    """One request outside the load loop, for readiness and for checking answers."""
    connection = http.client.HTTPConnection(HOST, port, timeout=10)
    try:
        content = {"Content-Type": "application/json"} if body is not None else {}
        connection.request(method, path, body=body, headers={**content, **(headers or {})})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def first_answer(
    port: int,
    name: str,
    request: bytes,
    expected: npt.NDArray[np.float64],
    headers: dict[str, str] | None = None,
) -> tuple[npt.NDArray[np.float64] | None, str | None]:
    """POST one v2 request: its probabilities, or None, and why they are not ``expected``, or None."""
    try:
        status, body = http_call(port, "POST", V2_INFER_PATH, request, headers)
    except OSError as exc:
        return None, f"{name}: first v2 call failed: {exc!r}"
    if status != 200:
        return None, f"{name}: first v2 call answered {status}: {body[:300]!r}"
    try:
        got = v2_probabilities(body)
    except (KeyError, ValueError, TypeError) as exc:
        return None, f"{name}: unexpected v2 answer ({exc!r}): {body[:300]!r}"
    if not same_probabilities(got, expected):
        return got, f"{name}: first v2 answer {got.tolist()} differs from {expected.tolist()}"
    return got, None


def check_samples(measurements: dict[Load, LoadResult], target: Target, inputs: Inputs) -> list[str]:
    """The first 200 answer of each v2 load gives the in-process model's probabilities."""
    problems = []
    decode = grpc_probabilities if target.grpc else v2_probabilities
    for load, result in measurements.items():
        if target.protocol == NATIVE_REST or result.sample_body is None:
            continue
        expected = inputs.expected[-load.rows :]
        try:
            same = same_probabilities(decode(result.sample_body), expected)
        except (KeyError, ValueError, TypeError) as exc:
            problems.append(f"{describe(target)} {load.label}: undecodable answer ({exc!r})")
            continue
        if not same:
            problems.append(
                f"{describe(target)} {load.label}: probabilities differ from the in-process model's"
            )
    return problems


# --- processes --------------------------------------------------------------------------------------------


def fresh_dir(path: Path) -> Path:
    """An empty directory: the previous run's logs go, so that the ones left are this run's."""
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def free_ports(count: int) -> list[int]:
    """Distinct ports the kernel just handed out (all held open at once, then released)."""
    with ExitStack() as stack:
        sockets = [
            stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) for _ in range(count)
        ]
        for sock in sockets:
            sock.bind((HOST, 0))
        return [int(sock.getsockname()[1]) for sock in sockets]


def group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes of a process group, read from /proc; empty where there is no /proc."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with suppress(OSError, ValueError, IndexError):
            state, _parent, group = stat.read_text().rpartition(")")[2].split()[:3]
            if int(group) == pgid and state != "Z":
                members.append(int(stat.parent.name))
    return members


def stop_process_group(process: subprocess.Popen[bytes]) -> list[int]:
    """SIGINT the leader, give it ``STOP_GRACE_S``, then SIGKILL the whole group; returns survivors."""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        with suppress(subprocess.TimeoutExpired):
            process.wait(timeout=STOP_GRACE_S)
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)  # worker processes the leader left behind
    with suppress(subprocess.TimeoutExpired):
        process.wait(timeout=5)
    deadline = time.monotonic() + 5
    while (survivors := group_members(process.pid)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return survivors


@contextmanager
def server_process(
    command: Sequence[str],
    *,
    env: dict[str, str],
    cwd: Path,
    log_path: Path,
    report: Report,
    cpu: int | None = None,
) -> Iterator[subprocess.Popen[bytes]]:
    """Start ``command`` in its own process group (on ``cpu`` only, when given); always stop the group,
    and say if anything survived."""
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            ["taskset", "--cpu-list", str(cpu), *command] if cpu is not None else list(command),
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
            start_new_session=True,
        )
        try:
            yield process
        finally:
            survivors = stop_process_group(process)
            if survivors:
                report.warnings.append(f"{Path(command[0]).name}: processes {survivors} survived SIGKILL")


def wait_ready(process: subprocess.Popen[bytes], port: int, paths: Sequence[str], log_path: Path) -> float:
    """Poll each path until it answers 200; returns the seconds it took. Fails fast if the server exits."""
    started = time.perf_counter()
    deadline = started + READY_TIMEOUT_S
    pending, last = list(paths), "no answer yet"
    while pending and time.perf_counter() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}:\n{log_tail(log_path)}")
        try:
            status, body = http_call(port, "GET", pending[0])
            if status == 200:
                pending.pop(0)
                continue
            last = f"{pending[0]}: {status} {body[:200]!r}"
        except OSError as exc:
            last = f"{pending[0]}: {exc!r}"
        time.sleep(0.25)
    if pending:
        raise TimeoutError(f"not ready after {READY_TIMEOUT_S:.0f} s ({last}):\n{log_tail(log_path)}")
    return time.perf_counter() - started


# --- measuring --------------------------------------------------------------------------------------------


def describe(target: Target) -> str:
    return " ".join(
        part for part in (target.server, target.protocol, target.config and f"({target.config})") if part
    )


def one_answer(target: Target, call: Call) -> tuple[int, bytes]:
    """One call outside the load: its status (HTTP, or gRPC code) and body (or serialized message)."""
    if not target.grpc:
        return http_call(target.port, "POST", call.path, call.body, target.headers)
    import grpc

    with grpc.insecure_channel(f"{HOST}:{target.port}", options=CHANNEL_OPTIONS) as channel:
        try:
            reply = channel.unary_unary(call.path)(
                call.body, timeout=30, metadata=tuple(target.headers.items())
            )
        except grpc.RpcError as exc:
            return exc.code().value[0], b""
    return grpc_loadgen.OK, reply


def run_one(target: Target, load: Load, args: argparse.Namespace) -> LoadResult:
    call = target.calls[load.rows]
    options = {"concurrency": load.concurrency, "duration_s": args.duration, "warmup_s": args.warmup}
    if args.client == H2LOAD:
        # h2load keeps no answer: the sample checked against the model is one call made first,
        # and a gRPC answer's size tells the good ones from errors during the load.
        status, sample = one_answer(target, call)
        if status != (grpc_loadgen.OK if target.grpc else 200):
            return LoadResult(load.concurrency, 0.0, errors=Counter({status: 1}))
        reply_bytes = len(grpc_frame(sample)) if target.grpc else None
        request = H2Request(call.path, call.body, target.headers, target.grpc, reply_bytes)
        result = run_h2load(HOST, target.port, request, **options)
        result.sample_body = sample
        return result
    if target.grpc:
        return run_grpc_load(HOST, target.port, call.path, call.body, metadata=target.headers, **options)
    raw = build_request("POST", call.path, HOST, target.port, call.body, headers=target.headers)
    return run_load(HOST, target.port, raw, **options)


def to_measurement(target: Target, load: Load, result: LoadResult) -> Measurement:
    return Measurement(
        server=target.server,
        protocol=target.protocol,
        config=target.config,
        load=load.key,
        rows=load.rows,
        concurrency=load.concurrency,
        requests=result.requests,
        errors={str(status): count for status, count in sorted(result.errors.items())},
        requests_per_s=result.requests_per_s,
        rows_per_s=result.requests_per_s * load.rows,
        p50_ms=result.percentile_ms(50),
        p99_ms=result.percentile_ms(99),
    )


def measure_target(
    target: Target, inputs: Inputs, args: argparse.Namespace, report: Report, loads: Sequence[Load] = LOADS
) -> None:
    """Every load on one target, in order; statuses other than 200 (or gRPC OK) are problems."""
    results: dict[Load, LoadResult] = {}
    for load in loads:
        console.print(f"  {describe(target)}, {load.label}: {args.warmup:g} s warm-up + {args.duration:g} s")
        try:
            result = run_one(target, load, args)
        except (
            OSError,
            EOFError,
            TimeoutError,
            ExceptionGroup,
            RuntimeError,
            subprocess.SubprocessError,
        ) as exc:
            report.flag(target.server, f"{describe(target)} {load.label}: the load failed: {exc!r}")
            continue
        results[load] = result
        measurement = to_measurement(target, load, result)
        report.measurements.append(measurement)
        if not measurement.clean:
            report.flag(
                target.server,
                f"{describe(target)} {load.label}: {result.requests} answers, errors {measurement.errors}",
            )
    for problem in check_samples(results, target, inputs):
        report.flag(target.server, problem)


def pp_command(data_dir: Path, port: int, grpc_port: int, config: PPConfig) -> list[str]:
    """The console script next to this interpreter, else the CLI module."""
    script = Path(sys.executable).with_name("prediction-provider")
    prefix = [str(script)] if script.exists() else [sys.executable, "-m", "prediction_provider.cli"]
    return [
        *prefix,
        "serve",
        "--data-dir",
        str(data_dir.resolve()),
        "--host",
        HOST,
        "--port",
        str(port),
        "--grpc-port",
        str(grpc_port),
        "--warm",
        MODEL_REF,
        *config.flags,
    ]


def bench_pp_config(
    pp: PPConfig,
    inputs: Inputs,
    server_settings: dict[str, Any],
    api_key: str | None,
    args: argparse.Namespace,
    workdir: Path,
    report: Report,
) -> npt.NDArray[np.float64] | None:
    """Start the server with ``workers`` processes, check its v2 answer, measure its three
    protocols, stop it; returns that answer."""
    config = pp.label
    http_port, grpc_port = free_ports(2)
    log_path = workdir / f"{pp.dirname}.log"
    env = {**os.environ, **settings_env(server_settings), "PP_LOG_LEVEL": "warning"}
    console.print(f"[bold]{PP}[/bold] ({config}): REST on {http_port}, gRPC on {grpc_port}")
    command = pp_command(args.data_dir, http_port, grpc_port, pp)
    entry: dict[str, Any] = {"config": config, "command": command, "log": str(log_path)}
    report.servers.setdefault(PP, {}).setdefault("configs", []).append(entry)
    with server_process(command, env=env, cwd=Path.cwd(), log_path=log_path, report=report) as process:
        try:
            entry["ready_s"] = round(wait_ready(process, http_port, ["/health/ready"], log_path), 2)
        except (RuntimeError, TimeoutError) as exc:
            report.problems.append(f"{PP} ({config}) did not start: {exc}")
            return None
        console.print(f"  ready in {entry['ready_s']:.1f} s")
        reference, mismatch = first_answer(
            http_port, f"{PP} ({config})", inputs.v2_single_body, inputs.expected[-1:], credentials(api_key)
        )
        if mismatch:
            report.problems.append(mismatch)
        if reference is None:
            return None
        for target in pp_targets(pp, http_port, grpc_port, inputs, api_key):
            measure_target(target, inputs, args, report)
    return reference


# --- MLServer ---------------------------------------------------------------------------------------------


def venv_python(venv_dir: Path) -> Path:
    return venv_dir / "bin" / "python"


def installed_versions(venv_dir: Path) -> dict[str, str]:
    """The versions of MLServer's requirements installed in ``venv_dir``; missing ones are left out."""
    names = [requirement.split("==")[0] for requirement in MLSERVER_REQUIREMENTS]
    script = (
        "import importlib.metadata as m, json, sys\n"
        "found = {}\n"
        "for name in sys.argv[1:]:\n"
        "    try: found[name] = m.version(name)\n"
        "    except m.PackageNotFoundError: pass\n"
        "print(json.dumps(found))\n"
    )
    completed = subprocess.run(
        [str(venv_python(venv_dir)), "-c", script, *names],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return json.loads(completed.stdout) if completed.returncode == 0 else {}


def ensure_mlserver(venv_dir: Path) -> Path:
    """MLServer's executable in its own virtualenv, made and installed only when it is not there yet.

    Its own environment because its pins (FastAPI, pandas, protobuf...) must
    not move the project's; uvloop stays below 0.22, with which MLServer's
    parallel workers fail to start.
    """
    wanted = dict(requirement.split("==") for requirement in MLSERVER_REQUIREMENTS)
    if venv_python(venv_dir).exists() and installed_versions(venv_dir) == wanted:
        return venv_dir / "bin" / "mlserver"
    packages = " ".join(MLSERVER_REQUIREMENTS)
    console.print(f"[bold]installing MLServer[/bold] into {venv_dir} (first run only): {packages}")
    try:
        if not venv_python(venv_dir).exists():
            venv.EnvBuilder(with_pip=True, clear=True).create(venv_dir)
        completed = subprocess.run(
            [
                str(venv_python(venv_dir)),
                "-m",
                "pip",
                "install",
                "--disable-pip-version-check",
                "-q",
                *MLSERVER_REQUIREMENTS,
            ],
            capture_output=True,
            text=True,
            timeout=INSTALL_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise MLServerUnavailable(f"could not create the virtualenv or run pip: {exc!r}") from exc
    if completed.returncode != 0:
        tail = "\n".join((completed.stdout + completed.stderr).splitlines()[-15:])
        raise MLServerUnavailable(f"pip install failed ({completed.returncode}):\n{tail}")
    if installed_versions(venv_dir) != wanted:
        raise MLServerUnavailable(f"after pip install, found {installed_versions(venv_dir)}, wanted {wanted}")
    return venv_dir / "bin" / "mlserver"


@dataclass(frozen=True, slots=True)
class MLServerConfig:
    """One MLServer set-up: inference worker processes, adaptive batching, and whether its process
    is pinned to one CPU (``pinned_cpu``; only for workers 0, where one process does everything)."""

    workers: int
    batching: bool
    pinned_cpu: int | None = None

    @property
    def label(self) -> str:
        pinned = ", pinned" if self.pinned_cpu is not None else ""
        return f"w={self.workers}, batch {'on' if self.batching else 'off'}{pinned}"

    @property
    def dirname(self) -> str:
        pinned = "-pinned" if self.pinned_cpu is not None else ""
        return f"mlserver-w{self.workers}-{'batch' if self.batching else 'nobatch'}{pinned}"


MLSERVER_CONFIGS = (
    *(MLServerConfig(w, b) for w in MLSERVER_WORKERS for b in (False, True)),
    *(MLServerConfig(0, b, pinned_cpu=min(os.sched_getaffinity(0))) for b in (False, True)),
)


def write_repository(root: Path, model_file: Path, config: MLServerConfig, ports: Sequence[int]) -> None:
    """``settings.json`` for the server and ``model-settings.json`` for the model, under ``root``.

    ``debug`` is off: it turns on uvicorn's access log, one log line per request,
    which Prediction Provider does not write either.
    """
    http_port, grpc_port, metrics_port = ports
    server = {
        "debug": False,
        "host": HOST,
        "http_port": http_port,
        "grpc_port": grpc_port,
        "metrics_port": metrics_port,
        "parallel_workers": config.workers,
        "load_models_at_startup": True,
    }
    model: dict[str, Any] = {
        "name": MODEL_NAME,
        "implementation": "mlserver_lightgbm.LightGBMModel",
        "parameters": {"uri": str(model_file), "version": MODEL_VERSION},
    }
    if config.batching:
        model |= {"max_batch_size": MLSERVER_MAX_BATCH_SIZE, "max_batch_time": MLSERVER_MAX_BATCH_TIME_S}
    (root / MODEL_NAME).mkdir(parents=True, exist_ok=True)
    (root / "settings.json").write_text(json.dumps(server, indent=2))
    (root / MODEL_NAME / "model-settings.json").write_text(json.dumps(model, indent=2))


def mlserver_env(mlserver: Path) -> dict[str, str]:
    """This environment, minus the project's virtualenv: MLServer runs on its own."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME"}
    }
    env["PATH"] = f"{mlserver.parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def bench_mlserver_config(
    mlserver: Path,
    config: MLServerConfig,
    model_file: Path,
    inputs: Inputs,
    reference: npt.NDArray[np.float64],
    args: argparse.Namespace,
    workdir: Path,
    report: Report,
) -> None:
    """Start MLServer in one configuration, check its first answer, measure it, stop it."""
    root = workdir / config.dirname
    ports = free_ports(3)
    write_repository(root, model_file, config, ports)
    log_path = root / "mlserver.log"
    console.print(f"[bold]{MLSERVER}[/bold] ({config.label}): REST on {ports[0]}")
    entry: dict[str, Any] = {"config": asdict(config), "log": str(log_path)}
    report.servers.setdefault(MLSERVER, {}).setdefault("configs", []).append(entry)
    ready_paths = ["/v2/health/ready", f"/v2/models/{MODEL_NAME}/versions/{MODEL_VERSION}/ready"]
    command = [str(mlserver), "start", str(root)]
    with server_process(
        command, env=mlserver_env(mlserver), cwd=root, log_path=log_path, report=report, cpu=config.pinned_cpu
    ) as process:
        try:
            entry["ready_s"] = round(wait_ready(process, ports[0], ready_paths, log_path), 2)
        except (RuntimeError, TimeoutError) as exc:
            entry["error"] = str(exc)
            report.warnings.append(f"{MLSERVER} ({config.label}) did not start: {exc}")
            return
        console.print(f"  ready in {entry['ready_s']:.1f} s")
        _, mismatch = first_answer(ports[0], f"{MLSERVER} ({config.label})", inputs.v2_single_body, reference)
        if mismatch:
            report.warnings.append(mismatch)
        measure_target(v2_rest_target(MLSERVER, config.label, ports[0], inputs), inputs, args, report)
        # Its gRPC server starts with the REST one; a Triton gRPC client would talk to this one.
        measure_target(v2_grpc_target(MLSERVER, config.label, ports[1], inputs), inputs, args, report)


def bench_mlserver(
    model_file: Path,
    inputs: Inputs,
    reference: npt.NDArray[np.float64],
    args: argparse.Namespace,
    workdir: Path,
    report: Report,
) -> None:
    """Install MLServer if needed, then measure each configuration; never fails the run."""
    try:
        mlserver = ensure_mlserver(args.mlserver_venv)
    except MLServerUnavailable as exc:
        report.servers[MLSERVER] = {"status": "unavailable", "reason": str(exc)}
        report.warnings.append(f"{MLSERVER} skipped: {exc}")
        console.print(f"[bold yellow]{MLSERVER} skipped:[/bold yellow] {exc}")
        return
    report.servers[MLSERVER] = {
        "status": "measured",
        "venv": str(args.mlserver_venv),
        "model_file": str(model_file),
    }
    report.servers[MLSERVER]["versions"] = installed_versions(args.mlserver_venv)
    for config in MLSERVER_CONFIGS:
        bench_mlserver_config(mlserver, config, model_file, inputs, reference, args, workdir, report)


# --- the transport alone ---------------------------------------------------------------------------------


def wait_listening(process: subprocess.Popen[bytes], port: int, log_path: Path) -> float:
    """Wait until ``port`` accepts a connection; fails fast if the server exits."""
    started = time.perf_counter()
    while time.perf_counter() - started < READY_TIMEOUT_S:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}:\n{log_tail(log_path)}")
        with suppress(OSError), socket.create_connection((HOST, port), timeout=1):
            return time.perf_counter() - started
        time.sleep(0.1)
    raise TimeoutError(f"nothing listens on {port} after {READY_TIMEOUT_S:.0f} s:\n{log_tail(log_path)}")


def bench_bare_grpc(inputs: Inputs, args: argparse.Namespace, workdir: Path, report: Report) -> None:
    """The bare grpcio server on the single-row loads: what the transport alone allows here."""
    port = free_ports(1)[0]
    reply_file = workdir / "bare-grpc-reply.bin"
    reply_file.write_bytes(fixed_grpc_reply(inputs.expected[-1:]))
    log_path = workdir / "bare-grpc.log"
    bench_dir = Path(__file__).resolve().parent
    command = [sys.executable, str(bench_dir / "bare_grpc_server.py"), str(port), str(reply_file)]
    console.print(f"[bold]{BARE_GRPC}[/bold]: gRPC on {port}, one fixed reply")
    env = dict(os.environ)
    with server_process(command, env=env, cwd=bench_dir, log_path=log_path, report=report) as process:
        try:
            wait_listening(process, port, log_path)
        except (RuntimeError, TimeoutError) as exc:
            report.warnings.append(f"{BARE_GRPC} did not start: {exc}")
            return
        target = v2_grpc_target(BARE_GRPC, "fixed reply", port, inputs)
        measure_target(target, inputs, args, report, loads=[load for load in LOADS if load.rows == 1])


# --- paid predictions -------------------------------------------------------------------------------------

# One Prediction Provider configuration (workers=1, unpinned, grpcio) over native REST /predict, one row,
# first with the model free, then priced: every answer charged to the bench client's wallet.
PAID_CONFIG = PPConfig(1)
PAID_LOADS = tuple(Load(1, c) for c in SINGLE_ROW_CONCURRENCIES)
PAID_PRICE = "0.0001"  # USD per answer, a platform offer
PAID_DEPOSIT = "1000000"  # USD in the bench client's wallet: more than any run here spends
PAID_RATIO_TARGET = 0.7  # at HIGH_CONCURRENCY: paid req/s >= 0.7x unpaid req/s of the same run
BENCH_PROVIDER = "protocols-bench-provider"
PRICED_WITHIN_S = 10.0  # the server re-reads prices every second (paid_calls.Tariffs)


def price_bench_model(db: Any, fee_bps: int) -> dict[str, Any]:
    """In the bench database: a provider owns the bench model and offers it at ``PAID_PRICE`` (platform
    execution, so each synchronous answer is charged), and the bench client gets ``PAID_DEPOSIT``."""
    from datetime import timedelta

    from sqlalchemy import select

    from prediction_provider.accounts.principal import Principal
    from prediction_provider.accounts.roles import Role
    from prediction_provider.accounts.service import AccountService
    from prediction_provider.clock import SystemClock
    from prediction_provider.db.market_models import ModelOwner
    from prediction_provider.db.models import User
    from prediction_provider.ledger.journal import Journal
    from prediction_provider.ledger.money import parse_amount
    from prediction_provider.marketplace.offers import NewOffer, OfferBook

    clock = SystemClock()
    accounts = AccountService(db, "-", timedelta(minutes=1), False)
    provider = accounts.create_user(
        BENCH_PROVIDER, f"{BENCH_PROVIDER}@localhost.localdomain", secrets.token_urlsafe(24), role="provider"
    )
    with db.session() as session:
        session.add(ModelOwner(model_name=MODEL_NAME, provider_id=provider["id"], assigned_by=BENCH_USER))
        client_id = session.scalar(select(User.id).where(User.username == BENCH_USER))
        journal = Journal(clock)
        journal.lock(session)
        journal.single(
            session, "dep:bench", "world", f"client:{client_id}", parse_amount(PAID_DEPOSIT), "USD", "deposit"
        )
    offer = NewOffer(
        MODEL_NAME, None, "direction", ("EURUSD",), None, (1,), parse_amount(PAID_PRICE), "USD", "platform"
    )
    owner = Principal(provider["id"], BENCH_PROVIDER, Role.PROVIDER, "api_key")
    priced = OfferBook(db, clock, fee_bps, timedelta(minutes=5)).publish(owner, offer)
    return {"offer_id": priced.offer.id, "price": PAID_PRICE, "currency": "USD", "fee_bps": fee_bps,
            "deposit": PAID_DEPOSIT, "client_id": client_id, "provider_id": provider["id"]}  # fmt: skip


def charged(db: Any) -> tuple[int, int]:
    """Charge transfers in the journal, and the answers they charge (distinct request ids)."""
    from sqlalchemy import distinct, func, select

    from prediction_provider.db.ledger_models import LedgerTransfer

    with db.session() as session:
        legs, answers = session.execute(
            select(func.count(), func.count(distinct(LedgerTransfer.request_id))).where(
                LedgerTransfer.kind == "charge"
            )
        ).one()
    return int(legs), int(answers)


def wait_priced(port: int, call: Call, headers: dict[str, str]) -> dict[str, str]:
    """Call until an answer carries ``X-Charged`` (the server read the new price); its charge headers."""
    deadline = time.monotonic() + PRICED_WITHIN_S
    while True:
        connection = http.client.HTTPConnection(HOST, port, timeout=10)
        try:
            connection.request("POST", call.path, call.body, {"Content-Type": "application/json", **headers})
            response = connection.getresponse()
            response.read()
            found = {
                name: value for name, value in response.getheaders() if name.lower().startswith("x-charge")
            }
        finally:
            connection.close()
        if response.status == 200 and found:
            return found
        if response.status != 200 or time.monotonic() > deadline:
            raise RuntimeError(f"no charged answer after the price was set ({response.status}, {found})")
        time.sleep(0.2)


# A paid load's figures, the OK answers the generator counted (None: it cannot tell) and the answers charged.
PaidFigure = tuple[Measurement, int | None, int]


def measure_charged(
    target: Target, db: Any, args: argparse.Namespace, report: Report
) -> dict[Load, PaidFigure]:
    """``PAID_LOADS`` on ``target``, counting the answers charged during each."""
    figures = {}
    for load in PAID_LOADS:
        console.print(f"  {describe(target)}, {load.label}: {args.warmup:g} s warm-up + {args.duration:g} s")
        before = charged(db)[1]
        run = run_one(target, load, args)
        measurement = to_measurement(target, load, run)
        figures[load] = (measurement, run.answered, charged(db)[1] - before)
        if not measurement.clean:
            report.problems.append(
                f"{describe(target)} {load.label}: {run.requests} OK, {measurement.errors}"
            )
    return figures


def paid_row(
    load: Load, free: Measurement, paid: Measurement, answered: int | None, charges: int
) -> dict[str, Any]:
    return {
        "load": load.key,
        "concurrency": load.concurrency,
        "unpaid_requests_per_s": free.requests_per_s,
        "paid_requests_per_s": paid.requests_per_s,
        "requests_per_s_ratio": ratio(paid.requests_per_s, free.requests_per_s),
        "unpaid_p50_ms": free.p50_ms,
        "unpaid_p99_ms": free.p99_ms,
        "paid_p50_ms": paid.p50_ms,
        "paid_p99_ms": paid.p99_ms,
        "paid_errors": paid.errors,
        "paid_requests_measured": paid.requests,
        "paid_answers_counted": answered,  # warm-up included; None: the load generator cannot tell
        "answers_charged": charges,
    }


def bench_paid(
    inputs: Inputs,
    server_settings: dict[str, Any],
    api_key: str | None,
    args: argparse.Namespace,
    workdir: Path,
    report: Report,
) -> dict[str, Any]:
    """One server on the bench database: /predict at each concurrency with the model free, then priced
    (set while it runs: it re-reads prices every second), then the charges against the answers and
    ``check_ledger``."""
    from prediction_provider.config import Settings
    from prediction_provider.db.session import Database
    from prediction_provider.ledger.checks import check_ledger

    result: dict[str, Any] = {"config": PAID_CONFIG.label, "protocol": NATIVE_REST, "rows": []}
    if api_key is None:
        report.problems.append("--paid needs --auth api-key: a paid call is charged to the caller's wallet")
        return result
    settings = Settings(**server_settings)
    db = Database(settings.database)
    http_port, grpc_port = free_ports(2)
    log_path = workdir / f"{PAID_CONFIG.dirname}-paid.log"
    env = {**os.environ, **settings_env(server_settings), "PP_LOG_LEVEL": "warning"}
    command = pp_command(args.data_dir, http_port, grpc_port, PAID_CONFIG)
    result |= {"command": command, "log": str(log_path)}
    headers = credentials(api_key)
    native = {rows: Call(path, body) for rows, (path, body) in native_bodies(inputs.features).items()}
    console.print(f"[bold]{PP} paid[/bold] ({PAID_CONFIG.label}): {NATIVE_REST} /predict on {http_port}")
    figures: dict[str, dict[Load, PaidFigure]] = {}
    try:
        with server_process(command, env=env, cwd=Path.cwd(), log_path=log_path, report=report) as process:
            result["ready_s"] = round(wait_ready(process, http_port, ["/health/ready"], log_path), 2)
            for mode in ("unpaid", "paid"):
                if mode == "paid":
                    result["priced"] = price_bench_model(db, settings.platform_fee_bps)
                    result["charge_headers"] = wait_priced(http_port, native[1], headers)
                target = Target(PP, NATIVE_REST, f"{PAID_CONFIG.label}, {mode}", http_port, native, headers)
                figures[mode] = measure_charged(target, db, args, report)
    except (OSError, RuntimeError, TimeoutError, ExceptionGroup, subprocess.SubprocessError) as exc:
        report.problems.append(f"{PP} paid run failed: {exc!r}")
    legs, answers = charged(db)
    with db.session() as session:
        ledger = check_ledger(session)
    db.dispose()
    result |= {"charge_transfers": legs, "answers_charged": answers, "ledger_check": ledger.as_dict()}
    result["ledger_check"]["violations"] = result["ledger_check"]["violations"][:10]
    if not ledger.ok:
        report.problems.append(f"{PP} paid: check_ledger failed: {ledger.violations[:3]}")
    for load in PAID_LOADS:
        if load not in figures.get("unpaid", {}) or load not in figures.get("paid", {}):
            continue
        free, _, free_charges = figures["unpaid"][load]
        paid, answered, charges = figures["paid"][load]
        if free_charges:
            report.problems.append(f"{PP} unpaid {load.label}: {free_charges} answers charged")
        # Every answer the client got is charged, once; the Python generators count them all.
        if answered is not None and charges != answered:
            report.problems.append(f"{PP} paid {load.label}: {answered} answers, {charges} charged")
        elif answered is None and charges < paid.requests:
            report.problems.append(f"{PP} paid {load.label}: {paid.requests} measured, {charges} charged")
        result["rows"].append(paid_row(load, free, paid, answered, charges))
    return result


def paid_goal(paid: dict[str, Any]) -> dict[str, Any]:
    high = next((row for row in paid.get("rows", []) if row["concurrency"] == HIGH_CONCURRENCY), None)
    value = high["requests_per_s_ratio"] if high else math.nan
    name = f"c={HIGH_CONCURRENCY} paid req/s, x unpaid"
    return goal(name, NATIVE_REST, value, PAID_RATIO_TARGET, True) | {"pp_config": PAID_CONFIG.label}


PAID_COLUMNS = (
    *("load", "unpaid req/s", "paid req/s", "ratio", "unpaid p50", "paid p50", "unpaid p99", "paid p99"),
    *("OK answers", "charged"),
)


def paid_table(paid: dict[str, Any]) -> Table:
    """Paid against unpaid per load; the title says what the journal holds and whether it checks."""
    check = "ok" if paid.get("ledger_check", {}).get("ok") else "[red]FAILED[/red]"
    table = new_table(
        f"Paid /predict ({paid['config']}, {PAID_PRICE} USD an answer): {paid.get('charge_transfers', 0)} "
        f"charge transfers for {paid.get('answers_charged', 0)} answers; check_ledger {check}",
        PAID_COLUMNS,
        left={"load"},
    )
    for row in paid["rows"]:
        table.add_row(
            Load(1, row["concurrency"]).label,
            fmt(row["unpaid_requests_per_s"], 1),
            fmt(row["paid_requests_per_s"], 1),
            times(row["requests_per_s_ratio"]),
            fmt(row["unpaid_p50_ms"]),
            fmt(row["paid_p50_ms"]),
            fmt(row["unpaid_p99_ms"]),
            fmt(row["paid_p99_ms"]),
            "-" if row["paid_answers_counted"] is None else str(row["paid_answers_counted"]),
            str(row["answers_charged"]),
        )
    return table


# --- comparison -------------------------------------------------------------------------------------------


def clean_runs(
    measurements: Sequence[Measurement], server: str, protocol: str, load: Load
) -> list[Measurement]:
    return [
        m
        for m in measurements
        if m.server == server and m.protocol == protocol and m.load == load.key and m.clean
    ]


def best(measurements: Sequence[Measurement], server: str, load: Load, protocol: str) -> Measurement | None:
    """The server's best configuration on this load and protocol, among those without errors: the
    lowest p50 at c=1 (the c=1 target is about latency), otherwise the most requests/s."""
    runs = clean_runs(measurements, server, protocol, load)
    if load == SINGLE_C1:
        return min(runs, key=lambda m: m.p50_ms, default=None)
    return max(runs, key=lambda m: m.requests_per_s, default=None)


def ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator > 0 and not math.isnan(denominator) else math.nan


def comparison(pp: Measurement, ref: Measurement | None, floor: Floor) -> dict[str, Any]:
    """One Prediction Provider figure against MLServer's for the same load (NaN without one)."""
    nan = math.nan
    return {
        "load": pp.load,
        "protocol": pp.protocol,
        "pp_config": pp.config,
        "pp_requests_per_s": pp.requests_per_s,
        "pp_p50_ms": pp.p50_ms,
        "pp_p99_ms": pp.p99_ms,
        "mlserver_protocol": ref.protocol if ref else None,
        "mlserver_best_config": ref.config if ref else None,
        "mlserver_requests_per_s": ref.requests_per_s if ref else nan,
        "mlserver_p50_ms": ref.p50_ms if ref else nan,
        "mlserver_p99_ms": ref.p99_ms if ref else nan,
        "requests_per_s_ratio": ratio(pp.requests_per_s, ref.requests_per_s) if ref else nan,
        "p99_ratio": ratio(pp.p99_ms, ref.p99_ms) if ref else nan,
        "p50_diff_ms": pp.p50_ms - ref.p50_ms if ref else nan,
        "floor_rows_per_s_ratio": ratio(pp.rows_per_s, floor.predict_batch_rows_per_s)
        if pp.rows > 1
        else nan,
    }


def comparisons(measurements: Sequence[Measurement], floor: Floor) -> list[dict[str, Any]]:
    """Prediction Provider's best configuration per load and protocol against MLServer's best over
    v2 REST; its gRPC figure also against MLServer's best over gRPC, protocol for protocol.
    At c=1 each side's configuration is the one with the lowest p50."""
    rows = []
    for load in LOADS:
        reference = best(measurements, MLSERVER, load, V2_REST)
        for protocol in PP_PROTOCOLS:
            pp = best(measurements, PP, load, protocol)
            if pp is not None:
                rows.append(comparison(pp, reference, floor))
        pp_grpc, mls_grpc = best(measurements, PP, load, V2_GRPC), best(measurements, MLSERVER, load, V2_GRPC)
        if pp_grpc is not None and mls_grpc is not None:
            rows.append(comparison(pp_grpc, mls_grpc, floor))
    return rows


def goal(name: str, protocol: str, value: float, threshold: float, at_least: bool) -> dict[str, Any]:
    """One target: ``value`` at least (or at most) ``threshold``; ``met`` None when there is no value."""
    met = None if math.isnan(value) else (value >= threshold if at_least else value <= threshold)
    return {
        "target": name,
        "protocol": protocol,
        "value": value,
        "threshold": f"{'>=' if at_least else '<='} {threshold:g}",
        "met": met,
    }


def evaluate_targets(measurements: Sequence[Measurement], floor: Floor) -> list[dict[str, Any]]:
    """The four targets for each of Prediction Provider's protocols; ``met`` None without MLServer figures.

    Each server is taken in its best configuration for the load: at c=64 the one
    with the most requests/s (and that configuration's p99), at c=1 the one with
    the lowest p50, for 1024 rows Prediction Provider's with the most rows/s.
    MLServer's figures are its v2 REST ones.
    """
    mls_high, mls_c1 = (best(measurements, MLSERVER, load, V2_REST) for load in (SINGLE_HIGH, SINGLE_C1))
    goals = []
    for protocol in PP_PROTOCOLS:
        high, c1, batch = (best(measurements, PP, load, protocol) for load in (SINGLE_HIGH, SINGLE_C1, BATCH))
        if high is None or c1 is None or batch is None:
            continue
        rps = ratio(high.requests_per_s, mls_high.requests_per_s) if mls_high else math.nan
        p99 = ratio(high.p99_ms, mls_high.p99_ms) if mls_high else math.nan
        c1_diff = c1.p50_ms - mls_c1.p50_ms if mls_c1 else math.nan
        goals += [
            goal(f"c={HIGH_CONCURRENCY} req/s, x MLServer best", protocol, rps, THROUGHPUT_RATIO_TARGET, True)
            | {"pp_config": high.config},
            goal(f"c={HIGH_CONCURRENCY} p99, x that config's", protocol, p99, P99_RATIO_TARGET, False)
            | {"pp_config": high.config},
            goal("c=1 p50 - MLServer best p50, ms", protocol, c1_diff, 0.0, False) | {"pp_config": c1.config},
            goal(
                f"{BATCH_ROWS} rows rows/s, x in-process floor",
                protocol,
                ratio(batch.rows_per_s, floor.predict_batch_rows_per_s),
                FLOOR_RATIO_TARGET,
                True,
            )
            | {"pp_config": batch.config},
        ]
    return goals


# --- output -----------------------------------------------------------------------------------------------


def times(value: float) -> str:
    """A ratio as "1.23x", "-" when there is none."""
    return "-" if math.isnan(value) else f"{value:.2f}x"


def new_table(title: str, columns: Sequence[str], left: Collection[str]) -> Table:
    """A table whose ``left`` columns are text and every other column a right-aligned figure."""
    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(column, justify="left" if column in left else "right")
    return table


def figures_table(floor: Floor, measurements: Sequence[Measurement]) -> Table:
    """Every figure: the in-process floor first, then one section per server configuration and protocol."""
    table = new_table(
        f"Protocols: {MODEL_REF}, 1 and {BATCH_ROWS} real EURUSD rows",
        ("server", "protocol", "config", "load", "req/s", "rows/s", "p50 ms", "p99 ms", "errors"),
        left={"server", "protocol", "config", "load"},
    )
    for load, rows_per_s, p50, p99 in (
        ("1 row", 1e3 / floor.predict_1row_p50_ms, floor.predict_1row_p50_ms, floor.predict_1row_p99_ms),
        (
            f"{BATCH_ROWS} rows",
            floor.predict_batch_rows_per_s,
            floor.predict_batch_p50_ms,
            floor.predict_batch_p99_ms,
        ),
    ):
        table.add_row(
            "in-process",
            "model.predict",
            f"threads={floor.threads}",
            load,
            "",
            fmt(rows_per_s, 0),
            fmt(p50, 4),
            fmt(p99, 4),
            "",
        )
    previous = None
    for m in measurements:
        if (m.server, m.protocol, m.config) != previous:
            table.add_section()
            previous = (m.server, m.protocol, m.config)
        errors = ", ".join(f"{status}: {count}" for status, count in m.errors.items()) or "0"
        table.add_row(
            m.server,
            m.protocol,
            m.config,
            Load(m.rows, m.concurrency).label,
            fmt(m.requests_per_s, 1),
            fmt(m.rows_per_s, 0),
            fmt(m.p50_ms),
            fmt(m.p99_ms),
            errors if m.clean else f"[red]{errors}[/red]",
        )
    return table


COMPARISON_COLUMNS = (
    *("load", "PP protocol", "PP config", "PP req/s", "MLS protocol", "MLServer best", "MLS req/s"),
    "req/s ratio",
    *("PP p99", "MLS p99", "p99 ratio", "c=1 p50 diff ms", "rows/s vs floor"),
)


def comparison_table(rows: Sequence[dict[str, Any]]) -> Table:
    """Ratios are Prediction Provider over MLServer; the p50 difference, PP minus MLServer."""
    table = new_table(
        "Prediction Provider vs MLServer, each in its best configuration per load "
        "(most req/s; c=1: lowest p50)",
        COMPARISON_COLUMNS,
        left={"load", "PP protocol", "PP config", "MLS protocol", "MLServer best"},
    )
    previous = None
    for row in rows:
        if row["load"] != previous and previous is not None:
            table.add_section()
        previous = row["load"]
        table.add_row(
            row["load"],
            row["protocol"],
            row["pp_config"],
            fmt(row["pp_requests_per_s"], 1),
            row["mlserver_protocol"] or "-",
            row["mlserver_best_config"] or "-",
            fmt(row["mlserver_requests_per_s"], 1),
            times(row["requests_per_s_ratio"]),
            fmt(row["pp_p99_ms"]),
            fmt(row["mlserver_p99_ms"]),
            times(row["p99_ratio"]),
            fmt(row["p50_diff_ms"], signed=True) if row["load"] == SINGLE_C1.key else "",
            times(row["floor_rows_per_s_ratio"]) if row["load"] == BATCH.key else "",
        )
    return table


def targets_table(goals: Sequence[dict[str, Any]]) -> Table:
    table = new_table(
        "Targets",
        ("target", "PP protocol", "PP config", "value", "threshold", "met"),
        left={"target", "PP protocol", "PP config", "threshold", "met"},
    )
    for row in goals:
        met = "n/a (no MLServer figure)" if row["met"] is None else verdict(row["met"])
        digits = 3 if row["target"].endswith("ms") else 2
        value = fmt(row["value"], digits)
        table.add_row(row["target"], row["protocol"], row["pp_config"], value, row["threshold"], met)
    return table


def clean_json(value: Any) -> Any:
    """NaN is not JSON: write null instead."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {key: clean_json(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [clean_json(item) for item in value]
    return value


def write_results(path: Path, args: argparse.Namespace, floor: Floor, report: Report, **extra: Any) -> None:
    results = {
        "meta": run_meta(
            model=MODEL_REF,
            duration_s=args.duration,
            warmup_s=args.warmup,
            batch_rows=BATCH_ROWS,
            client=client_description(args.client),
            pp_auth=args.auth,
            pp_limits={"rate_limit": BENCH_RATE_LIMIT, "max_concurrent_predictions": BENCH_MAX_IN_FLIGHT},
            mlserver_batching_on={
                "max_batch_size": MLSERVER_MAX_BATCH_SIZE,
                "max_batch_time": MLSERVER_MAX_BATCH_TIME_S,
            },
        ),
        "floor": asdict(floor),
        "measurements": [asdict(m) for m in report.measurements],
        "servers": report.servers,
        **extra,
        "problems": report.problems,
        "warnings": report.warnings,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(clean_json(results), indent=2) + "\n")


def client_description(client: str) -> str:
    if client == H2LOAD:
        return (
            f"h2load ({h2load_version()}): one connection per concurrent request, HTTP/1.1 for REST, "
            "HTTP/2 for gRPC"
        )
    return (
        "Python: loadgen.py (asyncio, one keep-alive connection per concurrent request) for REST, "
        "grpc_loadgen.py (grpc.aio, one channel per concurrent request, raw bytes) for gRPC"
    )


def check_idle(report: Report) -> list[float]:
    """The load average before anything starts; a busy machine makes every figure here lower."""
    load = list(os.getloadavg())
    if load[0] > BUSY_LOAD_AVERAGE:
        report.warnings.append(
            f"the machine was busy before the run (1-min load average {load[0]:.2f}, "
            f"{os.cpu_count()} CPUs): other processes competed with the servers and the client"
        )
    return load


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    report = Report()
    load_at_start = check_idle(report)
    console.print(f"[bold]in-process floor[/bold] for {MODEL_REF}")
    from prediction_provider.config import Settings

    workdir = fresh_dir(args.output.parent / LOGS_DIRNAME)
    server_settings = pp_settings(args.data_dir, args.auth, workdir)
    inputs, floor, model_file, api_key = prepare(
        Settings(**server_settings), args.auth, budget_s=max(args.duration, 2.0)
    )
    answers = [
        bench_pp_config(config, inputs, server_settings, api_key, args, workdir, report)
        for config in pp_configs(args)
    ]
    reference = next((answer for answer in answers if answer is not None), None)  # the first config's
    paid = bench_paid(inputs, server_settings, api_key, args, workdir, report) if args.paid else None
    if reference is None:
        report.warnings.append(f"no v2 answer from {PP}: MLServer's is checked against the in-process model")
        reference = inputs.expected[-1:]
    if args.skip_mlserver:
        report.servers[MLSERVER] = {"status": "skipped (--skip-mlserver)"}
    else:
        bench_mlserver(model_file, inputs, reference, args, workdir, report)
    bench_bare_grpc(inputs, args, workdir, report)
    rows = comparisons(report.measurements, floor)
    goals = evaluate_targets(report.measurements, floor) + ([paid_goal(paid)] if paid else [])
    elapsed = time.perf_counter() - started
    write_results(
        args.output,
        args,
        floor,
        report,
        comparisons=rows,
        targets=goals,
        paid=paid,
        elapsed_s=round(elapsed, 1),
        load_average_at_start=load_at_start,
        load_average_at_end=list(os.getloadavg()),
    )

    console.print(figures_table(floor, report.measurements))
    console.print(comparison_table(rows))
    if paid:
        console.print(paid_table(paid))
    console.print(targets_table(goals))
    console.print(
        f"[dim]{PP} auth: {args.auth}, configurations: workers {', '.join(map(str, args.pp_workers))}, "
        f"pinned {', '.join(args.pp_pin)}, gRPC front end {', '.join(args.pp_grpc_frontend)}. "
        f"{os.cpu_count()} CPUs shared by client and servers; "
        "best = each server's configuration with the most req/s without errors; "
        "at c=1, each server's configuration with the lowest p50. "
        f"Run took {elapsed:.0f} s. JSON: {args.output}"
    )
    for warning in report.warnings:
        console.print(f"[bold yellow]WARNING:[/bold yellow] {warning}")
    for problem in report.problems:
        console.print(f"[bold red]FAILED:[/bold red] {problem}")
    return 1 if report.problems else 0


if __name__ == "__main__":
    sys.exit(main())
