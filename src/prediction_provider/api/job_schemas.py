"""Request and response shapes of the prediction-jobs API."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, Field, SerializeAsAny, WithJsonSchema, model_validator

from prediction_provider.api.schemas import FEATURES_SCHEMA, ROWS_SCHEMA, ModelField, ReturnProbaField
from prediction_provider.db.models import PredictionJob
from prediction_provider.jobs.service import RowsSubmission


class PredictionCreate(BaseModel):
    """Inline input: one row (``features``) or many (``features_list``), as ``/predict`` takes them."""

    model: str = ModelField
    features: Annotated[dict[str, Any] | None, WithJsonSchema(FEATURES_SCHEMA)] = None
    features_list: Annotated[list[Any] | dict[str, Any] | None, WithJsonSchema(ROWS_SCHEMA)] = None
    return_proba: bool = ReturnProbaField
    data_as_of: AwareDatetime | None = Field(
        default=None, description="When the input data was observed (timezone-aware)."
    )

    @model_validator(mode="after")
    def _one_input(self) -> PredictionCreate:
        if (self.features is None) == (self.features_list is None):
            raise ValueError("give exactly one of features (one row) or features_list (many rows)")
        return self

    def submission(self, idempotency_key: str | None) -> RowsSubmission:
        """Answered like ``/predict`` for one row, like ``/predict/batch`` for many."""
        single = self.features is not None
        return RowsSubmission(
            model=self.model,
            payload={"features": self.features} if single else {"features_list": self.features_list},
            shape="single" if single else "batch",
            return_proba=self.return_proba,
            data_as_of=self.data_as_of,
            idempotency_key=idempotency_key,
        )


class DatasetJobCreate(BaseModel):
    model: str = ModelField
    dataset_path: str = Field(
        min_length=1, max_length=1024, description="A CSV or Parquet file under the configured data roots."
    )
    chunk_rows: int | None = Field(default=None, ge=1, le=1_000_000)


class ModelOfJob(BaseModel):
    reference: str
    name: str | None
    version: str | None


ANONYMOUS_READ_BACK = (
    "Anonymous submits only (PP_REQUIRE_AUTH=false): send it as X-Job-Token to read this job back. "
    "Shown once; only its SHA-256 digest is stored."
)


class PredictionAccepted(BaseModel):
    id: str
    status: str
    created: bool = Field(description="False when an Idempotency-Key matched an earlier submit.")
    links: dict[str, str]
    read_token: str | None = Field(default=None, description=ANONYMOUS_READ_BACK)


class PredictionPublic(BaseModel):
    id: str
    status: Literal["pending", "processing", "completed", "failed", "cancelled", "expired"]
    kind: str
    owner: str | None
    model: ModelOfJob
    input_hash: str
    progress: float = Field(description="Percent done; batch jobs advance chunk by chunk.")
    attempts: int
    result: Any = None
    error: dict[str, Any] | None = None
    files: dict[str, str] = Field(default_factory=dict, description="Result files and their download paths.")
    data_as_of: datetime | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    duration_ms: float | None = Field(description="From start of the first attempt to the end.")
    score: dict[str, Any] | None = Field(
        default=None,
        description="Once answered with market context: its realized score (status pending until the "
        "outcome exists, then scored or void; the bars used, their versions, the formula version). "
        "Given by GET /api/v1/predictions/{id}; lists leave it out.",
    )

    @classmethod
    def of(cls, job: PredictionJob) -> PredictionPublic:
        duration = None
        if job.started_at is not None and job.finished_at is not None:
            duration = round((job.finished_at - job.started_at).total_seconds() * 1000, 3)
        return cls(
            id=job.id,
            status=job.status,  # type: ignore[arg-type]
            kind=job.kind,
            owner=job.owner_username,
            model=ModelOfJob(reference=job.model_reference, name=job.model_name, version=job.model_version),
            input_hash=job.input_hash,
            progress=job.progress,
            attempts=job.attempts,
            result=job.result,
            error=job.error,
            files={name: f"/api/v1/predictions/{job.id}/download/{name}" for name in job.result_files or []},
            data_as_of=job.data_as_of,
            created_at=job.created_at,
            started_at=job.started_at,
            finished_at=job.finished_at,
            duration_ms=duration,
        )


class PredictionPage(BaseModel):
    # Serialized as what each item is: a job by symbol carries the seed project's fields too.
    items: list[SerializeAsAny[PredictionPublic]]
    total: int
    limit: int
    offset: int


class AsyncTaskAccepted(BaseModel):
    task_id: str
    status: str
    read_token: str | None = Field(default=None, description=ANONYMOUS_READ_BACK)


class JobEventPublic(BaseModel):
    """One transition of a job, as ``prediction_job_events`` stored it."""

    at: datetime
    from_status: str | None = Field(description="The status the job left (null: the submit).")
    status: str = Field(description="The status the job moved to.")
    detail: str | None = Field(description="Why: submitted, updated, released: <reason>, an error...")
    worker: str | None = Field(description="The worker that moved it; shown to operators and admins only.")


class JobEventPage(BaseModel):
    items: list[JobEventPublic]
    total: int
    limit: int
    offset: int


TASK_STATES = {
    "pending": "PENDING",
    "processing": "STARTED",
    "completed": "SUCCESS",
    "failed": "FAILURE",
    "cancelled": "REVOKED",
}


class TaskStatus(BaseModel):
    """Celery's state names, so pollers written for Celery result backends read it unchanged."""

    task_id: str
    status: Literal["PENDING", "STARTED", "SUCCESS", "FAILURE", "REVOKED"]
    result: Any = None
    error: dict[str, Any] | None = None
    progress: float

    @classmethod
    def of(cls, job: PredictionJob) -> TaskStatus:
        return cls(
            task_id=job.id,
            status=TASK_STATES[job.status],  # type: ignore[arg-type]
            result=job.result,
            error=job.error,
            progress=job.progress,
        )


class QueueStats(BaseModel):
    backend: str
    pending: int
    active: int
    scheduled: int
    completed: int
    failed: int
    cancelled: int


class WorkerInfo(BaseModel):
    name: str
    queues: list[str]
    active: int


class WorkersInfo(BaseModel):
    backend: str
    workers: list[WorkerInfo]
