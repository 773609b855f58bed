"""``/predict/precomputed/{key}``: a row of the precomputed predictions file, from memory."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from prediction_provider.api.auth import Predictor
from prediction_provider.api.deps import ServicesDep
from prediction_provider.api.routes.jobs import ERRORS, runtime_of
from prediction_provider.errors import PrecomputedNotFound

router = APIRouter(tags=["predictions"])


@router.get("/predict/precomputed/{key}", responses=ERRORS)
async def precomputed_prediction(key: str, principal: Predictor, services: ServicesDep) -> dict[str, Any]:
    """The row written for ``key`` by ``prediction-provider batch-infer``; the file is re-read
    when it changes. 404 for an unknown key, or when no file is configured (PP_PRECOMPUTED_PATH)."""
    store = runtime_of(services).precomputed
    if store is None:
        raise PrecomputedNotFound("no precomputed predictions are configured (PP_PRECOMPUTED_PATH)")
    if len(key) > 256:
        raise PrecomputedNotFound(f"no precomputed prediction for key {key[:32]!r}...", {"key": key[:256]})
    return {"key": key, **store.lookup(key)}
