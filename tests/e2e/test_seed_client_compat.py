"""The seed project's client journey on our server, driven as its client and tests drive it.

``POST /api/v1/predictions/`` and ``POST /api/v1/predict`` with the seed's body,
polled at ``GET /api/v1/predictions/{id}`` until completed; list and delete;
the legacy ``POST /predict {instrument, timeframe}`` and ``GET /status/{id}``;
ownership, hostile input, the create answer's words, and the per-user cap on
forecast jobs in flight. A second server (anonymous callers allowed, the
seed's cap of 10 and no job workers) serves what the shared one cannot.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from prediction_provider.app import account_service
from prediction_provider.config import Settings
from tests.conftest import Account, LiveServer, live_settings

CREATE = "/api/v1/predictions/"  # the seed's clients send the trailing slash
PREDICT = "/api/v1/predict"
SEED_PLUGINS = {
    "predictor_plugin": "default_predictor",
    "feeder_plugin": "default_feeder",
    "pipeline_plugin": "default_pipeline",
}
SEED_RESPONSE_FIELDS = {
    "id", "prediction_id", "status", "symbol", "interval", "predictor_plugin", "feeder_plugin",
    "pipeline_plugin", "prediction_type", "ticker", "task_id", "result", "model_name",
}  # fmt: skip
FORBIDDEN_WORDS = ("password", "secret", "key", "token", "hash")
EURUSD_HORIZONS = [1, 3, 6, 12, 24]
GOOG_HORIZONS = [1, 5, 10]


def http_as(server: LiveServer, account: Account | None = None) -> httpx.Client:
    return httpx.Client(base_url=server.url, headers=account.headers if account else {}, timeout=60)


def completed(http: httpx.Client, job_id: str, headers: dict[str, str] | None = None) -> dict[str, Any]:
    """Poll the job as the seed's client does until it has finished; its last answer."""
    deadline = time.monotonic() + 60
    while True:
        response = http.get(f"/api/v1/predictions/{job_id}", headers=headers)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        if body["status"] in ("completed", "failed", "cancelled") or time.monotonic() > deadline:
            return body
        time.sleep(0.05)


def error_of(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "details"}
    return dict(body["error"])


@pytest.fixture(scope="module")
def open_server(settings: Settings, accounts: dict[str, Account]) -> Iterator[LiveServer]:
    """Anonymous callers allowed (PP_REQUIRE_AUTH=false), at most 10 forecast jobs in flight per
    user, and no job workers of its own (the shared server's workers run its jobs)."""
    changes = {
        "require_auth": False,
        "max_concurrent_predictions": 10,
        "job_workers": 0,
        "grpc_enabled": False,
    }
    with LiveServer(live_settings(settings, **changes)) as server:
        yield server


@pytest.fixture(scope="module")
def client(live_server: LiveServer, accounts: dict[str, Account]) -> Iterator[httpx.Client]:
    with http_as(live_server, accounts["client"]) as http:
        yield http


# --- creating and polling a job by symbol ------------------------------------------------------


def test_seed_body_creates_a_pending_job_that_completes_with_its_forecasts(client: httpx.Client) -> None:
    body = {"symbol": "GOOG", "interval": "1d", "prediction_type": "short_term", **SEED_PLUGINS}
    response = client.post(CREATE, json=body)
    assert response.status_code == 201, response.text
    created = response.json()
    assert set(created) >= SEED_RESPONSE_FIELDS
    assert created["status"] == "pending"
    assert created["prediction_id"] == created["id"] == created["task_id"]
    assert (created["symbol"], created["ticker"], created["interval"]) == ("GOOG", "GOOG", "1d")
    assert created["prediction_type"] == "short_term"
    assert {name: created[name] for name in SEED_PLUGINS} == SEED_PLUGINS
    assert created["model_name"] == "goog-1d-forecast"
    assert created["result"]["request"]["prediction_horizon"] == 1
    assert created["output"] is None
    assert created["error"] is None

    done = completed(client, created["id"])
    assert done["status"] == "completed", done
    assert set(done) >= SEED_RESPONSE_FIELDS
    assert done["kind"] == "forecast"
    assert done["result"]["request"] == created["result"]["request"]
    assert [step["step"] for step in done["result"]["forecasts"]] == [1]  # short_term: the shortest
    assert done["output"]["forecasts"] == done["result"]["forecasts"]
    assert len(done["result"]["prediction"]) == len(done["result"]["uncertainty"]) == 1
    assert done["result"]["uncertainty"][0] >= 0


