"""SQL injection strings in every text field a caller controls.

Queries are built with bound parameters, so each string must be treated as
data: a refusal (4xx) or a normal, empty answer, never a 5xx, never rows that a
literal match would not give, and the users table as it was. Where a field
legitimately accepts any text (a password, a full name), the string must land
verbatim in that one row and nowhere else.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx
import pytest

from prediction_provider.accounts import credentials
from prediction_provider.db.session import Database
from tests.conftest import MODEL, Account, LiveServer
from tests.security.support import (
    INJECTIONS,
    USER_COLUMNS,
    assert_unauthorized,
    error_of,
    new_account,
    row_of,
    unique,
    users_table,
    users_unchanged,
)

injections = pytest.mark.parametrize("payload", INJECTIONS)


@injections
@pytest.mark.parametrize("route", ["/api/v1/auth/login", "/api/v1/auth/api-key"])
@pytest.mark.parametrize("field", ["username", "password"])
def test_injection_in_credentials_is_just_a_wrong_password(
    anonymous: httpx.Client, accounts: dict[str, Account], db: Database, route: str, field: str, payload: str
) -> None:
    body = {"username": accounts["admin"].username, "password": accounts["admin"].password, field: payload}
    with users_unchanged(db):
        response = anonymous.post(route, json=body)
    assert_unauthorized(response)


@injections
def test_injection_in_user_search_matches_nothing(admin: httpx.Client, db: Database, payload: str) -> None:
    with users_unchanged(db):
        response = admin.get("/api/v1/admin/users", params={"q": payload})
    assert response.status_code == 200, response.text
    assert response.json()["users"] == []
    assert response.json()["total"] == 0


@injections
@pytest.mark.parametrize("parameter", ["user", "path"])
def test_injection_in_audit_filters_matches_nothing(
    admin: httpx.Client, live_server: LiveServer, db: Database, parameter: str, payload: str
) -> None:
    live_server.services.audit.flush()
    with users_unchanged(db):
        response = admin.get("/api/v1/admin/audit", params={parameter: payload})
    assert response.status_code == 200, response.text
    # No request had that username, and every path starts with "/".
    assert response.json()["entries"] == []
    assert response.json()["total"] == 0


@injections
@pytest.mark.parametrize(
    "route",
    ["/api/v1/admin/usage/{}", "/api/v1/admin/users/{}/activate", "/api/v1/admin/users/{}/deactivate"],
)
def test_injection_in_a_username_in_the_path_is_refused(
    admin: httpx.Client, db: Database, route: str, payload: str
) -> None:
    method = "GET" if "usage" in route else "POST"
    with users_unchanged(db):
        response = admin.request(method, route.format(quote(payload, safe="")))
    error_of(response, 422, "validation_error")


def user_body(**changes: Any) -> dict[str, Any]:
    username = unique("sec-inject")
    body = {"username": username, "email": f"{username}@example.com", "password": "a-good-password-1"}
    return {**body, **changes}


@injections
@pytest.mark.parametrize(
    ("field", "code"),
    [("username", "validation_error"), ("email", "invalid_input"), ("role", "validation_error")],
)
def test_injection_in_checked_user_fields_is_refused(
    admin: httpx.Client, db: Database, field: str, code: str, payload: str
) -> None:
    with users_unchanged(db):
        response = admin.post("/api/v1/admin/users", json=user_body(**{field: payload}))
    error_of(response, 422, code)


@injections
def test_injection_in_free_text_user_fields_is_stored_verbatim(
    admin: httpx.Client, anonymous: httpx.Client, db: Database, payload: str
) -> None:
    before = users_table(db)
    password = (payload * 2)[:128]  # at least 10 characters
    created = admin.post(
        "/api/v1/admin/users", json=user_body(full_name=payload, password=password, is_active=True)
    )
    assert created.status_code == 201, created.text
    after = users_table(db)
    assert after[: len(before)] == before
    assert len(after) == len(before) + 1
    row = dict(zip(USER_COLUMNS, after[-1], strict=True))
    assert row["full_name"] == payload
    assert row["role"] == "client"
    assert credentials.verify_password(row["password_hash"], password)
    token = anonymous.post("/api/v1/auth/login", json={"username": row["username"], "password": password})
    assert token.status_code == 200, token.text


@pytest.fixture(scope="module")
def editor(live_server: LiveServer, accounts: dict[str, Account]) -> Account:
    """A user of its own, so the profile edits below touch nobody else's row."""
    with httpx.Client(base_url=live_server.url, headers=accounts["admin"].headers, timeout=60) as admin:
        return new_account(admin, "sec-editor")


