"""The Overview and Live metrics pages over HTTP: who sees them, the window in the URL, the live
stream's first events, and that the tiles show what ``GET /api/v1/metrics/series`` answers."""

from __future__ import annotations

import html
import json
import re
import time
import uuid
from collections.abc import Iterator
from datetime import datetime

import httpx
import pytest

from prediction_provider.dashboard.series_charts import api_step
from prediction_provider.observability.series import MetricSeries
from tests.conftest import MODEL, Account, LiveServer
from tests.dashboard_client import DashboardClient

TILE = re.compile(r'data-tile="(?P<key>[a-z0-9]+)" data-value="(?P<value>[^"]*)"')
SAMPLE = re.compile(r'data-sample="([0-9.e+-]+)"')
CHART = re.compile(r'id="(?P<id>chart-[a-z]+)" data-chart="(?P<spec>[^"]*)"')
STATUS = re.compile(r'data-status="(\d+)"')
TILES = {"rate", "errors", "p50", "p99", "inflight"}


@pytest.fixture
def admin_page(live_server: LiveServer, accounts: dict[str, Account]) -> Iterator[DashboardClient]:
    account = accounts["admin"]
    with DashboardClient(live_server.url, username=account.username, password=account.password) as dc:
        yield dc


def tiles_of(text: str) -> dict[str, str]:
    return {m["key"]: m["value"] for m in TILE.finditer(text)}


def predict(live_server: LiveServer, account: Account, rows: list[dict[str, float]], n: int = 3) -> None:
    with httpx.Client(base_url=live_server.url, headers=account.headers, timeout=60) as http:
        for row in rows[:n]:
            answer = http.post("/predict", json={"model": MODEL, "features": row})
            assert answer.status_code == 200, answer.text


@pytest.mark.parametrize("role", ["admin", "operator"])
def test_overview_shows_every_tile_to_admins_and_operators(
    live_server: LiveServer, accounts: dict[str, Account], role: str
) -> None:
    account = accounts[role]
    with DashboardClient(live_server.url, username=account.username, password=account.password) as dc:
        page = dc.get("/dashboard")
    assert page.status_code == 200, page.text
    assert set(tiles_of(page.text)) == TILES
    for panel in ("overview-red", "overview-saturation", "overview-health", "overview-changes"):
        assert f'sse-swap="{panel}"' in page.text
    for chip in ("live", "ready", "database", "redis", "broker", "grpc"):
        assert f'data-health="{chip}"' in page.text
    assert 'data-health="live" data-state="ok"' in page.text


def test_overview_and_metrics_answer_a_client_with_the_403_page(
    live_server: LiveServer, accounts: dict[str, Account]
) -> None:
    account = accounts["client"]
    with DashboardClient(live_server.url, username=account.username, password=account.password) as dc:
        for path in ("/dashboard", "/dashboard/metrics", "/dashboard/stream/overview"):
            page = dc.get(path)
            assert page.status_code == 403, path
        assert STATUS.search(dc.get("/dashboard").text).group(1) == "403"  # type: ignore[union-attr]


@pytest.mark.parametrize("window", ["5m", "15m", "1h"])
def test_metrics_page_draws_each_window(admin_page: DashboardClient, window: str) -> None:
    page = admin_page.get(f"/dashboard/metrics?window={window}")
    assert page.status_code == 200, page.text
    assert f'data-window="{window}"' in page.text
    charts = {m["id"]: json.loads(html.unescape(m["spec"])) for m in CHART.finditer(page.text)}
    assert set(charts) == {"chart-rate", "chart-model", "chart-status", "chart-latency"}
    for spec in charts.values():
        assert all(len(s["values"]) == len(spec["x"]) for s in spec["series"])
    assert f"/api/v1/metrics/series?window={window}" in page.text
    assert "deploy/grafana/prediction-provider.json" in page.text
    assert "bucket estimate" in page.text
    assert "One process" in page.text  # the test server runs one process


def test_metrics_page_refuses_a_window_it_does_not_offer(admin_page: DashboardClient) -> None:
    page = admin_page.get("/dashboard/metrics?window=2h")
    assert page.status_code == 422
    assert 'data-status="422"' in page.text
    assert admin_page.get("/dashboard/metrics?page=2").status_code == 422


