"""``/monitoring/queue`` and ``/monitoring/workers``: what the job executors are doing."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool

from prediction_provider.api.auth import MetricsReader
from prediction_provider.api.deps import ServicesDep
from prediction_provider.api.job_schemas import QueueStats, WorkerInfo, WorkersInfo
from prediction_provider.api.routes.jobs import ERRORS, runtime_of

router = APIRouter(prefix="/monitoring", tags=["monitoring"])


@router.get("/queue", response_model=QueueStats, responses=ERRORS)
async def queue(principal: MetricsReader, services: ServicesDep) -> QueueStats:
    """Jobs by state from the database (the truth), plus tasks waiting on a retry countdown."""
    runtime = runtime_of(services)
    counts = await run_in_threadpool(runtime.service.store.counts)
    try:
        scheduled = await run_in_threadpool(runtime.scheduled)
    except Exception:  # noqa: BLE001 - the broker being away must not hide the database's figures
        scheduled = 0
    return QueueStats(
        backend=runtime.backend,
        pending=counts["pending"],
        active=counts["processing"],
        scheduled=scheduled,
        completed=counts["completed"],
        failed=counts["failed"],
        cancelled=counts["cancelled"],
    )


@router.get("/workers", response_model=WorkersInfo, responses=ERRORS)
async def workers(principal: MetricsReader, services: ServicesDep) -> WorkersInfo:
    """Live workers and the queues they consume (Celery workers answer a broadcast ping within 1 s)."""
    runtime = runtime_of(services)
    found = await run_in_threadpool(runtime.workers)
    return WorkersInfo(backend=runtime.backend, workers=[WorkerInfo(**worker) for worker in found])
