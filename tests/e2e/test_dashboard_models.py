"""The Models pages over HTTP: the catalogue per role, search, a model's page, comparison bounds,
provider text shown as text, and moving an alias through the page's form as the API would.

Alias moves and tags use a model registered for this module (copies of the demo versions), so
the shared test model's ``@champion``, which other tests rely on, never moves."""

from __future__ import annotations

import html
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import mlflow
import pytest

from tests.conftest import MODEL, Account, LiveServer
from tests.dashboard_client import DashboardClient

XSS = "<script>alert(1)</script>"
ROLES = ("admin", "operator", "provider", "client", "evaluator")


def copy_model(server: LiveServer, prefix: str) -> str:
    """``<prefix>-<id>``: versions 1-3 are the demo model's versions 1-3, ``@champion`` v1, and
    version 1 carries a tag whose value is a script."""
    registry = server.services.registry
    client = registry.client
    name = f"{prefix}-{uuid.uuid4().hex[:6]}"
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(registry.tracking_uri)
    try:
        client.create_registered_model(name)
        for version in ("1", "2", "3"):
            source = client.get_model_version(MODEL, version)
            client.create_model_version(name, source.source, run_id=source.run_id)
    finally:
        mlflow.set_tracking_uri(previous)
    client.set_registered_model_alias(name, "champion", "1")
    client.set_model_version_tag(name, "1", "note", XSS)
    return name


@pytest.fixture(scope="module")
def model(live_server: LiveServer) -> str:
    return copy_model(live_server, "dash-models")


@pytest.fixture(scope="module")
def dashboards(live_server: LiveServer, accounts: dict[str, Account]) -> Iterator[dict[str, DashboardClient]]:
    made = {
        role: DashboardClient(
            live_server.url, username=accounts[role].username, password=accounts[role].password
        )
        for role in ROLES
    }
    yield made
    for client in made.values():
        client.close()


def aliases_via_api(server: LiveServer, admin: Account, name: str) -> dict[str, str]:
    answer = httpx.get(f"{server.url}/models/{name}/versions", headers=admin.headers, timeout=60)
    assert answer.status_code == 200, answer.text
    return {alias: v["version"] for v in answer.json()["versions"] for alias in v["aliases"]}


@pytest.mark.parametrize("role", ROLES)
def test_every_reader_sees_the_test_model_and_its_aliases(
    dashboards: dict[str, DashboardClient], live_server: LiveServer, accounts: dict[str, Account], role: str
) -> None:
    page = dashboards[role].get("/dashboard/models", params={"q": MODEL})
    assert page.status_code == 200, page.text
    assert f'data-model="{MODEL}"' in page.text
    for alias, version in aliases_via_api(live_server, accounts["admin"], MODEL).items():
        assert html.escape(f"@{alias} -> v{version}") in page.text


def test_search_narrows_the_list(dashboards: dict[str, DashboardClient], model: str) -> None:
    everything = dashboards["client"].get("/dashboard/models", params={"q": "dash-models-"})
    assert f'data-model="{model}"' in everything.text
    narrowed = dashboards["client"].get("/dashboard/models", params={"q": model})
    assert f'data-model="{model}"' in narrowed.text
    assert f'data-model="{MODEL}"' not in narrowed.text
    none = dashboards["client"].get("/dashboard/models", params={"q": "no-such-model-" + uuid.uuid4().hex})
    assert "No models match." in none.text


def test_traffic_figures_are_shown_only_to_metric_readers(dashboards: dict[str, DashboardClient]) -> None:
    assert "req/s (1 h)" in dashboards["operator"].get("/dashboard/models").text
    assert "req/s (1 h)" not in dashboards["client"].get("/dashboard/models").text


def test_a_model_page_lists_its_versions_and_an_unknown_model_answers_404(
    dashboards: dict[str, DashboardClient], model: str
) -> None:
    page = dashboards["client"].get(f"/dashboard/models/{model}")
    assert page.status_code == 200, page.text
    for version in ("1", "2", "3"):
        assert f'data-version="{version}"' in page.text
    assert "/api/v1/predict" in page.text  # a client may predict: the request and curl are shown
    assert "Move the alias" not in page.text  # and may not move aliases
    missing = dashboards["client"].get(f"/dashboard/models/no-such-{uuid.uuid4().hex[:8]}")
    assert missing.status_code == 404
    assert 'data-status="404"' in missing.text


def test_an_evaluator_gets_no_runnable_request(dashboards: dict[str, DashboardClient]) -> None:
    page = dashboards["evaluator"].get(f"/dashboard/models/{MODEL}")
    assert page.status_code == 200
    assert "models-curl" not in page.text


@pytest.mark.parametrize("versions", [["1"], ["1", "2", "3", "1", "2"], ["1", "2", "3", "4", "5"]])
def test_compare_refuses_fewer_than_2_or_more_than_4_versions(
    dashboards: dict[str, DashboardClient], model: str, versions: list[str]
) -> None:
    answer = dashboards["admin"].get(f"/dashboard/models/{model}/compare", params={"versions": versions})
    assert answer.status_code == 422, answer.text


def test_compare_shows_the_chosen_versions_side_by_side(
    dashboards: dict[str, DashboardClient], model: str
) -> None:
    answer = dashboards["admin"].get(f"/dashboard/models/{model}/compare", params={"versions": ["1", "3"]})
    assert answer.status_code == 200, answer.text
    assert '<th scope="col">v1</th>' in answer.text
    assert '<th scope="col">v3</th>' in answer.text


def test_a_provider_supplied_tag_is_shown_as_text(dashboards: dict[str, DashboardClient], model: str) -> None:
    page = dashboards["admin"].get(f"/dashboard/models/{model}")
    assert html.escape(XSS) in page.text
    assert XSS not in page.text


def move(client: DashboardClient, model: str, alias: str, version: str, token: str | None) -> httpx.Response:
    data: dict[str, Any] = {"alias": alias, "version": version}
    if token is not None:
        data["csrf_token"] = token
    return client.post(f"/dashboard/models/{model}/aliases", data)


def test_the_alias_form_moves_the_alias_as_the_api_does(
    dashboards: dict[str, DashboardClient], live_server: LiveServer, accounts: dict[str, Account], model: str
) -> None:
    admin = dashboards["admin"]
    try:
        refused = move(admin, model, "champion", "2", None)
        assert refused.status_code == 403
        assert aliases_via_api(live_server, accounts["admin"], model)["champion"] == "1"
        moved = move(admin, model, "champion", "2", admin.csrf())
        assert moved.status_code == 303
        assert moved.headers["location"] == f"/dashboard/models/{model}"
        assert aliases_via_api(live_server, accounts["admin"], model)["champion"] == "2"
        page = admin.get(f"/dashboard/models/{model}")
        assert html.escape("@champion -> v2") in page.text
    finally:
        live_server.services.registry.client.set_registered_model_alias(model, "champion", "1")


def test_the_alias_form_refuses_roles_the_api_refuses(
    dashboards: dict[str, DashboardClient], live_server: LiveServer, accounts: dict[str, Account], model: str
) -> None:
    for role in ("client", "provider"):
        client = dashboards[role]
        answer = move(client, model, "champion", "3", client.csrf())
        assert answer.status_code == 403, (role, answer.text)
    assert aliases_via_api(live_server, accounts["admin"], model)["champion"] == "1"
