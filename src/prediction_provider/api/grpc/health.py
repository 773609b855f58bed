"""``grpc.health.v1.Health`` and server reflection beside the inference service.

Kubernetes' gRPC probes and ``grpc_health_probe`` ask the standard health
service, not Triton's ``ServerReady``; ``grpcurl`` and other tools discover the
services through reflection. Both are served unauthenticated, as
``/health/live`` and ``/health/ready`` are: they expose no model or data, only
whether the server serves and the (public) protocol's schema.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2
from google.protobuf.descriptor_pool import DescriptorPool
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2
from starlette.concurrency import run_in_threadpool

from prediction_provider.api.deps import Services, is_ready
from prediction_provider.api.grpc import open_inference_pb2

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class ReadinessHealth(health.aio.HealthServicer):  # type: ignore[misc]  # grpc_health has no type hints
    """The whole server (``""``) and each inference service are SERVING while the server is
    ready, as ``/health/ready`` decides it (registry reachable, every warm model loaded).

    ``Check`` decides it again on every call, so a probe sees a registry outage or its
    end; ``Watch`` streams what the last ``Check`` (or start-up) found. From the start of
    shutdown every service is NOT_SERVING for good, so that load balancers drain the
    server while in-flight calls finish.
    """

    def __init__(self, services: Services, service_names: tuple[str, ...]) -> None:
        super().__init__()
        self.services = services
        self.readiness_services = ("", *service_names)

    async def refresh(self) -> bool:
        """Decide readiness now and publish it; ignored once shutdown has begun."""
        ready = await run_in_threadpool(is_ready, self.services)
        for name in self.readiness_services:
            await self.set(name, SERVING if ready else NOT_SERVING)
        return ready

    async def Check(self, request: health_pb2.HealthCheckRequest, context: Any) -> Any:
        if request.service in self.readiness_services:
            await self.refresh()
        return await super().Check(request, context)


def add_health_and_reflection(
    server: Any, services: Services, service_names: tuple[str, ...], reflect: bool
) -> ReadinessHealth:
    """Register the health service (and, if ``reflect``, reflection) on a ``grpc.aio`` server."""
    servicer = ReadinessHealth(services, service_names)
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    if reflect:
        names = (*service_names, health.SERVICE_NAME, reflection.SERVICE_NAME)
        reflection.enable_server_reflection(names, server, pool=reflected_pool())
    return servicer


def reflected_pool() -> DescriptorPool:
    """The served protos in one pool. Reflection reads one pool, and the default one lacks
    the inference service: its generated module registers it in a private pool (there it
    only appeared when some other module, e.g. tritonclient's, had put the same names in)."""
    pool = DescriptorPool()
    for file in (open_inference_pb2.DESCRIPTOR, health_pb2.DESCRIPTOR, reflection_pb2.DESCRIPTOR):
        proto = descriptor_pb2.FileDescriptorProto()
        file.CopyToProto(proto)
        pool.Add(proto)
    return pool
