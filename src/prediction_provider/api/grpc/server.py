"""The ``inference.GRPCInferenceService`` servicer and its server, run beside HTTP.

It runs on the app's event loop (``grpc.aio``) and shares its services: the
same cache, batchers and handlers as ``/v2`` over REST. Tensors are answered
as ``raw_output_contents``, as Triton does.
"""

from __future__ import annotations

import contextvars
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
import numpy as np
from starlette.concurrency import run_in_threadpool

from prediction_provider import errors
from prediction_provider.accounts.principal import Principal
from prediction_provider.accounts.roles import Permission
from prediction_provider.api.auth import caller_key, principal_from_credentials, require_permission
from prediction_provider.api.deps import Services, is_ready
from prediction_provider.api.grpc import open_inference_pb2 as pb
from prediction_provider.api.grpc.health import ReadinessHealth, add_health_and_reflection
from prediction_provider.api.middleware import new_request_id
from prediction_provider.api.paid import paid_answer
from prediction_provider.db.base import utcnow
from prediction_provider.serving import open_inference as oip
from prediction_provider.serving.cache import CachedModel
from prediction_provider.serving.model_repository import ModelRepository
from prediction_provider.serving.tensors import (
    NUMPY_BY_DATATYPE,
    Tensor,
    tensor_from_bytes,
    tensor_from_json,
    tensor_to_bytes,
)

log = logging.getLogger(__name__)

Reply = TypeVar("Reply")

GRPC_STATUS: dict[type[errors.PredictionProviderError], grpc.StatusCode] = {
    errors.AuthenticationFailed: grpc.StatusCode.UNAUTHENTICATED,
    errors.PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    errors.RateLimited: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.ModelNotFound: grpc.StatusCode.NOT_FOUND,
    errors.UntrustedModelPath: grpc.StatusCode.PERMISSION_DENIED,
    errors.ModelLoadFailed: grpc.StatusCode.UNAVAILABLE,
    errors.ModelUnloaded: grpc.StatusCode.UNAVAILABLE,
    errors.RegistryUnavailable: grpc.StatusCode.UNAVAILABLE,
    errors.PredictionFailed: grpc.StatusCode.INTERNAL,
    # 402 has no gRPC twin: the call cannot proceed until the wallet is funded.
    errors.PaymentRequired: grpc.StatusCode.FAILED_PRECONDITION,
}

CONTENTS_FIELD = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


def _status_for(exc: errors.PredictionProviderError) -> grpc.StatusCode:
    for error_type in type(exc).__mro__:
        if error_type in GRPC_STATUS:
            return GRPC_STATUS[error_type]  # type: ignore[index]
    return grpc.StatusCode.INVALID_ARGUMENT


_caller_of_call: contextvars.ContextVar[Principal | None] = contextvars.ContextVar(
    "grpc_caller", default=None
)

HTTP_STATUS_OF_GRPC = {
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
}


async def _answer(
    services: Services, rpc: str, context: grpc.aio.ServicerContext, work: Callable[[], Awaitable[Reply]]
) -> Reply:
    """Run ``work`` and write the call to the audit trail, as the HTTP envelope does for requests.

    A service error ends the call with the matching gRPC status.
    """
    started = time.perf_counter()
    status = 500
    try:
        reply = await work()
        status = 200
        return reply
    except errors.PredictionProviderError as exc:
        code = _status_for(exc)
        status = HTTP_STATUS_OF_GRPC.get(code, 400)
        await context.abort(code, exc.message)
        raise AssertionError("unreachable: abort raises") from exc
    finally:
        principal = _caller_of_call.get()
        services.audit.record({
            "at": utcnow(), "request_id": new_request_id(), "user_id": getattr(principal, "user_id", None),
            "username": getattr(principal, "username", None),
            "role": str(principal.role) if principal is not None else None,
            "method": "GRPC", "path": f"/inference.GRPCInferenceService/{rpc}", "status": status,
            "latency_ms": round((time.perf_counter() - started) * 1000, 3),
            "client_address": _peer_address(context)[:64],
        })  # fmt: skip


SERVICE = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"]


def add_servicer(servicer: InferenceServicer, server: grpc.aio.Server) -> None:
    """Route every method of the proto's service to ``servicer``'s method of the same name.

    Built from the service descriptor instead of protoc's ``_pb2_grpc`` module: that module
    is mostly a client stub and a base servicer whose every method is a placeholder.
    """
    handlers = {}
    for method in SERVICE.methods:
        if method.client_streaming or method.server_streaming:
            raise TypeError(f"{method.full_name} streams; only unary methods are served")
        handlers[method.name] = grpc.unary_unary_rpc_method_handler(
            getattr(servicer, method.name),
            request_deserializer=getattr(pb, method.input_type.name).FromString,
            response_serializer=getattr(pb, method.output_type.name).SerializeToString,
        )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE.full_name, handlers),))
    # Registered methods are looked up once, not matched by name on every call.
    server.add_registered_method_handlers(SERVICE.full_name, handlers)


