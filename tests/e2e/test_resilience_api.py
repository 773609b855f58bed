"""Resilience over HTTP against the real app: chaos opens a version's breaker through /predict,
the open breaker answers 503 with Retry-After (or a configured fallback answers), half-open probes
close it again, operator controls apply in another worker, and the deadline answers 504.

Everything runs on a model registered for this module only (copies of the demo versions), so its
breakers, chaos rules and configs disturb no other module on the shared database. The breakers'
monotonic clock is a fake one this module moves: no test waits for a breaker to open or close."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from prediction_provider.config import Settings
from tests.conftest import Account, LiveServer, live_settings

OPEN_S = 30.0


class FakeMonotonic:
    def __init__(self) -> None:
        self.now = 10_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def clock() -> FakeMonotonic:
    return FakeMonotonic()


@pytest.fixture(scope="module")
def server(settings: Settings, accounts: dict[str, Account], clock: FakeMonotonic) -> Iterator[LiveServer]:
    changes: dict[str, Any] = {
        "chaos": True,
        "grpc_enabled": False,
        "breaker_window_size": 10,
        "breaker_min_calls": 4,
        "breaker_failure_rate": 0.5,
        "breaker_open_s": OPEN_S,
        "breaker_half_open_calls": 2,
    }
    with LiveServer(live_settings(settings, **changes)) as live:
        live.services.resilience.clock = clock  # before any breaker exists
        yield live


@pytest.fixture(scope="module")
def model(server: LiveServer) -> str:
    """``res-direction-<id>``: versions 1-2 are the demo EURUSD versions 1-2."""
    client = server.services.registry.client
    name = f"res-direction-{uuid.uuid4().hex[:6]}"
    client.create_registered_model(name)
    for version in ("1", "2"):
        source = client.get_model_version("eurusd-direction", version)
        artifacts = client.get_logged_model(source.source.removeprefix("models:/")).artifact_location
        client.create_model_version(name, artifacts, run_id=source.run_id)
    client.set_registered_model_alias(name, "champion", "1")
    return name


def http_as(server: LiveServer, account: Account | None) -> httpx.Client:
    headers = account.headers if account is not None else {}
    return httpx.Client(base_url=server.url, timeout=60, headers=headers)


@pytest.fixture(scope="module")
def operator(server: LiveServer, accounts: dict[str, Account]) -> Iterator[httpx.Client]:
    with http_as(server, accounts["operator"]) as http:
        yield http


@pytest.fixture(scope="module")
def admin(server: LiveServer, accounts: dict[str, Account]) -> Iterator[httpx.Client]:
    with http_as(server, accounts["admin"]) as http:
        yield http


@pytest.fixture(scope="module")
def caller(server: LiveServer, accounts: dict[str, Account]) -> Iterator[httpx.Client]:
    with http_as(server, accounts["client"]) as http:
        yield http


@pytest.fixture
def clean(operator: httpx.Client, admin: httpx.Client, model: str) -> Iterator[None]:
    """Each test starts and ends with the module's model on the defaults, no rules, closed breakers."""
    yield
    for version in ("1", "2"):
        admin.delete(f"/api/v1/admin/chaos/{model}/{version}")
        assert (
            operator.post(f"/models/{model}/resilience/reset", json={"version": version}).status_code == 200
        )
    assert operator.put(f"/models/{model}/resilience", json={}).status_code == 200


def predict(http: httpx.Client, reference: str, row: dict[str, float]) -> httpx.Response:
    return http.post("/predict", json={"model": reference, "features": row})


def breaker_of(http: httpx.Client, model: str, version: str) -> dict[str, Any]:
    body = http.get(f"/models/{model}/resilience").json()
    (found,) = [entry for entry in body["breakers"] if entry["version"] == version]
    return found


def chaos(admin: httpx.Client, model: str, version: str, **rule: Any) -> None:
    response = admin.put(f"/api/v1/admin/chaos/{model}/{version}", json={"ttl_s": 600, **rule})
    assert response.status_code == 200, response.text


def test_routes_authenticate_first_and_check_roles(
    server: LiveServer, accounts: dict[str, Account], model: str
) -> None:
    with http_as(server, None) as anonymous:
        assert anonymous.get(f"/models/{model}/resilience").status_code == 401
        assert anonymous.put(f"/models/{model}/resilience", json={"timeout_ms": -1}).status_code == 401
        assert anonymous.post(f"/models/{model}/resilience/force-open", json={}).status_code == 401
        assert anonymous.get("/api/v1/admin/chaos").status_code == 401
        assert anonymous.put(f"/api/v1/admin/chaos/{model}/1", json={}).status_code == 401
    with http_as(server, accounts["client"]) as client:
        assert client.get(f"/models/{model}/resilience").status_code == 200  # reading: model readers
        refused = client.put(f"/models/{model}/resilience", json={"timeout_ms": 5})
        assert refused.status_code == 403
        assert refused.json()["error"]["code"] == "forbidden"
        assert client.post(f"/models/{model}/resilience/reset", json={"version": "1"}).status_code == 403
    with http_as(server, accounts["operator"]) as operator:
        assert operator.get("/api/v1/admin/chaos").status_code == 403  # chaos: admins only
        assert operator.get(f"/models/{model}/resilience", params={"verbose": 1}).status_code == 422


