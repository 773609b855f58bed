"""The MLflow scoring protocol, so ``mlflow models serve`` clients work unchanged.

``POST /invocations`` scores the configured default model (``PP_DEFAULT_MODEL``);
``POST /models/{name}[/versions/{version}]/invocations`` scores any other.
Errors use MLflow's shape: ``{"error_code", "message"}``.
"""

from __future__ import annotations

from typing import Any

import anyio.to_thread
import orjson
from fastapi import APIRouter, Request
from starlette.responses import PlainTextResponse, Response

from prediction_provider import errors
from prediction_provider.accounts.principal import Principal
from prediction_provider.api.auth import prediction_slot
from prediction_provider.api.body import parse_json
from prediction_provider.api.deps import Services, services_of
from prediction_provider.api.model_ops import ops_of, outcome_key_of, request_id_of
from prediction_provider.api.paid import paid_answer
from prediction_provider.api.protocol_route import protocol_route_class
from prediction_provider.serving import mlflow_scoring
from prediction_provider.serving.cache import CachedModel
from prediction_provider.serving.open_inference import model_reference

MLFLOW_ERROR_CODES = {
    400: "BAD_REQUEST",
    404: "RESOURCE_DOES_NOT_EXIST",
    413: "BAD_REQUEST",
    415: "BAD_REQUEST",
}
STATUS_OVERRIDES: dict[type[errors.PredictionProviderError], int] = {
    errors.InvalidFeatures: 400,
    errors.InvalidModelReference: 400,
    errors.InvalidTensor: 400,
}


def render_mlflow_error(status: int, code: str, message: str) -> Response:
    error_code = (
        "MODEL_UNLOADED" if code == "model_unloaded" else MLFLOW_ERROR_CODES.get(status, "INTERNAL_ERROR")
    )
    body = {"error_code": error_code, "message": message}
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


router = APIRouter(
    tags=["mlflow scoring protocol"], route_class=protocol_route_class(render_mlflow_error, STATUS_OVERRIDES)
)


@router.get("/ping", summary="MLflow scoring server liveness")
async def ping() -> Response:
    return PlainTextResponse("\n")


@router.get("/version", summary="The MLflow scoring protocol version served")
async def version() -> Response:
    from importlib.metadata import version as package_version

    return PlainTextResponse(package_version("mlflow"))


@router.post("/invocations", summary="Score the default model")
async def invocations(request: Request) -> Response:
    services = services_of(request)
    default = services.settings.default_model
    if not default:
        raise errors.ModelNotFound(
            "no default model is configured: set PP_DEFAULT_MODEL or POST to /models/{name}/invocations"
        )
    return await _score(request, services, default)


@router.post("/models/{name}/invocations", summary="Score a model (its champion, else latest)")
@router.post("/models/{name}/versions/{version}/invocations", summary="Score a model version or alias")
async def model_invocations(name: str, request: Request, version: str | None = None) -> Response:
    return await _score(request, services_of(request), model_reference(name, version))


async def _score(request: Request, services: Services, reference: str) -> Response:
    async with prediction_slot(request) as principal:
        return await _score_allowed(request, services, reference, principal)


async def _score_allowed(
    request: Request, services: Services, reference: str, principal: Principal
) -> Response:
    content_type = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
    body = await request.body()
    ops = ops_of(services)
    request_id = request_id_of(request)
    route = ops.route(reference, principal, request.headers, request_id)
    cached = await ops.load(route.reference)
    signature = cached.model.signature
    max_rows = services.settings.max_batch_rows
    if content_type == "text/csv":
        matrix = mlflow_scoring.matrix_from_csv(body, signature, max_rows)
    elif content_type in ("application/json", ""):
        matrix = mlflow_scoring.matrix_from_json(_parse_json(body), signature, max_rows)
    else:
        return render_mlflow_error(
            415, "", f"unsupported content type {content_type}; use application/json or text/csv"
        )
    paid = route.experiment.model if route.experiment is not None else cached
    async with paid_answer(services, principal, paid, len(matrix)):
        served, _ = await ops.serve(
            route,
            lambda _: matrix,
            request_id=request_id,
            channel="invocations",
            principal=principal,
            outcome_key=outcome_key_of(request),
            run=_native_runner,
            to_output=native_output,
            primary=cached,
        )
    # The scoring protocol's body is fixed: who answered is said in headers only.
    return Response(
        orjson.dumps(mlflow_scoring.predictions_payload(served.output)),
        media_type="application/json",
        headers=served.headers(),
    )


async def _native_runner(cached: CachedModel, matrix: Any) -> Any:
    if cached.loader == "ensemble":  # an ensemble answers probabilities (or values) natively
        output = await anyio.to_thread.run_sync(cached.model.predict, matrix)
        return output.probabilities if output.probabilities is not None else output.predictions
    return await anyio.to_thread.run_sync(_predict_native, cached, matrix)


def native_output(raw: Any) -> Any:
    """Native answers are framework-shaped; drift counts their inputs only."""
    return None


def _parse_json(body: bytes) -> Any:
    try:
        return parse_json(body)
    except ValueError as exc:
        raise errors.InvalidTensor(f"request body is not valid JSON: {exc}") from exc


def _predict_native(cached: CachedModel, matrix: Any) -> Any:
    try:
        return cached.model.predict_native(matrix)
    except Exception as exc:
        raise errors.PredictionFailed(f"{cached.loader} model failed to predict: {exc}") from exc
