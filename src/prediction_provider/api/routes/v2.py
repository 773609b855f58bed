"""Open Inference Protocol v2 over REST, with the binary tensor and model repository extensions.

Only wire translation lives here; ``serving.open_inference`` does the work.
Errors follow the protocol: ``{"error": "message"}``, 404 for an unknown
model, 400 for a bad request.
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from prediction_provider import errors
from prediction_provider.api.auth import ModelManager, ModelReader, prediction_slot
from prediction_provider.api.body import parse_json
from prediction_provider.api.deps import ServicesDep, is_ready, services_of
from prediction_provider.api.model_ops import ops_of, outcome_key_of, request_id_of
from prediction_provider.api.paid import paid_answer
from prediction_provider.api.protocol_route import protocol_route_class
from prediction_provider.serving import open_inference as oip
from prediction_provider.serving.model_repository import ModelRepository
from prediction_provider.serving.tensors import (
    Tensor,
    tensor_from_bytes,
    tensor_from_json,
    tensor_to_bytes,
    tensor_to_json_data,
)

HEADER_LENGTH = "inference-header-content-length"
V2_STATUS: dict[type[errors.PredictionProviderError], int] = {
    errors.InvalidFeatures: 400,
    errors.InvalidModelReference: 400,
    errors.BatchTooLarge: 400,
    # As Triton answers a request for a model with no loaded version; gRPC answers UNAVAILABLE.
    errors.ModelUnloaded: 400,
}


def v2_error(status: int, message: str) -> Response:
    return Response(orjson.dumps({"error": message}), status_code=status, media_type="application/json")


def render_v2_error(status: int, code: str, message: str) -> Response:
    return v2_error(status, message)


router = APIRouter(
    prefix="/v2",
    tags=["open inference protocol v2"],
    route_class=protocol_route_class(render_v2_error, V2_STATUS),
)


def json_response(payload: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(payload), status_code=status, media_type="application/json")


@router.get("", summary="Server metadata")
async def server_metadata() -> Response:
    return json_response(oip.server_metadata())


@router.get("/health/live", summary="Server liveness")
async def server_live() -> Response:
    return json_response({"live": True})


@router.get("/health/ready", summary="Server readiness")
async def server_ready(services: ServicesDep) -> Response:
    ready = await run_in_threadpool(is_ready, services)
    return json_response({"ready": ready}, 200 if ready else 503)


async def _versions(services: ServicesDep, name: str) -> list[str]:
    try:
        described = await run_in_threadpool(services.registry.versions, name)
    except errors.ModelNotFound:
        return []
    return [v["version"] for v in described]


@router.get("/models/{name}", summary="Model metadata")
@router.get("/models/{name}/versions/{version}", summary="Model version metadata")
async def model_metadata(
    name: str, reader: ModelReader, services: ServicesDep, version: str | None = None
) -> Response:
    cached = await services.cache.aget(oip.model_reference(name, version))
    versions = await _versions(services, cached.resolved.name) if cached.resolved.version else []
    return json_response(oip.model_metadata(cached, versions))


@router.get("/models/{name}/ready", summary="Model readiness")
@router.get("/models/{name}/versions/{version}/ready", summary="Model version readiness")
async def model_ready(
    name: str, reader: ModelReader, services: ServicesDep, version: str | None = None
) -> Response:
    ready = await run_in_threadpool(repository(services).is_ready, name, version)
    # Not ready answers 400, as Triton does: clients such as tritonclient read only the status.
    return json_response({"name": name, "ready": ready}, 200 if ready else 400)


@router.post("/models/{name}/infer", summary="Inference")
async def infer(name: str, request: Request) -> Response:
    return await _infer(request, name, None)


@router.post("/models/{name}/versions/{version}/infer", summary="Inference on a version")
async def infer_version(name: str, version: str, request: Request) -> Response:
    return await _infer(request, name, version)


async def _infer(request: Request, name: str, version: str | None) -> Response:
    services = services_of(request)
    async with prediction_slot(request) as principal:
        header, binary = await _split_body(request)
        ops = ops_of(services)
        request_id = request_id_of(request)
        route = ops.route(oip.model_reference(name, version), principal, request.headers, request_id)
        cached = await ops.load(route.reference)
        inputs = _decode_inputs(header, binary)
        matrix = oip.matrix_from_tensors(cached, inputs, services.settings.max_batch_rows)
        paid = route.experiment.model if route.experiment is not None else cached
        async with paid_answer(services, principal, paid, len(matrix)):
            served, _ = await ops.serve(
                route,
                lambda _: matrix,
                request_id=request_id,
                channel="v2",
                principal=principal,
                outcome_key=outcome_key_of(request),
                primary=cached,
            )
    requested = header.get("outputs") or []
    if not isinstance(requested, list) or not all(isinstance(o, dict) and "name" in o for o in requested):
        raise errors.InvalidTensor("outputs must be a list of {name, parameters}")
    tensors = oip.output_tensors(served.cached, served.output, [o["name"] for o in requested])
    binary_names = _binary_outputs(header, requested)
    response = _encode_response(served.cached, header, tensors, binary_names, oip.served_parameters(served))
    response.headers.update(served.headers())
    return response


async def _split_body(request: Request) -> tuple[dict[str, Any], bytes]:
    raw = await request.body()
    header_length = request.headers.get(HEADER_LENGTH)
    if header_length is not None:
        if not header_length.isdigit() or int(header_length) > len(raw):
            raise errors.InvalidTensor(f"invalid {HEADER_LENGTH} header")
        json_part, binary = raw[: int(header_length)], raw[int(header_length) :]
    else:
        json_part, binary = raw, b""
    try:
        header = parse_json(json_part)
    except ValueError as exc:
        raise errors.InvalidTensor(f"request is not valid JSON: {exc}") from exc
    if not isinstance(header, dict):
        raise errors.InvalidTensor("the inference request must be a JSON object")
    return header, binary


def _decode_inputs(header: dict[str, Any], binary: bytes) -> list[Tensor]:
    raw_inputs = header.get("inputs")
    if not isinstance(raw_inputs, list):
        raise errors.InvalidTensor("inputs must be a list of tensors")
    tensors = []
    offset = 0
    for item in raw_inputs:
        if not isinstance(item, dict) or not {"name", "datatype", "shape"} <= set(item):
            raise errors.InvalidTensor("each input needs name, datatype and shape")
        name, datatype, shape = item["name"], item["datatype"], item["shape"]
        size = (item.get("parameters") or {}).get("binary_data_size")
        if size is not None:
            if not isinstance(size, int) or size < 0 or offset + size > len(binary):
                raise errors.InvalidTensor(f"input {name!r}: binary_data_size exceeds the binary data")
            tensors.append(tensor_from_bytes(name, datatype, shape, binary[offset : offset + size]))
            offset += size
        elif "data" in item:
            tensors.append(tensor_from_json(name, datatype, shape, item["data"]))
        else:
            raise errors.InvalidTensor(f"input {name!r} has neither data nor binary_data_size")
    if offset != len(binary):
        raise errors.InvalidTensor("binary data is longer than the inputs declare")
    return tensors


def _binary_outputs(header: dict[str, Any], requested: list[dict[str, Any]]) -> set[str]:
    default = bool((header.get("parameters") or {}).get("binary_data_output", False))
    if not requested:
        return {"*"} if default else set()
    return {o["name"] for o in requested if (o.get("parameters") or {}).get("binary_data", default)}


def _encode_response(
    cached: Any,
    header: dict[str, Any],
    tensors: list[Tensor],
    binary_names: set[str],
    served: dict[str, Any] | None = None,
) -> Response:
    outputs = []
    chunks = []
    for tensor in tensors:
        entry: dict[str, Any] = {"name": tensor.name, "datatype": tensor.datatype, "shape": tensor.shape}
        if "*" in binary_names or tensor.name in binary_names:
            data = tensor_to_bytes(tensor)
            entry["parameters"] = {"binary_data_size": len(data)}
            chunks.append(data)
        else:
            entry["data"] = tensor_to_json_data(tensor)
        outputs.append(entry)
    body: dict[str, Any] = {
        "model_name": cached.resolved.name,
        "model_version": cached.resolved.version or "",
        "outputs": outputs,
    }
    if "id" in header:
        body["id"] = header["id"]
    if header.get("parameters"):
        body["parameters"] = header["parameters"]
    if served:  # the experiment variant or the fallback that answered
        body["parameters"] = {**(body.get("parameters") or {}), **served}
    payload = orjson.dumps(body)
    if not chunks:
        return Response(payload, media_type="application/json")
    return Response(
        b"".join([payload, *chunks]),
        media_type="application/octet-stream",
        headers={"Inference-Header-Content-Length": str(len(payload))},
    )


@router.post("/repository/index", summary="Models in the repository and their state")
async def repository_index(request: Request, reader: ModelReader, services: ServicesDep) -> Response:
    raw = await request.body()
    try:
        options = parse_json(raw) if raw.strip() else {}
    except ValueError as exc:
        raise errors.InvalidTensor(f"request is not valid JSON: {exc}") from exc
    only_ready = bool(options.get("ready", False)) if isinstance(options, dict) else False
    models = await run_in_threadpool(services.registry.list_models, None, 1000)
    return json_response(repository(services).index(models, only_ready))


def repository(services: ServicesDep) -> ModelRepository:
    return ModelRepository(services.cache, services.registry, services.unloaded)


@router.post("/repository/models/{name}/load", summary="Serve a model again, in every worker (and warm it)")
async def repository_load(name: str, manager: ModelManager, services: ServicesDep) -> Response:
    await run_in_threadpool(repository(services).load, name, manager.username)
    return json_response({})


@router.post(
    "/repository/models/{name}/unload",
    summary="Refuse a model (all versions) in every worker until a load, and free its memory",
)
async def repository_unload(name: str, manager: ModelManager, services: ServicesDep) -> Response:
    await run_in_threadpool(repository(services).unload, name, manager.username)
    return json_response({})
