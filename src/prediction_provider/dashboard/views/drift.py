"""The drift page: per feature PSI, KS and status of one model version's window against its
reference, the model's output as one more row, drift against feature importance, and one feature's
reference and current histograms overlaid.

Every figure is ``GET /models/{name}/drift`` (the same ``DriftMonitor.report`` with the API's own
version and window rules) and the list of models is ``GET /monitoring/drift``. The API asks for
``read_metrics``; a role without it (a provider) gets the page with that said and no figures,
because the dashboard never shows what the API would refuse the same user.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from prediction_provider.accounts.roles import Permission, allows
from prediction_provider.api.deps import Services, services_of
from prediction_provider.api.query_params import DeclaredQueryOnly
from prediction_provider.api.routes.drift import _no_reference, _version, _window, monitor_of
from prediction_provider.dashboard.nav import DRIFT
from prediction_provider.dashboard.render import PAGE_SIZE, ApiCall, Paging, render
from prediction_provider.dashboard.session import Viewer, page_viewer
from prediction_provider.errors import PredictionProviderError
from prediction_provider.modelops.drift.report import KEPT_WINDOWS
from prediction_provider.modelops.drift.statistics import proportions
from prediction_provider.serving.references import NAME_PATTERN
from prediction_provider.serving.registry import CHAMPION_ALIAS

router = APIRouter(prefix="/dashboard", include_in_schema=False)
DriftViewer = Annotated[Viewer, Depends(page_viewer(DRIFT))]
WINDOW_CHOICES = ("current", *(str(k) for k in range(1, min(KEPT_WINDOWS, 12))))
STATES = {"ok": "ok", "warn": "warn", "drift": "bad"}


def drift_filters(
    model: Annotated[str | None, Query(pattern=NAME_PATTERN.pattern, max_length=128)] = None,
    version: Annotated[str | None, Query(pattern=r"^[0-9]{1,12}$")] = None,
    window: Annotated[str, Query(max_length=16)] = "current",
    feature: Annotated[str | None, Query(max_length=200)] = None,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> dict[str, Any]:
    return {"model": model, "version": version, "window": window, "feature": feature, "offset": offset}


Filters = Annotated[dict[str, Any], Depends(drift_filters)]


def _models(services: Services, offset: int) -> tuple[list[dict[str, Any]], int]:
    """One page of ``/monitoring/drift``: registered models with their champion's (else latest) line."""
    monitor = monitor_of(services)
    registered = list(services.registry.client.search_registered_models(max_results=1000))
    lines = []
    for model in registered[offset : offset + PAGE_SIZE]:
        name = str(model.name)
        # The search lists aliases already: the champion's version without asking MLflow again.
        champion = (model.aliases or {}).get(CHAMPION_ALIAS)
        try:
            version = str(champion) if champion is not None else monitor.default_version(name)
        except PredictionProviderError:
            continue
        lines.append(monitor.overview(name, version))
    return lines, len(registered)


def _scatter(features: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Drift score against importance, one point per feature; None when the model gives no importances."""
    pairs = [(f["importance"], f["score"]) for f in features if f.get("importance") is not None]
    if not pairs or len(pairs) < len(features):
        return None
    pairs.sort()
    return {
        "x": [p[0] for p in pairs],
        "series": [{"label": "drift score (PSI)", "values": [p[1] for p in pairs], "kind": "points"}],
        "time": False,
        "x_label": "importance",
        "y_label": "PSI",
        "height": 220,
        "empty": "no features",
    }


def _histogram(services: Services, report: dict[str, Any], feature: str) -> dict[str, Any] | None:
    """The reference's bin shares and the window's, overlaid: bins are the reference's deciles, then
    the out-of-range and missing bins."""
    found = next((f for f in report.get("features", []) if f["name"] == feature), None)
    loaded = monitor_of(services).reference(report["model"], report["version"])
    if found is None or loaded is None:
        return None
    entry = next((e for e in loaded.reference.profile["features"] if e["name"] == feature), None)
    if entry is None or "proportions" not in entry:
        return None
    reference = [float(p) for p in entry["proportions"]]
    current = proportions(found["counts"]["bins"]).tolist()
    return {
        "x": list(range(len(reference))),
        "series": [
            {"label": "reference share", "values": reference, "kind": "bars"},
            {"label": "current share", "values": current, "kind": "bars"},
        ],
        "time": False,
        "x_label": "bin",
        "y_label": "share of rows",
        "height": 220,
        "empty": "no rows in this window",
    }


def _report(services: Services, filters: dict[str, Any], lines: list[dict[str, Any]]) -> dict[str, Any]:
    name = filters["model"] or next(
        (line["name"] for line in lines if line["status"] != "no_reference"), None
    )
    if name is None:
        return {"report": None}
    monitor = monitor_of(services)
    index = _window(filters["window"])
    chosen = _version(monitor, name, filters["version"])
    report = monitor.report(name, chosen, index) or _no_reference(name, chosen)
    features = report.get("features") or []
    feature = filters["feature"] or (features[0]["name"] if features else None)
    query = {
        "version": filters["version"],
        "window": None if filters["window"] == "current" else filters["window"],
    }
    return {
        "report": report,
        "model": name,
        "feature": feature,
        "scatter": _scatter(features) if features else None,
        "histogram": _histogram(services, report, feature) if feature and report.get("window") else None,
        "report_api": ApiCall(f"/models/{name}/drift", query),
        "history_api": ApiCall(
            f"/models/{name}/drift/history", {"feature": feature, "version": filters["version"]}
        ),
    }


async def _context(request: Request, viewer: Viewer, filters: dict[str, Any]) -> dict[str, Any]:
    base: dict[str, Any] = {"filters": filters, "windows": WINDOW_CHOICES, "states": STATES}
    if not allows(viewer.principal.role, Permission.READ_METRICS):
        return {**base, "allowed": False}
    services = services_of(request)

    def build() -> dict[str, Any]:
        lines, total = _models(services, filters["offset"])
        return {
            **base,
            "allowed": True,
            "lines": lines,
            "paging": Paging(filters["offset"], total),
            "monitoring_api": ApiCall("/monitoring/drift"),
            **_report(services, filters, lines),
        }

    return await run_in_threadpool(build)


@router.get("/drift")
async def drift_page(
    request: Request, viewer: DriftViewer, filters: Filters, _query: DeclaredQueryOnly = None
) -> Response:
    context = await _context(request, viewer, filters)
    return render(request, "drift.html", viewer, DRIFT, **context)


@router.get("/drift/table")
async def drift_table(
    request: Request, viewer: DriftViewer, filters: Filters, _query: DeclaredQueryOnly = None
) -> Response:
    """The report panel alone, for the page's 30 s refresh."""
    context = await _context(request, viewer, filters)
    return render(request, "_drift_panel.html", viewer, DRIFT, **context)
