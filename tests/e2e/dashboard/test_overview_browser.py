"""Overview and Live metrics in a real browser: tiles that move with traffic, charts with one point
per sample, a revoked session that goes silent, pause, and the screenshot/axe/overflow checks."""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator

import httpx
import pytest

from prediction_provider.dashboard.session import COOKIE
from prediction_provider.observability.series import MetricSeries
from tests.conftest import MODEL, Account, LiveServer
from tests.e2e.dashboard.conftest import TICK_S, Dash

pytestmark = pytest.mark.browser

RATE = '[data-tile="rate"]'
SAMPLE = ".overview-tiles"


@pytest.fixture
def traffic(dashboard_server: LiveServer, accounts: dict[str, Account]) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=dashboard_server.url, headers=accounts["admin"].headers, timeout=60) as http:
        yield http


def send_predictions(http: httpx.Client, rows: list[dict[str, float]], n: int = 10) -> None:
    for row in (rows * n)[:n]:
        answer = http.post("/predict", json={"model": MODEL, "features": row})
        assert answer.status_code == 200, answer.text


def sample_of(dash: Dash) -> str:
    return dash.page.get_attribute(SAMPLE, "data-sample") or ""


def wait_for_a_tick(dash: Dash) -> None:
    """Until the stream has swapped in a newer snapshot than the one rendered."""
    dash.page.wait_for_function(
        "(before) => document.querySelector('.overview-tiles').dataset.sample !== before", arg=sample_of(dash)
    )


def test_a_live_tile_changes_while_requests_are_sent(
    dash: Dash, accounts: dict[str, Account], traffic: httpx.Client, feature_rows: list[dict[str, float]]
) -> None:
    dash.sign_in(accounts["admin"])
    dash.page.goto("/dashboard")
    dash.page.wait_for_selector(RATE)
    before = dash.page.get_attribute(RATE, "data-value")
    url = dash.page.url
    send_predictions(traffic, feature_rows)
    dash.page.wait_for_function(
        "(before) => document.querySelector('[data-tile=\"rate\"]').dataset.value !== before", arg=before
    )
    assert dash.page.url == url  # changed in place, no reload
    assert float(dash.page.get_attribute(RATE, "data-value") or "nan") >= 0


def expected_points(series: MetricSeries, as_of: float, seconds: float) -> int:
    """How many points ``window`` makes of the samples held up to ``as_of``: one per step with a
    sample in it (and a sample before it). ``as_of`` went through a datetime, so it is rounded to
    the microsecond: compare within that."""
    held = series.samples()
    near = 1e-5
    pairs = [later.t for _, later in itertools.pairwise(held) if as_of - seconds < later.t <= as_of + near]
    return len({math.ceil(t / series.interval_s) for t in pairs})


def test_the_rate_chart_holds_one_point_per_sample_in_the_window(
    dash: Dash, accounts: dict[str, Account], dashboard_server: LiveServer, traffic: httpx.Client,
    feature_rows: list[dict[str, float]],
) -> None:  # fmt: skip
    send_predictions(traffic, feature_rows, 3)
    dash.sign_in(accounts["admin"])
    dash.page.goto("/dashboard/metrics?window=5m")
    dash.page.wait_for_selector("#chart-rate canvas")
    dash.page.click(".live-toggle")  # paused: the numbers on screen stay those of one sample
    dash.page.wait_for_selector(".live-toggle[aria-pressed='true']")
    points = dash.chart_points("#chart-rate")
    as_of = float(dash.page.get_attribute(".metrics-panels", "data-sample") or "nan")
    series: MetricSeries = dashboard_server.app.state.metric_series
    assert series.interval_s == TICK_S
    assert points == expected_points(series, as_of, 300) > 0
    assert dash.canvas_ink("#chart-rate") > 0


def test_a_revoked_session_goes_silent_within_a_tick(
    dash: Dash, accounts: dict[str, Account], dashboard_server: LiveServer, traffic: httpx.Client,
    feature_rows: list[dict[str, float]],
) -> None:  # fmt: skip
    dash.sign_in(accounts["operator"])
    dash.page.goto("/dashboard")
    wait_for_a_tick(dash)
    token = next(c["value"] for c in dash.context.cookies() if c["name"] == COOKIE)
    sessions = dashboard_server.services.web_sessions
    assert sessions is not None
    sessions.end(token)
    dash.page.wait_for_selector('body[data-session="ended"]', timeout=int(4 * TICK_S * 1000) + 2000)
    assert dash.page.is_visible("#signed-out")
    assert dash.page.text_content(".live-state") == "Signed out"
    shown = sample_of(dash), dash.page.get_attribute(RATE, "data-value")
    send_predictions(traffic, feature_rows, 5)
    dash.page.wait_for_timeout(4 * TICK_S * 1000)  # a stale page's chance to change, not a condition
    assert (sample_of(dash), dash.page.get_attribute(RATE, "data-value")) == shown


def test_pause_stops_updates_and_resume_applies_them(dash: Dash, accounts: dict[str, Account]) -> None:
    dash.sign_in(accounts["admin"])
    dash.page.goto("/dashboard")
    wait_for_a_tick(dash)
    dash.page.click(".live-toggle")
    assert dash.page.text_content(".live-state") == "Paused"
    paused = sample_of(dash)
    dash.page.wait_for_timeout(4 * TICK_S * 1000)  # ticks that must not be applied
    assert sample_of(dash) == paused
    dash.page.click(".live-toggle")
    wait_for_a_tick(dash)
    assert sample_of(dash) != paused


@pytest.mark.parametrize("role", ["admin", "operator"])
@pytest.mark.parametrize("path", ["/dashboard", "/dashboard/metrics?window=15m"])
def test_overview_and_metrics_pass_axe_and_fit_the_screen(
    dash: Dash, accounts: dict[str, Account], role: str, path: str
) -> None:
    dash.sign_in(accounts[role])
    dash.page.goto(path)
    dash.page.wait_for_selector("[data-chart][data-points]")
    name = "overview" if path == "/dashboard" else "metrics"
    dash.shot(f"{name}-{role}")
    assert dash.axe_serious() == []
    assert dash.no_horizontal_overflow()
