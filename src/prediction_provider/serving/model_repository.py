"""The Open Inference Protocol's model repository extension and model readiness, for REST and gRPC.

The unit of ``load`` and ``unload`` is a model name, all its versions, as in
Triton's repository API. Both are recorded in the database (``serving.unloaded``)
so every worker process follows them, and a restarted server too. Blocking: the
transports call these from a worker thread.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from prediction_provider.errors import ModelUnloaded
from prediction_provider.serving import open_inference as oip
from prediction_provider.serving.cache import ModelCache
from prediction_provider.serving.registry import ModelRegistry
from prediction_provider.serving.unloaded import UnloadedModels


@dataclass(frozen=True, slots=True)
class ModelRepository:
    cache: ModelCache
    registry: ModelRegistry
    unloaded: UnloadedModels | None

    def is_ready(self, name: str, version: str | None) -> bool:
        """Loaded (loading it if needed) and not unloaded. The state is re-read from the database
        first, so this answer is exact in every worker, not only within the refresh interval."""
        reference = oip.model_reference(name, version)
        if self.unloaded is not None:
            self.unloaded.refresh()
        try:
            self.cache.get(reference)
        except ModelUnloaded:
            return False
        return True

    def load(self, name: str, by: str | None) -> None:
        """Serve ``name`` again in every worker, and load and warm it here before answering."""
        self._known(name)
        if self.unloaded is not None:
            self.unloaded.load(name, by)
        self.cache.warm(name)

    def unload(self, name: str, by: str | None) -> None:
        """Refuse ``name`` in every worker until a ``load``, and free its cached versions."""
        self._known(name)
        if self.unloaded is not None:
            self.unloaded.unload(name, by)
        self.cache.evict_named(name)

    def index(self, models: Sequence[dict[str, Any]], only_ready: bool) -> list[dict[str, str]]:
        return oip.repository_index(self.cache.entries(), models, only_ready, self.cache.unloaded_names)

    def _known(self, name: str) -> None:
        oip.model_reference(name, None)  # a name the protocol accepts
        self.registry.versions(name)  # ModelNotFound (404) for a name never registered