def test_bad_input_is_refused_with_the_error_body(operator: httpx.Client, model: str, clean: None) -> None:
    for body, field in (
        ({"timeout_ms": -1}, "timeout_ms"),
        ({"breaker": {"failure_rate": 1.5}}, "breaker.failure_rate"),
        ({"breaker": {"window": "time"}}, "breaker.window"),
        ({"retries": 3}, "retries"),
    ):
        response = operator.put(f"/models/{model}/resilience", json=body)
        assert response.status_code == 422, body
        assert response.json()["error"]["code"] == "validation_error"
        assert any(field in detail["field"] for detail in response.json()["error"]["details"]), response.text
    for body, text in (
        ({"breaker": {"min_calls": 11}}, "min_calls cannot exceed window_size"),  # the server's window is 10
        ({"fallback": ["prior", f"models:/{model}/1"]}, "only be the last"),
        ({"fallback": ["eurusd-direction"]}, "models:/name/version"),
        ({"fallback": [f"models:/{model}/1", f"models:/{model}/7"]}, f"models:/{model}/7 is not registered"),
        ({"fallback": [f"models:/{model}@nowhere"]}, "is not registered"),
        ({"fallback": ["models:/no-such-model-xyz/1"]}, "is not registered"),
    ):
        response = operator.put(f"/models/{model}/resilience", json=body)
        assert response.status_code == 422, body
        assert response.json()["error"]["code"] == "invalid_input"
        assert text in str(response.json()["error"]["details"])
    assert operator.get("/models/no-such-model-xyz/resilience").status_code == 404
    assert operator.post(f"/models/{model}/resilience/force-open", json={"version": "99"}).status_code == 404
    assert operator.post(f"/models/{model}/resilience/force-open", json={"version": "one"}).status_code == 422
    assert operator.post(f"/models/{model}/resilience/half-open", json={"version": "1"}).status_code == 422


