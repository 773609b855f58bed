"""What the API asks of prediction jobs: submit, read, change, cancel, download, watch the queue.

The same service fronts both executors; only the dispatcher differs. A submit
stores the row first and then hands its id to the dispatcher; when that fails
(the broker is down) the row is removed again and the caller gets a 503, so a
client never holds an id of a job nobody will run.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from prediction_provider.accounts.principal import Principal
from prediction_provider.accounts.roles import Permission, allows
from prediction_provider.config import Settings
from prediction_provider.db.models import PredictionJob, PredictionJobEvent
from prediction_provider.errors import (
    BrokerUnavailable,
    JobNotFound,
    JobStateConflict,
    PredictionFailed,
    RateLimited,
)
from prediction_provider.forecasts.service import ForecastRequest, ForecastService, request_payload
from prediction_provider.jobs import datasets, read_tokens
from prediction_provider.jobs.records import TERMINAL, JobFilter, JobStatus, NewJob, input_digest
from prediction_provider.jobs.store import JobStore
from prediction_provider.serving.cache import ModelCache

log = logging.getLogger(__name__)


class Dispatcher(Protocol):
    def dispatch(self, job_ids: Sequence[str]) -> None: ...


@dataclass(frozen=True, slots=True)
class RowsSubmission:
    model: str
    payload: dict[str, Any]  # {"features": {...}} or {"features_list": [...] | {...}}
    shape: str  # "single" answers like /predict, "batch" like /predict/batch
    return_proba: bool
    data_as_of: datetime | None = None
    idempotency_key: str | None = None


class JobPayments(Protocol):
    def tariff(self, model_name: str | None) -> object | None: ...

    def hold_job(self, session: Session, owner: Principal, job: PredictionJob, rows: int) -> None: ...


def payload_rows(payload: dict[str, Any]) -> int:
    """How many answers a rows job will give (records, or the longest column)."""
    rows = payload.get("features_list")
    if isinstance(rows, list):
        return max(len(rows), 1)
    if isinstance(rows, dict):
        return max((len(c) for c in rows.values() if isinstance(c, list)), default=1)
    return 1


@dataclass(frozen=True, slots=True)
class Submitted:
    """A submit's answer. ``read_token`` only for anonymous callers: shown this once."""

    job: PredictionJob
    created: bool
    read_token: str | None = None