@pytest.mark.parametrize(
    ("extra", "steps", "prediction_type"),
    [
        ({"prediction_type": "medium_term"}, [1, 3, 6], "medium_term"),  # the middle trained horizon
        ({"prediction_type": "long_term"}, EURUSD_HORIZONS, "long_term"),  # the longest: all
        ({"prediction_type": "long_term", "prediction_horizon": 3}, [1, 3], "long_term"),  # horizon wins
        ({}, EURUSD_HORIZONS, "long_term"),  # neither: every trained horizon
        ({"prediction_horizon": 12}, [1, 3, 6, 12], "medium_term"),
    ],
)
def test_prediction_type_and_horizon_choose_the_forecast_steps(
    client: httpx.Client, extra: dict[str, Any], steps: list[int], prediction_type: str
) -> None:
    response = client.post(CREATE, json={"ticker": "EURUSD", **extra})
    assert response.status_code == 201, response.text
    created = response.json()
    # No interval sent, and EURUSD is not forecast daily: its model's interval, not the seed's 1d.
    assert created["interval"] == "1h"
    assert created["prediction_type"] == prediction_type
    done = completed(client, created["id"])
    assert [step["step"] for step in done["result"]["forecasts"]] == steps


def test_seed_body_at_api_v1_predict_is_a_job_not_a_trading_decision(client: httpx.Client) -> None:
    # The seed's integration test body, verbatim but for the symbol.
    response = client.post(
        PREDICT, json={"ticker": "EURUSD", "model_name": "default", "prediction_horizon": 6}
    )
    assert response.status_code == 201, response.text
    created = response.json()
    assert created["task_id"]
    assert created["status"] == "pending"
    assert created["model_name"] == "eurusd-1h-forecast"
    done = completed(client, created["id"])
    assert [step["step"] for step in done["result"]["forecasts"]] == [1, 3, 6]
    # A decision body on the same route is still a decision.
    decision = client.post(PREDICT, json={"symbol": "EURUSD"})
    assert decision.status_code in (200, 403), decision.text
    assert "action" in decision.json() or decision.json()["error"]["code"] == "risk_rejected"


def test_baseline_datetime_is_the_time_forecast_from(client: httpx.Client) -> None:
    body = {"symbol": "GOOG", "prediction_type": "long_term", "baseline_datetime": "2019-03-01T00:00:00"}
    created = client.post(CREATE, json=body).json()
    done = completed(client, created["id"])
    assert done["status"] == "completed", done
    assert done["result"]["data_as_of"] <= "2019-03-01T00:00:00+00:00"
    assert [step["step"] for step in done["result"]["forecasts"]] == GOOG_HORIZONS


# --- refused at submit -------------------------------------------------------------------------


@pytest.mark.parametrize("path", [CREATE, PREDICT])
def test_hostile_ticker_is_refused_422_and_never_echoed(client: httpx.Client, path: str) -> None:
    for field in ("symbol", "ticker"):
        response = client.post(path, json={field: "<script>alert(1)</script>", "interval": "1d"})
        error_of(response, 422)
        assert "<script>" not in response.text


@pytest.mark.parametrize(
    ("body", "field", "named"),
    [
        ({"symbol": "GOOG", "interval": "1h", "prediction_type": "short_term"}, "interval", "1d"),
        ({"symbol": "GOOG", "prediction_horizon": 7}, "prediction_horizon", "[1, 5, 10]"),
        ({"symbol": "GOOG", "feeder_plugin": "no_such_feeder"}, "feeder_plugin", "yfinance"),
        ({"symbol": "GOOG", "feeder_plugin": "yfinance"}, "feeder_plugin", "backtesting"),
        ({"symbol": "GOOG", "pipeline_plugin": "no_such_pipeline"}, "pipeline_plugin", "point_in_time"),
        ({"symbol": "GOOG", "predictor_plugin": "no_such_predictor"}, "predictor_plugin", "forecast"),
    ],
)
def test_what_the_model_cannot_serve_is_a_422_naming_what_it_can(
    client: httpx.Client, body: dict[str, Any], field: str, named: str
) -> None:
    error = error_of(client.post(CREATE, json=body), 422)
    fields = {item["field"]: item["error"] for item in error["details"]}
    assert named in fields[field], error


