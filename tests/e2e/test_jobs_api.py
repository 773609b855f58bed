"""Asynchronous predictions over HTTP with the embedded executor: lifecycle, ownership, batch scoring."""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest

from prediction_provider.app import account_service
from prediction_provider.config import Settings
from tests.conftest import MODEL, Account, LiveServer


def wait_for(http: httpx.Client, path: str, done: set[str], key: str = "status") -> dict[str, Any]:
    """Poll until the job reaches one of ``done``; fail with its last state after 60 s."""
    deadline = time.monotonic() + 60
    while True:
        body: dict[str, Any] = http.get(path).json()
        if body.get(key) in done:
            return body
        assert time.monotonic() < deadline, f"still {body.get(key)} after 60 s: {body}"
        time.sleep(0.05)


def finished(http: httpx.Client, job_id: str) -> dict[str, Any]:
    return wait_for(http, f"/api/v1/predictions/{job_id}", {"completed", "failed", "cancelled"})


def test_submitted_prediction_completes_with_the_same_answer_as_predict(
    client: httpx.Client, feature_rows: list[dict[str, float]]
) -> None:
    body = {"model": MODEL, "features_list": feature_rows[:5], "return_proba": True}
    submitted = client.post("/api/v1/predictions", json=body)
    assert submitted.status_code == 202
    assert submitted.json()["status"] == "pending"
    job = finished(client, submitted.json()["id"])
    assert job["status"] == "completed", job
    direct = client.post("/predict/batch", json=body).json()
    assert job["result"]["predictions"] == direct["predictions"]
    assert job["result"]["probabilities"] == direct["probabilities"]
    assert job["model"]["name"] == MODEL
    assert job["model"]["version"] == direct["model"]["version"]
    assert job["attempts"] == 1
    assert job["progress"] == 100.0
    assert job["duration_ms"] >= 0
    assert len(job["input_hash"]) == 64


def test_predict_async_is_polled_until_success_with_predicts_shape(
    client: httpx.Client, feature_rows: list[dict[str, float]]
) -> None:
    body = {"model": MODEL, "features": feature_rows[0], "return_proba": True}
    accepted = client.post("/predict/async", json=body)
    assert accepted.status_code == 202
    task_id = accepted.json()["task_id"]
    status = wait_for(client, f"/monitoring/task_status/{task_id}", {"SUCCESS", "FAILURE"})
    assert status["status"] == "SUCCESS", status
    direct = client.post("/predict", json=body).json()
    assert status["result"]["prediction"] == direct["prediction"]
    assert status["result"]["probabilities"] == direct["probabilities"]
    assert set(status["result"]) == set(direct)


def test_idempotency_key_returns_the_first_job(
    client: httpx.Client, feature_rows: list[dict[str, float]]
) -> None:
    body = {"model": MODEL, "features": feature_rows[1]}
    headers = {"Idempotency-Key": f"retry-{time.monotonic_ns()}"}
    first = client.post("/api/v1/predictions", json=body, headers=headers)
    again = client.post("/api/v1/predictions", json=body, headers=headers)
    assert first.status_code == again.status_code == 202
    # The API-wide Idempotency-Key contract: the retry is the very first answer, replayed.
    assert again.content == first.content
    assert again.headers["Idempotency-Replayed"] == "true"
    reused = client.post(
        "/api/v1/predictions", json={"model": MODEL, "features": feature_rows[2]}, headers=headers
    )
    assert reused.status_code == 422
    assert reused.json()["error"]["code"] == "idempotency_key_reused"


def test_a_failed_job_says_why(client: httpx.Client) -> None:
    submitted = client.post("/api/v1/predictions", json={"model": MODEL, "features": {"ret_1": 1.0}})
    job = finished(client, submitted.json()["id"])
    assert job["status"] == "failed"
    assert job["error"]["code"] == "invalid_features"
    assert job["result"] is None


def test_bad_submits_answer_4xx_and_store_nothing(
    client: httpx.Client, feature_rows: list[dict[str, float]]
) -> None:
    before = client.get("/api/v1/predictions").json()["total"]
    cases = [
        ({"model": "no-such-model", "features": feature_rows[0]}, 404),
        ({"model": MODEL}, 422),
        ({"model": MODEL, "features": feature_rows[0], "features_list": feature_rows[:2]}, 422),
        ({"model": MODEL, "features": feature_rows[0], "data_as_of": "2024-01-01T00:00:00"}, 422),
    ]
    for body, status in cases:
        response = client.post("/api/v1/predictions", json=body)
        assert response.status_code == status, (body, response.text)
        assert "error" in response.json()
    assert (
        client.post(
            "/api/v1/predictions", content=b"{", headers={"content-type": "application/json"}
        ).status_code
        == 400
    )
    assert client.get("/api/v1/predictions").json()["total"] == before
    assert client.get("/api/v1/predictions/not-a-job").status_code == 404