class InferenceServicer:
    def __init__(self, services: Services) -> None:
        self.services = services

    async def _caller(self, context: Any, permission: Permission) -> Principal:
        metadata = {key.lower(): value for key, value in context.invocation_metadata() or ()}
        principal = await principal_from_credentials(
            self.services, metadata.get("x-api-key"), metadata.get("authorization"), _peer_address(context)
        )
        _caller_of_call.set(principal)
        return require_permission(principal, permission)

    def _repository(self) -> ModelRepository:
        return ModelRepository(self.services.cache, self.services.registry, self.services.unloaded)

    async def _cached(self, name: str, version: str) -> CachedModel:
        return await self.services.cache.aget(oip.model_reference(name, version or None))

    async def ServerLive(self, request: Any, context: Any) -> pb.ServerLiveResponse:
        async def work() -> pb.ServerLiveResponse:
            return pb.ServerLiveResponse(live=True)

        return await _answer(self.services, "ServerLive", context, work)

    async def ServerReady(self, request: Any, context: Any) -> pb.ServerReadyResponse:
        async def work() -> pb.ServerReadyResponse:
            return pb.ServerReadyResponse(ready=await run_in_threadpool(is_ready, self.services))

        return await _answer(self.services, "ServerReady", context, work)

    async def ModelReady(self, request: Any, context: Any) -> pb.ModelReadyResponse:
        async def work() -> pb.ModelReadyResponse:
            await self._caller(context, Permission.READ_MODELS)
            ready = await run_in_threadpool(
                self._repository().is_ready, request.name, request.version or None
            )
            return pb.ModelReadyResponse(ready=ready)

        return await _answer(self.services, "ModelReady", context, work)

    async def ServerMetadata(self, request: Any, context: Any) -> pb.ServerMetadataResponse:
        async def work() -> pb.ServerMetadataResponse:
            return pb.ServerMetadataResponse(**oip.server_metadata())

        return await _answer(self.services, "ServerMetadata", context, work)

    async def ModelMetadata(self, request: Any, context: Any) -> pb.ModelMetadataResponse:
        async def work() -> pb.ModelMetadataResponse:
            await self._caller(context, Permission.READ_MODELS)
            cached = await self._cached(request.name, request.version)
            versions: list[str] = []
            if cached.resolved.version:
                described = await run_in_threadpool(self.services.registry.versions, cached.resolved.name)
                versions = [v["version"] for v in described]
            meta = oip.model_metadata(cached, versions)
            tensor = pb.ModelMetadataResponse.TensorMetadata
            return pb.ModelMetadataResponse(
                name=meta["name"],
                versions=meta["versions"],
                platform=meta["platform"],
                inputs=[tensor(**t) for t in meta["inputs"]],
                outputs=[tensor(**t) for t in meta["outputs"]],
            )

        return await _answer(self.services, "ModelMetadata", context, work)

    async def ModelInfer(self, request: Any, context: Any) -> pb.ModelInferResponse:
        async def work() -> pb.ModelInferResponse:
            principal = await self._caller(context, Permission.PREDICT)
            with self.services.throttle.in_flight(caller_key(principal, _peer_address(context))):
                ops = self.services.modelops
                assert ops is not None
                metadata = {key.lower(): value for key, value in (context.invocation_metadata() or ())}
                request_id = str(metadata.get("x-request-id") or new_request_id())[:64]
                reference = oip.model_reference(request.model_name, request.model_version or None)
                route = ops.route(reference, principal, metadata, request_id)
                cached = await ops.load(route.reference)
                inputs = _decode_inputs(request)
                matrix = oip.matrix_from_tensors(cached, inputs, self.services.settings.max_batch_rows)
                paid = route.experiment.model if route.experiment is not None else cached
                async with paid_answer(self.services, principal, paid, len(matrix)):
                    served, _ = await ops.serve(
                        route,
                        lambda _: matrix,
                        request_id=request_id,
                        channel="grpc",
                        principal=principal,
                        outcome_key=metadata.get("x-pp-outcome-key"),
                        primary=cached,
                    )
            answering = served.cached
            tensors = oip.output_tensors(answering, served.output, [o.name for o in request.outputs])
            reply = pb.ModelInferResponse(
                model_name=answering.resolved.name,
                model_version=answering.resolved.version or "",
                id=request.id,
            )
            for key, value in oip.served_parameters(served).items():
                if isinstance(value, bool) or not isinstance(value, (str, int)):
                    continue
                if isinstance(value, int):
                    reply.parameters[key].int64_param = value
                else:
                    reply.parameters[key].string_param = value
            for tensor in tensors:
                reply.outputs.add(name=tensor.name, datatype=tensor.datatype, shape=tensor.shape)
                reply.raw_output_contents.append(tensor_to_bytes(tensor))
            trailing = [(key.lower(), value) for key, value in served.headers().items()]
            if trailing:
                context.set_trailing_metadata(tuple(trailing))
            return reply

        return await _answer(self.services, "ModelInfer", context, work)

    async def RepositoryIndex(self, request: Any, context: Any) -> pb.RepositoryIndexResponse:
        async def work() -> pb.RepositoryIndexResponse:
            await self._caller(context, Permission.READ_MODELS)
            models = await run_in_threadpool(self.services.registry.list_models, None, 1000)
            reply = pb.RepositoryIndexResponse()
            for entry in self._repository().index(models, request.ready):
                reply.models.add(**entry)
            return reply

        return await _answer(self.services, "RepositoryIndex", context, work)

    async def RepositoryModelLoad(self, request: Any, context: Any) -> pb.RepositoryModelLoadResponse:
        async def work() -> pb.RepositoryModelLoadResponse:
            principal = await self._caller(context, Permission.MANAGE_MODELS)
            await run_in_threadpool(self._repository().load, request.model_name, principal.username)
            return pb.RepositoryModelLoadResponse()

        return await _answer(self.services, "RepositoryModelLoad", context, work)

    async def RepositoryModelUnload(self, request: Any, context: Any) -> pb.RepositoryModelUnloadResponse:
        async def work() -> pb.RepositoryModelUnloadResponse:
            principal = await self._caller(context, Permission.MANAGE_MODELS)
            await run_in_threadpool(self._repository().unload, request.model_name, principal.username)
            return pb.RepositoryModelUnloadResponse()

        return await _answer(self.services, "RepositoryModelUnload", context, work)


