"""Bodies built to exhaust or confuse the parsers: oversized, deeply nested, huge numbers, bad bytes.

Each must be refused with a 4xx in the route's own error shape (the native
``{"error": {...}}``, Open Inference's ``{"error": "..."}`` or MLflow's
``{"error_code", "message"}``), never a 5xx, and leave the users table alone.
Requests are sent as the admin, who may call every route, so nothing is refused
for want of a permission before the body is read.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest

from prediction_provider.config import Settings
from prediction_provider.db.session import Database
from tests.conftest import MODEL, LiveServer
from tests.security.support import (
    assert_unauthorized,
    error_of,
    new_account,
    row_of,
    unique,
    users_unchanged,
)

JSON = {"Content-Type": "application/json"}
V2_INFER = f"/v2/models/{MODEL}/infer"


def assert_shaped_error(response: httpx.Response, status: int, shape: str, code: str = "") -> None:
    """``shape``: native (with ``code``), v2 or mlflow."""
    assert response.status_code == status, response.text
    if shape == "native":
        error_of(response, status, code)
    elif shape == "v2":
        body = response.json()
        assert set(body) == {"error"}
        assert isinstance(body["error"], str)
    else:
        assert set(response.json()) == {"error_code", "message"}
        assert response.json()["error_code"] == "BAD_REQUEST"


def new_user_json() -> bytes:
    """A body that creates a user if it is ever accepted."""
    username = unique("sec-bodies")
    return orjson.dumps(
        {"username": username, "email": f"{username}@example.com", "password": "big-body-pass-1"}
    )


# (method, path, body before padding, error shape of the route)
ROUTES: list[tuple[str, str, bytes, str]] = [
    ("POST", "/predict", b'{"model": "%s", "features": {}}' % MODEL.encode(), "native"),
    ("POST", "/predict/batch", b'{"model": "%s", "features_list": []}' % MODEL.encode(), "native"),
    ("POST", "/api/v1/admin/users", b"", "native"),
    ("PUT", "/api/v1/users/profile", b'{"full_name": "written by an oversized body"}', "native"),
    ("POST", "/api/v1/auth/login", b'{"username": "test-admin", "password": "admin-password-123"}', "native"),
    ("POST", V2_INFER, b'{"inputs": []}', "v2"),
    ("POST", "/invocations", b'{"inputs": [[0]]}', "mlflow"),
    ("POST", "/api/v1/predict", b'{"symbol": "EURUSD"}', "native"),
    ("POST", "/api/v1/accounts", b'{"name": "sec-oversized", "equity": 1}', "native"),
]
ROUTE_IDS = [f"{method} {path}" for method, path, _, _ in ROUTES]


def padded(body: bytes, size: int) -> bytes:
    """``body`` (still valid JSON) grown to ``size`` bytes with trailing whitespace."""
    body = body or new_user_json()
    assert len(body) <= size
    return body + b" " * (size - len(body))


def in_chunks(body: bytes, chunk: int = 64 * 1024) -> Iterator[bytes]:
    """A generator body: httpx sends it chunked, with no Content-Length."""
    for start in range(0, len(body), chunk):
        yield body[start : start + chunk]


@pytest.mark.parametrize(("method", "path", "body", "shape"), ROUTES, ids=ROUTE_IDS)
def test_oversized_body_with_content_length_is_refused_before_reading(
    admin: httpx.Client, settings: Settings, db: Database, method: str, path: str, body: bytes, shape: str
) -> None:
    content = padded(body, settings.max_body_bytes + 1)
    with users_unchanged(db):
        response = admin.request(method, path, content=content, headers=JSON)
    # The limit is enforced by middleware ahead of every route, so the shape is always native here.
    assert error_of(response, 413, "payload_too_large")["details"] == {
        "max_body_bytes": settings.max_body_bytes
    }


@pytest.mark.parametrize(("method", "path", "body", "shape"), ROUTES, ids=ROUTE_IDS)
def test_oversized_chunked_body_is_refused(
    admin: httpx.Client, settings: Settings, db: Database, method: str, path: str, body: bytes, shape: str
) -> None:
    content = padded(body, settings.max_body_bytes + 1)
    with users_unchanged(db):
        response = admin.request(method, path, content=in_chunks(content), headers=JSON)
    assert "content-length" not in response.request.headers
    assert response.request.headers["transfer-encoding"] == "chunked"
    assert_shaped_error(response, 413, shape, "payload_too_large")


def test_body_at_the_limit_is_accepted(
    live_server: LiveServer, admin: httpx.Client, settings: Settings, db: Database
) -> None:
    """The control for the two tests above: the padding alone is not what gets refused."""
    account = new_account(admin, "sec-at-limit")
    content = padded(b'{"full_name": "exactly at the limit"}', settings.max_body_bytes)
    with httpx.Client(base_url=live_server.url, headers=account.headers, timeout=60) as http:
        chunked = http.put("/api/v1/users/profile", content=in_chunks(content), headers=JSON)
        assert chunked.status_code == 200, chunked.text
        sized = http.put("/api/v1/users/profile", content=content, headers=JSON)
        assert sized.status_code == 200, sized.text
    assert row_of(db, account.user_id)["full_name"] == "exactly at the limit"


DEPTH = 100_000
NESTINGS = {
    "arrays": b"[" * DEPTH + b"]" * DEPTH,
    "unclosed-arrays": b"[" * DEPTH,
    "objects": b'{"a":' * (DEPTH // 2) + b"1" + b"}" * (DEPTH // 2),
}
# (method, path, body template with {} for the nested value, shape, native code)
NESTED_ROUTES: list[tuple[str, str, bytes, str, str]] = [
    ("POST", "/predict", b'{"model": "%s", "features": {}}' % MODEL.encode(), "native", "malformed_json"),
    (
        "POST",
        "/predict/batch",
        b'{"model": "%s", "features_list": {}}' % MODEL.encode(),
        "native",
        "malformed_json",
    ),
    ("POST", "/api/v1/admin/users", b'{"username": {}}', "native", "bad_request"),
    ("PUT", "/api/v1/users/profile", b'{"full_name": {}}', "native", "bad_request"),
    ("POST", "/api/v1/auth/login", b'{"username": {}, "password": "x"}', "native", "bad_request"),
    ("POST", V2_INFER, b'{"inputs": {}}', "v2", ""),
    ("POST", "/invocations", b'{"inputs": {}}', "mlflow", ""),
    ("POST", "/api/v1/predict", b'{"symbol": {}}', "native", "malformed_json"),
    ("POST", "/api/v1/accounts", b'{"name": {}, "equity": 1}', "native", "bad_request"),
]


@pytest.mark.parametrize("nesting", NESTINGS)
@pytest.mark.parametrize(
    ("method", "path", "template", "shape", "code"),
    NESTED_ROUTES,
    ids=[f"{m} {p}" for m, p, *_ in NESTED_ROUTES],
)
def test_deeply_nested_json_is_a_client_error(
    admin: httpx.Client,
    db: Database,
    method: str,
    path: str,
    template: bytes,
    shape: str,
    code: str,
    nesting: str,
) -> None:
    content = template.replace(b"{}", NESTINGS[nesting], 1)
    with users_unchanged(db):
        response = admin.request(method, path, content=content, headers=JSON)
    assert_shaped_error(response, 400, shape, code)


HUGE_INT = "9" * 500


@pytest.mark.parametrize("literal", [HUGE_INT, "-" + HUGE_INT, "1e400", "-1e400", "1e-400000"])
@pytest.mark.parametrize("route", ["/predict", "/predict/batch"])
def test_huge_numbers_in_features_are_refused(
    admin: httpx.Client, db: Database, feature_rows: list[dict[str, float]], route: str, literal: str
) -> None:
    first = next(iter(feature_rows[0]))
    features = {**feature_rows[0], first: "__NUMBER__"}
    body: dict[str, Any] = {"model": MODEL, "features": features}
    if route == "/predict/batch":
        body = {"model": MODEL, "features_list": [features]}
    content = orjson.dumps(body).replace(b'"__NUMBER__"', literal.encode())
    with users_unchanged(db):
        response = admin.post(route, content=content, headers=JSON)
    if literal == "1e-400000":
        # Underflows to 0.0: a legal value, so the row is scored.
        assert response.status_code == 200, response.text
        return
    error = error_of(response, 422, "invalid_features")
    assert error["details"]["errors"][0]["field"].endswith(first)


@pytest.mark.parametrize(
    ("datatype", "literal"),
    [("FP64", "1e400"), ("FP64", HUGE_INT), ("INT64", HUGE_INT), ("INT64", "1" + "0" * 30)],
)
def test_huge_numbers_in_v2_tensors_are_refused(
    admin: httpx.Client, db: Database, datatype: str, literal: str
) -> None:
    data = ",".join([literal] * 16)
    content = b'{"inputs": [{"name": "input", "datatype": "%s", "shape": [1, 16], "data": [%s]}]}' % (
        datatype.encode(),
        data.encode(),
    )
    with users_unchanged(db):
        response = admin.post(V2_INFER, content=content, headers=JSON)
    assert_shaped_error(response, 400, "v2")


@pytest.mark.parametrize("literal", [HUGE_INT, "1e400"])
def test_huge_numbers_in_mlflow_inputs_are_refused(admin: httpx.Client, db: Database, literal: str) -> None:
    content = b'{"inputs": [[%s]]}' % ",".join([literal] * 16).encode()
    with users_unchanged(db):
        response = admin.post("/invocations", content=content, headers=JSON)
    assert_shaped_error(response, 400, "mlflow")


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/api/v1/admin/users", {"offset": "1" + "0" * 30}),
        ("/api/v1/admin/users", {"limit": "1" + "0" * 30}),
        ("/api/v1/admin/audit", {"status": "1" + "0" * 30}),
        ("/api/v1/admin/logs", {"offset": "-" + "1" * 30}),
        ("/api/v1/admin/logs", {"hours": "1" + "0" * 30}),
        ("/models", {"limit": "1" + "0" * 30}),
        (f"/models/{MODEL}/info", {"version": "1" + "0" * 30}),
    ],
)
def test_huge_numbers_in_query_parameters_are_refused(
    admin: httpx.Client, db: Database, path: str, params: dict[str, str]
) -> None:
    with users_unchanged(db):
        response = admin.get(path, params=params)
    error_of(response, 422, "validation_error")


HUGE_ID = 10**30


@pytest.mark.parametrize("method", ["PUT", "DELETE"])
def test_huge_user_id_in_the_path_is_a_client_error(admin: httpx.Client, db: Database, method: str) -> None:
    with users_unchanged(db):
        response = admin.request(method, f"/api/v1/admin/users/{HUGE_ID}", json={"full_name": "x"})
    assert 400 <= response.status_code < 500, response.text


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/predict", {"model": f"models:/{MODEL}/{HUGE_ID}", "features": {}}),
        ("GET", f"/v2/models/{MODEL}/versions/{HUGE_ID}", None),
        ("POST", f"/models/{MODEL}/versions/{HUGE_ID}/invocations", {"inputs": [[0.0]]}),
    ],
)
def test_huge_model_version_is_a_client_error(
    admin: httpx.Client, db: Database, method: str, path: str, body: dict[str, Any] | None
) -> None:
    with users_unchanged(db):
        response = admin.request(method, path, json=body)
    assert 400 <= response.status_code < 500, response.text


BAD_BYTES = b"\xff\xfe\xc3\x28"  # not UTF-8: a BOM-like pair and a broken two-byte sequence
BAD_UTF8_ROUTES: list[tuple[str, str, bytes, str, str]] = [
    ("POST", "/predict", b'{"model": "%s", "features": {}}', "native", "malformed_json"),
    ("POST", "/predict/batch", b'{"model": "%s", "features_list": []}', "native", "malformed_json"),
    ("POST", "/api/v1/admin/users", b'{"username": "%s", "email": "a@b.cd"}', "native", "bad_request"),
    ("PUT", "/api/v1/users/profile", b'{"full_name": "%s"}', "native", "bad_request"),
    ("POST", "/api/v1/auth/login", b'{"username": "%s", "password": "x"}', "native", "bad_request"),
    ("POST", V2_INFER, b'{"inputs": [], "id": "%s"}', "v2", ""),
    ("POST", "/invocations", b'{"inputs": [["%s"]]}', "mlflow", ""),
]


@pytest.mark.parametrize(
    ("method", "path", "template", "shape", "code"),
    BAD_UTF8_ROUTES,
    ids=[f"{m} {p}" for m, p, *_ in BAD_UTF8_ROUTES],
)
def test_non_utf8_body_is_a_client_error(
    admin: httpx.Client, db: Database, method: str, path: str, template: bytes, shape: str, code: str
) -> None:
    with users_unchanged(db):
        response = admin.request(method, path, content=template.replace(b"%s", BAD_BYTES), headers=JSON)
    assert_shaped_error(response, 400, shape, code)


@pytest.mark.parametrize(
    "headers",
    [{"X-API-KEY": BAD_BYTES}, {"Authorization": b"Bearer " + BAD_BYTES}],
    ids=["api-key", "bearer"],
)
def test_non_utf8_credentials_are_refused(
    anonymous: httpx.Client, db: Database, headers: dict[str, bytes]
) -> None:
    with users_unchanged(db):
        response = anonymous.put("/api/v1/users/profile", json={"full_name": "x"}, headers=headers)
    assert_unauthorized(response)


@pytest.mark.parametrize(
    "content", [b"{", NESTINGS["arrays"], BAD_BYTES], ids=["truncated", "nested", "non-utf8"]
)
def test_malformed_repository_index_body_is_a_client_error(
    admin: httpx.Client, db: Database, content: bytes
) -> None:
    with users_unchanged(db):
        response = admin.post("/v2/repository/index", content=content, headers=JSON)
    assert_shaped_error(response, 400, "v2")
