"""Overview ``/dashboard``: RED tiles, saturation, health chips and what changed, live over SSE.

Every figure is one the API answers: the tiles are the last point of
``GET /api/v1/metrics/series?group_by=total`` (15 minutes, one step per sample), saturation is what
``/monitoring/queue`` and ``/monitoring/workers`` answer plus the model cache, health is what
``/health/ready`` and ``/api/v1/admin/system/health`` compute. One snapshot per tick serves every
viewer: admins and operators hold the same permissions for all of it, so the topic is "overview".
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from prediction_provider.accounts.principal import Principal
from prediction_provider.accounts.roles import Permission
from prediction_provider.api.auth import require_permission
from prediction_provider.api.deps import Services, services_of
from prediction_provider.api.routes.admin import _system_health
from prediction_provider.dashboard.changes import Change, ChangeFeed
from prediction_provider.dashboard.live import Snapshot, broadcaster
from prediction_provider.dashboard.nav import OVERVIEW
from prediction_provider.dashboard.render import ApiCall, render, templates
from prediction_provider.dashboard.series_charts import (
    Tile,
    metric_series,
    read_window,
    red_tiles,
    series_call,
)
from prediction_provider.dashboard.session import Viewer, page_viewer

router = APIRouter(prefix="/dashboard", include_in_schema=False)
OverviewViewer = Annotated[Viewer, Depends(page_viewer(OVERVIEW))]
WINDOW = "15m"
WINDOW_S = 900
TOPIC = "overview"
PANELS = ("red", "saturation", "health", "changes")


@dataclass(frozen=True, slots=True)
class Chip:
    label: str
    state: str  # ok, warn, bad, neutral
    text: str


@dataclass(frozen=True, slots=True)
class Saturation:
    cache_models: int
    cache_capacity: int
    backend: str
    pending: int
    active: int
    scheduled: int | None  # None: the broker did not answer
    workers: int | None


HEALTH_EVERY_S = 15.0


def _chip(label: str, up: bool | None, up_text: str = "up", down_text: str = "down") -> Chip:
    if up is None:
        return Chip(label, "neutral", "not configured")
    return Chip(label, "ok" if up else "bad", up_text if up else down_text)


def _saturation(services: Services) -> tuple[Saturation, bool | None]:
    """Blocking: the job store and (on Celery) the broker are asked. Also whether the broker answered."""
    backend, pending, active, scheduled, workers, broker = "none", 0, 0, None, None, None
    if services.jobs is not None:
        backend = services.jobs.backend
        counts = services.jobs.store.counts()
        pending, active = counts["pending"], counts["processing"]
        try:
            scheduled, workers = services.jobs.scheduled(), len(services.jobs.workers())
            broker = True if services.jobs.celery is not None else None
        except Exception:  # noqa: BLE001 - the broker being away must not hide the database's figures
            broker = False
    saturation = Saturation(len(services.cache), services.cache.max_models, backend, pending, active,
                            scheduled, workers)  # fmt: skip
    return saturation, broker


def _health(services: Services, backend: str, broker: bool | None) -> list[Chip]:
    """Blocking: the database, the registry and Redis are asked (~20-30 ms, the registry most)."""
    system = _system_health(services)
    ready = bool(system["registry"]) and not services.warm_errors
    grpc = services.grpc_port is not None if services.settings.grpc_enabled else None
    return [
        Chip("Live", "ok", "alive"),
        _chip("Ready", ready, "ready", "not ready"),
        _chip("Database", bool(system["database"])),
        _chip("Redis", system["redis"]),
        Chip("Broker", "neutral", "in process") if backend == "inprocess" else _chip("Broker", broker),
        _chip("gRPC", grpc, f"port {services.grpc_port}", "not serving"),
    ]


def _feed(request: Request) -> ChangeFeed:
    state = request.app.state
    feed: ChangeFeed | None = getattr(state, "dashboard_change_feed", None)
    if feed is None:
        feed = state.dashboard_change_feed = ChangeFeed({})
    return feed


async def _recent_health(request: Request, services: Services) -> tuple[Saturation, list[Chip]]:
    """Saturation every tick; health chips at most every HEALTH_EVERY_S for the process: asking the
    registry alone takes ~20-30 ms, which every tick would make most of a live page's cost."""
    state = request.app.state
    saturation, broker = await run_in_threadpool(_saturation, services)
    held: tuple[float, list[Chip]] | None = getattr(state, "dashboard_health", None)
    now = time.monotonic()
    every = max(HEALTH_EVERY_S, services.settings.dashboard_tick_s)
    if held is not None and now - held[0] < every:
        return saturation, held[1]
    chips = await run_in_threadpool(_health, services, saturation.backend, broker)
    state.dashboard_health = (now, chips)
    return saturation, chips


async def overview_context(request: Request, principal: Principal) -> dict[str, Any]:
    """Everything the page's panels show, read once (per tick, for every viewer)."""
    require_permission(principal, Permission.READ_METRICS)
    services = services_of(request)
    series = metric_series(request)
    found = await run_in_threadpool(read_window, series, WINDOW_S, "total")
    tiles: list[Tile] = await run_in_threadpool(red_tiles, found, series)
    saturation, chips = await _recent_health(request, services)
    changes: list[Change] = await run_in_threadpool(_feed(request).read, TOPIC, services, principal)
    return {
        "tiles": tiles,
        "sample_t": found.as_of.timestamp(),
        "saturation": saturation,
        "chips": chips,
        "changes": changes,
        "calls": {
            "red": series_call(series, WINDOW, "total"),
            "queue": ApiCall("/monitoring/queue"),
            "workers": ApiCall("/monitoring/workers"),
            "health": ApiCall("/api/v1/admin/system/health"),
            "failed": ApiCall("/api/v1/predictions", {"status": "failed", "limit": 20}),
            "audit": ApiCall("/api/v1/admin/audit", {"limit": 100}),
        },
    }


@router.get("")
async def overview_page(request: Request, viewer: OverviewViewer) -> Response:
    context = await overview_context(request, viewer.principal)
    return render(request, "overview.html", viewer, OVERVIEW, stream="/dashboard/stream/overview", **context)


@router.get("/stream/overview")
async def overview_stream(request: Request, viewer: OverviewViewer) -> Response:
    principal = viewer.principal

    async def build() -> Snapshot:
        context = await overview_context(request, principal)
        context["origin"] = f"{request.url.scheme}://{request.url.netloc}"
        return {
            f"overview-{panel}": templates.get_template(f"_overview_{panel}.html").render(**context)
            for panel in PANELS
        }

    return broadcaster(request).stream(request, viewer, TOPIC, build)
