"""The LRU model cache against the real embedded registry and real demo models."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from prediction_provider.config import Settings
from prediction_provider.errors import ModelLoadFailed, ModelNotFound, RegistryUnavailable
from prediction_provider.serving.batching import BatchPolicy
from prediction_provider.serving.cache import ModelCache
from prediction_provider.serving.loaders import discover_loaders
from prediction_provider.serving.references import ModelReference
from prediction_provider.serving.registry import ModelRegistry, ResolvedModel
from tests.conftest import MODEL


class ManualClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class CountingRegistry(ModelRegistry):
    """The real registry, counting resolutions and able to go down on demand."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.resolutions = 0
        self.down = False

    def resolve(self, ref: ModelReference) -> ResolvedModel:
        self.resolutions += 1
        if self.down:
            raise RegistryUnavailable("registry is down")
        return super().resolve(ref)


def make_cache(settings: Settings, max_models: int = 4, clock: ManualClock | None = None) -> ModelCache:
    return ModelCache(
        registry=CountingRegistry(settings),
        loaders=discover_loaders(),
        trusted_roots=settings.trusted_roots,
        max_models=max_models,
        refresh_seconds=30.0,
        clock=clock or ManualClock(),
    )


def test_first_use_loads_then_hits(settings: Settings) -> None:
    cache = make_cache(settings)
    first = cache.get(f"models:/{MODEL}/1")
    second = cache.get(f"models:/{MODEL}/1")
    assert first is second
    assert cache.stats.as_dict() == {"hits": 1, "misses": 1, "loads": 1, "load_failures": 0, "evictions": 0}


def test_least_recently_used_model_is_evicted(settings: Settings) -> None:
    cache = make_cache(settings, max_models=2)
    cache.get(f"models:/{MODEL}/1")
    cache.get(f"models:/{MODEL}/2")
    cache.get(f"models:/{MODEL}/1")  # 2 is now the least recently used
    cache.get(f"models:/{MODEL}/3")
    assert [entry.resolved.version for entry in cache.entries()] == ["1", "3"]
    assert cache.stats.evictions == 1
    assert cache.peek(f"models:/{MODEL}/2") is None


def test_concurrent_first_requests_load_once(settings: Settings) -> None:
    cache = make_cache(settings)
    start = threading.Barrier(8)

    def first_request() -> object:
        start.wait()
        return cache.get(f"models:/{MODEL}/2")

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: first_request(), range(8)))
    assert all(result is results[0] for result in results)
    assert cache.stats.loads == 1


def test_aliases_are_re_resolved_after_the_refresh_interval(settings: Settings) -> None:
    clock = ManualClock()
    cache = make_cache(settings, clock=clock)
    registry = cache.registry
    assert isinstance(registry, CountingRegistry)
    cache.get(f"models:/{MODEL}@champion")
    cache.get(f"models:/{MODEL}@champion")
    assert registry.resolutions == 1
    clock.now += 31
    cache.get(f"models:/{MODEL}@champion")
    assert registry.resolutions == 2
    assert cache.stats.loads == 1  # same version, so no second load


def test_pinned_versions_are_never_re_resolved(settings: Settings) -> None:
    clock = ManualClock()
    cache = make_cache(settings, clock=clock)
    cache.get(f"models:/{MODEL}/1")
    clock.now += 10_000
    cache.get(f"models:/{MODEL}/1")
    assert isinstance(cache.registry, CountingRegistry)
    assert cache.registry.resolutions == 1


def test_a_registry_outage_keeps_serving_the_last_resolution(settings: Settings) -> None:
    clock = ManualClock()
    cache = make_cache(settings, clock=clock)
    before = cache.get(f"models:/{MODEL}@lightgbm")
    assert isinstance(cache.registry, CountingRegistry)
    cache.registry.down = True
    clock.now += 31
    assert cache.get(f"models:/{MODEL}@lightgbm") is before
    with pytest.raises(RegistryUnavailable):
        cache.get(f"models:/{MODEL}@xgboost")


def test_a_failed_load_is_not_cached_and_evicts_nothing(settings: Settings) -> None:
    broken = settings.data_dir / "models" / "broken.lgb"
    broken.parent.mkdir(parents=True, exist_ok=True)
    broken.write_text("not a model")
    cache = make_cache(settings, max_models=1)
    good = cache.get(f"models:/{MODEL}/1")
    for _ in range(2):
        with pytest.raises(ModelLoadFailed):
            cache.get(broken.as_uri())
    assert cache.stats.load_failures == 2
    assert cache.entries() == [good]
    assert cache.stats.evictions == 0


def test_warming_runs_a_prediction(settings: Settings) -> None:
    cache = make_cache(settings)
    cached = cache.warm(f"models:/{MODEL}@xgboost")
    assert cached.model.framework == "xgboost"
    assert len(cache) == 1


def test_unknown_models_raise_not_found(settings: Settings, tmp_path: Path) -> None:
    cache = make_cache(settings)
    with pytest.raises(ModelNotFound):
        cache.get("no-such-model")
    with pytest.raises(ModelNotFound):
        cache.get((settings.data_dir / "models" / "absent.onnx").as_uri())
    assert cache.stats.loads == 0


@pytest.mark.parametrize("alias", ["lightgbm", "xgboost", "sklearn", "onnx"])
def test_demo_tree_models_are_batched_by_default(settings: Settings, alias: str) -> None:
    cache = make_cache(settings)
    cached = cache.get(f"models:/{MODEL}@{alias}")
    assert cached.batcher is not None
    assert cached.batcher.policy == BatchPolicy(64, 0.002)


def test_models_without_trees_are_not_batched(settings: Settings, tmp_path: Path) -> None:
    import joblib
    from sklearn.linear_model import LogisticRegression

    path = settings.data_dir / "models" / "logit.joblib"
    path.parent.mkdir(parents=True, exist_ok=True)
    joblib.dump(LogisticRegression().fit([[0.0], [1.0]], [0, 1]), path)
    assert make_cache(settings).get(path.as_uri()).batcher is None
