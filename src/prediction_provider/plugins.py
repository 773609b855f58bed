"""The plugins of every kind a server has, and whether the ones it uses load.

Feeders, signal predictors, feature pipelines and model loaders are entry-point
groups (``prediction_provider.feeders``, ``.predictors``, ``.pipelines``,
``.loaders``): a package of one's own adds to them. Two kinds the seed project's
clients also ask about are not pluggable here, and are listed as what they are:

- endpoint plugins: the protocols this server speaks, built in (``ENDPOINT_PROTOCOLS``);
- core plugins: the job executors ``PP_JOB_BACKEND`` chooses between (``inprocess``, ``celery``).

``plugin_status`` builds the plugin of each kind this server is configured with,
the way the server itself does on first use, and says whether it loaded.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import Any, Literal, get_args

from prediction_provider import __version__
from prediction_provider.config import Settings
from prediction_provider.errors import PredictionProviderError
from prediction_provider.features.feeders.registry import FEEDER_GROUP, load_feeder
from prediction_provider.features.pipelines import DEFAULT_PIPELINE, PIPELINE_GROUP, load_pipeline
from prediction_provider.serving.loaders import LOADER_GROUP
from prediction_provider.signals.registry import PREDICTOR_GROUP, selected_predictor

# Built in, not pluggable: what each name serves is in the README's "Protocols" section.
ENDPOINT_PROTOCOLS: tuple[str, ...] = (
    "rest",  # /predict, /predict/batch, /models, /health and /api/v1/...
    "open_inference_v2",  # /v2/... over HTTP (KServe, Triton, MLServer clients)
    "mlflow_invocations",  # /invocations, /ping, /version
    "open_inference_grpc",  # the Open Inference Protocol over gRPC (PP_GRPC_ENABLED)
    "prometheus_metrics",  # /metrics
)
EXECUTORS: tuple[str, ...] = get_args(Settings.model_fields["job_backend"].annotation)

PluginHealth = Literal["active", "unavailable"]


def _names(group: str) -> list[str]:
    return sorted({entry_point.name for entry_point in entry_points(group=group)})


def _entry_point(group: str, name: str) -> EntryPoint | None:
    return next(iter(entry_points(group=group, name=name)), None)


def _version(group: str | None, name: str) -> str:
    """The version of the distribution that registers the plugin; ours for the built-in kinds."""
    entry_point = _entry_point(group, name) if group else None
    distribution = getattr(entry_point, "dist", None)
    return str(distribution.version) if distribution is not None else __version__


@dataclass(frozen=True, slots=True)
class PluginCatalog:
    feeders: list[str]
    predictors: list[str]
    pipelines: list[str]
    loaders: list[str]
    endpoints: list[str]
    cores: list[str]

    def payload(self) -> dict[str, list[str]]:
        return {
            "feeder_plugins": self.feeders,
            "predictor_plugins": self.predictors,
            "pipeline_plugins": self.pipelines,
            "endpoint_plugins": self.endpoints,
            "core_plugins": self.cores,
            "loader_plugins": self.loaders,
        }


def plugin_catalog() -> PluginCatalog:
    """Every installed plugin by kind, read from the entry points (nothing is imported)."""
    return PluginCatalog(
        feeders=_names(FEEDER_GROUP),
        predictors=_names(PREDICTOR_GROUP),
        pipelines=_names(PIPELINE_GROUP),
        loaders=_names(LOADER_GROUP),
        endpoints=list(ENDPOINT_PROTOCOLS),
        cores=list(EXECUTORS),
    )


@dataclass(frozen=True, slots=True)
class PluginState:
    """One configured plugin: ``error`` is why it does not load (None when it does)."""

    name: str
    version: str
    error: PredictionProviderError | None = None

    @property
    def status(self) -> PluginHealth:
        return "active" if self.error is None else "unavailable"

    def payload(self, with_reasons: bool) -> dict[str, Any]:
        """``with_reasons``: the error's message too, which may name files and settings (operators)."""
        error = None
        if self.error is not None:
            error = {"code": self.error.code, "message": self.error.message if with_reasons else None}
        return {"name": self.name, "status": self.status, "version": self.version, "error": error}


def _state(group: str | None, name: str, load: Callable[[], object]) -> PluginState:
    try:
        load()
    except PredictionProviderError as exc:
        return PluginState(name, _version(group, name), exc)
    except Exception as exc:  # noqa: BLE001 - a broken plugin is reported, not a server error
        return PluginState(name, _version(group, name), PredictionProviderError(f"{name} failed: {exc}"))
    return PluginState(name, _version(group, name))


def feeder_state(settings: Settings) -> PluginState:
    """``PP_FEEDER``'s feeder, built from the settings and released again; blocking."""

    def build() -> None:
        load_feeder(settings.feeder, settings).close()

    return _state(FEEDER_GROUP, settings.feeder, build)


def pipeline_state(name: str = DEFAULT_PIPELINE) -> PluginState:
    return _state(PIPELINE_GROUP, name, lambda: load_pipeline(name))


def predictor_state(settings: Settings, build: Callable[[], object]) -> PluginState:
    """The signal predictor ``PP_SIGNAL_PREDICTOR`` selects; ``build`` is the server's own (cached)
    construction, so a predictor that loads here is the one that answers; blocking."""
    return _state(PREDICTOR_GROUP, selected_predictor(settings), build)


def executor_state(backend: str) -> PluginState:
    """The job executor this process started (its start fails the server's, so it is active)."""
    return PluginState(backend, __version__)


@dataclass(frozen=True, slots=True)
class PluginStatus:
    core: PluginState
    feeder: PluginState
    predictor: PluginState
    pipeline: PluginState

    def payload(self, with_reasons: bool) -> dict[str, Any]:
        plugins = {
            "core": self.core.payload(with_reasons),
            "feeder": self.feeder.payload(with_reasons),
            "predictor": self.predictor.payload(with_reasons),
            "pipeline": self.pipeline.payload(with_reasons),
        }
        operational = all(plugin["status"] == "active" for plugin in plugins.values())
        return {
            "plugins": plugins,
            "total_plugins": len(plugins),
            "system_status": "operational" if operational else "degraded",
        }


def plugin_status(settings: Settings, backend: str, build_predictor: Callable[[], object]) -> PluginStatus:
    """The configured plugin of each kind and whether it loads; blocking (it may read files)."""
    return PluginStatus(
        core=executor_state(backend),
        feeder=feeder_state(settings),
        predictor=predictor_state(settings, build_predictor),
        pipeline=pipeline_state(),
    )
