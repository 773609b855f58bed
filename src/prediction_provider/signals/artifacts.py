"""Where the trained signal models live, and the JSON card saved beside each one.

The models sit under ``data_dir/models/signals``, inside a trusted root, in
formats that hold no code: LightGBM's text model and a PyTorch ``state_dict``
read back with ``weights_only=True``. Nothing here is ever unpickled.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from prediction_provider.config import Settings
from prediction_provider.errors import ModelLoadFailed
from prediction_provider.serving.trust import require_trusted

# Bump when the inputs or the files change: older files are then retrained by the demo, not misread.
FORMAT_VERSION = 1
LIGHTGBM_FILE = "lightgbm.txt"
MC_DROPOUT_FILE = "mc_dropout.state.pt"


def signal_models_dir(settings: Settings) -> Path:
    return (settings.data_dir / "models" / "signals").resolve()


def card_path(model_file: Path) -> Path:
    return model_file.with_name(model_file.name.split(".", 1)[0] + ".card.json")


def write_card(model_file: Path, card: dict[str, Any]) -> None:
    path = card_path(model_file)
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(json.dumps({"format_version": FORMAT_VERSION, **card}, indent=2, sort_keys=True))
    os.replace(partial, path)


def read_card(model_file: Path) -> dict[str, Any] | None:
    """The card of a model file of the current format; None when either is missing or outdated."""
    path = card_path(model_file)
    if not (model_file.is_file() and path.is_file()):
        return None
    try:
        card = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(card, dict) or card.get("format_version") != FORMAT_VERSION:
        return None
    return card


def trained_model(settings: Settings, file_name: str, predictor: str) -> tuple[Path, dict[str, Any]]:
    """A trained model file inside the trusted roots, with its card, or ``ModelLoadFailed``."""
    model_file = signal_models_dir(settings) / file_name
    require_trusted(model_file, settings.trusted_roots, f"the {predictor} signal model")
    card = read_card(model_file)
    if card is None:
        raise ModelLoadFailed(
            f"the {predictor} signal model is not trained in {model_file.parent}; "
            "run `prediction-provider train-demo`",
            {"path": str(model_file)},
        )
    return model_file, card