@injections
def test_injection_in_profile_email_is_refused(
    live_server: LiveServer, editor: Account, db: Database, payload: str
) -> None:
    with (
        httpx.Client(base_url=live_server.url, headers=editor.headers, timeout=60) as http,
        users_unchanged(db),
    ):
        response = http.put("/api/v1/users/profile", json={"email": payload})
    error_of(response, 422, "invalid_input")


@injections
def test_injection_in_profile_name_changes_only_that_name(
    live_server: LiveServer, editor: Account, db: Database, payload: str
) -> None:
    before = {row[0]: row for row in users_table(db)}
    with httpx.Client(base_url=live_server.url, headers=editor.headers, timeout=60) as http:
        response = http.put("/api/v1/users/profile", json={"full_name": payload})
    assert response.status_code == 200, response.text
    assert response.json()["full_name"] == payload
    after = {row[0]: row for row in users_table(db)}
    assert {i: r for i, r in after.items() if i != editor.user_id} == {
        i: r for i, r in before.items() if i != editor.user_id
    }
    old = dict(zip(USER_COLUMNS, before[editor.user_id], strict=True))
    new = row_of(db, editor.user_id)
    assert new["full_name"] == payload
    assert {k: v for k, v in new.items() if k not in ("full_name", "updated_at")} == {
        k: v for k, v in old.items() if k not in ("full_name", "updated_at")
    }


@injections
@pytest.mark.parametrize("prefix", ["", "models:/", "runs:/"])
@pytest.mark.parametrize("route", ["/predict", "/predict/batch"])
def test_injection_in_a_model_reference_is_refused(
    client: httpx.Client,
    db: Database,
    feature_rows: list[dict[str, float]],
    route: str,
    prefix: str,
    payload: str,
) -> None:
    reference = f"{prefix}{payload}" if prefix != "runs:/" else f"runs:/{payload}/model"
    body = {"model": reference, "features": feature_rows[0]}
    if route == "/predict/batch":
        body = {"model": reference, "features_list": [feature_rows[0]]}
    with users_unchanged(db):
        response = client.post(route, json=body)
    error_of(response, 422, "invalid_model_reference")


@injections
@pytest.mark.parametrize(
    ("method", "route"),
    [
        ("POST", "/v2/models/{}/infer"),
        ("POST", "/v2/models/" + MODEL + "/versions/{}/infer"),
        ("GET", "/v2/models/{}"),
        ("GET", "/v2/models/{}/ready"),
    ],
)
def test_injection_in_a_v2_model_name_or_version_is_refused(
    client: httpx.Client, db: Database, method: str, route: str, payload: str
) -> None:
    body = {"inputs": [{"name": "input", "datatype": "FP64", "shape": [1, 1], "data": [0.0]}]}
    with users_unchanged(db):
        response = client.request(method, route.format(quote(payload, safe="")), json=body)
    assert response.status_code == 400, response.text
    assert set(response.json()) == {"error"}


@injections
def test_injection_in_a_model_name_for_info_is_refused(
    client: httpx.Client, db: Database, payload: str
) -> None:
    with users_unchanged(db):
        response = client.get(f"/models/{quote(payload, safe='')}/info")
    error_of(response, 422, "validation_error")


@injections
def test_injection_in_an_mlflow_scoring_model_name_is_refused(
    client: httpx.Client, db: Database, payload: str
) -> None:
    with users_unchanged(db):
        response = client.post(f"/models/{quote(payload, safe='')}/invocations", json={"inputs": [[0.0]]})
    assert response.status_code == 400, response.text
    assert response.json()["error_code"] == "BAD_REQUEST"
