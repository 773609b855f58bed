"""The model-serving core built from settings, once per process: API servers and job workers alike."""

from __future__ import annotations

from dataclasses import dataclass

from prediction_provider.config import Settings
from prediction_provider.serving.batching import BatchingDefaults, BatchPolicy
from prediction_provider.serving.cache import ModelCache
from prediction_provider.serving.inference import ConfidenceBands, PredictionService
from prediction_provider.serving.loaders import discover_loaders
from prediction_provider.serving.registry import ModelRegistry


@dataclass(frozen=True, slots=True)
class ModelServing:
    registry: ModelRegistry
    cache: ModelCache
    predictions: PredictionService


def build_model_serving(settings: Settings) -> ModelServing:
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
    return ModelServing(
        registry,
        cache,
        PredictionService(
            cache, settings.max_batch_rows, bands, settings.predict_parallelism, settings.parallel_min_rows
        ),
    )
