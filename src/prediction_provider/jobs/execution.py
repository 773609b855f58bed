"""Running one claimed job, the same way under the in-process executor and under Celery.

``JobRunner.run(job_id)`` claims the job, keeps its lease alive from a
heartbeat thread while it works, and finishes it through the store, whose
conditional updates make a second delivery of the same job harmless. Errors
are sorted into transient (released to be retried: the registry or database
is briefly away) and permanent (bad input, a model that cannot run: the job
fails with the service error's code and message).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from sqlalchemy.exc import OperationalError

from prediction_provider.clock import Clock, SystemClock
from prediction_provider.config import Settings
from prediction_provider.errors import (
    InvalidInput,
    PredictionFailed,
    PredictionProviderError,
    RegistryUnavailable,
    TooLate,
)
from prediction_provider.forecasts import outputs
from prediction_provider.forecasts.records import Requester
from prediction_provider.forecasts.service import ForecastService, forecast_request
from prediction_provider.jobs import datasets
from prediction_provider.jobs.records import Claim, ClaimRefused, JobStatus
from prediction_provider.jobs.store import JobStore
from prediction_provider.serving.cache import CachedModel, ModelCache
from prediction_provider.serving.inference import PredictionService
from prediction_provider.serving.responses import batch_payload, single_payload

log = logging.getLogger(__name__)

TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (RegistryUnavailable, OperationalError)


class Outcome(StrEnum):
    COMPLETED = "completed"
    FAILED = "failed"
    SPLIT = "split"  # a dataset job became chunk jobs; dispatch them
    RETRY = "retry"  # transient error: released, run again later
    BUSY = "busy"  # another worker holds a live claim; try again after its lease
    SKIPPED = "skipped"  # finished, cancelled or unknown: nothing to do
    LOST = "lost"  # the claim was taken away meanwhile (cancelled); the result was dropped


@dataclass(frozen=True, slots=True)
class RunReport:
    outcome: Outcome
    job_id: str
    retry_after: float = 0.0
    spawned: list[str] = field(default_factory=list)
    reason: str | None = None


@dataclass(slots=True)
class JobContext:
    """What running a job needs: built once per API process or per Celery worker process."""

    settings: Settings
    store: JobStore
    cache: ModelCache
    predictions: PredictionService
    forecasts: ForecastService | None = None
    clock: Clock = field(default_factory=SystemClock)  # marketplace deadlines


def error_body(exc: BaseException) -> dict[str, Any]:
    if isinstance(exc, PredictionProviderError):
        return {"code": exc.code, "message": exc.message, "details": exc.details}
    return {"code": "internal_error", "message": f"{type(exc).__name__}: {exc}", "details": None}


class Heartbeat:
    """Renews a claim every third of the lease while the work runs; notices when it is lost."""

    def __init__(self, store: JobStore, claim: Claim, interval: float) -> None:
        self.store, self.claim, self.interval = store, claim, interval
        self.progress: float | None = None
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"heartbeat-{claim.job.id[:8]}", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _beat(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                if not self.store.heartbeat(self.claim, self.progress):
                    self.lost.set()
                    return
            except OperationalError:
                log.warning("could not renew the lease of job %s", self.claim.job.id)


class JobRunner:
    def __init__(self, context: JobContext, worker: str) -> None:
        self.context = context
        self.worker = worker

    @property
    def store(self) -> JobStore:
        return self.context.store

    def run(self, job_id: str) -> RunReport:
        """Claim ``job_id`` (a delivered message names it) and run it."""
        claimed = self.store.claim(job_id, self.worker)
        if claimed is ClaimRefused.BUSY:
            return RunReport(Outcome.BUSY, job_id, retry_after=self.store.lease_remaining(job_id))
        if isinstance(claimed, ClaimRefused):
            return RunReport(Outcome.SKIPPED, job_id, reason=claimed.value)
        return self.run_claimed(claimed)

    def run_claimed(self, claimed: Claim) -> RunReport:
        job_id = claimed.job.id
        interval = max(0.05, self.context.settings.job_lease_seconds / 3)
        with Heartbeat(self.store, claimed, interval) as heartbeat:
            try:
                return self._execute(claimed, heartbeat)
            except TRANSIENT_ERRORS as exc:
                log.warning("job %s: transient error, released: %s", job_id, exc)
                self.store.release(claimed, f"{type(exc).__name__}: {exc}")
                return RunReport(Outcome.RETRY, job_id, reason=str(exc))
            except Exception as exc:
                if not isinstance(exc, PredictionProviderError):
                    log.exception("job %s failed", job_id)
                return self._fail(claimed, exc)

    def _execute(self, claim: Claim, heartbeat: Heartbeat) -> RunReport:
        kind = claim.job.kind
        if kind == "rows":
            return self._run_rows(claim)
        if kind == "forecast":
            return self._run_forecast(claim)
        if kind == "market":
            return self._run_market(claim)
        if kind == "dataset":
            return self._split_dataset(claim)
        if kind == "chunk":
            return self._run_chunk(claim, heartbeat)
        raise InvalidInput(f"unknown job kind {kind!r}")

    def _finished(self, claim: Claim, stored: bool, outcome: Outcome) -> RunReport:
        if not stored:
            return RunReport(Outcome.LOST, claim.job.id, reason="claim lost (cancelled or taken over)")
        return RunReport(outcome, claim.job.id)

    def _fail(self, claim: Claim, exc: BaseException) -> RunReport:
        error = error_body(exc)
        stored = self.store.fail(claim, error)
        if stored and claim.job.parent_id is not None:
            self.store.finish_parent(
                claim.job.parent_id,
                JobStatus.FAILED,
                {"error": {**error, "chunk": claim.job.chunk_index}},
                self.worker,
                f"chunk {claim.job.chunk_index} failed",
            )
        return self._finished(claim, stored, Outcome.FAILED)

    # -- inline rows ------------------------------------------------------------------------------

    def _run_rows(self, claim: Claim) -> RunReport:
        job = claim.job
        started = time.perf_counter()
        parameters, payload = job.parameters, job.input or {}
        cached = self.context.cache.get(str(parameters.get("model_uri") or job.model_reference))
        return_proba = bool(parameters.get("return_proba", True))  # the API's default
        predictions = self.context.predictions
        if parameters.get("shape") == "single":
            result = predictions.predict_records(cached, [payload.get("features") or {}], "features", started)
            body = single_payload(result, return_proba, predictions.bands)
        else:
            rows = payload.get("features_list")
            if isinstance(rows, dict):
                result = predictions.predict_columns(cached, rows, "features_list", started)
            else:
                result = predictions.predict_records(cached, rows or [], "features_list", started)
            body = batch_payload(result, return_proba)
        resolved = cached.resolved
        stored = self.store.complete(claim, body, model_name=resolved.name, model_version=resolved.version)
        return self._finished(claim, stored, Outcome.COMPLETED)

    # -- forecasts by symbol ----------------------------------------------------------------------

    def _run_forecast(self, claim: Claim) -> RunReport:
        job = claim.job
        forecasts = self.context.forecasts
        if forecasts is None:
            raise PredictionFailed("this worker does not serve forecasts by symbol")
        # The version pinned at submit: a champion moved meanwhile does not change the job's answer.
        request = forecast_request({**(job.input or {}), "model": job.parameters.get("model_uri")})
        requester = Requester(job.owner_id, job.owner_username, "job", job.id)
        forecast = forecasts.forecast(request, requester)
        stored = self.store.complete(
            claim, forecast.as_dict(), model_name=forecast.model_name, model_version=forecast.model_version,
            data_as_of=forecast.data_as_of,
        )  # fmt: skip
        return self._finished(claim, stored, Outcome.COMPLETED)

    # -- marketplace requests executed by the platform ----------------------------------------------

    def _run_market(self, claim: Claim) -> RunReport:
        """A paid request's answer, computed as of the data the request was priced on; completing
        it captures the hold (``JobStore.settlement``). Past the deadline it fails and is refunded:
        a late answer could already know the outcome."""
        job = claim.job
        forecasts = self.context.forecasts
        if forecasts is None:
            raise PredictionFailed("this worker does not serve forecasts by symbol")
        asked = job.input or {}
        horizon = int(asked["horizon"])
        request = forecast_request(
            {"symbol": asked["symbol"], "interval": job.parameters.get("interval"), "horizons": [horizon],
             "as_of": job.data_as_of.isoformat() if job.data_as_of else None, "model": job.model_reference}
        )  # fmt: skip
        forecast = forecasts.forecast(request, Requester(job.owner_id, job.owner_username, "job", job.id))
        answer = outputs.from_forecast(str(job.parameters.get("target")), forecast, horizon)
        if job.deadline_at is not None and self.context.clock.now() >= job.deadline_at:
            raise TooLate(
                "the answer came after the request's deadline", {"deadline_at": job.deadline_at.isoformat()}
            )
        result = {
            "output": answer,
            "forecast_id": forecast.forecast_id,
            "data_as_of": forecast.data_as_of.isoformat(),
        }
        stored = self.store.complete(
            claim, result, model_name=forecast.model_name, model_version=forecast.model_version,
            data_as_of=forecast.data_as_of,
        )  # fmt: skip
        return self._finished(claim, stored, Outcome.COMPLETED)

    # -- datasets ---------------------------------------------------------------------------------

    def _split_dataset(self, claim: Claim) -> RunReport:
        """Pin the model version, then cut the dataset into chunk jobs that any worker may run."""
        job = claim.job
        cached = self.context.cache.get(job.model_reference)
        path = Path(job.input_path or "")
        rows = datasets.count_rows(path)
        ranges = datasets.chunk_ranges(rows, int(job.parameters.get("chunk_rows") or 1))
        pinned = {"model_uri": cached.resolved.uri}
        if not ranges:
            target = self._results_dir(job.id) / datasets.RESULT_FILE
            datasets.write_parquet_atomically(datasets.read_rows(path, 0, 0), target)
            stored = self.store.complete(
                claim,
                {"rows": 0, "files": [datasets.RESULT_FILE]},
                model_name=cached.resolved.name,
                model_version=cached.resolved.version,
                result_files=[datasets.RESULT_FILE],
            )
            return self._finished(claim, stored, Outcome.COMPLETED)
        spawned = self.store.split(claim, [{**chunk, **pinned} for chunk in ranges])
        if spawned is None:
            return RunReport(Outcome.LOST, job.id, reason="claim lost while splitting")
        return RunReport(Outcome.SPLIT, job.id, spawned=spawned)

    def _results_dir(self, parent_id: str) -> Path:
        return datasets.job_results_dir(self.context.settings.results_dir, parent_id)

    def _run_chunk(self, claim: Claim, heartbeat: Heartbeat) -> RunReport:
        job = claim.job
        parent_id = job.parent_id or ""
        start, stop = int(job.parameters["start"]), int(job.parameters["stop"])
        cached: CachedModel = self.context.cache.get(str(job.parameters["model_uri"]))
        signature = cached.model.signature
        frame = datasets.read_rows(Path(job.input_path or ""), start, stop)
        matrix = datasets.feature_matrix(frame, signature, start)
        output = self.context.predictions.run_matrix(cached, matrix)
        if heartbeat.lost.is_set():
            return RunReport(Outcome.LOST, job.id, reason="claim lost while scoring")
        part = self._results_dir(parent_id) / f"part-{job.chunk_index:06d}.parquet"
        datasets.write_parquet_atomically(datasets.scored_frame(frame, signature, output), part)
        stored = self.store.complete(
            claim,
            {"rows": len(frame), "start": start, "stop": stop},
            model_name=cached.resolved.name,
            model_version=cached.resolved.version,
        )
        if not stored:
            return RunReport(Outcome.LOST, job.id, reason="claim lost before the chunk was recorded")
        done, total = self.store.update_parent_progress(parent_id)
        if done == total:
            self._finish_dataset(parent_id, total, cached.resolved.name, cached.resolved.version)
        return RunReport(Outcome.COMPLETED, job.id)

    def finish_stalled(self) -> int:
        """Finish split jobs whose last chunk completed but whose finisher died before merging."""
        finished = 0
        for parent_id, total in self.store.stalled_parents():
            chunk = self.store.chunks(parent_id)[0]
            self._finish_dataset(parent_id, total, chunk.model_name, chunk.model_version)
            finished += 1
        return finished

    def _finish_dataset(
        self, parent_id: str, total: int, model_name: str | None, model_version: str | None
    ) -> None:
        """Whoever completes the last chunk merges the parts; a racing second finisher changes nothing."""
        directory = self._results_dir(parent_id)
        parts = [directory / f"part-{index:06d}.parquet" for index in range(total)]
        rows = datasets.merge_parts(parts, directory / datasets.RESULT_FILE)
        finished = self.store.finish_parent(
            parent_id,
            JobStatus.COMPLETED,
            {
                "result": {"rows": rows, "chunks": total, "files": [datasets.RESULT_FILE]},
                "result_files": [datasets.RESULT_FILE],
                "model_name": model_name,
                "model_version": model_version,
                "progress": 100.0,
            },
            self.worker,
            f"{rows} rows scored in {total} chunks",
        )
        if finished:
            for part in parts:
                part.unlink(missing_ok=True)
