"""The marketplace, leaderboard and drift pages in a real browser: the leaderboard's cells read
from the DOM equal the API's answer, a client's wallet and an admin's ledger show the ledger's exact
strings, the drift page draws its charts; each page is screenshotted, passes axe-core and does not
overflow sideways, with no console error or CSP violation."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from prediction_provider.dashboard.render import num
from prediction_provider.dashboard.views.leaderboard import DIGITS
from tests.conftest import Account, LiveServer
from tests.e2e.dashboard.conftest import Dash
from tests.e2e.test_dashboard_drift import drifting_model

pytestmark = pytest.mark.browser
QUERY = "target=direction&window=all&min_n=1&min_days=1"


def check_page(dash: Dash, name: str) -> None:
    dash.shot(name)
    assert dash.axe_serious() == []
    assert dash.no_horizontal_overflow()


def dom_rows(dash: Dash) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = dash.page.eval_on_selector_all(
        "#board-table tr[data-key]",
        """rows => rows.map(r => ({key: r.dataset.key, rank: r.dataset.rank,
            cells: Object.fromEntries([...r.querySelectorAll("td[data-field]")]
                .map(td => [td.dataset.field, td.textContent.trim()]))}))""",
    )
    return found


def test_the_leaderboard_in_the_browser_is_the_apis(
    dash: Dash, dashboard_server: LiveServer, accounts: dict[str, Account]
) -> None:
    client = accounts["client"]
    with httpx.Client(base_url=dashboard_server.url, timeout=60, headers=client.headers) as http:
        api = http.get(f"/api/v1/leaderboard?{QUERY}").json()
    dash.sign_in(client, f"/dashboard/leaderboard?{QUERY.replace('&', '%26')}")
    dash.page.wait_for_selector("#board-table")
    entries = [*api["entries"], *api["provisional"]]
    rows = dom_rows(dash)
    assert [r["key"] for r in rows] == [e["key"] for e in entries]
    for row, entry in zip(rows, entries, strict=True):
        hit = entry["hit_rate"] if isinstance(entry.get("hit_rate"), dict) else {}
        assert row["cells"]["n"] == str(entry["n"])
        assert row["cells"]["rank"] == ("-" if entry["rank"] is None else str(entry["rank"]))
        assert row["cells"]["hit_rate"] == num(hit.get("value"), DIGITS)
        assert row["cells"]["primary"] == num(entry["primary"]["value"], DIGITS)
    if not entries:
        assert dash.page.locator("[data-field=empty]").is_visible()
    check_page(dash, "leaderboard-client")


def test_the_marketplace_for_a_client_and_an_admin(
    dash: Dash, dashboard_server: LiveServer, accounts: dict[str, Account]
) -> None:
    services = dashboard_server.services
    name = f"dash-browser-{uuid.uuid4().hex[:8]}"
    user = services.accounts.create_user(
        name, f"{name}@example.com", "browser-password-123", "client", active=True
    )
    holder = Account(
        name, "browser-password-123", services.accounts.regenerate_api_key(user["id"])["api_key"], user["id"]
    )
    admin = accounts["admin"]
    with httpx.Client(base_url=dashboard_server.url, timeout=60) as http:
        moved = http.post(
            f"/api/v1/admin/wallets/{name}/deposits", json={"amount": "7.250001", "currency": "USD"},
            headers={**admin.headers, "Idempotency-Key": uuid.uuid4().hex},
        )  # fmt: skip
        assert moved.status_code == 201, moved.text
    dash.sign_in(holder, "/dashboard/marketplace")
    assert dash.page.locator("#wallet [data-field=available]").inner_text() == "7.250001"
    assert dash.page.locator("#ledger").count() == 0
    check_page(dash, "marketplace-client")
    dash.sign_out()
    dash.sign_in(admin, "/dashboard/marketplace")
    assert dash.page.locator("#ledger [data-field=balanced]").get_attribute("data-balanced") in ("yes", "no")
    assert dash.page.locator("#ledger tr[data-transfer]").count() >= 1
    assert dash.page.get_by_text("7.250001").count() >= 1
    check_page(dash, "marketplace-admin")


def test_the_drift_page_draws_for_an_operator(
    dash: Dash, dashboard_server: LiveServer, accounts: dict[str, Account]
) -> None:
    model = drifting_model(dashboard_server, accounts["client"])
    dash.sign_in(accounts["operator"], f"/dashboard/drift?model={model}")
    dash.page.wait_for_selector("#drift-panel .drift-table")
    assert dash.chart_points("#drift-histogram") > 0
    assert dash.canvas_ink("#drift-histogram") > 0
    if dash.page.locator("#drift-scatter").count():
        assert dash.chart_points("#drift-scatter") > 0
    else:
        assert dash.page.locator(".drift-no-importance").is_visible()
    check_page(dash, "drift-operator")
