"""Models providers own: uploads in safe formats (``/api/v1/provider/models``) and admins'
ownership assignments (``/api/v1/admin/models/...``)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from prediction_provider.api.account_schemas import USERNAME
from prediction_provider.api.auth import ModelManager, UserManager
from prediction_provider.api.deps import ServicesDep
from prediction_provider.api.query_params import DeclaredQueryOnly, Limit, Offset
from prediction_provider.api.schemas import ErrorBody
from prediction_provider.errors import InvalidInput
from prediction_provider.marketplace.ownership import ModelOwnership
from prediction_provider.marketplace.safe_formats import MAX_FEATURES, UPLOAD_FORMATS
from prediction_provider.marketplace.uploads import ModelUpload, ModelUploads
from prediction_provider.serving.references import NAME_PATTERN

router = APIRouter(tags=["provider models"])

PROVIDER_UPLOAD_PATH = "/api/v1/provider/models"
ModelName = Annotated[str, Path(pattern=NAME_PATTERN.pattern, max_length=128)]

ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": description}
    for status, description in (
        (401, "Not signed in"),
        (403, "Not allowed"),
        (404, "Unknown model or user"),
        (409, "The model name exists and is not yours"),
        (413, "The file is over max_upload_bytes"),
        (422, "Invalid request, an unsafe model format, or a file that cannot be served"),
        (503, "The model registry is unreachable"),
    )
}

UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["name", "format", "file"],
                    "properties": {
                        "name": {"type": "string", "pattern": NAME_PATTERN.pattern},
                        "format": {"type": "string", "enum": list(UPLOAD_FORMATS)},
                        "file": {"type": "string", "format": "binary"},
                        "features": {
                            "type": "string",
                            "description": "Feature names in input order, as a JSON list or comma-separated; "
                            "required when the file does not name them",
                        },
                        "classes": {
                            "type": "string",
                            "description": "Class labels in output order, JSON list or comma-separated",
                        },
                    },
                }
            }
        },
    }
}


class UploadedModelPublic(BaseModel):
    model: str
    version: str
    uri: str
    format: str
    features: list[str]
    classes: list[str] | None


class OwnedModelPublic(BaseModel):
    model_name: str
    provider: str
    provider_id: int
    assigned_by: str | None
    assigned_at: datetime


class OwnedModelPage(BaseModel):
    items: list[OwnedModelPublic]
    total: int
    limit: int
    offset: int


class OwnerAssign(BaseModel):
    model_config = ConfigDict(extra="forbid")

    username: str = Field(pattern=USERNAME, description="A provider's (or an admin's) username.")


def ownership_of(services: ServicesDep) -> ModelOwnership:
    assert services.ownership is not None, "model ownership starts with the app"
    return services.ownership


def uploads_of(services: ServicesDep) -> ModelUploads:
    assert services.model_uploads is not None, "model uploads start with the app"
    return services.model_uploads


@router.post(
    PROVIDER_UPLOAD_PATH,
    status_code=201,
    response_model=UploadedModelPublic,
    responses=ERRORS,
    openapi_extra=UPLOAD_BODY,
    summary="Upload a model you own (ONNX, LightGBM text or XGBoost JSON; never a pickle)",
)
async def upload_model(request: Request, provider: ModelManager, services: ServicesDep) -> dict[str, Any]:
    """Registers a new version of ``name`` (yours, or a new name that becomes yours) and answers
    its ``models:/name/version`` URI; ``/predict`` serves it at once."""
    limit = services.settings.max_upload_bytes
    async with request.form(max_files=1, max_fields=8) as form:
        upload = form.get("file")
        fields = {key: form.get(key) for key in ("name", "format", "features", "classes")}
        problems = [
            {"field": key, "error": "required"}
            for key in ("name", "format")
            if not isinstance(fields[key], str) or not str(fields[key]).strip()
        ]
        if not isinstance(upload, UploadFile):
            problems.append({"field": "file", "error": "attach the model as the form field 'file'"})
        if problems:
            raise InvalidInput("invalid model upload", problems)
        assert isinstance(upload, UploadFile)
        content = await run_in_threadpool(upload.file.read, limit + 1)
    features = _name_list(fields["features"], "features")
    model_upload = ModelUpload(
        name=str(fields["name"]).strip(),
        format=str(fields["format"]).strip().lower(),
        content=content,
        features=features,
        classes=_name_list(fields["classes"], "classes"),
    )
    uploaded = await run_in_threadpool(uploads_of(services).upload, provider, model_upload)
    return uploaded.as_dict()


def _name_list(value: object, field: str) -> list[str] | None:
    """A form field holding names: a JSON list of strings, or comma-separated."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidInput(f"invalid {field}", [{"field": field, "error": "a text field"}])
    text = value.strip()
    if not text:
        return None
    if text.startswith("["):
        try:
            names = json.loads(text)
        except ValueError as exc:
            raise InvalidInput(
                f"invalid {field}", [{"field": field, "error": f"invalid JSON: {exc}"}]
            ) from exc
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise InvalidInput(f"invalid {field}", [{"field": field, "error": "a JSON list of strings"}])
    else:
        names = [name.strip() for name in text.split(",")]
    if len(names) > MAX_FEATURES:
        raise InvalidInput(f"too many {field}", [{"field": field, "error": f"at most {MAX_FEATURES}"}])
    return [str(name) for name in names]


@router.get(
    PROVIDER_UPLOAD_PATH, response_model=OwnedModelPage, responses=ERRORS, summary="The models you own"
)
async def list_own_models(
    provider: ModelManager,
    services: ServicesDep,
    limit: Limit = 50,
    offset: Offset = 0,
    _query: DeclaredQueryOnly = None,
) -> dict[str, Any]:
    rows, total = await run_in_threadpool(ownership_of(services).page, provider.user_id, limit, offset)
    return {"items": [row.as_dict() for row in rows], "total": total, "limit": limit, "offset": offset}


@router.put(
    "/api/v1/admin/models/{name}/owner",
    response_model=OwnedModelPublic,
    responses=ERRORS,
    summary="Make a provider the owner of a registered model (replaces any owner)",
)
async def assign_owner(
    name: ModelName, body: OwnerAssign, admin: UserManager, services: ServicesDep
) -> dict[str, Any]:
    owned = await run_in_threadpool(ownership_of(services).assign, name, body.username, admin)
    return owned.as_dict()


@router.get(
    "/api/v1/admin/models/owners",
    response_model=OwnedModelPage,
    responses=ERRORS,
    summary="Every model's owner, by model name",
)
async def list_owners(
    admin: UserManager,
    services: ServicesDep,
    limit: Limit = 50,
    offset: Offset = 0,
    _query: DeclaredQueryOnly = None,
) -> dict[str, Any]:
    rows, total = await run_in_threadpool(ownership_of(services).page, None, limit, offset)
    return {"items": [row.as_dict() for row in rows], "total": total, "limit": limit, "offset": offset}
