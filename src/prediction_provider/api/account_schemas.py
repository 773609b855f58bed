"""Request and response bodies of the account, auth and admin routes."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, JsonValue

from prediction_provider.accounts.service import ROLE_ALIASES


def _canonical_role(value: object) -> object:
    """The seed's role names are accepted: ``administrator`` is ``admin``."""
    return ROLE_ALIASES.get(value, value) if isinstance(value, str) else value


RoleName = Annotated[
    Literal["admin", "provider", "client", "evaluator", "operator"],
    BeforeValidator(_canonical_role),
    Field(description="admin (or its seed name administrator), provider, client, evaluator, operator"),
]
USERNAME = r"^[a-z0-9][a-z0-9_.-]{2,63}$"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Credentials(Strict):
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=128)


class TokenPublic(BaseModel):
    access_token: str
    token_type: Literal["bearer"]
    expires_at: datetime


class ApiKeyPublic(BaseModel):
    api_key: str = Field(description="Shown once: only its SHA-256 digest is stored.")
    username: str
    created_at: datetime
    replaced: bool = Field(description="True when an older key was revoked by this one, at once.")
    expires_in_days: int | None = Field(
        default=None,
        description="Days the key stays valid; null: keys do not expire (one lasts until it is "
        "regenerated, revoked or its account deactivated).",
    )


class UserPublic(BaseModel):
    id: int
    username: str
    email: str
    full_name: str | None
    role: str
    is_active: bool
    has_api_key: bool
    created_at: datetime
    updated_at: datetime


class UserCreate(Strict):
    username: str = Field(pattern=USERNAME)
    email: str = Field(max_length=254)
    password: str = Field(min_length=10, max_length=128)
    role: RoleName = "client"
    full_name: str | None = Field(default=None, max_length=200)
    is_active: bool | None = Field(default=None, description="Default: inactive when activation is required.")


class UserUpdate(Strict):
    email: str | None = Field(default=None, max_length=254)
    full_name: str | None = Field(default=None, max_length=200)
    role: RoleName | None = None
    is_active: bool | None = None


class ProfileUpdate(Strict):
    """Deliberately without an editable role or active flag: a user cannot raise or revive itself.

    ``role`` is accepted only to be refused with a 403 ``role_change_forbidden`` (the seed
    project's clients expect a refusal, not a malformed request); ``is_active`` stays a 422.
    """

    email: str | None = Field(default=None, max_length=254)
    full_name: str | None = Field(default=None, max_length=200)
    role: JsonValue = Field(
        default=None, description="Refused: a profile edit naming a role answers 403 role_change_forbidden."
    )


class SeedPasswordChange(Strict):
    """``PUT /api/v1/users/password``: the seed project's field names."""

    old_password: str = Field(min_length=1, max_length=128)
    new_password: str = Field(min_length=10, max_length=128)


class Message(BaseModel):
    message: str


class PasswordChange(Strict):
    current_password: str = Field(min_length=1, max_length=128)
    new_password: str = Field(min_length=10, max_length=128)


class UserPage(BaseModel):
    users: list[UserPublic]
    total: int
    limit: int
    offset: int


class AuditEntry(BaseModel):
    id: int
    at: datetime
    request_id: str
    user_id: int | None
    username: str | None
    role: str | None
    method: str
    path: str
    status: int
    latency_ms: float
    client_address: str | None


class AuditPage(BaseModel):
    entries: list[AuditEntry]
    total: int
    limit: int
    offset: int


SERVER_ERRORS = "Answered with status 500 or above: a failure of the server."
REJECTED = "Answered with status 400 to 499: refused (invalid input, no permission, not found, rate limited)."


class Usage(BaseModel):
    username: str
    requests: int
    server_errors: int = Field(description=SERVER_ERRORS)
    rejected: int = Field(description=REJECTED)
    by_path: dict[str, dict[str, Any]] = Field(
        description="Per path: requests, server_errors, rejected, mean_latency_ms."
    )
    last_seen: datetime | None


class Stats(BaseModel):
    users_by_role: dict[str, int]
    active_users: int
    requests_24h: int
    server_errors_24h: int = Field(description=SERVER_ERRORS)
    rejected_24h: int = Field(description=REJECTED)
    cached_models: int


class SystemHealth(BaseModel):
    database: bool
    registry: bool
    redis: bool | None
    cached_models: int
    audit_queue: int
