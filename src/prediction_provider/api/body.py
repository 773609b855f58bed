"""Reading JSON bodies straight into pydantic models.

``model_validate_json`` parses in Rust and validates in one pass, several
times faster than FastAPI's ``json.loads`` followed by validation, which
matters for 1024-row batches. It also accepts the ``NaN``/``Infinity``
literals that Python clients emit, so those reach feature validation and are
reported by field name instead of as malformed JSON.
"""

from __future__ import annotations

from typing import Any, TypeVar

from fastapi import Request
from pydantic import BaseModel
from starlette.exceptions import HTTPException

BodyT = TypeVar("BodyT", bound=BaseModel)


async def read_json_body(request: Request, model: type[BodyT]) -> BodyT:
    content_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if content_type and not content_type.endswith("json"):
        raise HTTPException(415, f"expected application/json, got {content_type}")
    return model.model_validate_json(await request.body())


def openapi_body(model: type[BaseModel]) -> dict[str, Any]:
    """Document a body that the route reads itself, so /docs still shows its schema."""
    schema = model.model_json_schema()
    if "$defs" in schema:
        raise ValueError(f"{model.__name__} has nested models; document it another way")
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}
