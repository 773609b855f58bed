"""Loader discovery through entry points, and choosing the loader for a model source."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from importlib.metadata import entry_points
from pathlib import Path

from prediction_provider.errors import ModelLoadFailed, UnsupportedModelFormat
from prediction_provider.serving.loaders.base import (
    LoadedModel,
    ModelLoader,
    ModelOutput,
    ModelSource,
    read_sidecar,
)
from prediction_provider.serving.loaders.mlmodel import read_mlmodel
from prediction_provider.serving.trust import require_trusted

LOADER_GROUP = "prediction_provider.loaders"

log = logging.getLogger(__name__)

__all__ = [
    "LOADER_GROUP",
    "LoadedModel",
    "ModelLoader",
    "ModelOutput",
    "ModelSource",
    "discover_loaders",
    "load_model",
    "open_source",
]


def discover_loaders() -> tuple[ModelLoader, ...]:
    """Every loader registered under ``prediction_provider.loaders``, by priority.

    A broken third-party plugin is logged and skipped rather than taking the
    built-in loaders down with it.
    """
    loaders: list[ModelLoader] = []
    for entry_point in entry_points(group=LOADER_GROUP):
        try:
            loader_class = entry_point.load()
            loaders.append(loader_class())
        except Exception:
            log.exception("model loader plugin %s failed to load", entry_point.name)
    return tuple(sorted(loaders, key=lambda loader: (loader.priority, loader.name)))


def open_source(path: Path, threads: int) -> ModelSource:
    """Describe what lies at ``path`` (a file or an MLflow model directory) without loading it."""
    if path.is_dir():
        mlmodel = read_mlmodel(path)
        if mlmodel is None:
            raise UnsupportedModelFormat(
                f"{path.name} is a directory without an MLmodel file", {"path": str(path)}
            )
        return ModelSource(path=path, mlmodel=mlmodel, threads=threads)
    if not path.is_file():
        raise ModelLoadFailed(f"model file {path.name} does not exist", {"path": str(path)})
    return ModelSource(path=path, sidecar=read_sidecar(path), threads=threads)


def select_loader(source: ModelSource, loaders: Sequence[ModelLoader]) -> ModelLoader:
    for loader in loaders:
        if loader.accepts(source):
            return loader
    what = (
        f"flavors {sorted(source.mlmodel.flavors)}"
        if source.mlmodel is not None
        else f"suffix {source.path.suffix!r}"
    )
    raise UnsupportedModelFormat(
        f"no model loader accepts {what}",
        {"loaders": [loader.name for loader in loaders]},
    )


def load_model(
    source: ModelSource, loaders: Sequence[ModelLoader], trusted_roots: Iterable[Path]
) -> tuple[LoadedModel, str]:
    """Load ``source`` with the first loader that accepts it; return the model and loader name.

    The trust check runs before the loader touches the file, so an untrusted
    pickle is never opened.
    """
    loader = select_loader(source, loaders)
    if loader.requires_trust(source):
        require_trusted(source.path, trusted_roots, f"{loader.name} models can run code when loaded")
    try:
        model = loader.load(source)
        model.metadata = source.metadata
        return model, loader.name
    except Exception as exc:
        raise ModelLoadFailed(
            f"{loader.name} loader failed: {type(exc).__name__}: {exc}", {"loader": loader.name}
        ) from exc
