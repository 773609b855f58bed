"""The seed project's legacy pair: ``POST /predict {instrument, timeframe, ...}`` and ``GET /status/{id}``.

``POST /predict`` itself is ``routes.predict``'s (a hot route); it hands bodies
of the legacy shape to ``legacy_predict`` here. A legacy client may name its
own ``prediction_id``: it is echoed, kept in the job's seed request, and stored
as the job's idempotency key (``legacy:<id>``, scoped to the caller: the owner's
account, or an anonymous caller's address, as every anonymous key is), so
``GET /status/{it}`` finds that caller's job and never another caller's.
"""

from __future__ import annotations

import re
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Request
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.responses import Response

from prediction_provider.accounts.principal import Principal
from prediction_provider.api.auth import authenticate, client_address
from prediction_provider.api.deps import Services, ServicesDep, services_of
from prediction_provider.api.schemas import ErrorBody
from prediction_provider.api.seed_jobs import submit_seed_job
from prediction_provider.api.seed_schemas import LegacyAccepted, LegacyPredict, LegacyStatus, legacy_status
from prediction_provider.errors import JobNotFound
from prediction_provider.jobs import read_tokens
from prediction_provider.jobs.service import JobService

router = APIRouter(tags=["seed project API"])

LEGACY_KEY_PREFIX = "legacy:"
INTEGER_ID = re.compile(r"^[0-9]{1,19}$")
ACCEPTED_MESSAGE = "Prediction request accepted"


class InvalidPredictionId(HTTPException):
    """400 in our error shape (the seed answered 400 to an id that is no id at all)."""

    code = "invalid_prediction_id"

    def __init__(self) -> None:
        super().__init__(400, "invalid prediction id: the id POST /predict answered, or the one you sent it")


def _jobs(services: Services) -> JobService:
    assert services.jobs is not None, "the job runtime starts with the app"
    return services.jobs.service


async def legacy_predict(request: Request, principal: Principal, data: Any) -> Response:
    """200 ``{prediction_id, status, message}`` for a job by symbol (the seed answered 200, not 201).
    ``instrument`` is the symbol (``EUR_USD`` = ``EURUSD``), ``timeframe`` the interval (``H1`` = ``1h``),
    ``parameters.plugin`` the predictor plugin."""
    body = LegacyPredict.model_validate(data)
    key = None if body.prediction_id is None else LEGACY_KEY_PREFIX + body.prediction_id
    submitted = await run_in_threadpool(
        submit_seed_job,
        _jobs(services_of(request)), principal, body.as_seed(), key, client_address(request),
        body.prediction_id,
    )  # fmt: skip
    answer = LegacyAccepted(
        prediction_id=body.prediction_id or submitted.job.id,
        status=submitted.job.status,
        message=ACCEPTED_MESSAGE,
    )
    response = Response(answer.model_dump_json(), media_type="application/json")
    if submitted.read_token is not None:
        response.headers[read_tokens.HEADER] = submitted.read_token
    return response


async def status_reader(request: Request) -> Principal:
    return await authenticate(request, services_of(request))


StatusReader = Annotated[Principal, Depends(status_reader)]
JobToken = Annotated[str | None, Header(alias=read_tokens.HEADER, min_length=1, max_length=128)]


def _is_job_id(text: str) -> bool:
    try:
        return str(uuid.UUID(text)) == text.lower()
    except ValueError:
        return False


@router.get(
    "/status/{prediction_id}",
    response_model=LegacyStatus,
    responses={
        400: {"model": ErrorBody, "description": "Not a prediction id"},
        404: {"model": ErrorBody, "description": "No such prediction of yours"},
    },
)
async def prediction_status(
    prediction_id: str, request: Request, principal: StatusReader, services: ServicesDep,
    read_token: JobToken = None,
) -> LegacyStatus:  # fmt: skip
    """The seed's legacy status: ``{prediction_id, status, result}``, by the id ``POST /predict``
    answered or the client's own. 400 for an id that is neither an integer, a job id nor one the
    caller gave; 404 for one that is not (or not the caller's)."""
    jobs = _jobs(services)
    job = None
    if len(prediction_id) <= 100:
        job = await run_in_threadpool(
            jobs.by_client_key, principal, LEGACY_KEY_PREFIX + prediction_id, client_address(request)
        )
    if job is None and _is_job_id(prediction_id):
        job = await run_in_threadpool(jobs.visible, prediction_id.lower(), principal, read_token)
    if job is None:
        if INTEGER_ID.match(prediction_id):
            raise JobNotFound(f"no prediction {prediction_id!r}", {"prediction_id": prediction_id})
        raise InvalidPredictionId()
    if job.kind != "forecast":
        raise JobNotFound(f"no prediction {prediction_id!r}", {"prediction_id": prediction_id})
    return legacy_status(job, prediction_id)
