"""The Jobs and Trading pages in a real browser: a live progress bar that survives a server restart,
a client seeing only its own jobs, and every page screenshotted, axe-checked and free of overflow."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pandas as pd
import pytest

from prediction_provider.config import Settings
from tests.conftest import MODEL, Account, LiveServer, live_settings
from tests.e2e.dashboard.conftest import TICK_S, Dash
from tests.e2e.test_dashboard_jobs import second_client, submit
from tests.e2e.test_jobs_api import finished

pytestmark = pytest.mark.browser

PROGRESS = "[sse-swap='job-state'] progress"
# A scoring job of this many rows, cut this fine, takes seconds on the suite's executors.
BIG_ROWS, CHUNK_ROWS = 30_000, 150


def checked(dash: Dash, name: str) -> None:
    dash.shot(name)
    assert dash.axe_serious() == []
    assert dash.no_horizontal_overflow()


def progress_value(dash: Dash) -> float:
    return float(dash.page.get_attribute(PROGRESS, "value") or 0)


def big_dataset(settings: Settings, feature_rows: list[dict[str, float]]) -> str:
    """A parquet file under the data roots, in small row groups so chunks read only their rows."""
    folder = settings.data_dir / "datasets"
    folder.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame((feature_rows * (BIG_ROWS // len(feature_rows) + 1))[:BIG_ROWS])
    name = f"progress-{uuid.uuid4().hex[:8]}.parquet"
    frame.to_parquet(folder / name, row_group_size=CHUNK_ROWS)
    return name


# Servers started inside a test build some routes lazily on their first request, under the test's
# warnings-as-errors; pydantic warns about an alias on a few API routes' parameters (not these pages').
OWN_SERVER_WARNINGS = "ignore::pydantic.warnings.UnsupportedFieldAttributeWarning"


@pytest.mark.filterwarnings(OWN_SERVER_WARNINGS)
def test_a_jobs_progress_bar_advances_live_and_survives_a_server_restart(
    browser: Any, settings: Settings, accounts: dict[str, Account], feature_rows: list[dict[str, float]]
) -> None:
    own = live_settings(settings, grpc_enabled=False, dashboard_tick_s=TICK_S)
    client = accounts["client"]
    dataset = big_dataset(settings, feature_rows)
    with LiveServer(own) as first:
        dash = Dash(browser, first.url)
        try:
            with httpx.Client(base_url=first.url, headers=client.headers, timeout=60) as api:
                body = {"model": MODEL, "dataset_path": dataset, "chunk_rows": CHUNK_ROWS}
                accepted = api.post("/api/v1/predictions/batch", json=body)
                assert accepted.status_code == 202, accepted.text
            job_id = accepted.json()["id"]
            dash.sign_in(client, f"/dashboard/jobs/{job_id}")
            dash.page.wait_for_selector(PROGRESS)
            dash.page.evaluate("window.notReloaded = true")
            start = progress_value(dash)
            # The bar moves by itself: SSE swaps the panel, the page is never reloaded.
            dash.page.wait_for_function(
                "([sel, start]) => Number(document.querySelector(sel).value) > start",
                arg=[PROGRESS, start],
                timeout=60_000,
            )
            moved = progress_value(dash)
            assert moved > start
            assert dash.page.evaluate("window.notReloaded === true")
            checked(dash, "job-detail-client")
            dash.page.goto("about:blank")  # closes the stream, so the server can stop
        finally:
            dash.close()
        dash.check()
    with LiveServer(own) as second:
        dash = Dash(browser, second.url)
        try:
            dash.sign_in(client, f"/dashboard/jobs/{job_id}")  # a new port: a new sign-in
            facts = dash.page.locator(f"[data-job-id='{job_id}']")
            assert facts.get_attribute("data-status") in ("processing", "completed")
            assert progress_value(dash) >= moved  # what the store holds, not the browser
            dash.page.wait_for_selector(f"[data-job-id='{job_id}'][data-status='completed']", timeout=120_000)
            assert progress_value(dash) == 100.0
            dash.page.goto(f"{second.url}/dashboard/jobs?status=completed")
            assert dash.page.locator(f"tr[data-job-id='{job_id}']").count() == 1
            dash.page.goto("about:blank")
        finally:
            dash.close()
        dash.check()


@pytest.fixture(scope="module")
def two_clients_jobs(
    dashboard_server: LiveServer, accounts: dict[str, Account], feature_rows: list[dict[str, float]]
) -> tuple[Account, str, str]:
    other = second_client(dashboard_server.services, "browser")
    mine = submit(dashboard_server.url, accounts["client"], feature_rows[7])
    theirs = submit(dashboard_server.url, other, feature_rows[8])
    for account, job_id in ((accounts["client"], mine), (other, theirs)):
        with httpx.Client(base_url=dashboard_server.url, headers=account.headers, timeout=60) as http:
            finished(http, job_id)
    return other, mine, theirs


def test_a_client_sees_only_its_own_jobs(
    dash: Dash, accounts: dict[str, Account], two_clients_jobs: tuple[Account, str, str]
) -> None:
    _, mine, theirs = two_clients_jobs
    dash.sign_in(accounts["client"], "/dashboard/jobs")
    dash.page.wait_for_selector(f"tr[data-job-id='{mine}']")
    assert dash.page.locator(f"tr[data-job-id='{theirs}']").count() == 0
    assert dash.page.locator("#jobs-owner").count() == 0
    # A live refresh keeps the scope: the table is swapped by the stream and still holds only ours.
    dash.page.evaluate("document.querySelector('[sse-swap=jobs-table] table').dataset.first = 'yes'")
    dash.page.wait_for_selector("[sse-swap=jobs-table] table:not([data-first])")
    dash.page.wait_for_selector(f"tr[data-job-id='{mine}']")
    assert dash.page.locator(f"tr[data-job-id='{theirs}']").count() == 0
    checked(dash, "jobs-client")
    dash.page.click(f"tr[data-job-id='{mine}'] a")
    dash.page.wait_for_selector("[data-step='completed']")
    checked(dash, "job-detail-completed-client")
    dash.page.goto("about:blank")


def test_an_operator_sees_every_clients_jobs(
    dash: Dash, accounts: dict[str, Account], two_clients_jobs: tuple[Account, str, str]
) -> None:
    other, mine, theirs = two_clients_jobs
    dash.sign_in(accounts["operator"], f"/dashboard/jobs?owner_id={other.user_id}")
    dash.page.wait_for_selector(f"tr[data-job-id='{theirs}']")
    assert dash.page.locator(f"tr[data-job-id='{mine}']").count() == 0
    assert dash.page.locator("[data-queue='pending']").count() == 1
    checked(dash, "jobs-operator")
    dash.page.goto(f"/dashboard/jobs/{mine}")
    dash.page.wait_for_selector("[data-step='completed']")
    assert dash.page.locator("button:has-text('Cancel job')").count() == 0  # may look, not touch
    checked(dash, "job-detail-operator")
    dash.page.goto("about:blank")


@pytest.mark.parametrize("role", ["client", "operator"])
def test_the_trading_page_reads_well(
    dash: Dash, dashboard_server: LiveServer, accounts: dict[str, Account], role: str
) -> None:
    with httpx.Client(base_url=dashboard_server.url, headers=accounts["client"].headers, timeout=60) as http:
        for timestamp in ("2017-09-01T12:00:00Z", "2018-01-10T12:00:00Z"):
            answer = http.post("/api/v1/predict", json={"symbol": "EURUSD", "timestamp": timestamp})
            assert answer.status_code in (200, 403), answer.text
    recorder = dashboard_server.services.decisions.recorder
    recorder.flush()
    dash.sign_in(accounts[role], "/dashboard/trading")
    dash.page.wait_for_selector("tr[data-decision-id]")
    assert dash.chart_points("#trading-distribution") == 3
    assert dash.chart_points("#trading-price-1") > 0
    assert dash.canvas_ink("#trading-price-1") > 0
    checked(dash, f"trading-{role}")
    dash.page.click("tr[data-decision-id] a")
    dash.page.wait_for_selector("table.trading-features")
    checked(dash, f"trading-decision-{role}")
