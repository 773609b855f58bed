"""Jobs by symbol from the seed project's request bodies (``SeedPredictionCreate``).

The seed's words are turned into a ``ForecastRequest`` against what the
symbol's forecast model was trained for, so a request it cannot answer is
refused at submit (422 naming what is available) and leaves no job behind:

- ``interval``: as sent; when absent, ``1d`` (the seed's default) if the symbol
  is forecast daily, else the interval its model was trained at. Only an
  interval the client sent and nobody serves is a 422.
- horizons: ``horizons``, else ``prediction_horizon`` (every trained horizon up
  to it; it must be one of them), else ``prediction_type`` (``short_term``: the
  shortest trained horizon, ``medium_term``: the middle one, ``long_term``: the
  longest, i.e. every horizon), else every trained horizon.
- ``model_name`` is our ``model`` (the seed's ``default``/``default_model`` mean
  the champion); ``baseline_datetime`` is our ``as_of``.
- ``predictor_plugin``/``feeder_plugin``/``pipeline_plugin``: the seed's
  ``default_*`` names, or the plugins the model was trained with (feeder: the
  plugin of its source, pipeline: its feature pipeline, predictor: ``forecast``
  or the model's name). The job reads the bars the model was trained on, so any
  other installed plugin is a 422 naming the model's, and an unknown one a 422
  naming the installed ones.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from importlib.metadata import entry_points
from typing import Any

from prediction_provider.accounts.principal import Principal
from prediction_provider.api.seed_schemas import DEFAULT_PLUGINS, PREDICTION_TYPES, SeedPredictionCreate
from prediction_provider.errors import InvalidInput, PredictionFailed
from prediction_provider.features.feeders.registry import feeder_plugins
from prediction_provider.forecasts.model import ForecastModel
from prediction_provider.forecasts.service import ForecastRequest, ForecastService
from prediction_provider.jobs.service import JobService, Submitted
from prediction_provider.signals.registry import PREDICTOR_GROUP

PIPELINE_GROUP = "prediction_provider.pipelines"
LOADER_GROUP = "prediction_provider.loaders"
FORECAST_LOADER = "forecast"
SEED_DEFAULT_INTERVAL = "1d"


@dataclass(frozen=True, slots=True)
class SeedJob:
    request: ForecastRequest
    seed: dict[str, Any]  # the seed request as accepted, kept in the job's parameters


def horizon_for_type(prediction_type: str, trained: tuple[int, ...]) -> int:
    """short_term: the shortest trained horizon; medium_term: the middle one; long_term: the longest."""
    ordered = sorted(trained)
    index = {"short_term": 0, "medium_term": len(ordered) // 2, "long_term": len(ordered) - 1}
    return ordered[index[prediction_type]]


def type_of(up_to: int | None, horizons: tuple[int, ...] | None, trained: tuple[int, ...]) -> str:
    """The prediction_type a request amounts to, for requests that named horizons instead."""
    furthest = max(horizons) if horizons else up_to
    ordered = sorted(trained)
    if furthest is None or furthest >= ordered[-1]:
        return "long_term"
    if furthest <= ordered[0]:
        return "short_term"
    return "medium_term"


@lru_cache(maxsize=8)
def _installed(group: str) -> tuple[str, ...]:
    """Entry points read once per process: scanning the installed distributions takes tens of
    milliseconds, and plugins installed later need a restart to be served anyway."""
    return tuple(sorted({entry_point.name for entry_point in entry_points(group=group)}))


def _check_plugin(field: str, sent: str | None, own: set[str], installed: Callable[[], Sequence[str]]) -> str:
    """The plugin name to report: the seed's default when none was sent. ``installed`` is only
    read when a name other than the default or the model's own was sent."""
    default = DEFAULT_PLUGINS[field]
    if sent is None or sent == default or sent in own:
        return sent or default
    if sent in installed():
        error = f"this symbol's model uses {', '.join(sorted(own))}; send that or {default}"
    else:
        error = f"unknown plugin; installed: {', '.join(installed())} (or {default})"
    raise InvalidInput(f"{field} {sent!r} cannot serve this forecast", [{"field": field, "error": error}])


def seed_job(forecasts: ForecastService, body: SeedPredictionCreate) -> SeedJob:
    """The forecast ``body`` asks for, checked against the symbol's model (see the module doc)."""
    symbol = body.instrument
    interval = body.interval
    if interval is None and SEED_DEFAULT_INTERVAL in forecasts.catalog.intervals(symbol):
        interval = SEED_DEFAULT_INTERVAL
    probe = ForecastRequest(symbol=symbol, interval=interval, model=body.model_reference, as_of=body.time)
    symbol, interval, cached = forecasts.validate(probe)
    model = cached.model
    assert isinstance(model, ForecastModel)  # validate refuses any other model
    manifest = model.manifest
    trained = tuple(manifest.horizons)
    horizons = None if body.horizons is None else tuple(body.horizons)
    up_to = body.prediction_horizon
    if horizons is None and up_to is None and body.prediction_type is not None:
        up_to = horizon_for_type(body.prediction_type, trained)
    prediction_type = body.prediction_type or type_of(up_to, horizons, trained)
    assert prediction_type in PREDICTION_TYPES
    plugins = {
        "predictor_plugin": _check_plugin(
            "predictor_plugin", body.predictor_plugin,
            {FORECAST_LOADER, cached.resolved.name or ""},
            lambda: [*_installed(PREDICTOR_GROUP), FORECAST_LOADER],
        ),
        "feeder_plugin": _check_plugin(
            "feeder_plugin", body.feeder_plugin,
            {manifest.source.partition(":")[0]}, lambda: sorted(feeder_plugins()),
        ),
        "pipeline_plugin": _check_plugin(
            "pipeline_plugin", body.pipeline_plugin,
            {manifest.feature_pipeline.partition("/")[0]}, lambda: _installed(PIPELINE_GROUP),
        ),
    }  # fmt: skip
    request = ForecastRequest(
        symbol=symbol,
        interval=interval,
        horizons=horizons,
        up_to=up_to,
        as_of=body.time,
        model=body.model_reference,
    )
    seed = {
        "symbol": symbol,
        "ticker": symbol,
        "interval": interval,
        "prediction_type": prediction_type,
        "prediction_horizon": up_to,
        "horizons": None if horizons is None else list(horizons),
        "baseline_datetime": None if body.time is None else body.time.isoformat(),
        **plugins,
        "model_name": cached.resolved.name,
    }
    return SeedJob(request, seed)


def submit_seed_job(
    jobs: JobService,
    principal: Principal,
    body: SeedPredictionCreate,
    idempotency_key: str | None,
    address: str,
    prediction_id: str | None = None,
) -> Submitted:
    """Submit the job ``body`` asks for; ``prediction_id``: a legacy client's own id, kept in the
    job's seed request and (scoped to the caller) as its idempotency key."""
    if jobs.forecasts is None:
        raise PredictionFailed("forecasts by symbol are not configured on this server")
    job = seed_job(jobs.forecasts, body)
    seed = job.seed if prediction_id is None else {**job.seed, "prediction_id": prediction_id}
    return jobs.submit_forecast(principal, job.request, idempotency_key, address, {"seed": seed})
