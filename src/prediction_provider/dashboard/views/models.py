"""Models: the catalogue, one model's versions, a 2-4 version comparison, and moving an alias.

Reads go through the services ``GET /api/v1/models``, ``/models/{name}/versions`` and
``/models/{name}/info`` call; the alias form calls the API's own ``PUT
/models/{name}/aliases/{alias}`` handler, so the permission (``OPERATE_MODELS``), the checks and
the cache refresh are the API's. Tags and descriptions come from providers and are shown as text.
"""

from __future__ import annotations

import re
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Form, Path, Query, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import RedirectResponse, Response

from prediction_provider.accounts.roles import Permission
from prediction_provider.api.auth import require_permission
from prediction_provider.api.deps import Services, services_of
from prediction_provider.api.query_params import DeclaredQueryOnly
from prediction_provider.api.routes.experiments import AliasIn, set_alias
from prediction_provider.dashboard.model_catalogue import (
    HOUR_S,
    catalogue_page,
    example_request,
    loaded_by_name,
    may,
    with_created,
)
from prediction_provider.dashboard.nav import MODELS
from prediction_provider.dashboard.render import PAGE_SIZE, ApiCall, Paging, render, to_json
from prediction_provider.dashboard.session import Checked, Viewer, page_viewer
from prediction_provider.errors import InvalidInput, PredictionProviderError
from prediction_provider.observability.audit import query_audit
from prediction_provider.observability.series import MetricSeries
from prediction_provider.serving.references import NAME_PATTERN

router = APIRouter(prefix="/dashboard", include_in_schema=False)
ModelsViewer = Annotated[Viewer, Depends(page_viewer(MODELS))]
ModelName = Annotated[str, Path(pattern=NAME_PATTERN.pattern, max_length=128)]
Offset = Annotated[int, Query(ge=0, le=1_000_000)]
ALIAS = r"^[A-Za-z][A-Za-z0-9_-]{0,63}$"
VERSION = r"^[0-9]{1,9}$"
MAX_COMPARED = 4


def series_of(request: Request) -> MetricSeries | None:
    return getattr(request.app.state, "metric_series", None)


def may_own(viewer: Viewer) -> bool:
    return may(viewer.principal, Permission.MANAGE_MODELS)


@router.get("/models")
async def models_page(
    request: Request,
    viewer: ModelsViewer,
    q: Annotated[str | None, Query(max_length=128)] = None,
    mine: Annotated[bool, Query()] = False,
    offset: Offset = 0,
    _query: DeclaredQueryOnly = None,
) -> Response:
    require_permission(viewer.principal, Permission.READ_MODELS)
    services = services_of(request)
    rows, total = await run_in_threadpool(
        catalogue_page, services, viewer.principal, series_of(request), q, mine, PAGE_SIZE, offset
    )
    return render(
        request, "models.html", viewer, MODELS, rows=rows, paging=Paging(offset, total), q=q or "", mine=mine,
        sees_metrics=may(viewer.principal, Permission.READ_METRICS) and series_of(request) is not None,
        may_own=may_own(viewer),
        sees_owner=may(viewer.principal, Permission.MANAGE_USERS) or may_own(viewer),
        has_prices=services.marketplace is not None,
        api_call=ApiCall("/models", {"limit": PAGE_SIZE, "offset": offset or None}),
    )  # fmt: skip


async def signature_of(services: Services, name: str) -> dict[str, Any] | None:
    """The default version's signature (``GET /models/{name}/info``: champion, else latest)."""
    try:
        cached = await services.cache.aget(name)
    except PredictionProviderError:
        return None
    return {"version": cached.resolved.version, **cached.model.signature.as_dict()}


def alias_history(services: Services, viewer: Viewer, name: str) -> list[dict[str, Any]] | None:
    """Who moved an alias of ``name`` and when: the audit trail of the alias routes (it records
    no versions) and the experiments that promoted. None when the role may read neither."""
    if not may(viewer.principal, Permission.READ_LOGS):
        return None
    moves: list[dict[str, Any]] = []
    for path in (f"/models/{name}/aliases/", f"/dashboard/models/{name}/aliases"):
        entries, _ = query_audit(services.db, path=path, min_status=200, limit=20)
        moves += [
            {"at": e["at"], "who": e["username"], "what": f"{e['method']} {e['path']}", "status": e["status"]}
            for e in entries
            if e["method"] in ("PUT", "POST") and e["status"] < 400
        ]
    if services.experiments is not None and may(viewer.principal, Permission.OPERATE_MODELS):
        promoted = services.experiments.list(name, "promoted", 20, 0)["items"]
        for item in promoted:
            versions = ", ".join(f"{k} v{v.get('version')}" for k, v in item["resolved"].items())
            moves.append({"at": item["ended_at"], "who": "experiment " + item["name"],
                          "what": f"promoted ({versions})", "status": None})  # fmt: skip
    return sorted(moves, key=lambda move: str(move["at"]), reverse=True)[:20]


