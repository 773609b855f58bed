"""The native protocol's result shapes, shared by ``/predict`` and the jobs that run its requests later."""

from __future__ import annotations

from typing import Any

from prediction_provider.serving.cache import CachedModel
from prediction_provider.serving.inference import BatchResult, ConfidenceBands


def model_identity(cached: CachedModel) -> dict[str, Any]:
    resolved = cached.resolved
    return {"name": resolved.name, "version": resolved.version, "uri": resolved.uri}


def single_payload(result: BatchResult, return_proba: bool, bands: ConfidenceBands) -> dict[str, Any]:
    """``/predict``'s answer for one row."""
    prediction = result.predictions[0]
    probability = probabilities = confidence = None
    if result.probabilities is not None and result.classes:
        row = result.probabilities[0]
        probability = float(row.max())
        confidence = bands.classify(probability)
        if return_proba:
            probabilities = dict(zip(result.classes, row.tolist(), strict=True))
    return {
        "prediction": prediction,
        "probability": probability,
        "probabilities": probabilities,
        "confidence": confidence,
        "model": model_identity(result.model),
        "latency_ms": round(result.latency_ms, 3),
    }


def batch_payload(result: BatchResult, return_proba: bool) -> dict[str, Any]:
    """``/predict/batch``'s answer."""
    probabilities = None
    if return_proba and result.probabilities is not None and result.classes:
        classes = result.classes
        probabilities = [dict(zip(classes, row, strict=True)) for row in result.probabilities.tolist()]
    return {
        "predictions": result.predictions,
        "probabilities": probabilities,
        "count": len(result.predictions),
        "model": model_identity(result.model),
        "latency_ms": round(result.latency_ms, 3),
    }
