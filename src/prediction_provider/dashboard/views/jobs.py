"""Jobs: the queue, the jobs table with progress, a job's lifecycle, and cancel / retry.

Everything comes from the job store through ``JobService``, the object the API's
``/api/v1/predictions`` routes call, so the page survives a restart and shows exactly what the API
would: a client or provider sees its own jobs (``search`` narrows them), callers with
``read_all_jobs`` see everyone's. Cancel calls the service method the API's ``DELETE`` calls.
The API has no retry: retry here submits the same input again through the method the API's
create route uses (``submit_rows`` / ``submit_dataset``), as the viewer, who needs ``predict``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import FileResponse
from starlette.concurrency import run_in_threadpool
from starlette.responses import RedirectResponse, Response

from prediction_provider.accounts.principal import Principal
from prediction_provider.accounts.roles import Permission, allows
from prediction_provider.api.auth import client_address, require_permission
from prediction_provider.api.deps import services_of
from prediction_provider.api.query_params import DeclaredQueryOnly
from prediction_provider.dashboard.live import broadcaster
from prediction_provider.dashboard.nav import JOBS
from prediction_provider.dashboard.render import PAGE_SIZE, ApiCall, Paging, render, templates
from prediction_provider.dashboard.session import Checked, PageForbidden, Viewer, page_viewer
from prediction_provider.db.models import PredictionJob, PredictionJobEvent
from prediction_provider.errors import JobStateConflict
from prediction_provider.jobs.records import TERMINAL, JobFilter, JobStatus
from prediction_provider.jobs.runtime import JobRuntime
from prediction_provider.jobs.service import JobService, RowsSubmission, payload_rows

router = APIRouter(prefix="/dashboard", include_in_schema=False)
JobsViewer = Annotated[Viewer, Depends(page_viewer(JOBS))]
StatusParam = Annotated[
    Literal["", "pending", "processing", "completed", "failed", "cancelled", "expired"] | None, Query()
]
OwnerParam = Annotated[str | None, Query(pattern=r"^\d{0,9}$", description="A user id; read_all_jobs only")]
ModelParam = Annotated[str | None, Query(max_length=512)]
OffsetParam = Annotated[int, Query(ge=0, le=1_000_000)]
JobIdPath = Annotated[str, PathParam(min_length=1, max_length=64)]
EVENTS_SHOWN = 100
RETRYABLE_KINDS = ("rows", "dataset")


def runtime(request: Request) -> JobRuntime:
    jobs: JobRuntime | None = services_of(request).jobs
    assert jobs is not None, "the job runtime starts with the app"
    return jobs


def service(request: Request) -> JobService:
    return runtime(request).service


# -- what a row shows --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Progress:
    """A job's progress as the store records it (percent; a split job's moves chunk by chunk), in
    the units the job is made of, and an ETA from the rate it advanced at since it started."""

    percent: float
    done: int | None
    total: int | None
    unit: str
    eta_s: float | None

    @property
    def text(self) -> str:
        counted = f"{self.done} of {self.total} {self.unit}" if self.total is not None else ""
        return ", ".join(p for p in (counted, f"{self.percent:.0f} %") if p)


def progress_of(job: PredictionJob, now: datetime) -> Progress:
    percent = max(0.0, min(100.0, float(job.progress or 0.0)))
    finished = job.status == JobStatus.COMPLETED
    done: int | None
    total: int | None
    if job.kind == "dataset":
        result = job.result if isinstance(job.result, dict) else {}
        if finished and isinstance(result.get("rows"), int):
            done = total = int(result["rows"])
            unit = "rows"
        else:
            total, unit = job.chunks_total, "chunks"
            done = None if total is None else round(percent / 100.0 * total)
    else:
        total = payload_rows(job.input) if isinstance(job.input, dict) else 1
        done, unit = (total if finished else 0), "rows"
    eta = None
    if job.status == JobStatus.PROCESSING and job.started_at is not None and 0.0 < percent < 100.0:
        elapsed = (now - job.started_at).total_seconds()
        if elapsed > 0:
            eta = (100.0 - percent) / (percent / elapsed)
    return Progress(percent, done, total, unit, eta)


def state_chip(status: str) -> str:
    return {"completed": "ok", "failed": "bad", "expired": "bad", "processing": "warn"}.get(status, "neutral")


@dataclass(frozen=True, slots=True)
class JobRow:
    job: PredictionJob
    progress: Progress
    chip: str


def rows_of(jobs: list[PredictionJob]) -> list[JobRow]:
    now = datetime.now(UTC)
    return [JobRow(job, progress_of(job, now), state_chip(job.status)) for job in jobs]


# -- the list page -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class JobsQuery:
    status: JobStatus | None
    owner_id: int | None
    model: str | None
    offset: int

    @classmethod
    def of(cls, status: str | None, owner_id: str | None, model: str | None, offset: int) -> JobsQuery:
        return cls(
            JobStatus(status) if status else None,
            int(owner_id) if owner_id else None,
            (model or "").strip() or None,
            offset,
        )

    def params(self) -> dict[str, Any]:
        status = self.status.value if self.status else None
        offset = self.offset or None
        return {"status": status, "owner_id": self.owner_id, "model": self.model, "offset": offset}


def sees_all(principal: Principal) -> bool:
    return allows(principal.role, Permission.READ_ALL_JOBS)


def scope_key(viewer: Viewer) -> str:
    """Whose jobs a viewer sees, and whether the queue's global figures: part of every stream key."""
    jobs = "all" if sees_all(viewer.principal) else f"user:{viewer.user_id}"
    figures = "queue" if allows(viewer.principal.role, Permission.READ_METRICS) else "own"
    return f"{jobs}:{figures}"