def test_clients_see_only_their_own_jobs_and_operators_see_all(
    live_server: LiveServer, accounts: dict[str, Account], feature_rows: list[dict[str, float]]
) -> None:
    with (
        httpx.Client(base_url=live_server.url, headers=accounts["client"].headers) as owner,
        httpx.Client(base_url=live_server.url, headers=accounts["provider"].headers) as other,
        httpx.Client(base_url=live_server.url, headers=accounts["operator"].headers) as operator,
    ):
        job_id = owner.post("/api/v1/predictions", json={"model": MODEL, "features": feature_rows[3]}).json()[
            "id"
        ]
        assert other.get(f"/api/v1/predictions/{job_id}").status_code == 404
        assert other.delete(f"/api/v1/predictions/{job_id}").status_code == 404
        assert job_id not in {job["id"] for job in other.get("/api/v1/predictions").json()["items"]}
        assert operator.get(f"/api/v1/predictions/{job_id}").status_code == 200
        listed = operator.get(
            "/api/v1/predictions", params={"owner_id": accounts["client"].user_id, "limit": 500}
        )
        assert job_id in {job["id"] for job in listed.json()["items"]}
        assert operator.delete(f"/api/v1/predictions/{job_id}").status_code == 404  # may look, not touch
        assert (
            operator.post(
                "/api/v1/predictions", json={"model": MODEL, "features": feature_rows[3]}
            ).status_code
            == 403
        )


def test_listing_filters_and_pages(client: httpx.Client, feature_rows: list[dict[str, float]]) -> None:
    ids = [
        client.post("/api/v1/predictions", json={"model": MODEL, "features": row}).json()["id"]
        for row in feature_rows[:3]
    ]
    for job_id in ids:
        finished(client, job_id)
    page = client.get(
        "/api/v1/predictions", params={"limit": 2, "status": "completed", "model": MODEL}
    ).json()
    assert page["limit"] == 2
    assert len(page["items"]) == 2
    assert page["total"] >= 3
    assert all(job["status"] == "completed" for job in page["items"])
    created = [job["created_at"] for job in page["items"]]
    assert created == sorted(created, reverse=True)
    second = client.get(
        "/api/v1/predictions", params={"limit": 2, "offset": 2, "status": "completed", "model": MODEL}
    ).json()
    assert not {job["id"] for job in page["items"]} & {job["id"] for job in second["items"]}
    future = client.get("/api/v1/predictions", params={"created_after": "2999-01-01T00:00:00Z"}).json()
    assert future["total"] == 0
    assert client.get("/api/v1/predictions", params={"status": "stuck"}).status_code == 422
    assert client.get("/api/v1/predictions", params={"limit": 0}).status_code == 422


@pytest.fixture
def paused_server(settings: Settings, tmp_path: Path) -> Iterator[httpx.Client]:
    """A server whose executor runs no jobs, so they stay pending.

    On a database of its own (SQLite, whatever the suite runs on): the suite's shared
    server polls the shared database every second and would run a job left pending there.
    """
    own = settings.model_copy(
        update={"job_workers": 0, "database_url": f"sqlite:///{tmp_path / 'paused.db'}"}
    )
    service = account_service(own)
    user = service.create_user(
        "paused-client", "paused@example.com", "paused-password-123", "client", active=True
    )
    key = service.regenerate_api_key(user["id"])["api_key"]
    service.db.dispose()
    with (
        LiveServer(own) as server,
        httpx.Client(base_url=server.url, headers={"X-API-KEY": key}, timeout=60) as http,
    ):
        yield http


def test_pending_jobs_can_be_changed_and_cancelled(
    paused_server: httpx.Client, feature_rows: list[dict[str, float]]
) -> None:
    submitted = paused_server.post("/api/v1/predictions", json={"model": MODEL, "features": feature_rows[0]})
    assert submitted.status_code == 202, submitted.text
    job_id = submitted.json()["id"]
    changed = paused_server.put(
        f"/api/v1/predictions/{job_id}",
        json={"model": MODEL, "features": feature_rows[1], "return_proba": True},
    )
    assert changed.status_code == 200, changed.text
    cancelled = paused_server.delete(f"/api/v1/predictions/{job_id}")
    assert cancelled.json()["status"] == "cancelled"
    again = paused_server.delete(f"/api/v1/predictions/{job_id}")
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "job_state_conflict"
    late = paused_server.put(
        f"/api/v1/predictions/{job_id}", json={"model": MODEL, "features": feature_rows[2]}
    )
    assert late.status_code == 409
    status = paused_server.get(f"/monitoring/task_status/{job_id}").json()
    assert status["status"] == "REVOKED"


def _dataset(feature_rows: list[dict[str, float]], copies: int) -> pd.DataFrame:
    frame = pd.DataFrame(feature_rows * copies)
    frame.insert(0, "row_id", [f"r{i}" for i in range(len(frame))])
    return frame


