"""Typed dependencies, so a route's signature reads like a sentence."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request

from prediction_provider.config import Settings
from prediction_provider.serving.cache import ModelCache
from prediction_provider.serving.inference import PredictionService
from prediction_provider.serving.registry import ModelRegistry


@dataclass(frozen=True, slots=True)
class Services:
    """What the lifespan builds once per app and every request shares."""

    settings: Settings
    registry: ModelRegistry
    cache: ModelCache
    predictions: PredictionService
    gpu_available: bool
    warm_errors: dict[str, str] = field(default_factory=dict)


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]
