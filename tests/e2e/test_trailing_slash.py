"""Every route answers with and without a trailing slash, and never with a 307 redirect."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from prediction_provider.features.pipeline import FEATURE_NAMES
from tests.conftest import MODEL, Account, LiveServer
from tests.e2e.test_metrics_api import scrape
from tests.unit.test_metrics import requests_of

GETS = [
    ("client", "/health", 200),
    ("client", "/health/ready", 200),
    ("client", "/models", 200),
    ("client", f"/models/{MODEL}/versions", 200),
    ("client", "/api/v1/predictions", 200),
    ("client", "/v2/health/ready", 200),
    ("operator", "/metrics", 200),
]


@pytest.fixture
def http(live_server: LiveServer, accounts: dict[str, Account]) -> Iterator[dict[str, httpx.Client]]:
    """One client per role that never follows a redirect, so a 307 would be seen as one."""
    clients = {
        role: httpx.Client(base_url=live_server.url, headers=accounts[role].headers, timeout=60)
        for role in ("client", "operator", "admin")
    }
    yield clients
    for client in clients.values():
        client.close()


@pytest.mark.parametrize(("role", "path", "status"), GETS)
@pytest.mark.parametrize("slash", ["", "/", "//"])
def test_get_answers_with_and_without_a_trailing_slash(
    http: dict[str, httpx.Client], role: str, path: str, status: int, slash: str
) -> None:
    response = http[role].get(path + slash, follow_redirects=False)
    assert response.status_code == status, (path + slash, response.status_code, response.text[:200])


def post_bodies(feature_rows: list[dict[str, float]]) -> list[tuple[str, str, dict[str, Any], int]]:
    row = feature_rows[0]
    matrix = [[row[name] for name in FEATURE_NAMES]]
    tensor = {"name": "x", "datatype": "FP64", "shape": [1, len(FEATURE_NAMES)], "data": matrix}
    return [
        ("client", "/predict", {"model": MODEL, "features": row}, 200),
        ("client", "/predict/batch", {"model": MODEL, "features_list": [row, row]}, 200),
        ("client", "/api/v1/predictions", {"model": MODEL, "features": row}, 202),
        ("client", "/predict/async", {"model": MODEL, "features": row}, 202),
        ("client", f"/v2/models/{MODEL}/infer", {"inputs": [tensor]}, 200),
        ("client", "/invocations", {"dataframe_records": [row]}, 200),
    ]


@pytest.mark.parametrize("index", range(6))
@pytest.mark.parametrize("slash", ["", "/"])
def test_post_answers_with_and_without_a_trailing_slash(
    http: dict[str, httpx.Client], feature_rows: list[dict[str, float]], index: int, slash: str
) -> None:
    role, path, body, status = post_bodies(feature_rows)[index]
    response = http[role].post(path + slash, json=body, follow_redirects=False)
    assert response.status_code == status, (path + slash, response.status_code, response.text[:200])


def test_admin_creates_a_user_through_a_path_with_a_slash(http: dict[str, httpx.Client]) -> None:
    username = f"slash-{secrets.token_hex(4)}"
    body = {"username": username, "email": f"{username}@example.com", "password": "a-long-password-1"}
    response = http["admin"].post("/api/v1/admin/users/", json=body, follow_redirects=False)
    assert response.status_code == 201, response.text
    assert response.json()["username"] == username


def test_a_slashed_path_counts_under_the_routes_own_label(
    http: dict[str, httpx.Client], live_server: LiveServer, feature_rows: list[dict[str, float]]
) -> None:
    operator = dict(http["operator"].headers)
    before = scrape(live_server.url, operator)
    for _ in range(3):
        response = http["client"].post("/predict/", json={"model": MODEL, "features": feature_rows[1]})
        assert response.status_code == 200
    after = scrape(live_server.url, operator)
    assert requests_of(after, "/predict", "POST", 200) - requests_of(before, "/predict", "POST", 200) == 3
    assert not [labels for _, labels in after if dict(labels).get("route", "").endswith("/predict/")]


def test_an_unknown_path_with_a_slash_is_still_404(http: dict[str, httpx.Client]) -> None:
    assert http["client"].get("/no/such/route/", follow_redirects=False).status_code == 404