def test_uploaded_dataset_is_scored_in_chunks_and_downloaded(
    client: httpx.Client, feature_rows: list[dict[str, float]]
) -> None:
    frame = _dataset(feature_rows, 3)  # 600 rows
    upload = {"file": ("rows.csv", frame.to_csv(index=False).encode(), "text/csv")}
    submitted = client.post(
        "/api/v1/predictions/batch", files=upload, data={"model": MODEL, "chunk_rows": "128"}
    )
    assert submitted.status_code == 202, submitted.text
    job = finished(client, submitted.json()["id"])
    assert job["status"] == "completed", job
    assert job["result"] == {"rows": 600, "chunks": 5, "files": ["predictions.parquet"]}
    assert job["progress"] == 100.0
    download = client.get(job["files"]["predictions.parquet"])
    assert download.status_code == 200
    scored = pd.read_parquet(io.BytesIO(download.content))
    assert list(scored["row_id"]) == list(frame["row_id"])
    direct = client.post(
        "/predict/batch", json={"model": MODEL, "features_list": feature_rows, "return_proba": True}
    )
    assert list(scored["prediction"][:200]) == direct.json()["predictions"]
    first_proba = {c.removeprefix("proba_"): scored[c][0] for c in scored.columns if c.startswith("proba_")}
    assert first_proba == pytest.approx(direct.json()["probabilities"][0])


def test_dataset_by_path_must_lie_under_the_data_roots(
    client: httpx.Client, settings: Settings, feature_rows: list[dict[str, float]], tmp_path: Path
) -> None:
    datasets_dir = settings.data_dir / "datasets"
    datasets_dir.mkdir(parents=True, exist_ok=True)
    _dataset(feature_rows, 1).to_parquet(datasets_dir / "rows.parquet")
    accepted = client.post("/api/v1/predictions/batch", json={"model": MODEL, "dataset_path": "rows.parquet"})
    assert accepted.status_code == 202, accepted.text
    job = finished(client, accepted.json()["id"])
    assert job["result"]["rows"] == 200
    outside = tmp_path / "rows.parquet"
    _dataset(feature_rows, 1).to_parquet(outside)
    for path in (str(outside), "../../etc/passwd.csv", "../provider.db"):
        refused = client.post("/api/v1/predictions/batch", json={"model": MODEL, "dataset_path": path})
        assert refused.status_code == 422, (path, refused.text)
    missing = client.post("/api/v1/predictions/batch", json={"model": MODEL, "dataset_path": "nope.csv"})
    assert missing.status_code == 404


def test_a_dataset_missing_feature_columns_fails_with_their_names(
    client: httpx.Client, feature_rows: list[dict[str, float]]
) -> None:
    frame = _dataset(feature_rows, 1).drop(columns=["rsi_14", "macd"])
    upload = {"file": ("rows.csv", frame.to_csv(index=False).encode(), "text/csv")}
    job = finished(
        client, client.post("/api/v1/predictions/batch", files=upload, data={"model": MODEL}).json()["id"]
    )
    assert job["status"] == "failed"
    fields = {error["field"] for error in job["error"]["details"]["errors"]}
    assert fields == {"columns.rsi_14", "columns.macd"}
    assert job["files"] == {}


def test_bad_uploads_are_refused(client: httpx.Client) -> None:
    no_file = client.post("/api/v1/predictions/batch", data={"model": MODEL}, files={"other": ("x", b"1")})
    assert no_file.status_code == 422
    wrong_type = client.post(
        "/api/v1/predictions/batch", files={"file": ("x.exe", b"MZ")}, data={"model": MODEL}
    )
    assert wrong_type.status_code == 422
    bad_chunks = client.post(
        "/api/v1/predictions/batch",
        files={"file": ("x.csv", b"a\n1\n")},
        data={"model": MODEL, "chunk_rows": "-1"},
    )
    assert bad_chunks.status_code == 422


def test_downloads_are_confined_to_the_jobs_own_files(
    client: httpx.Client,
    live_server: LiveServer,
    accounts: dict[str, Account],
    feature_rows: list[dict[str, float]],
) -> None:
    upload = {"file": ("rows.csv", _dataset(feature_rows, 1).to_csv(index=False).encode(), "text/csv")}
    job = finished(
        client, client.post("/api/v1/predictions/batch", files=upload, data={"model": MODEL}).json()["id"]
    )
    base = f"/api/v1/predictions/{job['id']}/download"
    assert client.get(f"{base}/..%2F..%2Fprovider.db").status_code == 404
    assert client.get(f"{base}/part-000000.parquet").status_code == 404
    with httpx.Client(base_url=live_server.url, headers=accounts["provider"].headers) as other:
        assert other.get(f"{base}/predictions.parquet").status_code == 404


def test_queue_and_workers_are_visible_to_operators_only(
    live_server: LiveServer, accounts: dict[str, Account]
) -> None:
    with httpx.Client(base_url=live_server.url, headers=accounts["operator"].headers) as operator:
        queue = operator.get("/monitoring/queue").json()
        assert queue["backend"] == "inprocess"
        assert {"pending", "active", "scheduled", "completed", "failed", "cancelled"} <= set(queue)
        workers = operator.get("/monitoring/workers").json()
        assert workers["workers"][0]["queues"] == ["database"]
    with httpx.Client(base_url=live_server.url, headers=accounts["client"].headers) as client:
        assert client.get("/monitoring/queue").status_code == 403
    with httpx.Client(base_url=live_server.url) as anonymous:
        assert anonymous.get("/monitoring/workers").status_code == 401
