"""``GET /metrics`` on the real server: Prometheus text, exact counts, who may read it, and how
Prometheus signs in (an API key as a bearer token)."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client import CONTENT_TYPE_LATEST

from prediction_provider.config import Settings
from prediction_provider.observability.metrics import UNMATCHED
from tests.conftest import MODEL, TEST_JWT_SECRET, Account, LiveServer
from tests.processes import free_port, stop, wait_until_healthy
from tests.security.support import assert_unauthorized, bearer, error_of, login
from tests.unit.test_metrics import Labels, requests_of, samples, value

Samples = dict[tuple[str, Labels], float]
JOB_ROUTE = "/api/v1/predictions/{job_id}"


def scrape(url: str, headers: dict[str, str]) -> Samples:
    """One scrape on a fresh connection (with several processes, any of them may answer)."""
    response = httpx.get(f"{url}/metrics", headers=headers, timeout=60)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == CONTENT_TYPE_LATEST
    return samples(response.text)


def series(found: Samples, name: str) -> dict[Labels, float]:
    return {labels: sample for (sample_name, labels), sample in found.items() if sample_name == name}


def test_operator_scrapes_every_family_in_prometheus_text(
    live_server: LiveServer, accounts: dict[str, Account]
) -> None:
    scrape(live_server.url, accounts["operator"].headers)  # so that at least one request was counted
    names = {name for name, _ in scrape(live_server.url, accounts["operator"].headers)}
    expected = {
        "pp_http_requests_total", "pp_http_request_duration_seconds_bucket", "pp_build_info",
        "pp_model_cache_hits_total", "pp_model_cache_misses_total", "pp_model_cache_loads_total",
        "pp_model_cache_load_failures_total", "pp_model_cache_evictions_total", "pp_model_cache_models",
        "pp_model_cache_capacity", "pp_model_loaded", "pp_model_load_seconds", "pp_prediction_jobs",
        "pp_audit_queue_length", "process_cpu_seconds_total", "process_resident_memory_bytes",
    }  # fmt: skip
    assert expected <= names


def test_the_warmed_model_and_the_cache_figures_are_the_caches_own(
    live_server: LiveServer, accounts: dict[str, Account]
) -> None:
    found = scrape(live_server.url, accounts["operator"].headers)
    cache = live_server.services.cache
    stats = cache.stats.as_dict()
    for field, count in stats.items():
        assert value(found, f"pp_model_cache_{field}_total") == count, field
    loaded = {
        (dict(labels)["name"], dict(labels)["version"], dict(labels)["loader"])
        for labels in series(found, "pp_model_loaded")
    }
    # Earlier tests may have loaded other versions too: every cached model is reported, exactly.
    assert loaded == {
        (entry.resolved.name, entry.resolved.version, entry.loader) for entry in cache.entries()
    }
    assert MODEL in {name for name, _, _ in loaded}
    assert value(found, "pp_model_cache_models") == len(cache.entries())


def test_requests_move_the_counters_by_exactly_their_number(
    live_server: LiveServer,
    accounts: dict[str, Account],
    client: httpx.Client,
    feature_rows: list[dict[str, float]],
) -> None:
    operator = accounts["operator"].headers
    before = scrape(live_server.url, operator)
    for row in feature_rows[:5]:
        assert client.post("/predict", json={"model": MODEL, "features": row}).status_code == 200
    for index in range(2):
        assert client.get(f"/api/v1/predictions/no-such-job-{index}").status_code == 404
    assert client.get("/no/such/route").status_code == 404
    after = scrape(live_server.url, operator)

    def moved(route: str, method: str, status: int) -> float:
        return requests_of(after, route, method, status) - requests_of(before, route, method, status)

    assert moved("/predict", "POST", 200) == 5
    assert moved(JOB_ROUTE, "GET", 404) == 2
    assert moved(UNMATCHED, "GET", 404) == 1
    assert moved("/metrics", "GET", 200) == 1  # the first scrape; a scrape is counted once it ends
    count = "pp_http_request_duration_seconds_count"
    assert (
        value(after, count, method="POST", route="/predict")
        - value(before, count, method="POST", route="/predict")
        == 5
    )
    routes = {dict(labels).get("route", "") for _, labels in after}
    assert not [route for route in routes if "no-such-job" in route or "no/such" in route]


@pytest.mark.parametrize("role", ["operator", "admin"])
def test_operators_and_admins_may_read_metrics(
    live_server: LiveServer, accounts: dict[str, Account], role: str
) -> None:
    assert scrape(live_server.url, accounts[role].headers)


@pytest.mark.parametrize("role", ["client", "provider", "evaluator"])
def test_other_roles_are_refused_metrics(
    live_server: LiveServer, accounts: dict[str, Account], role: str
) -> None:
    response = httpx.get(f"{live_server.url}/metrics", headers=accounts[role].headers)
    error_of(response, 403, "forbidden")


def test_anonymous_callers_must_sign_in_for_metrics(anonymous: httpx.Client) -> None:
    assert_unauthorized(anonymous.get("/metrics"))


def test_an_api_key_works_as_a_bearer_token(
    live_server: LiveServer, accounts: dict[str, Account], feature_rows: list[dict[str, float]]
) -> None:
    assert scrape(live_server.url, bearer(accounts["operator"].api_key))
    predicted = httpx.post(
        f"{live_server.url}/predict",
        json={"model": MODEL, "features": feature_rows[0]},
        headers=bearer(accounts["client"].api_key),
    )
    assert predicted.status_code == 200, predicted.text


def test_a_wrong_api_key_as_a_bearer_token_is_refused(live_server: LiveServer) -> None:
    wrong = "pp_" + secrets.token_urlsafe(32)
    assert_unauthorized(httpx.get(f"{live_server.url}/metrics", headers=bearer(wrong)))
    assert_unauthorized(httpx.get(f"{live_server.url}/api/v1/users/profile", headers=bearer(wrong)))


def test_a_clients_key_as_a_bearer_token_keeps_the_clients_permissions(
    live_server: LiveServer, accounts: dict[str, Account]
) -> None:
    response = httpx.get(f"{live_server.url}/metrics", headers=bearer(accounts["client"].api_key))
    error_of(response, 403, "forbidden")


def test_a_jwt_still_works_as_a_bearer_token(live_server: LiveServer, accounts: dict[str, Account]) -> None:
    operator = accounts["operator"]
    with httpx.Client(base_url=live_server.url, timeout=60) as http:
        token = login(http, operator.username, operator.password)
    assert scrape(live_server.url, bearer(token))


# -- job counts, on a server of its own whose jobs stay where they are put --------------------------

JOBS_ADMIN, JOBS_PASSWORD = "metrics-admin", "metrics-admin-password"


@pytest.fixture(scope="module")
def idle_jobs_server(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """No executor threads and an empty database: a submitted job stays pending until cancelled."""
    database = tmp_path_factory.mktemp("metrics_jobs") / "provider.db"
    isolated = settings.model_copy(
        update={
            "database_url": f"sqlite:///{database}",
            "bootstrap_admin_username": JOBS_ADMIN,
            "bootstrap_admin_password": JOBS_PASSWORD,
            "job_workers": 0,
        }
    )
    with LiveServer(isolated) as server:
        yield server


def test_prediction_jobs_are_counted_by_status(
    idle_jobs_server: LiveServer, feature_rows: list[dict[str, float]]
) -> None:
    with httpx.Client(base_url=idle_jobs_server.url, timeout=60) as http:
        headers = bearer(login(http, JOBS_ADMIN, JOBS_PASSWORD))
        jobs = [
            http.post("/api/v1/predictions", json={"model": MODEL, "features": row}, headers=headers)
            for row in feature_rows[:2]
        ]
        assert [job.status_code for job in jobs] == [202, 202]
        pending = series(scrape(idle_jobs_server.url, headers), "pp_prediction_jobs")
        assert {dict(labels)["status"]: count for labels, count in pending.items()} == {
            "pending": 2, "processing": 0, "completed": 0, "failed": 0, "cancelled": 0, "expired": 0,
        }  # fmt: skip
        cancelled = http.delete(f"/api/v1/predictions/{jobs[0].json()['id']}", headers=headers)
        assert cancelled.status_code == 200, cancelled.text
        found = scrape(idle_jobs_server.url, headers)
    assert value(found, "pp_prediction_jobs", status="pending") == 1
    assert value(found, "pp_prediction_jobs", status="cancelled") == 1


# -- several processes ----------------------------------------------------------------------------


@pytest.fixture
def two_workers(settings: Settings, tmp_path: Path) -> Iterator[str]:
    port = free_port()
    command = [
        str(Path(sys.executable).with_name("prediction-provider")),
        "serve", "--data-dir", str(settings.data_dir), "--port", str(port),
        "--grpc-port", str(free_port()), "--workers", "2",
    ]  # fmt: skip
    log_path = tmp_path / "server.log"
    env = {**os.environ, "PP_LOG_LEVEL": "warning", "PP_JWT_SECRET": TEST_JWT_SECRET}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    if settings.database_url:
        env["PP_DATABASE_URL"] = settings.database_url
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            wait_until_healthy(process, f"http://127.0.0.1:{port}/health/live", log_path)
            yield f"http://127.0.0.1:{port}"
        finally:
            stop(process)


def test_every_process_of_serve_workers_reports_the_requests_of_all(
    two_workers: str, accounts: dict[str, Account]
) -> None:
    """Each request and scrape on a fresh connection, so the kernel may hand it to either process;
    whichever answers a scrape must report every request, its own or the other's."""
    probes = [httpx.get(f"{two_workers}/health/live", timeout=60) for _ in range(30)]
    assert {probe.status_code for probe in probes} == {200}
    for earlier_scrapes in range(8):
        found = scrape(two_workers, accounts["operator"].headers)
        # wait_until_healthy's own probes came first: count from the first scrape on.
        if earlier_scrapes == 0:
            baseline = requests_of(found, "/health/live", "GET", 200)
            assert baseline >= 30
        assert requests_of(found, "/health/live", "GET", 200) == baseline
        assert requests_of(found, "/metrics", "GET", 200) == earlier_scrapes
        pids = {dict(labels)["pid"] for labels in series(found, "pp_audit_queue_length")}
        assert len(pids) == 1  # per-process figures say which process answered
        assert not [name for name, _ in found if name.startswith("process_")]
