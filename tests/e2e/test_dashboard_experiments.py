"""The Experiments page over HTTP: who sees it, and promote / roll back through its forms doing
what the API's own transitions do (same state, same alias moves, same recorded actor).

The experiments run on a model registered for this module (copies of the demo versions)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import Account, LiveServer
from tests.dashboard_client import DashboardClient
from tests.e2e.test_dashboard_models import aliases_via_api, copy_model


@pytest.fixture(scope="module")
def model(live_server: LiveServer) -> str:
    return copy_model(live_server, "dash-exp")


@pytest.fixture(scope="module")
def operator_api(live_server: LiveServer, accounts: dict[str, Account]) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live_server.url, timeout=60, headers=accounts["operator"].headers) as http:
        yield http


@pytest.fixture(scope="module")
def operator(live_server: LiveServer, accounts: dict[str, Account]) -> Iterator[DashboardClient]:
    account = accounts["operator"]
    with DashboardClient(live_server.url, username=account.username, password=account.password) as client:
        yield client


def started(api: httpx.Client, model: str) -> str:
    """A running 50/50 experiment: control ``@champion`` (v1), candidate v2."""
    name = f"dash-ab-{uuid.uuid4().hex[:8]}"
    body: dict[str, Any] = {
        "name": name,
        "model": model,
        "variants": [
            {"name": "control", "target": f"models:/{model}@champion", "weight": 50, "control": True},
            {"name": "candidate", "target": f"models:/{model}/2", "weight": 50},
        ],
    }
    made = api.post("/api/v1/experiments", json=body)
    assert made.status_code == 201, made.text
    start = api.post(f"/api/v1/experiments/{name}/start")
    assert start.status_code == 200, start.text
    return name


def outcome(api: httpx.Client, server: LiveServer, admin: Account, model: str, name: str) -> dict[str, Any]:
    """What a transition left: the state, the aliases, and who the last transition names."""
    found = api.get(f"/api/v1/experiments/{name}")
    assert found.status_code == 200, found.text
    body = found.json()
    last = body["transitions"][0]
    return {"state": body["state"], "aliases": aliases_via_api(server, admin, model), "to": last["to"],
            "actor": last["actor"], "weights": body["weights"]}  # fmt: skip


@pytest.mark.parametrize("role", ["admin", "operator", "provider"])
def test_the_page_renders_for_operators_admins_and_providers(
    live_server: LiveServer, accounts: dict[str, Account], role: str
) -> None:
    account = accounts[role]
    with DashboardClient(live_server.url, username=account.username, password=account.password) as client:
        page = client.get("/dashboard/experiments")
        assert page.status_code == 200, page.text
        assert 'hx-trigger="every 30s"' in page.text
        panels = client.get("/dashboard/experiments/panels", headers={"HX-Request": "true"})
        assert panels.status_code == 200
        assert "<html" not in panels.text


def test_a_client_gets_the_403_page(live_server: LiveServer, accounts: dict[str, Account]) -> None:
    account = accounts["client"]
    with DashboardClient(live_server.url, username=account.username, password=account.password) as client:
        page = client.get("/dashboard/experiments")
        assert page.status_code == 403
        assert 'data-status="403"' in page.text


def test_a_running_experiment_shows_its_split_and_a_promote_confirmation(
    operator: DashboardClient, operator_api: httpx.Client, model: str
) -> None:
    name = started(operator_api, model)
    try:
        page = operator.get("/dashboard/experiments", params={"model": model})
        assert f'data-experiment="{name}"' in page.text
        assert f"Move @champion of {model} from v1 to v2?" in page.text
        assert "50.0 %" in page.text
    finally:
        operator_api.post(f"/api/v1/experiments/{name}/stop")


def test_promote_through_the_form_does_what_the_api_does(
    operator: DashboardClient,
    operator_api: httpx.Client,
    live_server: LiveServer,
    accounts: dict[str, Account],
    model: str,
) -> None:
    admin, client = accounts["admin"], live_server.services.registry.client
    try:
        by_api = started(operator_api, model)
        assert operator_api.post(f"/api/v1/experiments/{by_api}/promote").status_code == 200
        expected = outcome(operator_api, live_server, admin, model, by_api)
        client.set_registered_model_alias(model, "champion", "1")
        client.delete_registered_model_alias(model, "previous-champion")

        by_form = started(operator_api, model)
        assert operator.post(f"/dashboard/experiments/{by_form}/promote", {}).status_code == 403  # no token
        answer = operator.post(f"/dashboard/experiments/{by_form}/promote", {"csrf_token": operator.csrf()})
        assert answer.status_code == 303
        assert outcome(operator_api, live_server, admin, model, by_form) == expected
        assert expected["state"] == "promoted"
        assert expected["aliases"]["champion"] == "2"
        assert expected["aliases"]["previous-champion"] == "1"
    finally:
        client.set_registered_model_alias(model, "champion", "1")


def test_rollback_through_the_form_does_what_the_api_does(
    operator: DashboardClient,
    operator_api: httpx.Client,
    live_server: LiveServer,
    accounts: dict[str, Account],
    model: str,
) -> None:
    admin = accounts["admin"]
    by_api = started(operator_api, model)
    assert operator_api.post(f"/api/v1/experiments/{by_api}/rollback").status_code == 200
    expected = outcome(operator_api, live_server, admin, model, by_api)
    by_form = started(operator_api, model)
    token = operator.csrf("/dashboard/experiments")
    answer = operator.post(f"/dashboard/experiments/{by_form}/rollback", {"csrf_token": token})
    assert answer.status_code == 303
    assert outcome(operator_api, live_server, admin, model, by_form) == expected
    assert expected["state"] == "rolled_back"
    assert expected["weights"]["candidate"] == 0


def test_a_client_and_a_provider_may_not_promote(
    live_server: LiveServer, accounts: dict[str, Account], operator_api: httpx.Client, model: str
) -> None:
    name = started(operator_api, model)
    try:
        for role in ("client", "provider"):
            account = accounts[role]
            with DashboardClient(
                live_server.url, username=account.username, password=account.password
            ) as who:
                answer = who.post(f"/dashboard/experiments/{name}/promote", {"csrf_token": who.csrf()})
                assert answer.status_code == 403, (role, answer.text)
        assert operator_api.get(f"/api/v1/experiments/{name}").json()["state"] == "running"
    finally:
        operator_api.post(f"/api/v1/experiments/{name}/stop")