@pytest.mark.parametrize(
    "body",
    [{}, {"symbol": "GOOG", "prediction_type": "invalid_type"}, {"symbol": "A" * 1000, "interval": "1d"}],
)
def test_malformed_seed_bodies_are_422(client: httpx.Client, body: dict[str, Any]) -> None:
    # {} names no symbol, so it is a rows job missing its model: 422 too, as the seed answered.
    error_of(client.post(CREATE, json=body), 422)


def test_unknown_symbol_is_404_listing_the_served_ones(client: httpx.Client) -> None:
    error = error_of(client.post(CREATE, json={"symbol": "AAPL", "interval": "1d"}), 404)
    available = error["details"]["available"]
    assert {"EURUSD", "GOOG"} <= set(available)  # other tests may register more
    assert "AAPL" not in available
    assert available == sorted(available)


# --- ownership, list, delete -------------------------------------------------------------------


def test_another_users_job_does_not_exist_for_them(
    client: httpx.Client, live_server: LiveServer, accounts: dict[str, Account]
) -> None:
    created = client.post(CREATE, json={"symbol": "GOOG", "interval": "1d"}).json()
    with http_as(live_server, accounts["provider"]) as other:
        assert other.get(f"/api/v1/predictions/{created['id']}").status_code in (403, 404)
        assert other.delete(f"/api/v1/predictions/{created['id']}").status_code in (403, 404)
        listed = other.get("/api/v1/predictions").json()["items"]
        assert created["id"] not in {item["id"] for item in listed}
    assert client.get(f"/api/v1/predictions/{created['id']}").status_code == 200


def test_list_answers_the_seed_fields_of_jobs_by_symbol(client: httpx.Client) -> None:
    created = client.post(CREATE, json={"symbol": "GOOG", "prediction_type": "medium_term"}).json()
    completed(client, created["id"])
    page = client.get("/api/v1/predictions/", params={"limit": 200}).json()
    mine = next(item for item in page["items"] if item["id"] == created["id"])
    assert set(mine) >= SEED_RESPONSE_FIELDS
    assert mine["prediction_type"] == "medium_term"
    assert [step["step"] for step in mine["output"]["forecasts"]] == [1, 5]


def test_delete_removes_a_job_by_symbol_finished_or_not(client: httpx.Client) -> None:
    for body in ({"symbol": "GOOG"}, {"symbol": "EURUSD", "prediction_type": "short_term"}):
        created = client.post(CREATE, json=body).json()
        if body["symbol"] == "GOOG":
            assert completed(client, created["id"])["status"] == "completed"
        response = client.delete(f"/api/v1/predictions/{created['id']}")
        assert response.status_code == 200, response.text
        assert response.json()["message"] == "Prediction deleted successfully"
        assert response.json()["id"] == created["id"]
        error_of(client.get(f"/api/v1/predictions/{created['id']}"), 404)
        error_of(client.delete(f"/api/v1/predictions/{created['id']}"), 404)


def test_unknown_prediction_is_404_in_our_error_shape(client: httpx.Client) -> None:
    error_of(client.get("/api/v1/predictions/9999"), 404)


# --- the legacy /predict and /status/{id} ------------------------------------------------------


def legacy_body(prediction_id: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "instrument": "EUR_USD",
        "timeframe": "H1",
        "parameters": {"n_steps": 60, "plugin": "default_predictor"},
    }
    if prediction_id is not None:
        body["prediction_id"] = prediction_id
    return body


