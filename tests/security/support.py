"""Helpers for the attack suite: snapshots of the users table and assertions on refusals."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
from sqlalchemy import inspect, select

from prediction_provider.db.models import User
from prediction_provider.db.session import Database
from tests.conftest import Account

UserRow = tuple[Any, ...]
USER_COLUMNS = tuple(attribute.key for attribute in inspect(User).column_attrs)

INJECTIONS = (
    "' OR 1=1 --",
    '"; DROP TABLE users; --',
    "admin'--",
    "%' OR '1'='1",
    "test-admin' --",
    "1; DELETE FROM users",
    "' UNION SELECT password_hash FROM users --",
)


def users_table(db: Database) -> list[UserRow]:
    """Every column of every row of ``users``, in id order."""
    with db.session() as session:
        users = session.scalars(select(User).order_by(User.id)).all()
        return [tuple(getattr(user, column) for column in USER_COLUMNS) for user in users]


@contextmanager
def users_unchanged(db: Database) -> Iterator[None]:
    """Fail unless the users table reads exactly the same after the block as before it."""
    before = users_table(db)
    yield
    after = users_table(db)
    assert after == before, _difference(before, after)


def _difference(before: list[UserRow], after: list[UserRow]) -> str:
    old = {row[0]: row for row in before}
    new = {row[0]: row for row in after}
    changed = [
        {column: (old[i][n], new[i][n]) for n, column in enumerate(USER_COLUMNS) if old[i][n] != new[i][n]}
        for i in old.keys() & new.keys()
        if old[i] != new[i]
    ]
    return (
        f"users table changed: added {sorted(new.keys() - old.keys())}, removed "
        f"{sorted(old.keys() - new.keys())}, changed {changed}"
    )


def row_of(db: Database, user_id: int) -> dict[str, Any]:
    rows = [row for row in users_table(db) if row[0] == user_id]
    assert len(rows) == 1
    return dict(zip(USER_COLUMNS, rows[0], strict=True))


def error_of(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """Assert the native error shape with this status and code; return the error."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message", "details"}, body
    assert body["error"]["code"] == code, body
    return dict(body["error"])


def assert_unauthorized(response: httpx.Response) -> None:
    error_of(response, 401, "unauthorized")
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def assert_rate_limited(response: httpx.Response, window_seconds: int = 60) -> int:
    """Assert a 429 with a usable ``Retry-After`` (whole seconds, in the window); return it."""
    error_of(response, 429, "rate_limited")
    retry_after = response.headers["Retry-After"]
    assert retry_after.isdigit(), retry_after
    assert 0 < int(retry_after) <= window_seconds
    return int(retry_after)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def unique(prefix: str) -> str:
    """A username no other test uses (the suite shares one database)."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def login(http: httpx.Client, username: str, password: str) -> str:
    response = http.post("/api/v1/auth/login", json={"username": username, "password": password})
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


def new_account(admin: httpx.Client, prefix: str, *, with_key: bool = True) -> Account:
    """A fresh active client account made through the admin API, with its first API key."""
    username = unique(prefix)
    password = f"{username}-password"
    created = admin.post(
        "/api/v1/admin/users",
        json={
            "username": username,
            "email": f"{username}@example.com",
            "password": password,
            "is_active": True,
        },
    )
    assert created.status_code == 201, created.text
    key = ""
    if with_key:
        # /auth/api-key takes the password and ignores the admin's key on this client.
        issued = admin.post("/api/v1/auth/api-key", json={"username": username, "password": password})
        assert issued.status_code == 201, issued.text
        key = issued.json()["api_key"]
    return Account(username, password, key, created.json()["id"])


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_json(value: dict[str, Any]) -> str:
    return b64url(json.dumps(value, separators=(",", ":")).encode())


def unb64url_json(segment: str) -> dict[str, Any]:
    return dict(json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))))


def hand_signed(header: dict[str, Any], claims: dict[str, Any], secret: str | None) -> str:
    """A JWT built by hand: HMAC-SHA256/512 as ``header["alg"]`` says, or unsigned for no secret."""
    signing_input = f"{b64url_json(header)}.{b64url_json(claims)}"
    if secret is None:
        return f"{signing_input}."
    digest = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}[header["alg"]]
    signature = hmac.new(secret.encode(), signing_input.encode(), digest).digest()
    return f"{signing_input}.{b64url(signature)}"
