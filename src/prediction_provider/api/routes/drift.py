"""Drift monitoring: a model version's drift report and history, its reference profile, resets
and uploads (operators), and ``/monitoring/drift``, one line per registered model."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from starlette.concurrency import run_in_threadpool

from prediction_provider.api.auth import MetricsReader, ModelOperator
from prediction_provider.api.deps import Services, ServicesDep
from prediction_provider.api.query_params import DeclaredQueryOnly
from prediction_provider.api.routes.predict import ERROR_RESPONSES
from prediction_provider.errors import DriftDisabled, InvalidInput, PredictionProviderError
from prediction_provider.modelops.drift.monitor import DriftMonitor
from prediction_provider.modelops.drift.report import KEPT_WINDOWS
from prediction_provider.modelops.drift.uploads import feature_matrix, profile_from_rows, read_rows
from prediction_provider.serving.references import NAME_PATTERN

router = APIRouter(tags=["drift"])

ModelName = Annotated[str, Path(pattern=NAME_PATTERN.pattern, max_length=128)]
VersionPath = Annotated[str, Path(pattern=r"^[0-9]{1,12}$")]
VersionQuery = Annotated[
    str | None, Query(pattern=r"^[0-9]{1,12}$", description="Default: the champion alias, else the latest.")
]
Answer = dict[str, Any]


def monitor_of(services: Services) -> DriftMonitor:
    if services.drift is None:
        raise DriftDisabled("drift monitoring is off (PP_DRIFT=false)")
    return services.drift


def _version(monitor: DriftMonitor, name: str, version: str | None) -> str:
    if version is None:
        return monitor.default_version(name)
    monitor.check_version(name, version)
    return version


def _window(value: str) -> int:
    if value == "current":
        return 0
    if value.isdigit() and int(value) < KEPT_WINDOWS:
        return int(value)
    raise InvalidInput(
        f"window must be 'current' or 0…{KEPT_WINDOWS - 1}", [{"field": "window", "error": "invalid"}]
    )


def _no_reference(name: str, version: str) -> Answer:
    return {
        "model": name,
        "version": version,
        "reference": None,
        "status": "no_reference",
        "drift_score": None,
        "features": [],
    }


@router.get(
    "/models/{name}/drift",
    response_model=Answer,
    responses=ERROR_RESPONSES,
    summary="Drift of a model version",
)
async def model_drift(
    name: ModelName,
    reader: MetricsReader,
    services: ServicesDep,
    version: VersionQuery = None,
    window: Annotated[str, Query(max_length=16, description="current, or k windows back")] = "current",
    _query: DeclaredQueryOnly = None,
) -> Answer:
    """Scores per feature of one window against the reference; ``counts`` recompute every score."""
    monitor = monitor_of(services)
    index = _window(window)

    def build() -> Answer:
        chosen = _version(monitor, name, version)
        report = monitor.report(name, chosen, index)
        return report if report is not None else _no_reference(name, chosen)

    return await run_in_threadpool(build)


@router.get(
    "/models/{name}/drift/history",
    response_model=Answer,
    responses=ERROR_RESPONSES,
    summary="Drift by window",
)
async def model_drift_history(
    name: ModelName,
    reader: MetricsReader,
    services: ServicesDep,
    feature: Annotated[str | None, Query(max_length=200)] = None,
    version: VersionQuery = None,
    _query: DeclaredQueryOnly = None,
) -> Answer:
    monitor = monitor_of(services)

    def build() -> Answer:
        chosen = _version(monitor, name, version)
        history = monitor.history(name, chosen, feature)
        return history if history is not None else {**_no_reference(name, chosen), "windows": []}

    return await run_in_threadpool(build)


@router.post(
    "/models/{name}/drift/reset",
    response_model=Answer,
    responses=ERROR_RESPONSES,
    summary="Forget drift counts",
)
async def reset_drift(
    name: ModelName,
    operator: ModelOperator,
    services: ServicesDep,
    version: VersionQuery = None,
    _query: DeclaredQueryOnly = None,
) -> Answer:
    """Counts of the version (default: every version of the model) are forgotten in every worker."""
    monitor = monitor_of(services)

    def run() -> Answer:
        if version is not None:
            monitor.check_version(name, version)
            versions = [version]
        else:
            versions = [entry["version"] for entry in services.registry.versions(name)]
        at = monitor.reset(name, versions)
        return {"model": name, "versions": versions, "reset_at": at}

    return await run_in_threadpool(run)


@router.get(
    "/models/{name}/drift/reference",
    response_model=Answer,
    responses=ERROR_RESPONSES,
    summary="Reference profile",
)
async def drift_reference(
    name: ModelName,
    reader: MetricsReader,
    services: ServicesDep,
    version: VersionQuery = None,
    _query: DeclaredQueryOnly = None,
) -> Answer:
    monitor = monitor_of(services)

    def build() -> Answer:
        chosen = _version(monitor, name, version)
        loaded = monitor.reference(name, chosen)
        if loaded is None:
            return {"model": name, "version": chosen, "source": None, "profile": None}
        return {
            "model": name,
            "version": chosen,
            "source": loaded.source,
            "profile": loaded.reference.profile,
        }

    return await run_in_threadpool(build)


@router.post(
    "/models/{name}/versions/{version}/drift/reference",
    response_model=Answer,
    responses=ERROR_RESPONSES,
    summary="Upload training rows as the version's reference (CSV or Parquet)",
)
async def upload_drift_reference(
    name: ModelName, version: VersionPath, request: Request, operator: ModelOperator, services: ServicesDep
) -> Answer:
    """Rows with the model's feature columns and an optional ``label``; takes precedence over the
    training artifact, and resets the version's counts."""
    monitor = monitor_of(services)
    await run_in_threadpool(monitor.check_version, name, version)
    body = await request.body()
    frame = await run_in_threadpool(read_rows, body, request.headers.get("content-type"))
    cached = await run_in_threadpool(services.cache.get, f"models:/{name}/{version}")
    signature = cached.model.signature

    def build() -> Answer:
        probabilities = None
        if signature.classes and all(f in frame.columns for f in signature.feature_names):
            matrix = feature_matrix(frame, signature.feature_names)
            probabilities = services.predictions.run_matrix(cached, matrix).probabilities
        profile = profile_from_rows(
            frame,
            signature.feature_names,
            signature.classes,
            probabilities,
            bins=services.settings.drift_bins,
            window_rows=services.settings.drift_window_rows,
        )
        monitor.save_reference(name, version, profile, operator.username)
        return {
            "model": name,
            "version": version,
            "source": "upload",
            "rows": profile["rows"],
            "features": [f["name"] for f in profile["features"]],
        }

    return await run_in_threadpool(build)


@router.get(
    "/monitoring/drift", response_model=Answer, responses=ERROR_RESPONSES, summary="Drift of every model"
)
async def monitoring_drift(
    reader: MetricsReader, services: ServicesDep, _query: DeclaredQueryOnly = None
) -> Answer:
    """Per registered model (its champion, else latest version): status, drift_score (the largest
    feature score; null without a reference), drift_share and the current window's rows."""
    monitor = monitor_of(services)

    def build() -> Answer:
        models = []
        for registered in services.registry.client.search_registered_models(max_results=1000):
            try:
                version = monitor.default_version(str(registered.name))
            except PredictionProviderError:
                continue
            models.append(monitor.overview(str(registered.name), version))
        return {"models": models, "count": len(models)}

    return await run_in_threadpool(build)