class JobService:
    def __init__(
        self,
        settings: Settings,
        store: JobStore,
        cache: ModelCache,
        dispatcher: Dispatcher,
        forecasts: ForecastService | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.cache = cache
        self.dispatcher = dispatcher
        # Set when the marketplace prices models: a paid rows job holds its price at submit.
        self.payments: JobPayments | None = None
        self.forecasts = forecasts
        # Set by the app when experiments run: (reference, owner) → (reference to serve, tags). A
        # job is assigned once, at submit, and every row of it goes to that variant.
        self.route: Callable[[str, Principal], tuple[str, dict[str, Any]]] | None = None
        # Per owner: the count of unfinished symbol jobs and the submit that may add one are one
        # step in this process (a server of several processes may overshoot by one per process).
        self._owner_locks: dict[int, threading.Lock] = {}
        self._owner_locks_guard = threading.Lock()

    # -- submitting -------------------------------------------------------------------------------

    def submit_rows(self, owner: Principal, submission: RowsSubmission, address: str) -> Submitted:
        """``address``: the caller's, which scopes an anonymous caller's Idempotency-Key."""
        reference, tags = (
            self.route(submission.model, owner) if self.route is not None else (submission.model, {})
        )
        resolved = self.cache.resolve(reference)
        new = NewJob(
            kind="rows",
            model_reference=submission.model,
            input=submission.payload,
            input_hash=input_digest({"model": submission.model, **submission.payload}),
            parameters={
                "shape": submission.shape,
                "return_proba": submission.return_proba,
                "model_uri": resolved.uri,
                **tags,
            },
            data_as_of=submission.data_as_of,
            idempotency_key=submission.idempotency_key,
            model_name=resolved.name,
            model_version=resolved.version,
        )
        payments = self.payments
        if payments is None or payments.tariff(resolved.name) is None:
            return self._submit(owner, new, address)
        rows = payload_rows(submission.payload)
        return self._submit(
            owner, new, address, lambda session, job: payments.hold_job(session, owner, job, rows)
        )

    def submit_forecast(
        self,
        owner: Principal,
        request: ForecastRequest,
        idempotency_key: str | None,
        address: str,
        extra: dict[str, Any] | None = None,
    ) -> Submitted:
        """A forecast by symbol, run later. Everything a submit can check is checked first (the
        symbol, interval, horizons, model and ``as_of``, and that the feeder has the bars), so a
        request that cannot be answered gets its 4xx/503 now and leaves no job behind.
        ``extra``: kept in the job's parameters (the seed API's request fields)."""
        if self.forecasts is None:
            raise PredictionFailed("forecasts by symbol are not configured on this server")
        symbol, interval, cached = self.forecasts.check(request)
        pinned = replace(request, symbol=symbol, interval=interval, model=cached.resolved.uri)
        payload = request_payload(replace(request, symbol=symbol, interval=interval))
        new = NewJob(
            kind="forecast",
            model_reference=cached.resolved.name,
            input=payload,
            input_hash=input_digest(payload),
            parameters={"shape": "forecast", "model_uri": pinned.model, **(extra or {})},
            data_as_of=None,
            idempotency_key=idempotency_key,
            model_name=cached.resolved.name,
            model_version=cached.resolved.version,
        )
        if owner.user_id is None:
            return self._submit(owner, new, address)
        with self._owner_lock(owner.user_id):
            self._check_in_flight(owner.user_id, new.idempotency_key)
            return self._submit(owner, new, address)

    def _owner_lock(self, owner_id: int) -> threading.Lock:
        with self._owner_locks_guard:
            return self._owner_locks.setdefault(owner_id, threading.Lock())

    def _check_in_flight(self, owner_id: int, idempotency_key: str | None) -> None:
        """At most ``max_concurrent_predictions`` symbol jobs of one account pending or running at
        once (the seed project's cap of 10 per user): 429 with Retry-After beyond it. A retry of
        a submit already made (same Idempotency-Key) is answered its job, never refused."""
        cap = self.settings.max_concurrent_predictions
        with self.store.db.session() as session:
            if idempotency_key is not None and session.scalar(
                select(PredictionJob.id).where(
                    PredictionJob.owner_id == owner_id, PredictionJob.idempotency_key == idempotency_key
                )
            ):
                return
            unfinished = session.scalar(
                select(func.count())
                .select_from(PredictionJob)
                .where(
                    PredictionJob.owner_id == owner_id,
                    PredictionJob.kind == "forecast",
                    PredictionJob.status.in_([JobStatus.PENDING, JobStatus.PROCESSING]),
                )
            )
        if int(unfinished or 0) >= cap:
            raise RateLimited(
                f"at most {cap} forecast jobs pending or running per user; wait for one to finish",
                1,
                {"max_in_flight": cap, "in_flight": int(unfinished or 0)},
            )

    def submit_dataset(
        self,
        owner: Principal,
        model: str,
        path: Path,
        input_hash: str,
        chunk_rows: int | None,
        idempotency_key: str | None,
        address: str,
    ) -> Submitted:
        resolved = self.cache.resolve(model)
        new = NewJob(
            kind="dataset",
            model_reference=resolved.uri,
            input_path=str(path),
            input_hash=input_hash,
            parameters={
                "chunk_rows": chunk_rows or self.settings.batch_chunk_rows,
                "requested_model": model,
                "dataset": path.name,
            },
            idempotency_key=idempotency_key,
            model_name=resolved.name,
            model_version=resolved.version,
        )
        return self._submit(owner, new, address)

    def _submit(
        self, owner: Principal, new: NewJob, address: str,
        on_create: Callable[[Session, PredictionJob], None] | None = None,
    ) -> Submitted:  # fmt: skip
        token = digest = None
        if owner.user_id is None:
            token, digest = read_tokens.issue()
            key = read_tokens.scoped_idempotency_key(new.idempotency_key, address)
            new = replace(new, idempotency_key=key, read_token_digest=digest)
        job, created = self.store.create(owner, new, on_create)
        if not created:
            if digest is not None:
                # The first answer (and its token) may be what the client lost: a replay of the
                # same key from the same address answers a fresh token, which replaces the first.
                self.store.replace_read_token(job.id, digest)
            return Submitted(job, False, token)
        try:
            self.dispatcher.dispatch([job.id])
        except BrokerUnavailable:
            self.store.discard(job.id)
            raise
        return Submitted(job, True, token)

    # -- reading and changing ---------------------------------------------------------------------

    def visible(self, job_id: str, principal: Principal, read_token: str | None = None) -> PredictionJob:
        """The job, if the caller owns it, may see every job or holds its read token; otherwise it
        does not exist for them."""
        job = self.store.get(job_id)
        if job.parent_id is not None:
            raise JobNotFound(f"no prediction job {job_id!r}", {"id": job_id})
        if read_tokens.grants(job.read_token_digest, read_token):
            return job
        if job.owner_id == principal.user_id and principal.user_id is not None:
            return job
        if allows(principal.role, Permission.READ_ALL_JOBS):
            return job
        raise JobNotFound(f"no prediction job {job_id!r}", {"id": job_id})

    def changeable(self, job_id: str, principal: Principal) -> PredictionJob:
        job = self.visible(job_id, principal)
        if job.owner_id == principal.user_id or allows(principal.role, Permission.MANAGE_ALL_JOBS):
            return job
        raise JobNotFound(f"no prediction job {job_id!r}", {"id": job_id})

    def search(
        self, principal: Principal, filters: JobFilter, limit: int, offset: int
    ) -> tuple[list[PredictionJob], int]:
        """Callers who may see every job may filter by owner; everyone else sees only their own."""
        if not allows(principal.role, Permission.READ_ALL_JOBS):
            owner = principal.user_id if principal.user_id is not None else -1
            filters = replace(filters, owner_id=owner)
        return self.store.search(filters, limit, offset)

    def update_rows(self, job_id: str, principal: Principal, submission: RowsSubmission) -> PredictionJob:
        job = self.changeable(job_id, principal)
        if job.kind != "rows":
            raise JobStateConflict(
                "only jobs with inline rows can be changed", {"id": job_id, "kind": job.kind}
            )
        resolved = self.cache.resolve(submission.model)
        return self.store.update_pending(
            job_id,
            {
                "model_reference": submission.model,
                "model_name": resolved.name,
                "model_version": resolved.version,
                "input": submission.payload,
                "input_hash": input_digest({"model": submission.model, **submission.payload}),
                "parameters": {
                    "shape": job.parameters.get("shape", "batch"),
                    "return_proba": submission.return_proba,
                    "model_uri": resolved.uri,
                },
                "data_as_of": submission.data_as_of,
            },
        )

    def cancel(self, job_id: str, principal: Principal) -> PredictionJob:
        self.changeable(job_id, principal)
        return self.store.cancel(job_id)

    def remove_forecast(self, job_id: str, principal: Principal) -> PredictionJob:
        """The seed API's DELETE of a job by symbol: cancelled if it has not finished, then gone
        from the job list. Its forecast is not lost: every forecast served stays in the
        prediction records, under the job's id. Other kinds of job are only cancelled."""
        job = self.changeable(job_id, principal)
        if job.kind != "forecast":
            return self.store.cancel(job_id)
        if job.status not in TERMINAL:
            try:
                job = self.store.cancel(job_id)
            except JobStateConflict:  # it finished meanwhile
                job = self.store.get(job_id)
        with self.store.db.session() as session:
            row = session.get(PredictionJob, job_id)
            if row is not None and row.status in TERMINAL:
                session.delete(row)
        return job

    def by_client_key(self, principal: Principal, key: str, address: str) -> PredictionJob | None:
        """The caller's job submitted with idempotency key ``key`` (anonymous callers' keys are
        scoped by their address, as at submit); never another caller's."""
        owned: Any
        if principal.user_id is None:
            stored = read_tokens.scoped_idempotency_key(key, address)
            owned = PredictionJob.owner_id.is_(None)
        else:
            stored, owned = key, PredictionJob.owner_id == principal.user_id
        with self.store.db.session() as session:
            return session.scalars(
                select(PredictionJob).where(
                    owned, PredictionJob.idempotency_key == stored, PredictionJob.parent_id.is_(None)
                )
            ).first()

    def events(
        self, job_id: str, principal: Principal, read_token: str | None, limit: int, offset: int
    ) -> tuple[list[tuple[PredictionJobEvent, str | None]], int]:
        """The job's transitions (``JobStore.events_page``), to whoever may read the job."""
        self.visible(job_id, principal, read_token)
        return self.store.events_page(job_id, limit, offset)

    def result_file(
        self, job_id: str, principal: Principal, name: str, read_token: str | None = None
    ) -> Path:
        job = self.visible(job_id, principal, read_token)
        if job.status != JobStatus.COMPLETED or name not in (job.result_files or []):
            raise JobNotFound(f"job {job_id} has no result file {name!r}", {"id": job_id, "file": name})
        return datasets.result_file(self.settings.results_dir, job_id, name)


class Redispatcher:
    """Celery only: re-sends jobs whose message went missing (e.g. the broker lost it on a restart).

    A claim is idempotent, so a job whose first message still arrives simply runs once.
    """

    def __init__(self, store: JobStore, dispatcher: Dispatcher, every: timedelta) -> None:
        self.store, self.dispatcher, self.every = store, dispatcher, every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="job-redispatcher", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _loop(self) -> None:
        while not self._stop.wait(self.every.total_seconds() / 2):
            try:
                stale = self.store.undispatched(self.every)
                if stale:
                    self.dispatcher.dispatch(stale)
                    self.store.mark_dispatched(stale)
                    log.info("re-dispatched %d job(s) whose messages were missing", len(stale))
            except Exception:
                log.exception("could not re-dispatch pending jobs")
