"""The Jobs page over HTTP: who sees which jobs, filters, a job's timeline, cancel and the live stream."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from prediction_provider.app import account_service
from prediction_provider.config import Settings
from tests.conftest import MODEL, Account, LiveServer
from tests.dashboard_client import DashboardClient
from tests.e2e.test_jobs_api import finished


def second_client(services: Any, tag: str) -> Account:
    """Another client account, made through the accounts service as an admin would."""
    name = f"jobs-{tag}-{uuid.uuid4().hex[:8]}"
    password = f"{name}-password-1"
    user = services.accounts.create_user(name, f"{name}@example.com", password, "client", active=True)
    key = services.accounts.regenerate_api_key(user["id"])["api_key"]
    return Account(user["username"], password, key, user["id"])


def submit(url: str, account: Account, features: dict[str, float], key: str | None = None) -> str:
    headers = {**account.headers, **({"Idempotency-Key": key} if key else {})}
    with httpx.Client(base_url=url, headers=headers, timeout=60) as http:
        answer = http.post("/api/v1/predictions", json={"model": MODEL, "features": features})
        assert answer.status_code == 202, answer.text
        return str(answer.json()["id"])


def job_ids(html: str) -> set[str]:
    return set(re.findall(r'data-job-id="([0-9a-f-]{36})"', html))


@pytest.fixture(scope="module")
def two_jobs(
    live_server: LiveServer, accounts: dict[str, Account], feature_rows: list[dict[str, float]]
) -> tuple[Account, str, str]:
    """A finished job of the test client and one of a second client."""
    other = second_client(live_server.services, "other")
    mine = submit(live_server.url, accounts["client"], feature_rows[5], key=f"dash-{uuid.uuid4().hex}")
    theirs = submit(live_server.url, other, feature_rows[6])
    with httpx.Client(base_url=live_server.url, headers=accounts["client"].headers, timeout=60) as http:
        finished(http, mine)
    with httpx.Client(base_url=live_server.url, headers=other.headers, timeout=60) as http:
        finished(http, theirs)
    return other, mine, theirs


def test_a_client_sees_its_own_jobs_and_an_operator_sees_both(
    live_server: LiveServer, accounts: dict[str, Account], two_jobs: tuple[Account, str, str]
) -> None:
    other, mine, theirs = two_jobs
    client = accounts["client"]
    with DashboardClient(live_server.url, username=client.username, password=client.password) as dash:
        page = dash.get("/dashboard/jobs")
        assert page.status_code == 200, page.text
        assert mine in job_ids(page.text)
        assert theirs not in job_ids(page.text)
        assert 'name="owner_id"' not in page.text  # the owner filter is for read_all_jobs only
        # Asking for another owner's jobs changes nothing, exactly as the API narrows it.
        narrowed = dash.get("/dashboard/jobs", params={"owner_id": str(other.user_id)})
        assert theirs not in job_ids(narrowed.text)
        assert dash.get(f"/dashboard/jobs/{theirs}").status_code == 404
        assert dash.get(f"/dashboard/jobs/{mine}").status_code == 200
    operator = accounts["operator"]
    with DashboardClient(live_server.url, username=operator.username, password=operator.password) as dash:
        page = dash.get("/dashboard/jobs", params={"owner_id": str(other.user_id)})
        assert page.status_code == 200
        assert theirs in job_ids(page.text)
        assert mine not in job_ids(page.text)
        both = job_ids(dash.get("/dashboard/jobs", params={"model": MODEL}).text)
        assert {mine, theirs} <= both
        assert 'data-queue="pending"' in page.text  # /monitoring/queue's figures
        assert dash.get(f"/dashboard/jobs/{theirs}").status_code == 200


def test_filtering_by_state_shows_only_that_state(
    live_server: LiveServer, accounts: dict[str, Account], two_jobs: tuple[Account, str, str]
) -> None:
    _, mine, _ = two_jobs
    client = accounts["client"]
    with DashboardClient(live_server.url, username=client.username, password=client.password) as dash:
        completed = dash.get("/dashboard/jobs", params={"status": "completed"})
        assert mine in job_ids(completed.text)
        states = set(re.findall(r'<tr data-job-id="[^"]+" data-status="([a-z]+)"', completed.text))
        assert states == {"completed"}
        failed = dash.get("/dashboard/jobs", params={"status": "failed"})
        assert mine not in job_ids(failed.text)
        assert dash.get("/dashboard/jobs", params={"status": "stuck"}).status_code == 422
        assert dash.get("/dashboard/jobs", params={"page": "2"}).status_code == 422


def test_job_detail_shows_its_lifecycle_from_the_events(
    live_server: LiveServer, accounts: dict[str, Account], two_jobs: tuple[Account, str, str]
) -> None:
    _, mine, _ = two_jobs
    client = accounts["client"]
    with (
        DashboardClient(live_server.url, username=client.username, password=client.password) as dash,
        httpx.Client(base_url=live_server.url, headers=client.headers, timeout=60) as api,
    ):
        page = dash.get(f"/dashboard/jobs/{mine}")
        events = api.get(f"/api/v1/predictions/{mine}/events").json()["items"]
        job = api.get(f"/api/v1/predictions/{mine}").json()
    assert page.status_code == 200
    for step in ("submitted", "queued", "started", "completed"):
        assert f'data-step="{step}" data-at=' in page.text, step
    assert [e["status"] for e in events] == re.findall(r'<tr data-event="([a-z]+)"', page.text)
    assert f'data-attempts="{job["attempts"]}"' in page.text
    assert 'data-idempotency-key="dash-' in page.text
    assert 'value="100.00"' in page.text  # the progress bar of a completed job is full
    assert "/api/v1/predictions/" in page.text  # "view as API"


@pytest.fixture
def paused(settings: Settings, tmp_path: Path) -> Iterator[tuple[LiveServer, Account, Account]]:
    """A server that runs no jobs (its own database), so they stay pending to be cancelled."""
    own = settings.model_copy(update={"job_workers": 0, "database_url": f"sqlite:///{tmp_path / 'p.db'}"})
    made = []
    service = account_service(own)
    for name in ("paused-owner", "paused-other"):
        password = f"{name}-password-1"
        user = service.create_user(name, f"{name}@example.com", password, "client", active=True)
        key = service.regenerate_api_key(user["id"])["api_key"]
        made.append(Account(name, password, key, user["id"]))
    service.db.dispose()
    with LiveServer(own) as server:
        yield server, made[0], made[1]


# A server started inside a test builds some routes lazily on its first request, under the test's
# warnings-as-errors; pydantic warns about an alias on a few API routes' parameters (not these pages').
@pytest.mark.filterwarnings("ignore::pydantic.warnings.UnsupportedFieldAttributeWarning")
def test_cancel_needs_the_csrf_token_and_the_owner(
    paused: tuple[LiveServer, Account, Account], feature_rows: list[dict[str, float]]
) -> None:
    server, owner, other = paused
    job_id = submit(server.url, owner, feature_rows[0])
    path = f"/dashboard/jobs/{job_id}/cancel"
    with (
        DashboardClient(server.url, username=owner.username, password=owner.password) as dash,
        httpx.Client(base_url=server.url, headers=owner.headers, timeout=60) as api,
    ):
        detail = dash.get(f"/dashboard/jobs/{job_id}")
        assert f'action="{path}"' in detail.text
        refused = dash.post(path, data={})
        assert refused.status_code == 403
        assert api.get(f"/api/v1/predictions/{job_id}").json()["status"] == "pending"
        with (
            DashboardClient(server.url, username=other.username, password=other.password) as stranger,
            httpx.Client(base_url=server.url, headers=other.headers, timeout=60) as stranger_api,
        ):
            # The API's DELETE answers 404 for someone else's job: so does the form.
            answer = stranger.post(path, data={"csrf_token": stranger.csrf("/dashboard/jobs")})
            assert answer.status_code == stranger_api.delete(f"/api/v1/predictions/{job_id}").status_code
            assert answer.status_code == 404
        assert api.get(f"/api/v1/predictions/{job_id}").json()["status"] == "pending"
        done = dash.post(path, data={"csrf_token": dash.csrf(f"/dashboard/jobs/{job_id}")})
        assert done.status_code == 303
        assert done.headers["location"] == f"/dashboard/jobs/{job_id}"
        assert api.get(f"/api/v1/predictions/{job_id}").json()["status"] == "cancelled"
        again = dash.post(path, data={"csrf_token": dash.csrf(f"/dashboard/jobs/{job_id}")})
        assert again.status_code == api.delete(f"/api/v1/predictions/{job_id}").status_code == 409
        retried = dash.post(
            f"/dashboard/jobs/{job_id}/retry", data={"csrf_token": dash.csrf(f"/dashboard/jobs/{job_id}")}
        )
        assert retried.status_code == 303
        new_id = retried.headers["location"].rsplit("/", 1)[1]
        assert new_id != job_id
        resubmitted = api.get(f"/api/v1/predictions/{new_id}").json()
        assert resubmitted["status"] == "pending"
        assert resubmitted["input_hash"] == api.get(f"/api/v1/predictions/{job_id}").json()["input_hash"]


def test_the_stream_answers_events_to_a_viewer_and_401_json_without_a_session(
    live_server: LiveServer, accounts: dict[str, Account]
) -> None:
    client = accounts["client"]
    with httpx.Client(base_url=live_server.url, timeout=10) as anonymous:
        refused = anonymous.get("/dashboard/stream/jobs")
        assert refused.status_code == 401
        assert refused.headers["content-type"].startswith("application/json")
        assert "error" in refused.json()
    with DashboardClient(live_server.url, username=client.username, password=client.password) as dash:
        headers = dash.cookie
        with dash.http.stream("GET", "/dashboard/stream/jobs?status=completed", headers=headers) as stream:
            assert stream.status_code == 200
            assert stream.headers["content-type"].startswith("text/event-stream")
            deadline = time.monotonic() + 20
            seen = ""
            for chunk in stream.iter_text():
                seen += chunk
                if "event: jobs-table" in seen or time.monotonic() > deadline:
                    break
            assert "event: jobs-table" in seen
