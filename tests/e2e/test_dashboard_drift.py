"""The drift page over HTTP: for a model of its own with rows predicted through the API, every PSI,
KS and status on the page is the one ``GET /models/{name}/drift`` answers, the output is one more
row, and the list of models is ``/monitoring/drift``'s; an operator and an admin see it, a provider
gets the page saying the API would refuse it the figures, and a client gets the 403 page."""

from __future__ import annotations

import re
import uuid
from html import unescape

import httpx
import pytest

from prediction_provider.dashboard.render import num
from prediction_provider.features.market_data import load_sample_bars
from prediction_provider.features.pipeline import compute_features
from tests.conftest import Account, LiveServer
from tests.dashboard_client import DashboardClient

SOURCE = "eurusd-direction"
ROW = re.compile(r'<tr data-feature="([^"]*)"[^>]*>(.*?)</tr>', re.S)
CELL = re.compile(r'<td[^>]*data-field="([a-z_]+)"[^>]*>(.*?)</td>', re.S)


def drifting_model(server: LiveServer, client: Account) -> str:
    """A model of its own (the demo's LightGBM as version 1), with 300 rows counted on it."""
    registry = server.services.registry.client
    name = f"dash-drift-{uuid.uuid4().hex[:6]}"
    registry.create_registered_model(name)
    source = registry.get_model_version(
        SOURCE, str(registry.get_registered_model(SOURCE).aliases["lightgbm"])
    )
    artifacts = registry.get_logged_model(source.source.removeprefix("models:/")).artifact_location
    registry.create_model_version(name, artifacts, run_id=source.run_id)
    registry.set_registered_model_alias(name, "champion", "1")
    frame = compute_features(load_sample_bars("EURUSD")).dropna().iloc[-900:-600]
    records = [{k: float(v) for k, v in row.items()} for _, row in frame.iterrows()]
    with httpx.Client(base_url=server.url, timeout=60, headers=client.headers) as http:
        answer = http.post(
            "/predict/batch", json={"model": name, "features_list": records, "return_proba": True}
        )
    assert answer.status_code == 200, answer.text
    server.services.drift.flush()
    return name


@pytest.fixture(scope="module")
def model(live_server: LiveServer, accounts: dict[str, Account]) -> str:
    return drifting_model(live_server, accounts["client"])


def rows_of(html: str) -> dict[str, dict[str, str]]:
    return {
        unescape(feature): {k: unescape(re.sub(r"<[^>]+>", "", v)).strip() for k, v in CELL.findall(body)}
        for feature, body in ROW.findall(html)
    }


@pytest.mark.parametrize("role", ["operator", "admin"])
def test_the_pages_figures_are_the_apis(
    live_server: LiveServer, accounts: dict[str, Account], model: str, role: str
) -> None:
    account = accounts[role]
    with httpx.Client(base_url=live_server.url, timeout=60, headers=account.headers) as http:
        report = http.get(f"/models/{model}/drift").json()
    with DashboardClient(live_server.url, username=account.username, password=account.password) as dash:
        page = dash.get("/dashboard/drift", params={"model": model})
        fragment = dash.get("/dashboard/drift/table", params={"model": model}, headers={"HX-Request": "true"})
    assert page.status_code == 200, page.text
    assert report["window"]["rows"] == 300
    rows = rows_of(page.text)
    assert list(rows) == [f["name"] for f in report["features"]] + ["(output)"]
    for feature in report["features"]:
        cells = rows[feature["name"]]
        assert cells["psi"] == num(feature["statistics"]["psi"], 4)
        assert cells["ks"] == num(feature["statistics"]["ks"], 4)
        assert cells["status"] == feature["status"].replace("_", " ")
    assert rows["(output)"]["psi"] == num(report["prediction"]["psi"], 4)
    assert f'data-field="window_rows">{report["window"]["rows"]} rows' in page.text
    assert f'data-field="reference_rows">{report["reference"]["rows"]} rows' in page.text
    # The scatter is there when every feature has an importance, and says so when not.
    if all(f["importance"] is not None for f in report["features"]):
        assert 'id="drift-scatter"' in page.text
    else:
        assert "no feature importances" in page.text
    assert 'id="drift-histogram"' in page.text
    assert fragment.status_code == 200
    assert "<html" not in fragment.text
    assert rows_of(fragment.text) == rows


def test_a_chosen_feature_gets_its_histogram_and_the_list_is_monitorings(
    live_server: LiveServer, accounts: dict[str, Account], model: str
) -> None:
    operator = accounts["operator"]
    with httpx.Client(base_url=live_server.url, timeout=60, headers=operator.headers) as http:
        report = http.get(f"/models/{model}/drift").json()
    feature = report["features"][-1]["name"]
    with DashboardClient(live_server.url, username=operator.username, password=operator.password) as dash:
        page = dash.get("/dashboard/drift", params={"model": model, "feature": feature})
        assert dash.get("/dashboard/drift", params={"window": "yesterday"}).status_code == 422
        assert dash.get("/dashboard/drift", params={"page": "2"}).status_code == 422
    assert page.status_code == 200, page.text
    assert f'<option value="{feature}" selected>' in page.text
    assert f"bin of {feature}" in page.text
    assert f'<tr data-model="{model}" data-version="1">' in page.text
    assert 'hx-get="/dashboard/drift/table"' in page.text
    assert 'hx-trigger="every 30s"' in page.text


def test_a_provider_is_told_and_a_client_refused(
    live_server: LiveServer, accounts: dict[str, Account]
) -> None:
    provider, client = accounts["provider"], accounts["client"]
    with httpx.Client(base_url=live_server.url, timeout=60, headers=provider.headers) as http:
        assert http.get("/monitoring/drift").status_code == 403  # the API refuses providers
    with DashboardClient(live_server.url, username=provider.username, password=provider.password) as dash:
        page = dash.get("/dashboard/drift")
    assert page.status_code == 200
    assert 'data-field="refused"' in page.text
    assert "data-feature=" not in page.text
    with DashboardClient(live_server.url, username=client.username, password=client.password) as dash:
        refused = dash.get("/dashboard/drift")
    assert refused.status_code == 403
    assert 'data-error-code="page_forbidden"' in refused.text
