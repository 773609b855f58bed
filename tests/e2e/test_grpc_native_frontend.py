"""What only the native gRPC front end (``PP_GRPC_FRONTEND=native``) does: forward calls over its
socket by call id, carry large messages, refuse oversized ones, and come back if it dies."""

from __future__ import annotations

import asyncio
import os
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from prediction_provider.api.grpc import open_inference_pb2 as pb
from prediction_provider.api.grpc.native_frontend import NativeFrontend
from prediction_provider.config import Settings
from prediction_provider.features.pipeline import FEATURE_NAMES
from tests.conftest import MODEL, LiveServer, live_settings

INFER = "/inference.GRPCInferenceService/ModelInfer"


@pytest.fixture(scope="module")
def native_server(settings: Settings, grpc_frontend_binary: Path) -> Iterator[LiveServer]:
    native = live_settings(settings, grpc_frontend="native", grpc_frontend_binary=grpc_frontend_binary)
    with LiveServer(native) as server:
        yield server


@pytest.fixture
def channel(native_server: LiveServer) -> Iterator[grpc.Channel]:
    options = [("grpc.max_send_message_length", 8 * 1024 * 1024)]
    with grpc.insecure_channel(f"127.0.0.1:{native_server.services.grpc_port}", options=options) as opened:
        yield opened


def frontend_of(server: LiveServer) -> NativeFrontend:
    frontend = server.app.state.grpc_server
    assert isinstance(frontend, NativeFrontend)
    return frontend


def infer_request(rows: np.ndarray) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name=MODEL, model_version="1", id=f"rows-{len(rows)}")
    request.inputs.add(name="input-0", datatype="FP64", shape=list(rows.shape))
    request.raw_input_contents.append(np.ascontiguousarray(rows, dtype="<f8").tobytes())
    return request


def model_infer(channel: grpc.Channel) -> grpc.UnaryUnaryMultiCallable:
    return channel.unary_unary(
        INFER,
        request_serializer=pb.ModelInferRequest.SerializeToString,
        response_deserializer=pb.ModelInferResponse.FromString,
    )


def probabilities(reply: pb.ModelInferResponse) -> np.ndarray:
    index = [o.name for o in reply.outputs].index("probabilities")
    shape = list(reply.outputs[index].shape)
    return np.frombuffer(reply.raw_output_contents[index], dtype="<f8").reshape(shape)


def feature_matrix(feature_rows: list[dict[str, float]]) -> np.ndarray:
    return np.array([[row[name] for name in FEATURE_NAMES] for row in feature_rows])


def test_concurrent_calls_each_get_their_own_answer(
    channel: grpc.Channel,
    client_headers: dict[str, str],
    feature_rows: list[dict[str, float]],
    native_server: LiveServer,
) -> None:
    """Answers come back over one socket in any order; each must reach the call that asked."""
    matrix = feature_matrix(feature_rows)
    metadata = tuple((k.lower(), v) for k, v in client_headers.items())
    infer = model_infer(channel)
    requests = [infer_request(matrix[i : i + 1]) for i in range(40)]
    one_by_one = [probabilities(infer(request, metadata=metadata)) for request in requests]
    calls = [infer.future(request, metadata=metadata) for request in requests]
    for call, expected in zip(calls, one_by_one, strict=True):
        np.testing.assert_allclose(probabilities(call.result(timeout=60)), expected, rtol=1e-12)
    # Different rows give different answers, so a mixed-up delivery could not pass.
    assert len({tuple(p.ravel()) for p in one_by_one}) > 1


def test_large_requests_cross_the_socket_whole(
    channel: grpc.Channel, client_headers: dict[str, str], feature_rows: list[dict[str, float]]
) -> None:
    matrix = np.tile(feature_matrix(feature_rows), (10, 1))[:2000]  # 256 kB of tensor
    metadata = tuple((k.lower(), v) for k, v in client_headers.items())
    infer = model_infer(channel)
    reply = infer(infer_request(matrix), metadata=metadata, timeout=60)
    assert reply.id == "rows-2000"
    got = probabilities(reply)
    assert got.shape == (2000, 3)
    np.testing.assert_allclose(got[:200], got[200:400], rtol=1e-12)  # the same rows, the same answers


def test_oversized_messages_are_refused(channel: grpc.Channel, client_headers: dict[str, str]) -> None:
    metadata = tuple((k.lower(), v) for k, v in client_headers.items())
    infer = channel.unary_unary(INFER, request_serializer=lambda b: b, response_deserializer=lambda b: b)
    with pytest.raises(grpc.RpcError) as refused:
        infer(b"\0" * 1_200_000, metadata=metadata, timeout=30)  # the tests' limit is 1,000,000 bytes
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_unparsable_and_unknown_calls_get_grpc_errors(channel: grpc.Channel) -> None:
    infer = channel.unary_unary(INFER, request_serializer=lambda b: b, response_deserializer=lambda b: b)
    with pytest.raises(grpc.RpcError) as garbage:
        infer(b"\xff\xff\xff", timeout=30)
    assert garbage.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    unknown = channel.unary_unary("/inference.GRPCInferenceService/NoSuchMethod")
    with pytest.raises(grpc.RpcError) as missing:
        unknown(b"", timeout=30)
    assert missing.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_streaming_services_answer_unimplemented(channel: grpc.Channel) -> None:
    """Health Watch and reflection stream; only PP_GRPC_FRONTEND=python serves them."""
    assert health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=30).status == (
        health_pb2.HealthCheckResponse.SERVING
    )
    watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(), timeout=30)
    with pytest.raises(grpc.RpcError) as watched:
        next(watch)
    assert watched.value.code() == grpc.StatusCode.UNIMPLEMENTED
    reflect = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=30
    )
    with pytest.raises(grpc.RpcError) as reflected:
        next(reflect)
    assert reflected.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_a_front_end_that_dies_is_started_again_on_the_same_port(native_server: LiveServer) -> None:
    frontend = frontend_of(native_server)
    assert frontend.process is not None
    dead_pid, port, restarts = frontend.process.pid, native_server.services.grpc_port, frontend.restarts
    os.kill(dead_pid, signal.SIGKILL)
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        # Waits for the port to answer again: the worker starts another front end on it.
        check = health_pb2_grpc.HealthStub(channel).Check
        answer = check(health_pb2.HealthCheckRequest(), timeout=60, wait_for_ready=True)
    assert answer.status == health_pb2.HealthCheckResponse.SERVING
    assert frontend.restarts == restarts + 1
    assert frontend.process.pid != dead_pid
    assert frontend.port == port


def test_a_front_end_that_cannot_start_fails_the_start_cleanly(native_server: LiveServer) -> None:
    """``/bin/false`` exits at once: the start reports it and leaves no socket directory behind."""
    temp = Path(tempfile.gettempdir())

    async def start() -> None:
        await NativeFrontend(native_server.services, "127.0.0.1", 0, Path("/bin/false")).start()

    before = set(temp.glob("pp-grpc-*"))
    with pytest.raises(OSError, match="exited with 1"):
        asyncio.run(start())
    assert set(temp.glob("pp-grpc-*")) <= before