async def queue_panel(request: Request, principal: Principal) -> dict[str, Any]:
    """``/monitoring/queue`` and ``/monitoring/workers`` figures for those who may read metrics; for
    everyone else their own jobs by state (the same count ``GET /api/v1/predictions?status=`` gives)."""
    jobs = runtime(request)
    if allows(principal.role, Permission.READ_METRICS):
        counts = await run_in_threadpool(jobs.service.store.counts)
        try:
            scheduled = await run_in_threadpool(jobs.scheduled)
        except Exception:  # noqa: BLE001 - as /monitoring/queue: a broker away hides no database figure
            scheduled = 0
        workers = await run_in_threadpool(jobs.workers)
        tiles = [("pending", counts["pending"]), ("active", counts["processing"]), ("scheduled", scheduled)]
        tiles += [(name, counts[name]) for name in ("completed", "failed", "cancelled")]
        return {"global": True, "tiles": tiles, "workers": workers, "backend": jobs.backend}
    tiles = []
    for status in (JobStatus.PENDING, JobStatus.PROCESSING, JobStatus.COMPLETED, JobStatus.FAILED):
        _, total = await run_in_threadpool(jobs.service.search, principal, JobFilter(status=status), 1, 0)
        tiles.append((status.value, total))
    return {"global": False, "tiles": tiles, "workers": [], "backend": jobs.backend}


async def table_panel(request: Request, principal: Principal, query: JobsQuery) -> dict[str, Any]:
    filters = JobFilter(query.owner_id, query.status, query.model)
    jobs = service(request)
    found, total = await run_in_threadpool(jobs.search, principal, filters, PAGE_SIZE, query.offset)
    return {"rows": rows_of(found), "total": total, "show_owner": sees_all(principal)}


def fragment(name: str, **context: Any) -> str:
    return templates.get_template(name).render(**context)