def test_overview_stream_sends_the_tiles_first(admin_page: DashboardClient) -> None:
    seen: list[str] = []
    with admin_page.http.stream("GET", "/dashboard/stream/overview", headers=admin_page.cookie) as stream:
        assert stream.status_code == 200
        assert stream.headers["content-type"].startswith("text/event-stream")
        for line in stream.iter_lines():
            seen.append(line)
            if line.startswith("event: overview-changes"):
                break
    events = [line.removeprefix("event: ") for line in seen if line.startswith("event: ")]
    assert events[0] == "overview-red"
    assert set(tiles_of("\n".join(seen))) == TILES


def test_tiles_and_charts_equal_the_series_api_at_the_same_sample(
    live_server: LiveServer,
    accounts: dict[str, Account],
    admin_page: DashboardClient,
    feature_rows: list[dict[str, float]],
) -> None:
    admin = accounts["admin"]
    series: MetricSeries = live_server.app.state.metric_series
    predict(live_server, admin, feature_rows)
    step = api_step(series)
    deadline = time.monotonic() + 30
    with httpx.Client(base_url=live_server.url, headers=admin.headers, timeout=60) as api:
        while True:  # the background sampler may add a sample between the page and the API: read again
            series.sample()
            page = admin_page.get("/dashboard")
            metrics = admin_page.get("/dashboard/metrics?window=5m")
            total = api.get(f"/api/v1/metrics/series?window=15m&step={step}&group_by=total").json()
            by_route = api.get(f"/api/v1/metrics/series?window=5m&step={step}&group_by=route").json()
            page_t = float(SAMPLE.search(page.text).group(1))  # type: ignore[union-attr]
            metrics_t = float(SAMPLE.search(metrics.text).group(1))  # type: ignore[union-attr]
            api_t = datetime.fromisoformat(total["as_of"]).timestamp()
            route_t = datetime.fromisoformat(by_route["as_of"]).timestamp()
            if page_t == pytest.approx(api_t, abs=1e-6) and metrics_t == pytest.approx(route_t, abs=1e-6):
                break
            assert time.monotonic() < deadline, "the page and the API never read the same sample"
    last = total["series"][0]["points"][-1]
    tiles = tiles_of(page.text)
    assert float(tiles["rate"]) == pytest.approx(last["rate"])
    for key, field in (("errors", "error_share"), ("p50", "p50"), ("p99", "p99")):
        expected = last[field]
        scale = 100.0 if key == "errors" else 1000.0
        assert (
            (tiles[key] == "") if expected is None else float(tiles[key]) == pytest.approx(expected * scale)
        )
    chart = next(
        json.loads(html.unescape(m["spec"])) for m in CHART.finditer(metrics.text) if m["id"] == "chart-rate"
    )
    assert [s["label"] for s in chart["series"]] == [line["key"] for line in by_route["series"]]
    times = [datetime.fromisoformat(p["t"]).timestamp() for p in by_route["series"][0]["points"]]
    assert chart["x"] == pytest.approx(times)
    predict_route = next(line for line in by_route["series"] if line["key"] == "/predict")
    label = [s["label"] for s in chart["series"]].index("/predict")
    assert chart["series"][label]["values"] == pytest.approx([p["rate"] for p in predict_route["points"]])


def test_what_changed_links_a_deactivation_to_the_admin_page(
    live_server: LiveServer, accounts: dict[str, Account], admin_page: DashboardClient
) -> None:
    name = f"feed-{uuid.uuid4().hex[:8]}"
    with httpx.Client(base_url=live_server.url, headers=accounts["admin"].headers, timeout=60) as api:
        body = {"username": name, "email": f"{name}@example.com", "password": "feed-password-123"}
        assert api.post("/api/v1/admin/users", json={**body, "is_active": True}).status_code == 201
        assert api.post(f"/api/v1/admin/users/{name}/deactivate").status_code == 200
    item = re.compile(
        rf'data-change="deactivation">.*?user {name} deactivated.*?href="/dashboard/admin"', re.S
    )
    deadline = time.monotonic() + 30  # the audit entry is written off the request path, the feed cached
    while not item.search(admin_page.get("/dashboard").text):
        assert time.monotonic() < deadline, "the deactivation never showed in the feed"
        time.sleep(0.5)
