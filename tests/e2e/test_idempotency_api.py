"""The Idempotency-Key contract over HTTP on the live server: a replay is the first answer with
``Idempotency-Replayed: true``, another body under the key is 422, a first request in flight is
409, and a refusal stores nothing. The "in flight" window is held open by claiming the key in the
store directly, as the middleware would, so the concurrency cases do not depend on timing."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from prediction_provider.config import Settings
from prediction_provider.db.models import PredictionJob
from prediction_provider.idempotency import IdempotencyStore, Started
from tests.conftest import MODEL, Account, LiveServer, live_settings

SUBMIT = "/api/v1/predictions"
REPLAYED = "Idempotency-Replayed"


@pytest.fixture
def store(live_server: LiveServer) -> IdempotencyStore:
    services = live_server.services
    return IdempotencyStore(services.db, services.clock)


@pytest.fixture
def client_account(accounts: dict[str, Account]) -> Account:
    return accounts["client"]


def fresh_key(name: str) -> str:
    return f"{name}-{time.monotonic_ns()}"


def keyed(key: str) -> dict[str, str]:
    return {"Idempotency-Key": key}


def error_code(response: httpx.Response) -> str:
    code: str = response.json()["error"]["code"]
    return code


def jobs_under(live_server: LiveServer, owner_id: int, key: str) -> int:
    with live_server.services.db.session() as session:
        count = session.scalar(
            select(func.count())
            .select_from(PredictionJob)
            .where(PredictionJob.owner_id == owner_id, PredictionJob.idempotency_key == key)
        )
    return int(count or 0)


def test_a_replayed_job_submit_returns_the_first_response(
    client: httpx.Client,
    live_server: LiveServer,
    client_account: Account,
    feature_rows: list[dict[str, float]],
) -> None:
    key = fresh_key("job")
    body = {"model": MODEL, "features": feature_rows[3]}
    first = client.post(SUBMIT, json=body, headers=keyed(key))
    assert first.status_code == 202, first.text
    assert REPLAYED not in first.headers
    # The same request in another JSON spelling (key order, whitespace) is the same request.
    respelled = json.dumps({"features": body["features"], "model": MODEL}, indent=2)
    again = client.post(SUBMIT, content=respelled, headers={**keyed(key), "Content-Type": "application/json"})
    assert again.status_code == 202
    assert again.headers[REPLAYED] == "true"
    assert again.content == first.content  # the very first answer, "created": true included
    assert again.json()["created"] is True
    assert again.headers["content-type"] == first.headers["content-type"]
    assert again.headers["x-request-id"] != first.headers["x-request-id"]  # the retry's own envelope
    assert jobs_under(live_server, client_account.user_id, key) == 1


def test_the_same_key_with_another_body_answers_422(
    client: httpx.Client, feature_rows: list[dict[str, float]]
) -> None:
    key = fresh_key("reused")
    assert client.post(
        SUBMIT, json={"model": MODEL, "features": feature_rows[4]}, headers=keyed(key)
    ).is_success
    reused = client.post(SUBMIT, json={"model": MODEL, "features": feature_rows[5]}, headers=keyed(key))
    assert reused.status_code == 422
    assert error_code(reused) == "idempotency_key_reused"
    assert set(reused.json()["error"]) == {"code", "message", "details"}
    # Another route under the same key is another request too.
    elsewhere = client.post(
        "/predict", json={"model": MODEL, "features": feature_rows[4]}, headers=keyed(key)
    )
    assert elsewhere.status_code == 422
    assert error_code(elsewhere) == "idempotency_key_reused"


def test_a_refusal_stores_nothing_and_leaves_the_key_free(
    client: httpx.Client,
    live_server: LiveServer,
    client_account: Account,
    feature_rows: list[dict[str, float]],
) -> None:
    key = fresh_key("refused")
    refused = client.post(SUBMIT, json={"model": MODEL}, headers=keyed(key))
    assert refused.status_code == 422
    assert REPLAYED not in refused.headers
    assert client.post(SUBMIT, json={"model": MODEL}, headers=keyed(key)).status_code == 422
    unknown = client.post(
        SUBMIT, json={"model": "no-such-model", "features": feature_rows[0]}, headers=keyed(key)
    )
    assert unknown.status_code == 404
    # A corrected body under the same key runs: the refusals did not pin the key to theirs.
    accepted = client.post(SUBMIT, json={"model": MODEL, "features": feature_rows[6]}, headers=keyed(key))
    assert accepted.status_code == 202
    assert REPLAYED not in accepted.headers
    assert jobs_under(live_server, client_account.user_id, key) == 1


def test_a_hot_path_answer_is_replayed(client: httpx.Client, feature_rows: list[dict[str, float]]) -> None:
    key = fresh_key("predict")
    body = {"model": MODEL, "features": feature_rows[7]}
    first = client.post("/predict", json=body, headers=keyed(key))
    again = client.post("/predict", json=body, headers=keyed(key))
    assert first.status_code == again.status_code == 200
    assert again.headers[REPLAYED] == "true"
    assert again.content == first.content


def test_requests_without_a_key_are_untouched(
    client: httpx.Client, feature_rows: list[dict[str, float]]
) -> None:
    body = {"model": MODEL, "features": feature_rows[8]}
    first, second = (client.post(SUBMIT, json=body) for _ in range(2))
    assert first.status_code == second.status_code == 202
    assert first.json()["id"] != second.json()["id"]
    assert REPLAYED not in second.headers


@pytest.mark.parametrize("key", ["k" * 256, "caf\u00e9"])
def test_a_malformed_key_answers_422(
    client: httpx.Client, feature_rows: list[dict[str, float]], key: str
) -> None:
    headers = {b"Idempotency-Key": key.encode("utf-8")}  # as bytes: httpx sends only ASCII str
    refused = client.post(SUBMIT, json={"model": MODEL, "features": feature_rows[0]}, headers=headers)
    assert refused.status_code == 422
    assert error_code(refused) == "idempotency_key_invalid"


def test_a_key_needs_a_signed_in_caller_to_be_stored(
    anonymous: httpx.Client, feature_rows: list[dict[str, float]]
) -> None:
    """Anonymous callers are passed through untouched: here the route answers 401 as always."""
    refused = anonymous.post(
        SUBMIT, json={"model": MODEL, "features": feature_rows[0]}, headers=keyed("anon")
    )
    assert refused.status_code == 401
    assert error_code(refused) == "unauthorized"


def post_all(
    live_server: LiveServer, headers: dict[str, str], body: dict[str, Any], n: int
) -> list[httpx.Response]:
    """``n`` threads sending the same keyed request at once, each on its own connection."""

    def send(_: int) -> httpx.Response:
        with httpx.Client(base_url=live_server.url, headers=headers, timeout=60) as http:
            return http.post(SUBMIT, json=body)

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(send, range(n)))


def claim(store: IdempotencyStore, account: Account, key: str, body: dict[str, Any]) -> Started:
    started = store.begin(account.user_id, key, "POST", SUBMIT, json.dumps(body).encode())
    assert isinstance(started, Started)
    return started


def test_concurrent_retries_while_the_first_is_in_flight_answer_409_and_run_nothing(
    live_server: LiveServer,
    store: IdempotencyStore,
    client_account: Account,
    feature_rows: list[dict[str, float]],
) -> None:
    key = fresh_key("in-flight")
    body = {"model": MODEL, "features": feature_rows[9]}
    first = claim(store, client_account, key, body)
    answers = post_all(live_server, {**client_account.headers, **keyed(key)}, body, 8)
    assert [a.status_code for a in answers] == [409] * 8, [a.text for a in answers]
    assert {error_code(a) for a in answers} == {"idempotency_in_progress"}
    assert jobs_under(live_server, client_account.user_id, key) == 0
    # The first request finishes: from then on every retry is its answer.
    store.finish(first, 202, b'{"the": "first answer"}', {"content-type": "application/json"})
    replays = post_all(live_server, {**client_account.headers, **keyed(key)}, body, 4)
    assert {(a.status_code, a.headers[REPLAYED], a.content) for a in replays} == {
        (202, "true", b'{"the": "first answer"}')
    }
    assert jobs_under(live_server, client_account.user_id, key) == 0


def test_concurrent_first_requests_run_exactly_once(
    live_server: LiveServer,
    store: IdempotencyStore,
    client_account: Account,
    feature_rows: list[dict[str, float]],
) -> None:
    key = fresh_key("race")
    body = {"model": MODEL, "features": feature_rows[10]}
    # Held, then released all at once: the first request was refused (its claim abandoned), and
    # eight retries race for the now free key.
    store.abandon(claim(store, client_account, key, body))
    answers = post_all(live_server, {**client_account.headers, **keyed(key)}, body, 8)
    executed = [a for a in answers if a.is_success and REPLAYED not in a.headers]
    others = [a for a in answers if a not in executed]
    assert len(executed) == 1, [(a.status_code, a.headers.get(REPLAYED)) for a in answers]
    for other in others:
        assert other.status_code == 409 or (other.headers.get(REPLAYED) == "true"), other.text
        if other.status_code == 409:
            assert error_code(other) == "idempotency_in_progress"
        else:
            assert other.content == executed[0].content
    assert jobs_under(live_server, client_account.user_id, key) == 1


@pytest.fixture(scope="module")
def limited_server(settings: Settings, accounts: dict[str, Account]) -> Iterator[LiveServer]:
    """Its own server (its own rate-limit counters), allowing 3 requests a minute per user."""
    with LiveServer(live_settings(settings, rate_limit="3/minute", grpc_enabled=False)) as server:
        yield server


def test_a_keyed_request_counts_once_against_the_rate_limit(
    limited_server: LiveServer, client_account: Account, feature_rows: list[dict[str, float]]
) -> None:
    """The middleware authenticates the caller and the route reuses that principal: counted twice,
    the second request would already be refused."""
    with httpx.Client(base_url=limited_server.url, headers=client_account.headers, timeout=60) as http:
        body = {"model": MODEL, "features": feature_rows[11]}
        assert http.post(SUBMIT, json=body, headers=keyed(fresh_key("limit"))).status_code == 202
        assert http.post("/predict", json=body, headers=keyed(fresh_key("limit"))).status_code == 200
        assert http.post(SUBMIT, json=body, headers=keyed(fresh_key("limit"))).status_code == 202
        refused = http.post(SUBMIT, json=body, headers=keyed(fresh_key("limit")))
    assert refused.status_code == 429
    assert error_code(refused) == "rate_limited"
    assert "retry-after" in refused.headers
