"""An LRU cache of loaded models, keyed by the immutable URI a reference resolves to.

Moving references (aliases, bare names) are re-resolved after
``alias_refresh_seconds``; if the registry is down then, the last resolution
keeps serving. Concurrent first requests for one model load it once: loaders
hold a per-URI lock, and everyone else waits for that load.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import anyio.to_thread
import numpy as np

from prediction_provider.errors import ModelUnloaded, RegistryUnavailable
from prediction_provider.serving.batching import AdaptiveBatcher, BatchingDefaults
from prediction_provider.serving.loaders import LoadedModel, ModelLoader, load_model, open_source
from prediction_provider.serving.references import parse_model_reference
from prediction_provider.serving.registry import ModelRegistry, ResolvedModel

log = logging.getLogger(__name__)

MAX_REMEMBERED_REFERENCES = 4096


@dataclass(frozen=True, slots=True)
class CachedModel:
    resolved: ResolvedModel
    model: LoadedModel
    loader: str
    loaded_at: datetime
    load_seconds: float
    batcher: AdaptiveBatcher | None = None

    def close(self) -> None:
        if self.batcher is not None:
            self.batcher.close()
        self.model.unload()


@dataclass(slots=True)
class CacheStats:
    hits: int = 0
    misses: int = 0
    loads: int = 0
    load_failures: int = 0
    evictions: int = 0

    def as_dict(self) -> dict[str, int]:
        return {
            "hits": self.hits,
            "misses": self.misses,
            "loads": self.loads,
            "load_failures": self.load_failures,
            "evictions": self.evictions,
        }


@dataclass(slots=True)
class _Resolution:
    resolved: ResolvedModel
    expires_at: float


@dataclass
class ModelCache:
    registry: ModelRegistry
    loaders: Sequence[ModelLoader]
    trusted_roots: Sequence[Path]
    max_models: int
    refresh_seconds: float
    threads: int = 1
    batching: BatchingDefaults = field(default_factory=BatchingDefaults)
    clock: Callable[[], float] = time.monotonic
    stats: CacheStats = field(default_factory=CacheStats)

    def __post_init__(self) -> None:
        self._models: OrderedDict[str, CachedModel] = OrderedDict()
        self._resolutions: OrderedDict[str, _Resolution] = OrderedDict()
        self._lock = threading.Lock()
        self._load_locks: dict[str, threading.Lock] = {}
        # Model names an operator unloaded (``serving.unloaded``): refused on every path, hit or
        # miss. Replaced whole, never mutated, so reading it needs no lock.
        self.unloaded_names: frozenset[str] = frozenset()

    def admit(self, resolved: ResolvedModel) -> None:
        """Raise ``ModelUnloaded`` if ``resolved``'s model name is unloaded."""
        if resolved.name in self.unloaded_names:
            raise ModelUnloaded(
                f"model {resolved.name!r} is unloaded; POST /v2/repository/models/{resolved.name}/load "
                "serves it again",
                {"model": resolved.name},
            )

    def peek(self, reference: str) -> CachedModel | None:
        """The cached model for ``reference`` without any I/O, or None (not counted as a miss);
        ``ModelUnloaded`` if its name is unloaded."""
        with self._lock:
            resolution = self._resolutions.get(reference)
            if resolution is None or resolution.expires_at < self.clock():
                return None
            cached = self._models.get(resolution.resolved.uri)
            if cached is None:
                return None
            self._models.move_to_end(resolution.resolved.uri)
            self.stats.hits += 1
        if cached.resolved.name in self.unloaded_names:  # a set lookup: the hot path's only check
            self.admit(cached.resolved)
        return cached

    def resolve(self, reference: str) -> ResolvedModel:
        """Pin ``reference`` to a version without loading it (remembered like ``get``'s resolutions);
        ``ModelUnloaded`` if its name is unloaded."""
        with self._lock:
            resolution = self._resolutions.get(reference)
            resolved = resolution.resolved if resolution and resolution.expires_at >= self.clock() else None
        resolved = resolved or self._resolve(reference)
        self.admit(resolved)
        return resolved

    async def aget(self, reference: str) -> CachedModel:
        """``get`` for the event loop: a hit touches no thread; a miss loads in a worker thread."""
        cached = self.peek(reference)
        if cached is None:
            cached = await anyio.to_thread.run_sync(self.get, reference)
        return cached

    def get(self, reference: str) -> CachedModel:
        """Resolve and load ``reference`` if needed; blocking, so call it off the event loop."""
        cached = self.peek(reference)
        if cached is not None:
            return cached
        with self._lock:
            self.stats.misses += 1
        resolved = self._resolve(reference)
        self.admit(resolved)
        with self._lock:
            cached = self._models.get(resolved.uri)
            if cached is not None:
                self._models.move_to_end(resolved.uri)
                return cached
            load_lock = self._load_locks.setdefault(resolved.uri, threading.Lock())
        with load_lock:
            with self._lock:
                cached = self._models.get(resolved.uri)
            if cached is None:
                cached = self._load(resolved)
        return cached

    def _resolve(self, reference: str) -> ResolvedModel:
        ref = parse_model_reference(reference)
        with self._lock:
            previous = self._resolutions.get(reference)
        try:
            resolved = self.registry.resolve(ref)
        except RegistryUnavailable:
            if previous is None:
                raise
            log.warning("registry unavailable; serving %s as %s", reference, previous.resolved.uri)
            resolved = previous.resolved
        expires = self.clock() + self.refresh_seconds if ref.is_moving else float("inf")
        with self._lock:
            self._resolutions[reference] = _Resolution(resolved, expires)
            self._resolutions.move_to_end(reference)
            while len(self._resolutions) > MAX_REMEMBERED_REFERENCES:
                self._resolutions.popitem(last=False)
        return resolved

    def _load(self, resolved: ResolvedModel) -> CachedModel:
        started = time.perf_counter()
        try:
            source = open_source(resolved.location, self.threads)
            model, loader = load_model(source, self.loaders, self.trusted_roots)
        except Exception:
            with self._lock:
                self.stats.load_failures += 1
            raise
        policy = self.batching.policy_for(model.batchable, model.metadata)
        batcher = AdaptiveBatcher(model.predict, policy, resolved.uri) if policy else None
        cached = CachedModel(
            resolved=resolved,
            model=model,
            loader=loader,
            loaded_at=datetime.now(UTC),
            load_seconds=time.perf_counter() - started,
            batcher=batcher,
        )
        evicted: list[CachedModel] = []
        with self._lock:
            self.stats.loads += 1
            self._models[resolved.uri] = cached
            while len(self._models) > self.max_models:
                _, old = self._models.popitem(last=False)
                evicted.append(old)
                self.stats.evictions += 1
        for old in evicted:
            log.info("evicted %s from the model cache", old.resolved.uri)
            old.close()
        log.info("loaded %s with %s in %.3fs", resolved.uri, loader, cached.load_seconds)
        return cached

    def warm(self, reference: str) -> CachedModel:
        """Load ``reference`` and run a few predictions so the first real call is not the slow one."""
        cached = self.get(reference)
        width = len(cached.model.signature.features)
        for _ in range(3):
            cached.model.predict(np.zeros((1, width), dtype=np.float64))
        return cached

    def forget_references(self, name: str) -> int:
        """Forget how this process resolved the moving references of model ``name`` (an alias
        moved): the next request resolves them again instead of waiting for the refresh."""
        with self._lock:
            stale = [
                reference
                for reference, resolution in self._resolutions.items()
                if resolution.resolved.name == name and resolution.expires_at != float("inf")
            ]
            for reference in stale:
                del self._resolutions[reference]
        return len(stale)

    def evict(self, uri: str) -> bool:
        with self._lock:
            cached = self._models.pop(uri, None)
            if cached is not None:
                self.stats.evictions += 1
        if cached is not None:
            cached.close()
        return cached is not None

    def evict_named(self, name: str) -> int:
        """Evict every cached version of registered model ``name``; return how many."""
        uris = [entry.resolved.uri for entry in self.entries() if entry.resolved.name == name]
        return sum(self.evict(uri) for uri in uris)

    def entries(self) -> list[CachedModel]:
        """Cached models, least recently used first."""
        with self._lock:
            return list(self._models.values())

    def __len__(self) -> int:
        with self._lock:
            return len(self._models)