@router.get("/jobs")
async def jobs_page(
    request: Request,
    viewer: JobsViewer,
    status: StatusParam = None,
    owner_id: OwnerParam = None,
    model: ModelParam = None,
    offset: OffsetParam = 0,
    _query: DeclaredQueryOnly = None,
) -> Response:
    query = JobsQuery.of(status, owner_id, model, offset)
    queue = await queue_panel(request, viewer.principal)
    table = await table_panel(request, viewer.principal, query)
    params = {k: v for k, v in query.params().items() if k != "offset"}
    return render(
        request, "jobs.html", viewer, JOBS, query=query, queue=queue, table=table,
        paging=Paging(query.offset, table["total"]), statuses=[s.value for s in JobStatus],
        stream=ApiCall("/dashboard/stream/jobs", query.params()).url,
        api_list=ApiCall("/api/v1/predictions", {**params, "offset": query.offset or None,
                                                 "limit": PAGE_SIZE}),
        api_queue=ApiCall("/monitoring/queue"), api_workers=ApiCall("/monitoring/workers"),
    )  # fmt: skip


@router.get("/stream/jobs")
async def jobs_stream(
    request: Request,
    viewer: JobsViewer,
    status: StatusParam = None,
    owner_id: OwnerParam = None,
    model: ModelParam = None,
    offset: OffsetParam = 0,
    _query: DeclaredQueryOnly = None,
) -> Response:
    query = JobsQuery.of(status, owner_id, model, offset)
    if not sees_all(viewer.principal):
        query = JobsQuery(query.status, None, query.model, query.offset)  # as search narrows it
    principal = viewer.principal

    async def build() -> dict[str, str]:
        queue = await queue_panel(request, principal)
        table = await table_panel(request, principal, query)
        return {
            "jobs-queue": fragment("_jobs_queue.html", queue=queue),
            "jobs-table": fragment("_jobs_table.html", table=table),
        }

    key = f"jobs:{scope_key(viewer)}:{query.status}:{query.owner_id}:{query.model}:{query.offset}"
    return broadcaster(request).stream(request, viewer, key, build)


# -- one job -----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Milestone:
    label: str
    at: datetime | None
    detail: str | None = None


def milestones(job: PredictionJob, events: list[PredictionJobEvent]) -> list[Milestone]:
    """Submitted, queued, started, finished: from the job's events, the store's own history."""
    started = next((e for e in events if e.status == JobStatus.PROCESSING), None)
    ended = next((e for e in reversed(events) if e.status in TERMINAL), None)
    queued = job.dispatched_at or (events[0].at if events else job.created_at)
    return [
        Milestone("Submitted", events[0].at if events else job.created_at, "stored in the job store"),
        Milestone("Queued", queued, "sent to the broker" if job.dispatched_at else "in the store's queue"),
        Milestone("Started", started.at if started else None, started.worker if started else None),
        Milestone(
            "Finished" if ended is None else ended.status.capitalize(),
            ended.at if ended else None,
            ended.detail if ended else None,
        ),
    ]


async def job_state(request: Request, principal: Principal, job_id: str) -> dict[str, Any]:
    jobs = service(request)
    job = await run_in_threadpool(jobs.visible, job_id, principal)
    pairs, total = await run_in_threadpool(jobs.events, job_id, principal, None, EVENTS_SHOWN, 0)
    events = [event for event, _ in pairs]
    return {
        "job": job,
        "row": rows_of([job])[0],
        "milestones": milestones(job, events),
        "events": pairs,
        "events_total": total,
        "show_worker": sees_all(principal),
    }


def may_change(principal: Principal, job: PredictionJob) -> bool:
    """What ``JobService.changeable`` decides, for showing the buttons; the POST asks the service."""
    owner = principal.user_id is not None and job.owner_id == principal.user_id
    return owner or allows(principal.role, Permission.MANAGE_ALL_JOBS)


