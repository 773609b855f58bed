"""Experiments: champion against challenger, with promote and roll back.

Every figure comes from what ``GET /api/v1/experiments`` and ``GET
/api/v1/experiments/{name}/results`` answer (the results handler itself is called), and the
promote and roll back forms call ``Experiments.change_state``, the method ``POST
/api/v1/experiments/{name}/{action}`` calls, which writes the ``experiment_transitions`` row
(who, from, to, why) beside the request envelope's audit row. The API gives all of this to
``OPERATE_MODELS`` holders only, so a provider sees the page without other people's experiments.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Form, Path, Query, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import RedirectResponse, Response

from prediction_provider.accounts.roles import Permission
from prediction_provider.api.auth import require_permission
from prediction_provider.api.deps import services_of
from prediction_provider.api.query_params import DeclaredQueryOnly
from prediction_provider.api.routes.experiments import experiment_results, experiments_of
from prediction_provider.dashboard.model_catalogue import may
from prediction_provider.dashboard.nav import EXPERIMENTS
from prediction_provider.dashboard.render import PAGE_SIZE, ApiCall, Paging, is_fragment, query_with, render
from prediction_provider.dashboard.session import Checked, Viewer, page_viewer
from prediction_provider.modelops.experiment_config import NAME, STATES
from prediction_provider.modelops.experiments import LIVE

router = APIRouter(prefix="/dashboard", include_in_schema=False)
ExperimentsViewer = Annotated[Viewer, Depends(page_viewer(EXPERIMENTS))]
ExperimentName = Annotated[str, Path(pattern=NAME)]
State = Annotated[Literal[STATES] | None, Query()]  # type: ignore[valid-type]
MAX_DETAILED = 5  # results are computed for at most this many live experiments per page


def significance(comparison: dict[str, Any]) -> str:
    """ "not yet significant" until the interval excludes 0 and the sample is past its minimum."""
    ci = comparison.get("ci")
    if not comparison.get("final"):
        return f"not yet significant (n {comparison.get('n')} of {comparison.get('min_n')})"
    if ci is None or ci[0] is None or ci[1] is None or ci[0] <= 0 <= ci[1]:
        return "not yet significant"
    return "significant"


async def panels(request: Request, viewer: Viewer, model: str | None, state: str | None, offset: int
                 ) -> dict[str, Any]:  # fmt: skip
    """The table and the live experiments' results, as the API answers them to this viewer."""
    if not may(viewer.principal, Permission.OPERATE_MODELS):
        return {"allowed": False, "items": [], "paging": Paging(0, 0), "detailed": []}
    services = services_of(request)
    found = await run_in_threadpool(experiments_of(services).list, model, state, PAGE_SIZE, offset)
    detailed = []
    for item in [i for i in found["items"] if i["state"] in LIVE][:MAX_DETAILED]:
        results = await experiment_results(item["name"], viewer.principal, services)
        for comparison in results.get("comparisons", []):
            comparison["verdict"] = significance(comparison)
        call = ApiCall(f"/api/v1/experiments/{item['name']}/results")
        detailed.append(
            {"experiment": item, "results": results, "diff": promote_diff(item), "api_call": call}
        )
    return {
        "allowed": True,
        "items": found["items"],
        "paging": Paging(offset, found["total"]),
        "detailed": detailed,
    }


def promote_diff(item: dict[str, Any]) -> str:
    """The alias move a promotion makes, in words, for the confirmation."""
    resolved = item.get("resolved") or {}
    config = item.get("config") or {}
    variants = config.get("variants") or []
    control = next((v["name"] for v in variants if v.get("control")), None)
    candidate = next((v["name"] for v in variants if not v.get("control")), None)
    alias = ((config.get("rollout") or {}).get("on_promote") or {}).get("alias", "champion")
    old = (resolved.get(control) or {}).get("version") if control else None
    new = (resolved.get(candidate) or {}).get("version") if candidate else None
    return f"Move @{alias} of {item['model']} from v{old or '?'} to v{new or '?'}?"


@router.get("/experiments")
async def experiments_page(
    request: Request,
    viewer: ExperimentsViewer,
    model: Annotated[str | None, Query(max_length=256)] = None,
    state: State = None,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
    _query: DeclaredQueryOnly = None,
) -> Response:
    context = await panels(request, viewer, model, state, offset)
    return render(
        request, "experiments.html", viewer, EXPERIMENTS, model=model or "", state=state or "",
        states=STATES,
        api_call=ApiCall("/api/v1/experiments", {"model": model, "state": state, "offset": offset or None}),
        **context,
    )  # fmt: skip


@router.get("/experiments/panels")
async def experiments_panels(
    request: Request,
    viewer: ExperimentsViewer,
    model: Annotated[str | None, Query(max_length=256)] = None,
    state: State = None,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
    _query: DeclaredQueryOnly = None,
) -> Response:
    """The polled panels (every 30 s), alone."""
    context = await panels(request, viewer, model, state, offset)
    return render(
        request, "_experiments_panels.html", viewer, EXPERIMENTS, fragment=is_fragment(request),
        query_with=lambda **changes: page_query(request, **changes), **context,
    )  # fmt: skip


def page_query(request: Request, **changes: Any) -> str:
    """The pager's links in a refreshed panel point at the page, not at the fragment route."""
    return query_with(request, **changes).replace(
        "/dashboard/experiments/panels", "/dashboard/experiments", 1
    )


@router.post("/experiments/{name}/{action}")
async def change_experiment(
    request: Request,
    name: ExperimentName,
    action: Literal["promote", "rollback"],
    viewer: Checked,
    reason: Annotated[str, Form(max_length=256)] = "",
) -> Response:
    """``POST /api/v1/experiments/{name}/{action}``'s own call, under its permission."""
    principal = require_permission(viewer.principal, Permission.OPERATE_MODELS)
    experiments = experiments_of(services_of(request))
    why = reason.strip() or f"{action} from the dashboard"
    await run_in_threadpool(experiments.change_state, name, action, principal.username, why)
    return RedirectResponse("/dashboard/experiments", status_code=303)
