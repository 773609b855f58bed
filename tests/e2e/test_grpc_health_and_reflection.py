"""The standard gRPC health service and server reflection, beside the inference service."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import httpx
import pytest
from google.protobuf.descriptor_pool import DescriptorPool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from tests.conftest import LiveServer

INFERENCE = "inference.GRPCInferenceService"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@pytest.fixture
def channel(grpc_server: LiveServer) -> Iterator[grpc.Channel]:
    """No credentials: probes and tools call these services without any. Both front ends."""
    with grpc.insecure_channel(f"127.0.0.1:{grpc_server.services.grpc_port}") as opened:
        yield opened


@pytest.fixture
def grpcio_channel(live_server: LiveServer) -> Iterator[grpc.Channel]:
    """The streaming services (Watch, reflection) are grpcio's: the native front end forwards unary calls."""
    with grpc.insecure_channel(f"127.0.0.1:{live_server.services.grpc_port}") as opened:
        yield opened


@pytest.fixture
def failed_warm_model(grpc_server: LiveServer) -> Iterator[None]:
    """The server as a model that failed to warm leaves it: up, but not ready."""
    reference = "models:/failed-to-warm/1"
    grpc_server.services.warm_errors[reference] = "could not load"
    yield
    grpc_server.services.warm_errors.pop(reference, None)


def check(channel: grpc.Channel, service: str = "") -> int:
    request = health_pb2.HealthCheckRequest(service=service)
    return health_pb2_grpc.HealthStub(channel).Check(request, timeout=10).status  # type: ignore[no-any-return]


def test_health_answers_serving_for_the_server_and_the_inference_service(channel: grpc.Channel) -> None:
    assert check(channel) == SERVING
    assert check(channel, INFERENCE) == SERVING
    with pytest.raises(grpc.RpcError) as unknown:
        check(channel, "no.such.Service")
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.usefixtures("failed_warm_model")
def test_health_follows_readiness_as_health_ready_does(
    channel: grpc.Channel, grpc_server: LiveServer
) -> None:
    assert httpx.get(f"{grpc_server.url}/health/ready", timeout=10).status_code == 503
    assert check(channel) == NOT_SERVING
    assert check(channel, INFERENCE) == NOT_SERVING


def test_health_is_serving_again_once_ready(
    channel: grpc.Channel, grpc_server: LiveServer, failed_warm_model: None
) -> None:
    assert check(channel, INFERENCE) == NOT_SERVING
    grpc_server.services.warm_errors.clear()
    assert check(channel, INFERENCE) == SERVING


def test_watch_streams_what_checks_find(grpcio_channel: grpc.Channel, live_server: LiveServer) -> None:
    channel = grpcio_channel
    stream = health_pb2_grpc.HealthStub(channel).Watch(
        health_pb2.HealthCheckRequest(service=INFERENCE), timeout=30
    )
    try:
        assert next(stream).status == SERVING
        live_server.services.warm_errors["models:/failed-to-warm/1"] = "could not load"
        assert check(channel, INFERENCE) == NOT_SERVING
        assert next(stream).status == NOT_SERVING
    finally:
        live_server.services.warm_errors.clear()
        check(channel, INFERENCE)  # back to SERVING for the tests that follow
        stream.cancel()


def test_reflection_describes_the_inference_service(grpcio_channel: grpc.Channel) -> None:
    database = ProtoReflectionDescriptorDatabase(grpcio_channel)
    assert {INFERENCE, "grpc.health.v1.Health"} <= set(database.get_services())
    service = DescriptorPool(database).FindServiceByName(INFERENCE)
    assert {"ModelInfer", "ModelMetadata", "ServerReady"} <= {method.name for method in service.methods}
    infer = service.methods_by_name["ModelInfer"]
    assert (infer.input_type.full_name, infer.output_type.full_name) == (
        "inference.ModelInferRequest",
        "inference.ModelInferResponse",
    )