@router.get("/jobs/{job_id}")
async def job_page(request: Request, viewer: JobsViewer, job_id: JobIdPath) -> Response:
    state = await job_state(request, viewer.principal, job_id)
    job: PredictionJob = state["job"]
    changeable = may_change(viewer.principal, job)
    base = f"/api/v1/predictions/{job.id}"
    return render(
        request, "job_detail.html", viewer, JOBS, state=state,
        may_cancel=changeable and job.status not in TERMINAL,
        may_retry=changeable and job.status in TERMINAL and job.kind in RETRYABLE_KINDS
        and allows(viewer.principal.role, Permission.PREDICT),
        stream=f"/dashboard/stream/jobs/{job.id}", api_job=ApiCall(base),
        api_events=ApiCall(f"{base}/events"),
        api_cancel=ApiCall(base, method="DELETE"),
    )  # fmt: skip


@router.get("/stream/jobs/{job_id}")
async def job_stream(request: Request, viewer: JobsViewer, job_id: JobIdPath) -> Response:
    principal = viewer.principal
    await run_in_threadpool(service(request).visible, job_id, principal)  # 404 now, not a silent stream

    async def build() -> dict[str, str]:
        state = await job_state(request, principal, job_id)
        return {"job-state": fragment("_jobs_detail_state.html", state=state)}

    scope = "all" if sees_all(principal) else f"user:{viewer.user_id}"
    return broadcaster(request).stream(request, viewer, f"job:{job_id}:{scope}", build)


@router.get("/jobs/{job_id}/download/{file_name}")
async def download(request: Request, viewer: JobsViewer, job_id: JobIdPath, file_name: str) -> Response:
    """The API's result download (``JobService.result_file``, the same check), for the session."""
    path = await run_in_threadpool(service(request).result_file, job_id, viewer.principal, file_name)
    return FileResponse(path, media_type="application/vnd.apache.parquet", filename=file_name)


def _page_allowed(viewer: Viewer) -> None:
    if viewer.principal.role not in JOBS.roles:
        raise PageForbidden(f"the {viewer.role} role may not see the Jobs page", {"page": JOBS.key})


@router.post("/jobs/{job_id}/cancel")
async def cancel(request: Request, viewer: Checked, job_id: JobIdPath) -> Response:
    """``DELETE /api/v1/predictions/{id}``'s own call: a job by symbol is also removed, as there."""
    _page_allowed(viewer)
    job = await run_in_threadpool(service(request).remove_forecast, job_id, viewer.principal)
    target = "/dashboard/jobs" if job.kind == "forecast" else f"/dashboard/jobs/{job.id}"
    return RedirectResponse(target, status_code=303)


@router.post("/jobs/{job_id}/retry")
async def retry(request: Request, viewer: Checked, job_id: JobIdPath) -> Response:
    """Submit the finished job's input again, as a new job of the viewer's (no API twin)."""
    _page_allowed(viewer)
    principal = require_permission(viewer.principal, Permission.PREDICT)
    jobs = service(request)
    job = await run_in_threadpool(jobs.changeable, job_id, principal)
    if job.status not in TERMINAL or job.kind not in RETRYABLE_KINDS:
        raise JobStateConflict(
            "only a finished rows or dataset job can be submitted again",
            {"id": job.id, "status": job.status, "kind": job.kind},
        )
    address = client_address(request)
    if job.kind == "rows":
        submission = RowsSubmission(
            model=job.model_reference,
            payload=dict(job.input or {}),
            shape=str(job.parameters.get("shape", "batch")),
            return_proba=bool(job.parameters.get("return_proba", False)),
            data_as_of=job.data_as_of,
        )
        submitted = await run_in_threadpool(jobs.submit_rows, principal, submission, address)
    else:
        path = Path(job.input_path or "")
        if not path.is_file():
            raise JobStateConflict("the job's dataset file is gone; upload it again", {"id": job.id})
        model = str(job.parameters.get("requested_model") or job.model_reference)
        chunk_rows = job.parameters.get("chunk_rows")
        submitted = await run_in_threadpool(
            jobs.submit_dataset, principal, model, path, job.input_hash,
            int(chunk_rows) if chunk_rows else None, None, address,
        )  # fmt: skip
    return RedirectResponse(f"/dashboard/jobs/{submitted.job.id}", status_code=303)