def traffic_chart(request: Request, viewer: Viewer, name: str) -> dict[str, Any] | None:
    """Last hour of requests per second and p99 for the model (the series has no per-version key)."""
    series = series_of(request)
    if series is None or not may(viewer.principal, Permission.READ_METRICS):
        return None
    window = series.window(HOUR_S, 60.0, model=name, group_by="model")
    line = next((s for s in window.series if s.key == name), None)
    points = line.points if line is not None else []
    return {
        "x": [point.t.timestamp() for point in points],
        "series": [
            {"label": "req/s", "values": [point.rate for point in points], "kind": "line"},
            {"label": "p99 s", "values": [point.p99 for point in points], "kind": "line"},
        ],
        "time": True,
        "y_label": "req/s and p99 (s)",
        "height": 200,
        "empty": "No requests recorded for this model in the last hour.",
    }


@router.get("/models/{name}")
async def model_page(
    request: Request, name: ModelName, viewer: ModelsViewer, offset: Offset = 0,
    _query: DeclaredQueryOnly = None,
) -> Response:  # fmt: skip
    services = services_of(request)
    versions = with_created(await run_in_threadpool(services.registry.versions, name))  # 404 if unknown
    signature = await signature_of(services, name)  # may load the default version: read the cache after
    loaded = {item.version: item for item in loaded_by_name(services).get(name, [])}
    history = await run_in_threadpool(alias_history, services, viewer, name)
    aliases = {alias: v["version"] for v in versions for alias in v["aliases"]}
    example = example_request(name, signature) if signature else None
    return render(
        request, "model_detail.html", viewer, MODELS, name=name,
        versions=versions[offset : offset + PAGE_SIZE],
        all_versions=[v["version"] for v in versions], paging=Paging(offset, len(versions)), loaded=loaded,
        aliases=aliases, signature=signature, history=history, chart=traffic_chart(request, viewer, name),
        example=to_json(example) if example else None,
        may_predict=may(viewer.principal, Permission.PREDICT),
        may_move=may(viewer.principal, Permission.OPERATE_MODELS),
        api_call=ApiCall(f"/models/{name}/versions", {"limit": PAGE_SIZE, "offset": offset or None}),
        info_call=ApiCall(f"/models/{name}/info"),
    )  # fmt: skip


@router.get("/models/{name}/compare")
async def compare_page(
    request: Request,
    name: ModelName,
    viewer: ModelsViewer,
    versions: Annotated[list[str] | None, Query()] = None,
    _query: DeclaredQueryOnly = None,
) -> Response:
    asked = versions or []
    chosen = list(dict.fromkeys(asked))
    if len(asked) > MAX_COMPARED or len(chosen) < 2 or not all(re.fullmatch(VERSION, v) for v in chosen):
        raise InvalidInput(
            f"compare 2 to {MAX_COMPARED} different versions; {len(asked)} were asked for",
            [{"field": "versions", "error": f"2 to {MAX_COMPARED} versions"}],
        )
    services = services_of(request)
    described = {
        v["version"]: v for v in with_created(await run_in_threadpool(services.registry.versions, name))
    }
    missing = [v for v in chosen if v not in described]
    if missing:
        raise InvalidInput(f"model {name!r} has no version {', '.join(missing)}", [{"field": "versions"}])
    columns = [described[v] for v in chosen]
    metrics = sorted({key for column in columns for key in column["metrics"]})
    params = sorted({key for column in columns for key in column["params"]})
    return render(
        request, "model_compare.html", viewer, MODELS, name=name, columns=columns, metrics=metrics,
        params=params, api_call=ApiCall(f"/models/{name}/versions"),
    )  # fmt: skip


@router.post("/models/{name}/aliases")
async def move_alias(
    request: Request,
    name: ModelName,
    viewer: Checked,
    alias: Annotated[str, Form(pattern=ALIAS)],
    version: Annotated[str, Form(pattern=VERSION)],
) -> Response:
    """``PUT /models/{name}/aliases/{alias}`` itself: its permission, checks and cache refresh."""
    principal = require_permission(viewer.principal, Permission.OPERATE_MODELS)
    await set_alias(name, alias, principal, services_of(request), AliasIn(version=version))
    return RedirectResponse(f"/dashboard/models/{quote(name)}", status_code=303)