def test_a_config_is_stored_over_the_defaults_and_shown(
    operator: httpx.Client, model: str, clean: None
) -> None:
    before = operator.get(f"/models/{model}/resilience").json()
    assert before["source"] == "defaults"
    assert before["config"]["breaker"]["open_s"] == OPEN_S
    response = operator.put(
        f"/models/{model}/resilience",
        json={
            "timeout_ms": 5000,
            "breaker": {"half_open_calls": 1},
            "fallback": [f"models:/{model}/1", "prior"],
        },
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["source"] == "model"
    assert body["config"]["timeout_ms"] == 5000
    assert body["config"]["breaker"]["half_open_calls"] == 1
    assert body["config"]["breaker"]["min_calls"] == 4  # left out: the server's default
    assert body["config"]["fallback"] == [f"models:/{model}/1", "prior"]
    assert operator.get(f"/models/{model}/resilience").json() == body


def test_chaos_opens_the_breaker_then_half_open_probes_close_it(
    operator: httpx.Client,
    admin: httpx.Client,
    caller: httpx.Client,
    model: str,
    clock: FakeMonotonic,
    feature_rows: list[dict[str, float]],
    clean: None,
) -> None:
    pinned = f"models:/{model}/2"
    assert predict(caller, pinned, feature_rows[0]).status_code == 200
    chaos(admin, model, "2", fail_rate=1.0)
    failures = [predict(caller, pinned, feature_rows[0]) for _ in range(3)]
    assert [response.status_code for response in failures] == [500, 500, 500]
    assert failures[0].json()["error"]["code"] == "prediction_failed"
    # 3 failures of 4 calls: open. The model is no longer called.
    refused = predict(caller, pinned, feature_rows[0])
    assert refused.status_code == 503
    assert refused.json()["error"]["code"] == "model_unavailable"
    assert refused.headers["Retry-After"] == str(int(OPEN_S))
    assert predict(caller, f"models:/{model}/1", feature_rows[0]).status_code == 200  # other versions serve
    state = breaker_of(operator, model, "2")
    assert (state["state"], state["consecutive_opens"]) == ("open", 1)
    rules = admin.get("/api/v1/admin/chaos").json()["rules"]
    (rule,) = [rule for rule in rules if rule["model"] == model]
    assert (rule["version"], rule["hits"], rule["active"]) == (
        "2",
        3,
        True,
    )  # the refused call never reached it

    clock.now += OPEN_S / 2
    assert predict(caller, pinned, feature_rows[0]).headers["Retry-After"] == str(int(OPEN_S / 2))
    clock.now += OPEN_S / 2
    assert breaker_of(operator, model, "2")["state"] == "half_open"
    assert admin.delete(f"/api/v1/admin/chaos/{model}/2").status_code == 204
    assert admin.get(f"/api/v1/admin/chaos/{model}/2").status_code == 404
    assert predict(caller, pinned, feature_rows[0]).status_code == 200
    assert breaker_of(operator, model, "2")["state"] == "half_open"  # one of two probes
    assert predict(caller, pinned, feature_rows[0]).status_code == 200
    state = breaker_of(operator, model, "2")
    assert (state["state"], state["consecutive_opens"], state["calls"]) == ("closed", 0, 0)


def test_a_failed_probe_opens_it_for_twice_as_long(
    operator: httpx.Client,
    admin: httpx.Client,
    caller: httpx.Client,
    model: str,
    clock: FakeMonotonic,
    feature_rows: list[dict[str, float]],
    clean: None,
) -> None:
    pinned = f"models:/{model}/2"
    chaos(admin, model, "2", fail_rate=1.0)
    for _ in range(4):
        predict(caller, pinned, feature_rows[0])
    assert breaker_of(operator, model, "2")["state"] == "open"
    clock.now += OPEN_S
    assert predict(caller, pinned, feature_rows[0]).status_code == 500  # the probe fails
    refused = predict(caller, pinned, feature_rows[0])
    assert refused.status_code == 503
    assert refused.headers["Retry-After"] == str(int(OPEN_S * 2))


def test_a_configured_fallback_answers_while_the_primary_fails_or_is_open(
    operator: httpx.Client,
    admin: httpx.Client,
    caller: httpx.Client,
    model: str,
    feature_rows: list[dict[str, float]],
    clean: None,
) -> None:
    put = operator.put(f"/models/{model}/resilience", json={"fallback": [f"models:/{model}/1"]})
    assert put.status_code == 200, put.text
    chaos(admin, model, "2", fail_rate=1.0)
    reasons = []
    for _ in range(6):
        response = predict(caller, f"models:/{model}/2", feature_rows[0])
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["served_by"] == "fallback"
        assert body["model"]["version"] == "1"
        assert response.headers["X-PP-Fallback"].startswith(body["fallback_reason"])
        reasons.append(body["fallback_reason"])
    assert reasons == ["error"] * 4 + ["circuit_open"] * 2


def test_force_open_and_reset_apply_in_another_worker(
    operator: httpx.Client,
    model: str,
    settings: Settings,
    accounts: dict[str, Account],
    feature_rows: list[dict[str, float]],
    clean: None,
) -> None:
    with (
        LiveServer(live_settings(settings, grpc_enabled=False)) as other,
        http_as(other, accounts["client"]) as elsewhere,
    ):
        pinned = f"models:/{model}/1"
        assert predict(elsewhere, pinned, feature_rows[0]).status_code == 200
        forced = operator.post(f"/models/{model}/resilience/force-open", json={"version": "1"})
        assert forced.status_code == 200, forced.text
        (entry,) = [entry for entry in forced.json()["breakers"] if entry["version"] == "1"]
        assert (entry["state"], entry["mode"]) == ("open", "force_open")
        other.services.ops_stamp.refresh()  # what its follower does within a second
        refused = predict(elsewhere, pinned, feature_rows[0])
        assert refused.status_code == 503
        assert refused.json()["error"]["code"] == "model_unavailable"
        assert operator.post(f"/models/{model}/resilience/reset", json={"version": "1"}).status_code == 200
        other.services.ops_stamp.refresh()
        assert predict(elsewhere, pinned, feature_rows[0]).status_code == 200


def test_a_missed_deadline_answers_504(
    operator: httpx.Client,
    admin: httpx.Client,
    caller: httpx.Client,
    model: str,
    feature_rows: list[dict[str, float]],
    clean: None,
) -> None:
    assert operator.put(f"/models/{model}/resilience", json={"timeout_ms": 50}).status_code == 200
    chaos(admin, model, "1", delay_ms=1000)
    response = predict(caller, f"models:/{model}/1", feature_rows[0])
    assert response.status_code == 504
    assert response.json()["error"]["code"] == "model_timeout"
    assert breaker_of(operator, model, "1")["failure_rate"] > 0


def test_chaos_routes_do_not_exist_without_pp_chaos(
    live_server: LiveServer, accounts: dict[str, Account]
) -> None:
    with http_as(live_server, accounts["admin"]) as admin:
        assert admin.get("/api/v1/admin/chaos").status_code == 404
        assert admin.put("/api/v1/admin/chaos/eurusd-direction/1", json={"fail_rate": 1}).status_code == 404
