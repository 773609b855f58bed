"""The seed project's client routes that do not need forecasts, over real HTTP.

``GET /``, ``/api/v1/plugins`` and its status, ``OPTIONS`` on every route, the
auth answers its clients read (``expires_in_days``, ``PUT /users/password``, a
403 for a profile edit naming a role) and its noise sweeps (``set_noise`` and
``metrics`` of the noisy oracle against the noiseless one).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from prediction_provider import __version__
from prediction_provider.config import Settings
from tests.conftest import Account, LiveServer

PLUGINS = "/api/v1/plugins"
SET_NOISE = "/api/v1/predict/set_noise"
NOISE_METRICS = "/api/v1/predict/metrics"
ENTRY = "/api/v1/predict/entry"
# Hours of a week inside the demo's EURUSD bars (Monday 5 to Thursday 8 February 2018).
ENTRY_TIMES = [f"0{day}.02.2018 {hour:02d}:00:00.000" for day in (5, 6, 7, 8) for hour in (2, 7, 11, 15, 19)]


def error_of(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "details"}
    assert body["error"]["code"] == code, body
    return dict(body["error"])


def http_as(server: LiveServer, account: Account | None = None) -> httpx.Client:
    headers = account.headers if account is not None else {}
    return httpx.Client(base_url=server.url, headers=headers, timeout=60)


def demo_csv(settings: Settings) -> Path:
    return settings.data_dir / "oracle" / "EURUSD_1h.csv"


# --- GET / ---------------------------------------------------------------------------------------


def test_root_names_the_server_and_links_to_docs_and_health(anonymous: httpx.Client) -> None:
    response = anonymous.get("/")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["name"] == "Prediction Provider"
    assert body["message"] == "Prediction Provider API"  # where the seed's clients read the name
    assert body["version"] == __version__
    assert body["docs"] == "/docs"
    assert body["health"] == "/health"
    for link in (body["docs"], body["health"], body["links"]["openapi"], body["links"]["redoc"]):
        assert anonymous.get(link).status_code == 200, link
    assert anonymous.get(body["links"]["plugins"]).status_code == 401  # the links say where, not who


# --- /api/v1/plugins -----------------------------------------------------------------------------


def test_plugins_lists_every_kind_from_the_entry_points(client: httpx.Client) -> None:
    response = client.get(PLUGINS + "/")  # the seed's clients call it with the trailing slash
    assert response.status_code == 200, response.text
    body = response.json()
    assert {
        "feeder_plugins",
        "predictor_plugins",
        "pipeline_plugins",
        "endpoint_plugins",
        "core_plugins",
    } <= set(body)
    assert {"backtesting", "csv", "parquet", "database", "yfinance"} <= set(body["feeder_plugins"])
    assert {"binary_ideal_oracle", "noisy_ideal_oracle", "lightgbm", "mc_dropout"} <= set(
        body["predictor_plugins"]
    )
    assert body["pipeline_plugins"] == ["point_in_time"]
    assert body["core_plugins"] == ["inprocess", "celery"]
    assert {"rest", "open_inference_v2", "mlflow_invocations", "open_inference_grpc"} <= set(
        body["endpoint_plugins"]
    )
    assert {"lightgbm", "onnx", "sklearn", "xgboost"} <= set(body["loader_plugins"])


def test_plugins_need_credentials_when_auth_is_required(anonymous: httpx.Client) -> None:
    error_of(anonymous.get(PLUGINS), 401, "unauthorized")
    error_of(anonymous.get(PLUGINS + "/status"), 401, "unauthorized")


def test_plugin_status_reports_the_configured_plugins_as_active(client: httpx.Client) -> None:
    response = client.get(PLUGINS + "/status")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["system_status"] == "operational"
    assert body["total_plugins"] == 4
    plugins = body["plugins"]
    assert set(plugins) == {"core", "feeder", "predictor", "pipeline"}
    assert plugins["core"]["name"] == "inprocess"
    assert plugins["feeder"]["name"] == "backtesting"
    assert plugins["predictor"]["name"] == "lightgbm"  # the shared server has no oracle file
    assert plugins["pipeline"]["name"] == "point_in_time"
    for plugin in plugins.values():
        assert plugin["status"] == "active", plugin
        assert plugin["error"] is None
        assert plugin["version"] == __version__


@pytest.fixture(scope="module")
def broken_server(
    settings: Settings, accounts: dict[str, Account], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    """An oracle file that does not exist and a csv feeder without its path."""
    missing = tmp_path_factory.mktemp("nowhere") / "secret-place" / "bars.csv"
    update = {"signal_predictor": "binary_ideal_oracle", "oracle_csv": missing, "feeder": "csv"}
    with LiveServer(settings.model_copy(update=update)) as server:
        yield server


def test_plugin_status_says_which_plugins_do_not_load_and_why_only_to_operators(
    broken_server: LiveServer, accounts: dict[str, Account]
) -> None:
    with http_as(broken_server, accounts["client"]) as client:
        response = client.get(PLUGINS + "/status")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["system_status"] == "degraded"
    plugins = body["plugins"]
    assert plugins["predictor"] == {
        "name": "binary_ideal_oracle",
        "status": "unavailable",
        "version": __version__,
        "error": {"code": "model_load_failed", "message": None},
    }
    assert plugins["feeder"]["status"] == "unavailable"
    assert plugins["feeder"]["error"] == {"code": "feeder_unavailable", "message": None}
    assert plugins["core"]["status"] == plugins["pipeline"]["status"] == "active"
    assert "secret-place" not in response.text  # no path for a client
    with http_as(broken_server, accounts["operator"]) as operator:
        explained = operator.get(PLUGINS + "/status").json()["plugins"]
    assert "secret-place" in explained["predictor"]["error"]["message"]
    assert "PP_FEEDER_PATH" in explained["feeder"]["error"]["message"]


# --- OPTIONS -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "methods"),
    [
        ("/predict", {"POST"}),  # hot routes, served past the router otherwise
        ("/api/v1/predict", {"POST"}),
        ("/api/v1/predict/entry", {"POST"}),
        ("/v2/models/eurusd-direction/infer", {"POST"}),
        ("/api/v1/predictions/42", {"GET", "PUT", "DELETE"}),
        ("/api/v1/plugins/", {"GET"}),
        ("/health", {"GET"}),
        ("/", {"GET"}),
        ("/docs", {"GET", "HEAD"}),  # a plain Starlette route: HEAD with GET
        ("/docs/static/swagger-ui/swagger-ui.css", {"GET", "HEAD"}),
    ],
)
def test_options_answers_204_with_the_methods_of_the_path(
    anonymous: httpx.Client, path: str, methods: set[str]
) -> None:
    response = anonymous.options(path)
    assert response.status_code == 204, response.text
    assert response.content == b""
    assert set(response.headers["allow"].split(", ")) == methods | {"OPTIONS"}
    assert "x-request-id" in response.headers  # inside the envelope: audited, with the security headers
    assert response.headers["x-content-type-options"] == "nosniff"


def test_options_on_an_unknown_path_answers_404_in_the_error_body(anonymous: httpx.Client) -> None:
    error_of(anonymous.options("/api/v1/no-such-route"), 404, "not_found")


def test_options_without_configured_origins_allows_no_browser_origin(anonymous: httpx.Client) -> None:
    preflight = {"Origin": "https://dashboard.example", "Access-Control-Request-Method": "POST"}
    response = anonymous.options("/predict", headers=preflight)
    assert response.status_code == 204
    assert "access-control-allow-origin" not in response.headers


def test_other_methods_still_answer_405(anonymous: httpx.Client) -> None:
    error_of(anonymous.patch("/health"), 405, "method_not_allowed")


# --- auth answers the seed's clients read --------------------------------------------------------


@pytest.fixture
def fresh_user(
    live_server: LiveServer, accounts: dict[str, Account], request: pytest.FixtureRequest
) -> dict[str, str]:
    """A new active client of its own: these tests change its key and password."""
    name = "seed-" + request.node.name.removeprefix("test_")[:40].replace("_", "-")
    credentials = {"username": name, "password": "seed-client-pass-1"}
    with http_as(live_server, accounts["admin"]) as admin:
        created = admin.post(
            "/api/v1/admin/users",
            json={**credentials, "email": f"{name}@example.com", "role": "client", "is_active": True},
        )
    assert created.status_code == 201, created.text
    return credentials


def test_an_api_key_from_the_password_says_it_does_not_expire(
    anonymous: httpx.Client, fresh_user: dict[str, str]
) -> None:
    issued = anonymous.post("/api/v1/auth/api-key", json=fresh_user)
    assert issued.status_code == 201, issued.text
    body = issued.json()
    assert "expires_in_days" in body
    assert body["expires_in_days"] is None
    assert anonymous.get("/api/v1/users/profile", headers={"X-API-KEY": body["api_key"]}).status_code == 200


def test_put_password_with_the_seed_body_changes_the_password(
    anonymous: httpx.Client, fresh_user: dict[str, str]
) -> None:
    key = anonymous.post("/api/v1/auth/api-key", json=fresh_user).json()["api_key"]
    headers = {"X-API-KEY": key}
    change = {"old_password": fresh_user["password"], "new_password": "seed-client-pass-2"}
    changed = anonymous.put("/api/v1/users/password", json=change, headers=headers)
    assert changed.status_code == 200, changed.text
    assert changed.json() == {"message": "Password changed successfully"}
    login = {"username": fresh_user["username"], "password": "seed-client-pass-2"}
    assert anonymous.post("/api/v1/auth/login", json=login).status_code == 200
    error_of(anonymous.post("/api/v1/auth/login", json=fresh_user), 401, "unauthorized")
    wrong = {"old_password": "not-the-password", "new_password": "seed-client-pass-3"}
    error_of(anonymous.put("/api/v1/users/password", json=wrong, headers=headers), 401, "unauthorized")
    missing = anonymous.put("/api/v1/users/password", json={"new_password": "x" * 12}, headers=headers)
    assert error_of(missing, 422, "validation_error")["details"][0]["field"] == "old_password"
    error_of(anonymous.put("/api/v1/users/password", json=change), 401, "unauthorized")


def test_profile_edit_naming_a_role_is_refused_with_403(
    anonymous: httpx.Client, fresh_user: dict[str, str]
) -> None:
    headers = {"X-API-KEY": anonymous.post("/api/v1/auth/api-key", json=fresh_user).json()["api_key"]}
    for role in ("admin", "client", None):
        refused = anonymous.put("/api/v1/users/profile", json={"role": role}, headers=headers)
        error = error_of(refused, 403, "role_change_forbidden")
        assert error["details"] == {"field": "role", "role": "client"}
    also_email = {"role": "admin", "email": "raised@example.com"}
    error_of(
        anonymous.put("/api/v1/users/profile", json=also_email, headers=headers), 403, "role_change_forbidden"
    )
    profile = anonymous.get("/api/v1/users/profile", headers=headers).json()
    assert profile["role"] == "client"
    assert profile["email"] != "raised@example.com"  # nothing of a refused edit is applied
    edited = anonymous.put("/api/v1/users/profile", json={"email": "kept@example.com"}, headers=headers)
    assert edited.status_code == 200
    assert edited.json()["email"] == "kept@example.com"
    error_of(anonymous.put("/api/v1/users/profile", json={"role": "admin"}), 401, "unauthorized")


# --- noise sweeps --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def noisy_server(settings: Settings, accounts: dict[str, Account]) -> Iterator[LiveServer]:
    update = {
        "signal_predictor": "noisy_ideal_oracle",
        "oracle_csv": demo_csv(settings),
        "oracle_noise_std": 0.0,
    }
    with LiveServer(settings.model_copy(update=update)) as server:
        yield server


@pytest.fixture
def operator(noisy_server: LiveServer, accounts: dict[str, Account]) -> Iterator[httpx.Client]:
    with http_as(noisy_server, accounts["operator"]) as http:
        yield http


@pytest.fixture
def trader(noisy_server: LiveServer, accounts: dict[str, Account]) -> Iterator[httpx.Client]:
    with http_as(noisy_server, accounts["client"]) as http:
        yield http


def entry_answers(trader: httpx.Client) -> list[int]:
    answers = []
    for when in ENTRY_TIMES:
        response = trader.post(ENTRY, json={"datetime": when, "tp": 20, "sl": 20})
        assert response.status_code == 200, response.text
        answers += [response.json()["buy_entry_binary"], response.json()["sell_entry_binary"]]
    return answers


def confusion(truths: list[int], answers: list[int]) -> dict[str, int]:
    pairs = list(zip(truths, answers, strict=True))
    return {
        "tp": pairs.count((1, 1)),
        "fp": pairs.count((0, 1)),
        "tn": pairs.count((0, 0)),
        "fn": pairs.count((1, 0)),
    }


def test_metrics_count_the_noisy_answers_against_the_noiseless_oracle(
    operator: httpx.Client, trader: httpx.Client
) -> None:
    reset = operator.post(SET_NOISE, json={"noise_std": 0.0})
    assert reset.status_code == 200, reset.text
    assert reset.json() == {"noise_std": 0.0, "status": "ok", "predictor": "noisy_ideal_oracle"}
    truths = entry_answers(trader)
    assert 0 < sum(truths) < len(truths)  # both classes occur, so every ratio is defined
    ideal = trader.get(NOISE_METRICS).json()
    assert {key: ideal[key] for key in ("fp", "fn")} == {"fp": 0, "fn": 0}
    assert ideal["accuracy"] == ideal["precision"] == ideal["recall"] == ideal["f1"] == 1.0

    assert operator.post(SET_NOISE, json={"noise_std": 0.8}).status_code == 200
    assert trader.get(NOISE_METRICS).json()["total_predictions"] == 0  # set_noise resets the counts
    noisy = entry_answers(trader)
    assert noisy != truths
    counts = confusion(truths, noisy)
    metrics = trader.get(NOISE_METRICS).json()
    assert {key: metrics[key] for key in counts} == counts
    assert metrics["total_predictions"] == len(truths)
    assert metrics["noise_std"] == 0.8
    precision = counts["tp"] / (counts["tp"] + counts["fp"])
    recall = counts["tp"] / (counts["tp"] + counts["fn"])
    assert metrics["precision"] == round(precision, 6)
    assert metrics["recall"] == round(recall, 6)
    assert metrics["f1"] == round(2 * precision * recall / (precision + recall), 6)
    assert metrics["accuracy"] == round((counts["tp"] + counts["tn"]) / len(truths), 6)


def test_set_noise_restarts_the_seeded_stream_so_a_sweep_repeats(
    operator: httpx.Client, trader: httpx.Client
) -> None:
    operator.post(SET_NOISE, json={"noise_std": 0.6})
    first = entry_answers(trader)
    operator.post(SET_NOISE, json={"noise_std": 0.6})
    assert entry_answers(trader) == first
    confidence = trader.post(ENTRY, json={"datetime": ENTRY_TIMES[0]}).json()["buy_confidence"]
    assert confidence == pytest.approx(0.5 * (1 + math.erf(0.5 / (0.6 * math.sqrt(2)))))


def test_only_operators_and_admins_may_set_the_noise(
    noisy_server: LiveServer, accounts: dict[str, Account], trader: httpx.Client
) -> None:
    refused = error_of(trader.post(SET_NOISE, json={"noise_std": 0.1}), 403, "forbidden")
    assert refused["details"] == {"required_permissions": ["tune_signal_noise"], "role": "client"}
    with http_as(noisy_server) as anonymous:
        error_of(anonymous.post(SET_NOISE, json={"noise_std": 0.1}), 401, "unauthorized")
        error_of(anonymous.get(NOISE_METRICS), 401, "unauthorized")
    with http_as(noisy_server, accounts["admin"]) as admin:
        assert admin.post(SET_NOISE, json={"noise_std": 0.0}).status_code == 200


@pytest.mark.parametrize("body", [{"noise_std": -0.1}, {"noise_std": "loud"}, {}, {"noise_std": None}])
def test_set_noise_refuses_a_noise_that_is_not_a_number_at_least_zero(
    operator: httpx.Client, body: dict[str, Any]
) -> None:
    error = error_of(operator.post(SET_NOISE, json=body), 422, "validation_error")
    assert error["details"][0]["field"] == "noise_std"


def test_a_predictor_without_noise_answers_409_naming_the_one_with_it(
    live_server: LiveServer, accounts: dict[str, Account]
) -> None:
    with http_as(live_server, accounts["operator"]) as operator:
        error = error_of(operator.post(SET_NOISE, json={"noise_std": 0.1}), 409, "noise_unsupported")
        assert error["details"] == {"predictor": "lightgbm", "noise_predictors": ["noisy_ideal_oracle"]}
        error_of(operator.get(NOISE_METRICS), 409, "noise_unsupported")


def test_the_trading_decision_route_beside_the_noise_routes_still_decides(client: httpx.Client) -> None:
    decision = client.post("/api/v1/predict", json={"symbol": "EURUSD"})
    assert decision.status_code == 200, decision.text
    assert decision.json()["action"] in {"BUY", "SELL", "HOLD"}
    error_of(client.get("/api/v1/predict"), 405, "method_not_allowed")


def test_the_schema_documents_the_new_routes_with_their_credentials(anonymous: httpx.Client) -> None:
    paths = anonymous.get("/openapi.json").json()["paths"]
    assert paths["/"]["get"]["security"] == []
    for path, method in (
        (PLUGINS, "get"),
        (PLUGINS + "/status", "get"),
        (SET_NOISE, "post"),
        (NOISE_METRICS, "get"),
        ("/api/v1/users/password", "put"),
    ):
        assert paths[path][method]["security"] == [{"ApiKey": []}, {"Bearer": []}], path
