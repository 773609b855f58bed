"""The jobs machinery of one API process, started and stopped with the app."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from prediction_provider.clock import Clock, SystemClock
from prediction_provider.config import Settings
from prediction_provider.db.session import Database
from prediction_provider.jobs.execution import JobContext, JobRunner
from prediction_provider.jobs.executor import InProcessExecutor, process_worker_name
from prediction_provider.jobs.precomputed import PrecomputedPredictions
from prediction_provider.jobs.service import JobService, Redispatcher
from prediction_provider.jobs.store import JobStore
from prediction_provider.serving.cache import ModelCache
from prediction_provider.serving.inference import PredictionService

if TYPE_CHECKING:
    from celery import Celery

    from prediction_provider.forecasts.service import ForecastService


@dataclass(slots=True)
class JobRuntime:
    service: JobService
    executor: InProcessExecutor | None
    celery: Celery | None
    redispatcher: Redispatcher | None
    precomputed: PrecomputedPredictions | None

    @property
    def store(self) -> JobStore:
        return self.service.store

    @property
    def backend(self) -> str:
        return "celery" if self.celery is not None else "inprocess"

    def stop(self) -> None:
        if self.executor is not None:
            self.executor.stop()
        if self.redispatcher is not None:
            self.redispatcher.stop()
        if self.celery is not None:
            close_dispatcher = getattr(self.service.dispatcher, "close", None)
            if close_dispatcher is not None:
                close_dispatcher()
            self.celery.close()

    def workers(self) -> list[dict[str, Any]]:
        """Live workers and their queues; blocking (asks the broker when on Celery)."""
        if self.executor is not None:
            return [
                {
                    "name": self.executor.worker_name,
                    "queues": ["database"],
                    "active": len(self.executor.active),
                }
            ]
        if self.celery is None:
            return []
        inspect = self.celery.control.inspect(timeout=1.0)
        queues = inspect.active_queues() or {}
        active = inspect.active() or {}
        return [
            {
                "name": name,
                "queues": sorted(queue["name"] for queue in queues.get(name, [])),
                "active": len(active.get(name, [])),
            }
            for name in sorted(set(queues) | set(active))
        ]

    def scheduled(self) -> int:
        """Tasks waiting for a countdown (retries with backoff); blocking."""
        if self.celery is None:
            return 0
        scheduled = self.celery.control.inspect(timeout=1.0).scheduled() or {}
        return sum(len(tasks) for tasks in scheduled.values())


def start_job_runtime(
    settings: Settings,
    db: Database,
    cache: ModelCache,
    predictions: PredictionService,
    forecasts: ForecastService | None = None,
    clock: Clock | None = None,
) -> JobRuntime:
    store = JobStore(db, timedelta(seconds=settings.job_lease_seconds), settings.job_max_attempts)
    precomputed = None
    if settings.precomputed_path is not None:
        precomputed = PrecomputedPredictions(settings.precomputed_path, settings.precomputed_key)
    if settings.job_backend == "celery":
        from prediction_provider.jobs.celery_app import CeleryDispatcher, make_celery

        celery = make_celery(settings)
        dispatcher = CeleryDispatcher(celery, store)
        redispatcher = Redispatcher(store, dispatcher, timedelta(seconds=settings.job_redispatch_seconds))
        redispatcher.start()
        return JobRuntime(
            JobService(settings, store, cache, dispatcher, forecasts), None, celery, redispatcher, precomputed
        )
    context = JobContext(settings, store, cache, predictions, forecasts, clock or SystemClock())
    runner = JobRunner(context, process_worker_name("inprocess"))
    executor = InProcessExecutor(store, runner, settings.job_workers, settings.job_poll_seconds)
    if settings.job_workers > 0:
        executor.start()
    service = JobService(settings, store, cache, executor, forecasts)
    return JobRuntime(service, executor, None, None, precomputed)
