"""Asynchronous predictions: ``/api/v1/predictions`` (jobs, batch scoring, downloads), ``/predict/async``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import FileResponse
from pydantic import AwareDatetime, BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.responses import Response

from prediction_provider.accounts.principal import Principal
from prediction_provider.accounts.roles import Permission, allows
from prediction_provider.api.auth import CurrentUser, Predictor, authenticate, client_address
from prediction_provider.api.body import openapi_body, read_json, read_json_body
from prediction_provider.api.deps import ServicesDep, services_of
from prediction_provider.api.job_schemas import (
    TASK_STATES,
    AsyncTaskAccepted,
    DatasetJobCreate,
    JobEventPage,
    JobEventPublic,
    PredictionAccepted,
    PredictionCreate,
    PredictionPage,
    PredictionPublic,
    TaskStatus,
)
from prediction_provider.api.query_params import DeclaredQueryOnly, Limit, Offset
from prediction_provider.api.routes import seed as seed_routes
from prediction_provider.api.schemas import ErrorBody, PredictRequest
from prediction_provider.api.seed_jobs import submit_seed_job
from prediction_provider.api.seed_schemas import (
    SeedPredictionAccepted,
    SeedPredictionCreate,
    SymbolPredictionPublic,
    accepted,
    public_of,
)
from prediction_provider.errors import InvalidInput
from prediction_provider.jobs import datasets, read_tokens
from prediction_provider.jobs.records import JobFilter, JobStatus
from prediction_provider.jobs.runtime import JobRuntime
from prediction_provider.jobs.service import JobService, RowsSubmission, Submitted

router = APIRouter(tags=["prediction jobs"])

DATASET_UPLOAD_PATH = "/api/v1/predictions/batch"
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=128,
        description="Retrying a submit with the same key returns the first job instead of making another.",
    ),
]
JobId = Annotated[str, Query(min_length=1, max_length=64)]
# A header, not ?token=: query strings end up in access logs, proxy logs and browser history.
JobToken = Annotated[
    str | None,
    Header(
        alias=read_tokens.HEADER,
        min_length=1,
        max_length=128,
        description="The read_token an anonymous submit answered; lets its holder read that job.",
    ),
]


async def job_reader(request: Request) -> Principal:
    """Any caller, anonymous ones too where PP_REQUIRE_AUTH=false: who may read a job is decided
    per job (its owner, operators and admins, or the holder of its read token)."""
    return await authenticate(request, services_of(request))


JobReader = Annotated[Principal, Depends(job_reader)]

ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": description}
    for status, description in (
        (401, "Not signed in"),
        (403, "Not allowed"),
        (404, "Unknown job or model"),
        (409, "The job's state does not allow this, or the Idempotency-Key was used for another request"),
        (422, "Invalid request"),
        (503, "The task broker is unreachable; nothing was stored"),
    )
}


def runtime_of(services: ServicesDep) -> JobRuntime:
    assert services.jobs is not None, "the job runtime starts with the app"
    return services.jobs


def jobs_of(services: ServicesDep) -> JobService:
    return runtime_of(services).service


def _accepted(submitted: Submitted) -> PredictionAccepted:
    job = submitted.job
    base = f"/api/v1/predictions/{job.id}"
    return PredictionAccepted(
        id=job.id,
        status=job.status,
        created=submitted.created,
        links={"self": base, "events": f"{base}/events"},
        read_token=submitted.read_token,
    )


def _check_job_id(job_id: str) -> str:
    if len(job_id) > 64:
        raise InvalidInput("job id too long", [{"field": "id", "error": "at most 64 characters"}])
    return job_id


def asks_by_symbol(data: Any) -> bool:
    """A job body without feature rows that names a symbol is a forecast by symbol."""
    return (
        isinstance(data, dict)
        and ("symbol" in data or "ticker" in data)
        and "features" not in data
        and "features_list" not in data
    )


@router.post(
    "/api/v1/predictions",
    status_code=202,
    response_model=PredictionAccepted,
    responses={
        **ERRORS,
        201: {
            "model": SeedPredictionAccepted,
            "description": "A forecast job by symbol, answered as the seed project's PredictionResponse; "
            "anonymous callers get its read token in the X-Job-Token header",
        },
        429: {"model": ErrorBody, "description": "Too many of your forecast jobs pending or running"},
    },
    openapi_extra=openapi_body(PredictionCreate, SeedPredictionCreate),
)
async def submit_prediction(
    request: Request,
    principal: Predictor,
    services: ServicesDep,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    """Queue a prediction; poll ``GET /api/v1/predictions/{id}`` for its result. With ``features``
    or ``features_list``: the model's answers for those rows (202). With ``symbol`` instead: the
    symbol's forecast from its market data as of ``as_of`` (201), in the seed project's words
    too (``ticker``, ``prediction_type``, ``baseline_datetime``, ``model_name``, ``*_plugin``)."""
    data = await read_json(request)
    if asks_by_symbol(data):
        return await submit_symbol_job(request, principal, services, data, idempotency_key)
    submission = PredictionCreate.model_validate(data).submission(idempotency_key)
    submitted = await run_in_threadpool(
        jobs_of(services).submit_rows, principal, submission, client_address(request)
    )
    return _json(_accepted(submitted), 202)


def idempotency_key(request: Request) -> str | None:
    """The Idempotency-Key header of a route that reads its request itself (a hot route)."""
    key = request.headers.get("idempotency-key")
    if key is not None and not 1 <= len(key) <= 128:
        raise InvalidInput(
            "Idempotency-Key must be 1 to 128 characters", [{"field": "Idempotency-Key", "error": "length"}]
        )
    return key


async def submit_symbol_job(
    request: Request, principal: Principal, services: ServicesDep, data: Any, idempotency_key: str | None
) -> Response:
    """A job by symbol, answered as the seed's ``PredictionResponse`` (201; 200 for a replayed
    Idempotency-Key). The anonymous caller's read token travels in the ``X-Job-Token`` header:
    the body holds no credential (the seed's clients check it for one)."""
    body = SeedPredictionCreate.model_validate(data)
    submitted = await run_in_threadpool(
        submit_seed_job, jobs_of(services), principal, body, idempotency_key, client_address(request)
    )
    response = _json(accepted(submitted.job, submitted.created), 201 if submitted.created else 200)
    if submitted.read_token is not None:
        response.headers[read_tokens.HEADER] = submitted.read_token
    return response


def _json(model: BaseModel, status: int) -> Response:
    return Response(model.model_dump_json(), status_code=status, media_type="application/json")


@router.post(DATASET_UPLOAD_PATH, status_code=202, response_model=PredictionAccepted, responses=ERRORS)
async def submit_batch_job(
    request: Request, principal: Predictor, services: ServicesDep, idempotency_key: IdempotencyKey = None
) -> PredictionAccepted:
    """Score a dataset: a multipart upload (``file``, ``model``, optional ``chunk_rows``) or JSON
    ``{model, dataset_path, chunk_rows?}`` naming a file under the data roots. The result is a
    Parquet file listed in the job's ``files``."""
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/form-data"):
        model, path, digest, chunk_rows = await _read_upload(request, services)
    else:
        body = await read_json_body(request, DatasetJobCreate)
        model, chunk_rows = body.model, body.chunk_rows
        roots = services.settings.dataset_roots
        path = await run_in_threadpool(datasets.resolve_dataset, body.dataset_path, roots)
        digest = await run_in_threadpool(datasets.path_digest, path)
    submitted = await run_in_threadpool(
        jobs_of(services).submit_dataset,
        principal, model, path, digest, chunk_rows, idempotency_key, client_address(request),
    )  # fmt: skip
    return _accepted(submitted)


async def _read_upload(request: Request, services: ServicesDep) -> tuple[str, Path, str, int | None]:
    async with request.form(max_files=1, max_fields=8) as form:
        upload, model, chunk_text = form.get("file"), form.get("model"), form.get("chunk_rows")
        problems = []
        if not isinstance(upload, UploadFile):
            problems.append({"field": "file", "error": "attach the dataset as the form field 'file'"})
        if not isinstance(model, str) or not model.strip():
            problems.append({"field": "model", "error": "required"})
        chunk_rows = None
        if chunk_text is not None:
            if not isinstance(chunk_text, str) or not chunk_text.isdigit() or int(chunk_text) < 1:
                problems.append({"field": "chunk_rows", "error": "a positive integer"})
            else:
                chunk_rows = int(chunk_text)
        if problems:
            raise InvalidInput("invalid batch upload", problems)
        assert isinstance(upload, UploadFile)
        assert isinstance(model, str)
        path, digest = await run_in_threadpool(
            datasets.store_upload, services.settings.uploads_dir, upload.filename or "", upload.file
        )
    return model.strip(), path, digest, chunk_rows


@router.get("/api/v1/predictions", response_model=PredictionPage, responses=ERRORS)
async def list_predictions(
    principal: CurrentUser,
    services: ServicesDep,
    status: JobStatus | None = None,
    model: Annotated[str | None, Query(max_length=512)] = None,
    created_after: AwareDatetime | None = None,
    created_before: AwareDatetime | None = None,
    owner_id: Annotated[
        int | None, Query(ge=1, description="Only for callers who may see every job.")
    ] = None,
    limit: Limit = 50,
    offset: Offset = 0,
    _query: DeclaredQueryOnly = None,
) -> PredictionPage:
    """Your jobs, newest first; admins and operators see everyone's."""
    filters = JobFilter(owner_id, status, model, created_after, created_before)
    rows, total = await run_in_threadpool(jobs_of(services).search, principal, filters, limit, offset)
    return PredictionPage(items=[public_of(job) for job in rows], total=total, limit=limit, offset=offset)


@router.get(
    "/api/v1/predictions/{job_id}",
    response_model=SymbolPredictionPublic | PredictionPublic,
    responses=ERRORS,
)
async def get_prediction(
    job_id: str, principal: JobReader, services: ServicesDep, read_token: JobToken = None
) -> PredictionPublic:
    """A job by symbol answers the seed project's fields too (``prediction_id``, ``symbol``,
    ``prediction_type``, ... ``result: {request, ...forecast}``, ``output`` once completed)."""
    job = await run_in_threadpool(jobs_of(services).visible, _check_job_id(job_id), principal, read_token)
    public = public_of(job)
    if services.outcomes is not None and job.status == "completed":
        public.score = await run_in_threadpool(services.outcomes.summary, job.id)
    return public


@router.get("/api/v1/predictions/{job_id}/events", response_model=JobEventPage, responses=ERRORS)
async def prediction_events(
    job_id: str,
    principal: JobReader,
    services: ServicesDep,
    read_token: JobToken = None,
    limit: Limit = 100,
    offset: Offset = 0,
    _query: DeclaredQueryOnly = None,
) -> JobEventPage:
    """The job's history, oldest first: every status it took, when, and why."""
    rows, total = await run_in_threadpool(
        jobs_of(services).events, _check_job_id(job_id), principal, read_token, limit, offset
    )
    show_worker = allows(principal.role, Permission.READ_ALL_JOBS)
    items = [
        JobEventPublic(
            at=event.at,
            from_status=left,
            status=event.status,
            detail=event.detail,
            worker=event.worker if show_worker else None,
        )
        for event, left in rows
    ]
    return JobEventPage(items=items, total=total, limit=limit, offset=offset)


@router.put("/api/v1/predictions/{job_id}", response_model=PredictionPublic, responses=ERRORS)
async def update_prediction(
    job_id: str, body: PredictionCreate, principal: Predictor, services: ServicesDep
) -> PredictionPublic:
    """Replace the input of a job that has not started yet (409 once it has)."""
    submission = body.submission(None)
    job = await run_in_threadpool(jobs_of(services).update_rows, _check_job_id(job_id), principal, submission)
    return PredictionPublic.of(job)


@router.delete(
    "/api/v1/predictions/{job_id}",
    response_model=PredictionPublic,
    responses={
        **ERRORS,
        200: {
            "model": SymbolPredictionPublic | PredictionPublic,
            "description": "The job as it was cancelled; a job by symbol is also removed (the seed "
            "project's delete: message, its fields, then 404), its forecast kept in the prediction records",
        },
    },
)
async def cancel_prediction(job_id: str, principal: CurrentUser, services: ServicesDep) -> Response:
    """Cancel a pending or running job (409 once it has finished); its result, if any arrives, is
    dropped. A job by symbol is deleted as the seed project did, finished or not: cancelled if
    still pending or running, then gone from the job list (GET answers 404); every forecast it
    made stays in the prediction records, under its job id."""
    job = await run_in_threadpool(jobs_of(services).remove_forecast, _check_job_id(job_id), principal)
    if job.kind != "forecast":
        return _json(PredictionPublic.of(job), 200)
    answer = {"message": "Prediction deleted successfully", **public_of(job).model_dump(mode="json")}
    return Response(orjson.dumps(answer), media_type="application/json")


@router.get(
    "/api/v1/predictions/{job_id}/download/{file_name}",
    response_class=FileResponse,
    responses={**ERRORS, 200: {"content": {"application/vnd.apache.parquet": {}}}},
)
async def download_result(
    job_id: str, file_name: str, principal: JobReader, services: ServicesDep, read_token: JobToken = None
) -> FileResponse:
    path = await run_in_threadpool(
        jobs_of(services).result_file, _check_job_id(job_id), principal, file_name, read_token
    )
    return FileResponse(path, media_type="application/vnd.apache.parquet", filename=file_name)


@router.post("/predict/async", status_code=202, response_model=AsyncTaskAccepted, responses=ERRORS)
async def predict_async(
    request: Request,
    body: PredictRequest,
    principal: Predictor,
    services: ServicesDep,
    idempotency_key: IdempotencyKey = None,
) -> AsyncTaskAccepted:
    """``/predict``'s request, answered later: poll ``/monitoring/task_status/{task_id}``."""
    if body.explain:
        # Refused rather than ignored: explanations are answered by POST /predict itself.
        raise InvalidInput(
            "explain is answered by POST /predict, not by /predict/async",
            [{"field": "explain", "error": "not supported on asynchronous predictions"}],
        )
    submission = RowsSubmission(
        model=body.model,
        payload={"features": body.features},
        shape="single",
        return_proba=body.return_proba,
        idempotency_key=idempotency_key,
    )
    submitted = await run_in_threadpool(
        jobs_of(services).submit_rows, principal, submission, client_address(request)
    )
    job = submitted.job
    return AsyncTaskAccepted(task_id=job.id, status=TASK_STATES[job.status], read_token=submitted.read_token)


@router.get("/monitoring/task_status/{task_id}", response_model=TaskStatus, responses=ERRORS)
async def task_status(
    task_id: str, principal: JobReader, services: ServicesDep, read_token: JobToken = None
) -> TaskStatus:
    job = await run_in_threadpool(jobs_of(services).visible, _check_job_id(task_id), principal, read_token)
    return TaskStatus.of(job)


# The seed project's legacy GET /status/{id} rides on this router (its POST is /predict's).
router.include_router(seed_routes.router)
