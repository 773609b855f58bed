"""``create_app(settings)``: the FastAPI app, with services wired in the lifespan."""

from __future__ import annotations

import gc
import importlib.util
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from prediction_provider import __version__
from prediction_provider.api.body_limit import BodySizeLimit
from prediction_provider.api.deps import Services
from prediction_provider.api.errors import install_error_handlers
from prediction_provider.api.routes import health, invocations, models, predict, v2
from prediction_provider.config import Settings
from prediction_provider.serving.batching import BatchingDefaults, BatchPolicy
from prediction_provider.serving.cache import ModelCache
from prediction_provider.serving.inference import ConfidenceBands, PredictionService
from prediction_provider.serving.loaders import discover_loaders
from prediction_provider.serving.registry import ModelRegistry

log = logging.getLogger(__name__)


def detect_gpu() -> bool:
    """A CUDA device usable by an installed framework; checked without importing torch eagerly."""
    try:
        import onnxruntime

        if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
            return True
    except ImportError:
        pass
    if importlib.util.find_spec("torch") is not None:
        import torch

        return bool(torch.cuda.is_available())
    return False


def build_services(settings: Settings) -> Services:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    registry = ModelRegistry(settings)
    cache = ModelCache(
        registry=registry,
        loaders=discover_loaders(),
        trusted_roots=settings.trusted_roots,
        max_models=settings.max_models,
        refresh_seconds=settings.alias_refresh_seconds,
        threads=settings.predict_threads,
        batching=BatchingDefaults(
            mode=settings.batching,
            policy=BatchPolicy(settings.max_batch_size, settings.max_batch_latency_ms / 1000),
        ),
    )
    bands = ConfidenceBands(high=settings.confidence_high, medium=settings.confidence_medium)
    predictions = PredictionService(cache, settings.max_batch_rows, bands)
    return Services(settings, registry, cache, predictions, detect_gpu())


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        services = await run_in_threadpool(build_services, settings)
        app.state.services = services
        for reference in settings.warm_models:
            # A model that fails to warm leaves the server up but not ready (/health/ready).
            try:
                cached = await run_in_threadpool(services.cache.warm, reference)
                log.info("warmed %s (%s)", reference, cached.resolved.uri)
            except Exception as exc:  # noqa: BLE001 - report and keep serving the others
                services.warm_errors[reference] = str(exc)
                log.error("could not warm %s: %s", reference, exc)
        # Start-up leaves ~350k long-lived objects (MLflow, frameworks, models); a full
        # collection scanning them took ~190 ms and stalled every in-flight request.
        # Freezing them keeps later collections down to what requests allocate.
        grpc_server = None
        if settings.grpc_enabled:
            from prediction_provider.api.grpc.server import start_grpc_server

            grpc_server, services.grpc_port = await start_grpc_server(
                services, settings.host, settings.grpc_port
            )
        gc.collect()
        gc.freeze()
        yield
        gc.unfreeze()
        if grpc_server is not None:
            await grpc_server.stop(grace=5)
        for entry in services.cache.entries():
            entry.close()

    app = FastAPI(
        title="Prediction Provider",
        version=__version__,
        description="Serving trained financial prediction models over HTTP.",
        lifespan=lifespan,
    )
    install_error_handlers(app)
    app.add_middleware(BodySizeLimit, max_body_bytes=settings.max_body_bytes)
    for router in (predict.router, health.router, models.router, v2.router, invocations.router):
        app.include_router(router)
    return app
