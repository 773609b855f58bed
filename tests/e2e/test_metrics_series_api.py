"""``GET /api/v1/metrics/series`` on a real server: the counts and rates of the requests made between
two samples, who may read it, and the parameters it refuses.

The server here samples once at start-up and then only when the test says (an interval of an hour),
at times the test chooses, so that every figure is known exactly."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from prediction_provider.config import Settings
from prediction_provider.observability.series import MetricSeries
from tests.conftest import MODEL, Account, LiveServer, live_settings
from tests.security.support import error_of

SERIES = "/api/v1/metrics/series"
JOB_ROUTE = "/api/v1/predictions/{job_id}"


@pytest.fixture(scope="module")
def server(settings: Settings, accounts: dict[str, Account]) -> Iterator[LiveServer]:
    with LiveServer(live_settings(settings, metrics_series_interval_s=3600)) as live:
        yield live


def answered(live: LiveServer) -> float:
    """Requests the server has counted so far (a request is counted once its response has ended)."""
    return sum(
        float(sample.value)
        for family in live.app.state.metrics.http.requests.collect()
        for sample in family.samples
        if sample.name == "pp_http_requests_total"
    )


def get_series(live: LiveServer, headers: dict[str, str], **params: Any) -> httpx.Response:
    return httpx.get(f"{live.url}{SERIES}", headers=headers, params=params, timeout=60)


def test_the_series_counts_the_requests_made_between_two_samples(
    server: LiveServer, accounts: dict[str, Account], feature_rows: list[dict[str, float]]
) -> None:
    series: MetricSeries = server.app.state.metric_series
    client = accounts["client"].headers
    start = time.time() + 100  # after the start-up sample, and clear of its step
    series.sample(start)
    before = answered(server)
    with httpx.Client(base_url=server.url, headers=client, timeout=60) as http:
        for row in feature_rows[:5]:
            assert http.post("/predict", json={"model": MODEL, "features": row}).status_code == 200
        for index in range(2):
            assert http.get(f"/api/v1/predictions/no-such-job-{index}").status_code == 404
    deadline = time.monotonic() + 10
    while answered(server) < before + 7 and time.monotonic() < deadline:
        time.sleep(0.01)
    series.sample(start + 10)
    operator = accounts["operator"].headers

    response = get_series(server, operator, window="5m", step=5)
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["window_s"], body["step_s"], body["group_by"]) == (300, 5, "route")
    assert datetime.fromisoformat(body["as_of"]) == datetime.fromtimestamp(start + 10, UTC)
    assert "bucket estimates" in body["note"]
    lines = {line["key"]: line["points"] for line in body["series"]}
    last = datetime.fromtimestamp(start + 10, UTC)
    [predict] = [point for point in lines["/predict"] if datetime.fromisoformat(point["t"]) == last]
    assert (predict["count"], predict["rate"], predict["error_share"]) == (5, pytest.approx(0.5), 0.0)
    assert predict["p50"] <= predict["p95"] <= predict["p99"] <= 10.0
    [job] = [point for point in lines[JOB_ROUTE] if datetime.fromisoformat(point["t"]) == last]
    assert (job["count"], job["client_error_share"], job["error_share"]) == (2, 1.0, 0.0)

    total = get_series(server, operator, window="5m", step=5, group_by="total").json()["series"]
    assert [line["key"] for line in total] == ["total"]
    [point] = [point for point in total[0]["points"] if datetime.fromisoformat(point["t"]) == last]
    assert (point["count"], point["rate"]) == (7, pytest.approx(0.7))

    only = get_series(server, operator, window="1h", step=60, route="/predict").json()["series"]
    assert [line["key"] for line in only] == ["/predict"]
    assert sum(point["count"] for point in only[0]["points"]) == 5
    assert get_series(server, operator, group_by="model").status_code == 200


def test_admins_read_the_series_too(server: LiveServer, accounts: dict[str, Account]) -> None:
    response = get_series(server, accounts["admin"].headers)
    assert response.status_code == 200, response.text
    assert (response.json()["window_s"], response.json()["step_s"]) == (900, 5)


def test_the_series_needs_credentials(server: LiveServer) -> None:
    error_of(get_series(server, {}), 401, "unauthorized")


@pytest.mark.parametrize("role", ["client", "provider", "evaluator"])
def test_roles_without_the_metrics_permission_are_refused(
    server: LiveServer, accounts: dict[str, Account], role: str
) -> None:
    error_of(get_series(server, accounts[role].headers), 403, "forbidden")


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"window": "2h"}, "query.window"),
        ({"step": 0}, "query.step"),
        ({"step": 3600}, "query.step"),
        ({"group_by": "status"}, "query.group_by"),
        ({"colour": "red"}, "query.colour"),
    ],
)
def test_bad_parameters_are_a_422_naming_them(
    server: LiveServer, accounts: dict[str, Account], params: dict[str, Any], field: str
) -> None:
    error = error_of(get_series(server, accounts["operator"].headers, **params), 422, "validation_error")
    assert field in [detail["field"] for detail in error["details"]]