def _peer_address(context: Any) -> str:
    """``ipv4:127.0.0.1:50000`` → ``127.0.0.1``."""
    peer = str(context.peer() or "unknown")
    kind, _, rest = peer.partition(":")
    return rest.rsplit(":", 1)[0] if kind in ("ipv4", "ipv6") else peer


def _decode_inputs(request: Any) -> list[Tensor]:
    raw = list(request.raw_input_contents)
    if raw and len(raw) != len(request.inputs):
        raise errors.InvalidTensor("raw_input_contents must hold one entry per input")
    tensors = []
    for i, tensor in enumerate(request.inputs):
        shape = list(tensor.shape)
        if tensor.datatype not in NUMPY_BY_DATATYPE:
            raise errors.InvalidTensor(f"input {tensor.name!r}: unsupported datatype {tensor.datatype!r}")
        if raw:
            tensors.append(tensor_from_bytes(tensor.name, tensor.datatype, shape, raw[i]))
            continue
        field = CONTENTS_FIELD.get(tensor.datatype)
        if field is None:
            raise errors.InvalidTensor(f"input {tensor.name!r}: {tensor.datatype} needs raw_input_contents")
        values = list(getattr(tensor.contents, field))
        if tensor.datatype in ("FP32", "FP64"):
            values = np.asarray(values, dtype=np.float64).tolist()
        tensors.append(tensor_from_json(tensor.name, tensor.datatype, shape, values))
    return tensors


@dataclass(frozen=True, slots=True)
class RunningGrpcServer:
    server: grpc.aio.Server
    port: int
    health: ReadinessHealth

    async def stop(self, grace_s: float) -> None:
        """Health goes NOT_SERVING first, then calls in flight get ``grace_s`` to finish."""
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace=grace_s)


async def start_grpc_server(services: Services, host: str, port: int) -> RunningGrpcServer:
    """Start serving on ``host:port`` (0 picks a free port): the inference service, the
    standard health service and, unless turned off, reflection."""
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", services.settings.max_body_bytes),
            ("grpc.so_reuseport", 1),
        ]
    )
    add_servicer(InferenceServicer(services), server)
    health = add_health_and_reflection(
        server, services, (SERVICE.full_name,), reflect=services.settings.grpc_reflection
    )
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise OSError(f"could not bind the gRPC server to {host}:{port}")
    await server.start()
    await health.refresh()
    log.info("gRPC Open Inference Protocol on %s:%d", host, bound)
    return RunningGrpcServer(server, bound, health)
