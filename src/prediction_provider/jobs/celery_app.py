"""Celery on Redis or RabbitMQ: the scale-out executor.

The message only carries a job id; the job's row stays the truth, so the API
never reads a Celery result backend (there is none). Tasks are acknowledged
late and rejected when their worker process dies, so a crash redelivers them;
the store's claim/lease rules turn a redelivery into exactly one completion.
Each worker process builds its model cache once, at start, and warms the
configured models before taking work.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from celery import Celery, Task
from celery.signals import worker_process_init
from kombu.exceptions import OperationalError as KombuOperationalError

from prediction_provider.config import Settings
from prediction_provider.errors import BrokerUnavailable
from prediction_provider.jobs.execution import JobContext, JobRunner, Outcome
from prediction_provider.jobs.executor import process_worker_name
from prediction_provider.jobs.store import JobStore

if TYPE_CHECKING:
    from prediction_provider.outcomes.scoring import Scorer

log = logging.getLogger(__name__)

TASK_NAME = "prediction_provider.run_job"
SCORE_TASK_NAME = "prediction_provider.score_due"
BACKOFF_SECONDS = (1, 2, 5, 10, 30)
BROKER_ERRORS = (KombuOperationalError, OSError, ConnectionError)


def make_celery(settings: Settings) -> Celery:
    if not settings.broker_url:
        raise ValueError("PP_BROKER_URL must name a Redis or RabbitMQ broker when PP_JOB_BACKEND=celery")
    app = Celery("prediction_provider", broker=settings.broker_url, set_as_current=False)
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        task_default_queue=settings.job_queue,
        task_time_limit=settings.job_time_limit_seconds,
        task_soft_time_limit=settings.job_time_limit_seconds * 0.95,
        broker_connection_timeout=3,
        broker_connection_retry_on_startup=True,
        broker_transport_options={
            # Redis only: how soon an unacknowledged task of a dead worker is delivered again.
            "visibility_timeout": settings.broker_visibility_timeout,
            "unacked_restore_interval": max(1, int(settings.broker_visibility_timeout / 4)),
            "unacked_restore_throttle": 1,
        },
        worker_hijack_root_logger=False,
        worker_cancel_long_running_tasks_on_connection_loss=False,
    )
    app.task(bind=True, name=TASK_NAME, max_retries=None, acks_late=True)(run_job_task)
    # A scoring pass is its own retry: a lost or failed one leaves the records due for the next.
    # Its report is the task's result, kept only where a result backend is configured.
    app.task(name=SCORE_TASK_NAME, ignore_result=False, acks_late=False)(score_due_task)
    app.conf.beat_schedule = beat_schedule(settings)
    return app


def beat_schedule(settings: Settings) -> dict[str, dict[str, Any]]:
    """``celery beat``'s entries: a scoring pass every ``scoring_interval_s`` (none when 0), on the
    workers' queue. A pass not started within one interval expires: the next one does its work,
    so beat ticks that piled up while no worker ran do not all run at once."""
    if settings.scoring_interval_s <= 0:
        return {}
    interval = settings.scoring_interval_s
    return {
        "score-due": {
            "task": SCORE_TASK_NAME,
            "schedule": interval,
            "options": {"queue": settings.job_queue, "expires": interval},
        }
    }


class CeleryDispatcher:
    """Hands job ids to the broker; a broker that does not answer is a 503, never a silent loss.

    One connection is kept and shared under a lock; when a publish fails on it (the broker
    restarted, or dropped an idle connection) it is replaced once before giving up, so the API
    recovers by itself when the broker comes back.
    """

    def __init__(self, app: Celery, store: JobStore) -> None:
        self.app = app
        self.store = store
        self._lock = threading.Lock()
        self._connection: Any = None
        self._producer: Any = None

    def dispatch(self, job_ids: Sequence[str]) -> None:
        with self._lock:
            try:
                self._publish(job_ids)
            except BROKER_ERRORS:
                self._reset()
                try:
                    self._publish(job_ids)
                except BROKER_ERRORS as exc:
                    self._reset()
                    raise BrokerUnavailable(
                        "the task broker is unreachable; the job was not accepted, try again shortly",
                        {
                            "broker": _redacted(self.app.conf.broker_url),
                            "reason": f"{type(exc).__name__}: {exc}",
                        },
                    ) from exc

    def _publish(self, job_ids: Sequence[str]) -> None:
        if self._producer is None:
            connection = self.app.connection_for_write()
            connection.ensure_connection(max_retries=1, interval_start=0, interval_step=0, timeout=3)
            self._connection, self._producer = connection, connection.Producer()
        queue = self.app.conf.task_default_queue
        for job_id in job_ids:
            self.app.send_task(TASK_NAME, args=[job_id], queue=queue, producer=self._producer, retry=False)

    def _reset(self) -> None:
        connection, self._connection, self._producer = self._connection, None, None
        if connection is not None:
            with contextlib.suppress(Exception):
                connection.release()

    def close(self) -> None:
        with self._lock:
            self._reset()


def _redacted(url: str | None) -> str | None:
    if not url or "@" not in url:
        return url
    scheme, rest = url.split("://", 1) if "://" in url else ("", url)
    return f"{scheme}://***@{rest.rsplit('@', 1)[1]}"


# -- the worker side ------------------------------------------------------------------------------

_context_lock = threading.Lock()
_runner: JobRunner | None = None
_scorer_lock = threading.Lock()
_scorer: Scorer | None = None
_cli_app: Celery | None = None


def build_worker_runner(settings: Settings) -> JobRunner:
    """Open the database and model cache for this worker process and warm the configured models."""
    from datetime import timedelta

    from prediction_provider.clock import clock_from_settings
    from prediction_provider.db.session import Database
    from prediction_provider.errors import ModelUnloaded
    from prediction_provider.ledger.journal import Journal
    from prediction_provider.marketplace.service import market_announcer
    from prediction_provider.marketplace.settlement import Settlement
    from prediction_provider.serving.factory import build_model_serving
    from prediction_provider.serving.unloaded import follow_unloaded_models

    serving = build_model_serving(settings)
    db = Database(settings.database)
    store = JobStore(db, timedelta(seconds=settings.job_lease_seconds), settings.job_max_attempts)
    # Jobs of a model unloaded through the repository API fail here too, with model_unloaded.
    follow_unloaded_models(serving.cache, db, settings.model_state_refresh_ms / 1000, settings.redis_url)
    for reference in settings.warm_models:
        try:
            serving.cache.warm(reference)
        except ModelUnloaded:
            log.info("worker not warming %s: unloaded through the model repository", reference)
        except Exception:
            log.exception("worker could not warm %s", reference)
    # The one clock, as in the API process (the market replay's when it runs): bars are released,
    # deadlines judged and forecasts dated by it.
    clock = clock_from_settings(settings)
    forecasts = _worker_forecasts(settings, serving, db, clock.now)
    # Money follows a paid request to its end here too: captured or voided with the last transition.
    store.settlement = Settlement(Journal(clock), clock, market_announcer(clock, settings))
    context = JobContext(settings, store, serving.cache, serving.predictions, forecasts, clock)
    runner = JobRunner(context, process_worker_name("celery"))
    try:
        runner.finish_stalled()  # a worker that died between a last chunk and its merge
    except Exception:
        log.exception("could not finish stalled batch jobs")
    return runner


def _worker_forecasts(settings: Settings, serving: Any, db: Any, clock: Any = None) -> Any:
    """Symbol jobs read bars and record forecasts in the worker, as the API process does."""
    from prediction_provider.features.market_sources import MarketSources
    from prediction_provider.forecasts.factory import build_forecasts

    return build_forecasts(
        serving.registry, serving.cache, db, MarketSources(settings, clock=clock), warm=True,
        answer_cache=settings.forecast_answer_cache, record=settings.record_forecasts,
    )  # fmt: skip


def worker_runner() -> JobRunner:
    global _runner
    with _context_lock:
        if _runner is None:
            _runner = build_worker_runner(Settings())
        return _runner


@worker_process_init.connect  # type: ignore[untyped-decorator]
def _load_models_at_process_start(**_: Any) -> None:
    """Prefork children start with the models loaded, not at their first task."""
    global _runner, _scorer
    with _context_lock:
        _runner = None  # never inherit a parent's database connections
    with _scorer_lock:
        _scorer = None
    worker_runner()


def run_job_task(task: Task, job_id: str) -> str:
    runner = worker_runner()
    report = runner.run(job_id)
    if report.outcome is Outcome.BUSY:
        # Another worker holds a live claim (a redelivery raced its owner): look again after its lease.
        raise task.retry(countdown=max(1.0, report.retry_after))
    if report.outcome is Outcome.RETRY:
        retries = int(task.request.retries or 0)
        raise task.retry(countdown=BACKOFF_SECONDS[min(retries, len(BACKOFF_SECONDS) - 1)])
    if report.outcome is Outcome.SPLIT:
        CeleryDispatcher(task.app, runner.store).dispatch(report.spawned)
    return report.outcome.value


def worker_scorer() -> Scorer:
    """This worker process's scorer, built at its first scoring task over the worker's database,
    clock and bars (the forecast models' feeder specs, as the API process scores them)."""
    global _scorer
    with _scorer_lock:
        if _scorer is None:
            from prediction_provider.features.market_sources import MarketSources
            from prediction_provider.outcomes.factory import build_scorer

            context = worker_runner().context
            forecasts = context.forecasts
            # The forecasts' bar stores when they have them: one read of each feeder per process.
            shared = getattr(forecasts, "market", None)
            market = shared if isinstance(shared, MarketSources) else MarketSources(context.settings)
            scorer = build_scorer(context.settings, context.store.db, context.clock, market, forecasts)
            assert scorer is not None  # a market was given
            # A worker serves no /metrics: the API's scrape recomputes the gauges when the head moves.
            scorer.on_scored = None
            _scorer = scorer
        return _scorer


def score_due_task() -> dict[str, int]:
    """One scoring pass (the beat schedule's task): several at once, in any workers, and the API's
    own thread, still score each record once (the passes take turns on the scoring head)."""
    report = worker_scorer().run()
    return report.as_dict()


def __getattr__(name: str) -> Any:
    """``celery -A prediction_provider.jobs.celery_app beat|worker``: the app built from the PP_*
    settings of the environment, made on first use (importing this module makes none)."""
    global _cli_app
    if name != "app":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    with _context_lock:
        if _cli_app is None:
            _cli_app = make_celery(Settings())
        return _cli_app
