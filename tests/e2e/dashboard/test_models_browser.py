"""The Models and Experiments pages in a real browser: each page per role (screenshot, axe,
no horizontal overflow), an alias promotion through the model page's form, a provider's tag
shown as text, the comparison, and the operator's experiments page."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import MODEL, Account, LiveServer
from tests.e2e.dashboard.conftest import Dash
from tests.e2e.test_dashboard_models import XSS, copy_model

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def model(dashboard_server: LiveServer) -> Iterator[str]:
    name = copy_model(dashboard_server, "browser-models")
    yield name
    dashboard_server.services.registry.client.set_registered_model_alias(name, "champion", "1")


def looks_right(dash: Dash, name: str) -> None:
    dash.shot(name)
    assert dash.axe_serious() == []
    assert dash.no_horizontal_overflow()


@pytest.mark.parametrize("role", ["admin", "client"])
def test_the_models_page_and_a_model_page(
    dash: Dash, accounts: dict[str, Account], model: str, role: str
) -> None:
    dash.sign_in(accounts[role], "/dashboard/models")
    dash.page.wait_for_selector(f'tr[data-model="{MODEL}"]')
    looks_right(dash, f"models-{role}")
    dash.page.fill("#models-q", model)
    with dash.page.expect_navigation():
        dash.page.click("form.filters button[type=submit]")
    assert dash.page.locator("tbody tr[data-model]").count() == 1
    with dash.page.expect_navigation():
        dash.page.click(f'tr[data-model="{model}"] a')
    dash.page.wait_for_selector('tr[data-version="3"]')
    looks_right(dash, f"model-detail-{role}")


def test_an_alias_promotion_shown_on_the_model_page(
    dash: Dash, accounts: dict[str, Account], model: str
) -> None:
    dash.sign_in(accounts["admin"], f"/dashboard/models/{model}")
    row = dash.page.locator('tr[data-version="3"]')
    with dash.page.expect_navigation():
        row.locator("button", has_text="@champion").click()  # the confirm is accepted by the fixture
    assert dash.page.locator('tr[data-version="3"] .chip', has_text="@champion").count() == 1
    assert "@champion -> v3" in dash.page.inner_text("main")
    dash.shot("model-detail-promoted")


def test_a_provider_tag_is_text_not_script(dash: Dash, accounts: dict[str, Account], model: str) -> None:
    dialogs: list[str] = []
    dash.page.on("dialog", lambda dialog: dialogs.append(dialog.type))
    dash.sign_in(accounts["client"], f"/dashboard/models/{model}")
    tag = dash.page.locator(".models-tag-value", has_text=XSS)
    assert tag.count() == 1
    assert tag.inner_text() == XSS
    inline: int = dash.page.evaluate("document.querySelectorAll('script:not([src])').length")
    assert inline == 0
    assert dash.page.locator("main script").count() == 0
    assert dialogs == []


def test_the_compare_page(dash: Dash, accounts: dict[str, Account], model: str) -> None:
    dash.sign_in(accounts["admin"], f"/dashboard/models/{model}")
    dash.page.check("#cmp-1")
    dash.page.check("#cmp-2")
    with dash.page.expect_navigation():
        dash.page.click(".models-compare-pick button[type=submit]")
    assert dash.page.locator("table.models-compare thead th").count() == 3
    looks_right(dash, "model-compare-admin")


def test_the_experiments_page_for_an_operator(
    dash: Dash, dashboard_server: LiveServer, accounts: dict[str, Account], model: str
) -> None:
    name = f"browser-ab-{uuid.uuid4().hex[:8]}"
    body: dict[str, Any] = {
        "name": name,
        "model": model,
        "variants": [
            {"name": "control", "target": f"models:/{model}/1", "weight": 50, "control": True},
            {"name": "candidate", "target": f"models:/{model}/2", "weight": 50},
        ],
    }
    headers = accounts["operator"].headers
    with httpx.Client(base_url=dashboard_server.url, timeout=60, headers=headers) as api:
        assert api.post("/api/v1/experiments", json=body).status_code == 201
        assert api.post(f"/api/v1/experiments/{name}/start").status_code == 200
        try:
            dash.sign_in(accounts["operator"], "/dashboard/experiments")
            dash.page.wait_for_selector(f'section[data-experiment="{name}"]')
            looks_right(dash, "experiments-operator")
        finally:
            api.post(f"/api/v1/experiments/{name}/stop")
