"""``GET /api/v1/predictions/{id}/events``: a job's stored transitions, to whoever may read the job."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import MODEL, Account, LiveServer
from tests.e2e.test_jobs_api import finished
from tests.security.support import error_of


def client_of(server: LiveServer, account: Account) -> httpx.Client:
    return httpx.Client(base_url=server.url, headers=account.headers, timeout=60)


@pytest.fixture
def completed_job(client: httpx.Client, feature_rows: list[dict[str, float]]) -> str:
    submitted = client.post("/api/v1/predictions", json={"model": MODEL, "features": feature_rows[0]})
    assert submitted.status_code == 202, submitted.text
    assert submitted.json()["links"]["events"] == f"/api/v1/predictions/{submitted.json()['id']}/events"
    job_id: str = submitted.json()["id"]
    assert finished(client, job_id)["status"] == "completed"
    return job_id


@pytest.fixture
def admin(live_server: LiveServer, accounts: dict[str, Account]) -> Iterator[httpx.Client]:
    with client_of(live_server, accounts["admin"]) as http:
        yield http


def test_the_owner_reads_the_jobs_history_oldest_first(client: httpx.Client, completed_job: str) -> None:
    response = client.get(f"/api/v1/predictions/{completed_job}/events")
    assert response.status_code == 200, response.text
    page = response.json()
    assert (page["total"], page["limit"], page["offset"]) == (3, 100, 0)
    moves = [(event["from_status"], event["status"]) for event in page["items"]]
    assert moves == [(None, "pending"), ("pending", "processing"), ("processing", "completed")]
    assert page["items"][0]["detail"] == "submitted"
    times = [event["at"] for event in page["items"]]
    assert times == sorted(times)
    assert all(event["worker"] is None for event in page["items"])  # worker names are for operators


def test_events_page_with_limit_and_offset(client: httpx.Client, completed_job: str) -> None:
    page = client.get(f"/api/v1/predictions/{completed_job}/events", params={"limit": 1, "offset": 1}).json()
    assert page["total"] == 3
    assert [(e["from_status"], e["status"]) for e in page["items"]] == [("pending", "processing")]
    error_of(
        client.get(f"/api/v1/predictions/{completed_job}/events", params={"page": 2}), 422, "validation_error"
    )


def test_admins_and_operators_read_any_jobs_history_with_its_workers(
    live_server: LiveServer, accounts: dict[str, Account], completed_job: str
) -> None:
    for role in ("admin", "operator"):
        with client_of(live_server, accounts[role]) as http:
            items = http.get(f"/api/v1/predictions/{completed_job}/events").json()["items"]
        assert [event["status"] for event in items] == ["pending", "processing", "completed"]
        assert items[1]["worker"], role


def test_someone_elses_job_history_is_a_404_like_the_job(
    live_server: LiveServer, accounts: dict[str, Account], completed_job: str, anonymous: httpx.Client
) -> None:
    with client_of(live_server, accounts["provider"]) as other:
        job = error_of(other.get(f"/api/v1/predictions/{completed_job}"), 404, "job_not_found")
        events = error_of(other.get(f"/api/v1/predictions/{completed_job}/events"), 404, "job_not_found")
    assert job["message"] == events["message"]
    error_of(anonymous.get(f"/api/v1/predictions/{completed_job}/events"), 401, "unauthorized")
    error_of(anonymous.get(f"/api/v1/predictions/{completed_job}"), 401, "unauthorized")
