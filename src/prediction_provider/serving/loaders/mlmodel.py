"""Reading MLflow ``MLmodel`` files without importing MLflow's flavor code."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from prediction_provider.serving.loaders.base import MLmodelInfo

MLMODEL_FILE = "MLmodel"


def read_mlmodel(model_dir: Path) -> MLmodelInfo | None:
    """Parse ``model_dir/MLmodel`` with a safe YAML loader; None when there is none."""
    mlmodel_path = model_dir / MLMODEL_FILE
    if not mlmodel_path.is_file():
        return None
    document = yaml.safe_load(mlmodel_path.read_text(encoding="utf-8")) or {}
    flavors = document.get("flavors") or {}
    names, types = _signature_inputs(document.get("signature") or {})
    metadata = document.get("metadata") or {}
    return MLmodelInfo(
        flavors={str(k): dict(v or {}) for k, v in flavors.items()},
        input_names=names,
        input_types=types,
        metadata=dict(metadata),
    )


def _signature_inputs(signature: dict[str, Any]) -> tuple[list[str] | None, list[str] | None]:
    """Column names and types of a column-based signature; tensors carry no names."""
    raw_inputs = signature.get("inputs")
    if not raw_inputs:
        return None, None
    inputs = json.loads(raw_inputs) if isinstance(raw_inputs, str) else raw_inputs
    names = [spec.get("name") for spec in inputs]
    if not names or any(name is None for name in names):
        return None, None
    return [str(n) for n in names], [str(spec.get("type", "double")) for spec in inputs]
