"""``PP_REQUIRE_AUTH=false``: an anonymous caller reads back its own jobs with their read token, and
nobody else's; anonymous Idempotency-Keys are scoped by the caller's address."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pandas as pd
import pytest

from prediction_provider.config import Settings
from prediction_provider.db.models import PredictionJob
from tests.conftest import MODEL, Account, LiveServer
from tests.security.support import error_of

JOB_TOKEN = "X-Job-Token"


@pytest.fixture(scope="module")
def open_server(settings: Settings, accounts: dict[str, Account]) -> Iterator[LiveServer]:
    with LiveServer(settings.model_copy(update={"require_auth": False})) as server:
        yield server


def guest_at(server: LiveServer, address: str = "127.0.0.1") -> httpx.Client:
    """An anonymous client whose connections come from ``address`` (any 127.x address is loopback)."""
    transport = httpx.HTTPTransport(local_address=address)
    return httpx.Client(base_url=server.url, transport=transport, timeout=60)


@pytest.fixture
def guest(open_server: LiveServer) -> Iterator[httpx.Client]:
    with guest_at(open_server) as http:
        yield http


def until_done(http: httpx.Client, path: str, token: str, key: str, done: set[str]) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while True:
        response = http.get(path, headers={JOB_TOKEN: token})
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        if body[key] in done:
            return body
        assert time.monotonic() < deadline, body
        time.sleep(0.05)


def submit(http: httpx.Client, rows: list[dict[str, float]], **headers: str) -> dict[str, Any]:
    response = http.post("/api/v1/predictions", json={"model": MODEL, "features_list": rows}, headers=headers)
    assert response.status_code == 202, response.text
    body: dict[str, Any] = response.json()
    return body


def test_an_anonymous_job_is_read_back_with_its_token_and_only_with_it(
    guest: httpx.Client, open_server: LiveServer, feature_rows: list[dict[str, float]]
) -> None:
    mine, theirs = submit(guest, feature_rows[:2]), submit(guest, feature_rows[2:4])
    token = mine["read_token"]
    assert token.startswith("ppj_")
    assert len(token) >= 40
    assert token != theirs["read_token"]
    path = f"/api/v1/predictions/{mine['id']}"
    job = until_done(guest, path, token, "status", {"completed", "failed"})
    assert job["status"] == "completed"
    assert len(job["result"]["predictions"]) == 2
    events = guest.get(f"{path}/events", headers={JOB_TOKEN: token})
    assert [e["status"] for e in events.json()["items"]] == ["pending", "processing", "completed"]
    for headers in ({}, {JOB_TOKEN: theirs["read_token"]}, {JOB_TOKEN: token[:-1] + "x"}):
        error_of(guest.get(path, headers=headers), 404, "job_not_found")
        error_of(guest.get(f"{path}/events", headers=headers), 404, "job_not_found")
    # Reading is all a token allows: no cancelling, no listing.
    error_of(guest.delete(path, headers={JOB_TOKEN: token}), 401, "unauthorized")
    error_of(guest.get("/api/v1/predictions", headers={JOB_TOKEN: token}), 401, "unauthorized")
    # Only the digest is stored.
    with open_server.services.db.session() as session:
        row = session.get(PredictionJob, mine["id"])
        assert row is not None
        assert row.read_token_digest == hashlib.sha256(token.encode()).hexdigest()
        assert token not in repr({c.name: getattr(row, c.name) for c in PredictionJob.__table__.columns})


def test_an_anonymous_async_prediction_is_polled_with_its_token(
    guest: httpx.Client, feature_rows: list[dict[str, float]]
) -> None:
    accepted = guest.post("/predict/async", json={"model": MODEL, "features": feature_rows[0]})
    assert accepted.status_code == 202, accepted.text
    task_id, token = accepted.json()["task_id"], accepted.json()["read_token"]
    path = f"/monitoring/task_status/{task_id}"
    status = until_done(guest, path, token, "status", {"SUCCESS", "FAILURE"})
    assert status["status"] == "SUCCESS"
    error_of(guest.get(path), 404, "job_not_found")


def test_an_anonymous_batch_job_and_its_result_file_are_read_with_its_token(
    guest: httpx.Client, feature_rows: list[dict[str, float]]
) -> None:
    frame = pd.DataFrame(feature_rows[:50])
    upload = {"file": ("rows.csv", frame.to_csv(index=False).encode(), "text/csv")}
    accepted = guest.post("/api/v1/predictions/batch", files=upload, data={"model": MODEL})
    assert accepted.status_code == 202, accepted.text
    token = accepted.json()["read_token"]
    path = f"/api/v1/predictions/{accepted.json()['id']}"
    job = until_done(guest, path, token, "status", {"completed", "failed"})
    assert job["status"] == "completed", job
    download = job["files"]["predictions.parquet"]
    assert guest.get(download, headers={JOB_TOKEN: token}).status_code == 200
    error_of(guest.get(download), 404, "job_not_found")


def test_anonymous_idempotency_keys_are_scoped_by_address(
    open_server: LiveServer, feature_rows: list[dict[str, float]]
) -> None:
    key = f"order-{time.monotonic_ns()}"
    with guest_at(open_server, "127.0.0.1") as first, guest_at(open_server, "127.0.0.2") as second:
        mine = submit(first, feature_rows[:1], **{"Idempotency-Key": key})
        other = submit(second, feature_rows[:1], **{"Idempotency-Key": key})
        assert other["id"] != mine["id"]
        assert other["created"] is True
        # A retry from the same address is the same job, and answers a fresh token for it:
        # the first answer may be exactly what the client lost.
        retry = submit(first, feature_rows[:1], **{"Idempotency-Key": key})
        assert (retry["id"], retry["created"]) == (mine["id"], False)
        path = f"/api/v1/predictions/{mine['id']}"
        assert first.get(path, headers={JOB_TOKEN: retry["read_token"]}).status_code == 200
        error_of(first.get(path, headers={JOB_TOKEN: mine["read_token"]}), 404, "job_not_found")
        error_of(second.get(path, headers={JOB_TOKEN: other["read_token"]}), 404, "job_not_found")


def test_signed_in_callers_get_no_token_and_read_their_jobs_as_before(
    open_server: LiveServer, accounts: dict[str, Account], feature_rows: list[dict[str, float]]
) -> None:
    with httpx.Client(base_url=open_server.url, headers=accounts["client"].headers, timeout=60) as client:
        body = submit(client, feature_rows[:1])
        assert body["read_token"] is None
        assert client.get(f"/api/v1/predictions/{body['id']}").status_code == 200
    with guest_at(open_server) as guest:
        error_of(guest.get(f"/api/v1/predictions/{body['id']}"), 404, "job_not_found")