def legacy_completed(http: httpx.Client, prediction_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while True:
        response = http.get(f"/status/{prediction_id}")
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        if body["status"] in ("completed", "failed") or time.monotonic() > deadline:
            return body
        time.sleep(0.05)


def test_legacy_predict_echoes_the_clients_id_and_status_finds_it(
    client: httpx.Client, live_server: LiveServer, accounts: dict[str, Account]
) -> None:
    prediction_id = str(uuid.uuid4())
    response = client.post("/predict", json=legacy_body(prediction_id))
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer == {"prediction_id": prediction_id, "status": "pending", "message": answer["message"]}
    status = legacy_completed(client, prediction_id)
    assert status["prediction_id"] == prediction_id
    assert status["status"] == "completed", status
    assert isinstance(status["prediction"], list)
    assert isinstance(status["uncertainty"], list)
    assert [step["step"] for step in status["result"]["forecasts"]] == EURUSD_HORIZONS
    assert status["result"]["symbol"] == "EURUSD"
    assert status["result"]["interval"] == "1h"
    # Another caller naming the same id finds nothing, and makes their own job with it.
    with http_as(live_server, accounts["provider"]) as other:
        error_of(other.get(f"/status/{prediction_id}"), 404)
        assert other.post("/predict", json=legacy_body(prediction_id)).status_code == 200
    assert client.get(f"/status/{prediction_id}").json()["status"] == "completed"


def test_legacy_predict_without_an_id_answers_the_job_id(client: httpx.Client) -> None:
    answer = client.post("/predict", json=legacy_body(None)).json()
    assert legacy_completed(client, answer["prediction_id"])["status"] == "completed"
    assert client.get(f"/api/v1/predictions/{answer['prediction_id']}").json()["kind"] == "forecast"


def test_status_of_garbage_is_400_and_of_an_unknown_id_404(client: httpx.Client) -> None:
    assert error_of(client.get("/status/not a valid id!"), 400)["code"] == "invalid_prediction_id"
    error_of(client.get("/status/12345"), 404)
    error_of(client.get(f"/status/{uuid.uuid4()}"), 404)


# --- anonymous callers, the create answer's words, the cap -------------------------------------


def words_in(payload: Any) -> str:
    return json.dumps(payload).lower()


def test_create_answer_holds_no_credential_words_and_anonymous_token_is_a_header(
    open_server: LiveServer, live_server: LiveServer, accounts: dict[str, Account]
) -> None:
    with http_as(open_server) as anonymous, http_as(open_server, accounts["client"]) as signed_in:
        for http in (anonymous, signed_in):
            for path in (CREATE, PREDICT):
                response = http.post(path, json={"symbol": "GOOG", "interval": "1d", **SEED_PLUGINS})
                assert response.status_code == 201, response.text
                text = words_in(response.json())
                assert not [word for word in FORBIDDEN_WORDS if word in text], text
        response = anonymous.post(CREATE, json={"symbol": "GOOG", "prediction_type": "long_term"})
        job_token = response.headers["X-Job-Token"]
        job_id = response.json()["id"]
        # The shared server's workers run it; its token reads it back, nobody else's reading does.
        assert completed(anonymous, job_id, {"X-Job-Token": job_token})["status"] == "completed"
        assert anonymous.get(f"/api/v1/predictions/{job_id}").status_code == 404
        assert "X-Job-Token" not in signed_in.post(CREATE, json={"symbol": "GOOG"}).headers


def test_anonymous_legacy_ids_are_scoped_to_the_callers_address(open_server: LiveServer) -> None:
    prediction_id = f"order-{uuid.uuid4().hex[:8]}"
    with http_as(open_server) as anonymous:
        answer = anonymous.post("/predict", json=legacy_body(prediction_id))
        assert answer.status_code == 200, answer.text
        assert answer.json()["prediction_id"] == prediction_id
        assert "X-Job-Token" in answer.headers
        assert anonymous.get(f"/status/{prediction_id}").json()["prediction_id"] == prediction_id


def test_fifteen_concurrent_creates_against_the_cap_of_ten_answer_201_or_429(
    open_server: LiveServer, settings: Settings
) -> None:
    service = account_service(settings)
    name = f"seed-cap-{uuid.uuid4().hex[:8]}"
    user = service.create_user(name, f"{name}@example.com", "cap-password-123", "client", active=True)
    key = service.regenerate_api_key(user["id"])["api_key"]
    service.db.dispose()
    with httpx.Client(base_url=open_server.url, headers={"X-API-KEY": key}, timeout=60) as http:

        def create(_: int) -> httpx.Response:
            return http.post(
                CREATE, json={"symbol": "GOOG", "interval": "1d", "prediction_type": "short_term"}
            )

        with ThreadPoolExecutor(15) as pool:
            responses = list(pool.map(create, range(15)))
    statuses = [response.status_code for response in responses]
    assert set(statuses) <= {201, 429}, [response.text for response in responses]
    assert statuses.count(201) >= 10
    for response in responses:
        if response.status_code == 429:
            assert int(response.headers["Retry-After"]) >= 1
            assert response.json()["error"]["details"]["max_in_flight"] == 10
