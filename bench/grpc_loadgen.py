"""A closed-loop gRPC load generator (``grpc.aio``) for unary calls on loopback.

The gRPC counterpart of ``loadgen.py``, with the same rules (``ClosedLoop``):
N workers each send a call, wait for its answer, record the latency and send
the next, for a warm-up and then a measured duration, bounded by a deadline, a
call count and a per-call timeout. It returns the same ``LoadResult``; its
``errors`` are keyed by gRPC status code (14 = UNAVAILABLE, ...), not HTTP status.

To keep the client's CPU cost low (it shares the machine with the server), the
request message is serialized once and the method is called with bytes in and
bytes out: no protobuf work per call on the client side. Each worker has its
own channel, and so its own HTTP/2 connection (a local subchannel pool stops
gRPC from sharing one connection between channels to the same target), as
``loadgen.py`` gives each concurrent client its own keep-alive connection.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from contextlib import AsyncExitStack

import grpc
import numpy as np
import numpy.typing as npt

from loadgen import LOOPBACK_HOSTS, ClosedLoop, LoadResult, loop_factory

OK = grpc.StatusCode.OK.value[0]
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
CHANNEL_OPTIONS = (
    ("grpc.use_local_subchannel_pool", 1),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
)


def model_infer_method() -> str:
    """The full method path of ``ModelInfer``, read from the project's own protobuf descriptor."""
    from prediction_provider.api.grpc import open_inference_pb2 as pb

    service = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    return f"/{service.full_name}/{service.methods_by_name['ModelInfer'].name}"


def model_infer_request(
    model_name: str, model_version: str, matrix: npt.NDArray[np.float64], input_name: str = "input-0"
) -> bytes:
    """A serialized ``ModelInferRequest``: one FP64 ``[rows, features]`` tensor as raw little-endian bytes."""
    from prediction_provider.api.grpc import open_inference_pb2 as pb

    rows, columns = matrix.shape
    request = pb.ModelInferRequest(
        model_name=model_name,
        model_version=model_version,
        inputs=[
            pb.ModelInferRequest.InferInputTensor(name=input_name, datatype="FP64", shape=[rows, columns])
        ],
        raw_input_contents=[np.ascontiguousarray(matrix).astype("<f8").tobytes()],
    )
    return request.SerializeToString()


async def _worker(
    channel: grpc.aio.Channel, method: str, run: ClosedLoop, metadata: tuple[tuple[str, str], ...]
) -> None:
    # No serializers: the request goes out as the bytes given, the answer comes back as bytes.
    call = channel.unary_unary(method)
    while run.take():
        started = time.perf_counter_ns()
        try:
            body = await call(run.request, timeout=run.timeout_s, metadata=metadata or None)
            status = OK
        except grpc.aio.AioRpcError as exc:
            body, status = b"", exc.code().value[0]
        run.record(started, time.perf_counter_ns(), status, body, ok_status=OK)


async def run_grpc_load_async(
    host: str,
    port: int,
    method: str,
    request: bytes,
    *,
    concurrency: int,
    duration_s: float,
    warmup_s: float = 1.0,
    max_requests: int = 1_000_000,
    timeout_s: float = 30.0,
    channels: int | None = None,
    metadata: Mapping[str, str] | None = None,
) -> LoadResult:
    """Drive ``concurrency`` workers calling ``method`` for ``warmup_s + duration_s`` seconds.

    As ``loadgen.run_load_async``: calls started during the warm-up are not
    recorded, ``max_requests`` counts them too, and throughput is the recorded
    calls over the time from the end of the warm-up to the last recorded answer.
    Workers share ``channels`` channels round-robin (default: one each); the
    channels connect before the clock starts. ``metadata`` goes with every call
    (credentials, for instance; keys must be lower-case).
    """
    if host not in LOOPBACK_HOSTS:
        raise ValueError(f"this load generator only targets loopback, not {host!r}")
    if channels is not None and channels < 1:
        raise ValueError("channels must be positive")
    count = concurrency if channels is None else min(concurrency, channels)
    pairs = tuple((metadata or {}).items())
    async with AsyncExitStack() as stack:
        opened = [
            await stack.enter_async_context(
                grpc.aio.insecure_channel(f"{host}:{port}", options=CHANNEL_OPTIONS)
            )
            for _ in range(count)
        ]
        async with asyncio.timeout(timeout_s):
            await asyncio.gather(*(channel.channel_ready() for channel in opened))
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
            for index in range(concurrency):
                group.create_task(_worker(opened[index % count], method, run, pairs))
    return run.finish()


def run_grpc_load(
    host: str,
    port: int,
    method: str,
    request: bytes,
    *,
    concurrency: int,
    duration_s: float,
    warmup_s: float = 1.0,
    max_requests: int = 1_000_000,
    timeout_s: float = 30.0,
    channels: int | None = None,
    metadata: Mapping[str, str] | None = None,
) -> LoadResult:
    """Synchronous wrapper of ``run_grpc_load_async`` with its own (uv)loop, as ``loadgen.run_load``."""
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(
            run_grpc_load_async(
                host,
                port,
                method,
                request,
                concurrency=concurrency,
                duration_s=duration_s,
                warmup_s=warmup_s,
                max_requests=max_requests,
                timeout_s=timeout_s,
                channels=channels,
                metadata=metadata,
            )
        )
