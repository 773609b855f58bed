"""Start-up and shutdown of the gRPC server: health on the way down, reflection off on request."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from prediction_provider.api.deps import Services
from prediction_provider.api.grpc.server import RunningGrpcServer, start_grpc_server
from prediction_provider.app import build_services, close_services
from prediction_provider.config import Settings

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@pytest.fixture
def services(settings: Settings) -> Iterator[Services]:
    built = build_services(settings.model_copy(update={"grpc_reflection": False}))
    yield built
    close_services(built)


@asynccontextmanager
async def running(services: Services) -> AsyncIterator[RunningGrpcServer]:
    """Started in the test's own event loop: a grpc.aio server serves only on the loop it began on."""
    server = await start_grpc_server(services, "127.0.0.1", 0)
    try:
        yield server
    finally:
        await server.server.stop(None)


async def check(running: RunningGrpcServer, service: str = "") -> int:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=10
        )
        return reply.status  # type: ignore[no-any-return]


async def test_shutdown_turns_health_not_serving_for_good(services: Services) -> None:
    async with running(services) as server:
        assert await check(server) == SERVING
        await server.health.enter_graceful_shutdown()  # the first step of RunningGrpcServer.stop
        assert await check(server) == NOT_SERVING
        assert await check(server, "inference.GRPCInferenceService") == NOT_SERVING
        # A ready server stays NOT_SERVING once it drains: Check's readiness refresh does not undo it.
        assert await server.health.refresh()
        assert await check(server) == NOT_SERVING


async def test_stop_refuses_new_calls(services: Services) -> None:
    async with running(services) as server:
        await server.stop(grace_s=0)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await check(server)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_reflection_can_be_turned_off(services: Services) -> None:
    async with running(services) as server, grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        replies = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
        with pytest.raises(grpc.aio.AioRpcError) as missing:
            async for _ in replies:
                pass
    assert missing.value.code() == grpc.StatusCode.UNIMPLEMENTED
