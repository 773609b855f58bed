"""Builds this process's model operations from the services the app already built."""

from __future__ import annotations

import hashlib
import logging
from typing import TYPE_CHECKING, Any

from prediction_provider.modelops.experiments import Experiments
from prediction_provider.modelops.gateway import ModelOps
from prediction_provider.modelops.stamp import StampFollower

if TYPE_CHECKING:
    from prediction_provider.api.deps import Services

log = logging.getLogger(__name__)


def unit_secret(jwt_secret: str) -> bytes:
    """The HMAC key of unit hashes: derived from the server's secret, never stored."""
    return hashlib.sha256(f"pp-experiment-unit:{jwt_secret}".encode()).digest()


def build_modelops(services: Services, jwt_secret: str) -> None:
    """Experiments, the stamp follower and the request path, wired to whichever of resilience,
    ensembles, drift, records and shadows this process has."""
    settings = services.settings
    follower = StampFollower(services.db, settings.ops_refresh_ms / 1000)
    services.ops_stamp = follower
    ensembles = getattr(services, "ensembles", None)
    ops_ref: list[ModelOps] = []

    def load_target(target: str) -> Any:
        return ops_ref[0].load_sync(target)

    registry = services.registry

    def set_alias(name: str, alias: str, version: str) -> None:
        registry.client.set_registered_model_alias(name, alias, version)
        services.cache.forget_references(name)

    def get_alias(name: str, alias: str) -> str | None:
        aliases = dict(registry.client.get_registered_model(name).aliases or {})
        found = aliases.get(alias)
        return str(found) if found is not None else None

    experiments = Experiments(
        services.db,
        services.clock or _system_clock(),
        services.ops_metrics,
        load_target,
        set_alias,
        get_alias,
    )
    experiments.follower = follower
    services.experiments = experiments
    ops = ModelOps(
        services.cache,
        services.predictions,
        experiments,
        services.ops_metrics,
        unit_secret(jwt_secret),
        record_all=settings.record_all,
        resilience=getattr(services, "resilience", None),
        ensembles=ensembles,
        drift=getattr(services, "drift", None),
        recorder=getattr(services, "experiment_records", None),
        shadows=getattr(services, "shadows", None),
        clock=services.clock,
    )
    ops_ref.append(ops)
    services.modelops = ops
    if settings.experiments:
        follower.register(experiments.reload)
    for part in ("resilience", "chaos", "ensembles"):
        component = getattr(services, part, None)
        reload = getattr(component, "reload", None)
        if reload is not None:
            follower.register(reload)
    follower.start()


def build_rollouts(services: Services) -> Any:
    """The rollout controller (started by the lifespan; one leader among the API processes)."""
    from prediction_provider.modelops.rollout import RolloutController

    assert services.experiments is not None
    recorder = getattr(services, "experiment_records", None)
    return RolloutController(
        services.db,
        services.clock or _system_clock(),
        services.experiments,
        getattr(services, "resilience", None),
        services.settings.rollout_interval_s,
        flush=recorder.flush if recorder is not None else None,
        retention=recorder.enforce_configured_retention if recorder is not None else None,
    )


def _system_clock() -> Any:
    from prediction_provider.clock import SystemClock

    return SystemClock()
