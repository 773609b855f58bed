"""The job store's vocabulary: statuses, a submission, a worker's claim, search filters, and
the two row helpers every state transition uses (the claim's guard and the event row)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

import orjson
from sqlalchemy import and_, or_
from sqlalchemy.orm import Session

from prediction_provider.db.models import PredictionJob, PredictionJobEvent


class JobStatus(StrEnum):
    PENDING = "pending"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"  # a marketplace request whose deadline passed while it was queued


TERMINAL = frozenset({JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.EXPIRED})


def input_digest(payload: Any) -> str:
    """A stable hash of a job's input: keys sorted, so equal bodies hash equally."""
    return hashlib.sha256(orjson.dumps(payload, option=orjson.OPT_SORT_KEYS)).hexdigest()


@dataclass(frozen=True, slots=True)
class NewJob:
    kind: str
    model_reference: str
    input_hash: str
    input: Any = None
    input_path: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    data_as_of: datetime | None = None
    idempotency_key: str | None = None
    model_name: str | None = None
    model_version: str | None = None
    read_token_digest: str | None = None  # anonymous submits (jobs.read_tokens)


@dataclass(frozen=True, slots=True)
class Claim:
    """A worker's right to run and finish one job, until it finishes or its lease runs out."""

    job: PredictionJob
    token: str
    worker: str


class ClaimRefused(StrEnum):
    MISSING = "missing"
    FINISHED = "finished"  # terminal, or a dataset job already split into chunks
    BUSY = "busy"  # another worker holds a live claim


@dataclass(frozen=True, slots=True)
class JobFilter:
    owner_id: int | None = None  # None: everyone's (callers allowed to see all)
    status: JobStatus | None = None
    model: str | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None


def holding(claim: Claim) -> tuple[Any, ...]:
    """The WHERE clause that lets only the current claim's holder move a job on."""
    return (
        PredictionJob.id == claim.job.id,
        PredictionJob.status == JobStatus.PROCESSING,
        PredictionJob.claim_token == claim.token,
    )


def record_event(session: Session, job_id: str, status: str, worker: str | None, detail: str | None) -> None:
    session.add(PredictionJobEvent(job_id=job_id, status=status, worker=worker, detail=detail))


def claimable(now: datetime, lease: timedelta) -> Any:
    """Jobs a worker may claim: pending ones, and processing ones whose worker stopped reporting
    for longer than ``lease``; never a split parent, which its chunks finish, nor a request left to
    the marketplace's evaluators."""
    stale = now - lease
    return and_(
        PredictionJob.chunks_total.is_(None),
        PredictionJob.kind != "evaluation",  # marketplace requests that evaluators claim, under leases
        or_(
            PredictionJob.status == JobStatus.PENDING,
            and_(PredictionJob.status == JobStatus.PROCESSING, PredictionJob.heartbeat_at < stale),
        ),
    )
