"""``GET /metrics`` carries the realized-outcome families: on the shared server (whatever it has
scored), and with exact values on a server whose database holds known scores."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from prediction_provider.config import Settings
from prediction_provider.db import migrate
from prediction_provider.db.session import Database
from tests.conftest import Account, LiveServer
from tests.integration.database_fixtures import sqlite_url
from tests.integration.test_realized_gauges import NOW, insert_scores, reference
from tests.processes import new_api_key

FAMILIES = {"pp_realized_accuracy", "pp_realized_brier_skill", "pp_realized_records", "pp_scored"}


def scrape(url: str, headers: dict[str, str]) -> str:
    response = httpx.get(f"{url}/metrics", headers=headers, timeout=60)
    assert response.status_code == 200, response.text
    return response.text


def test_the_operators_scrape_lists_the_realized_outcome_families(
    live_server: LiveServer, accounts: dict[str, Account]
) -> None:
    text = scrape(live_server.url, accounts["operator"].headers)
    names = {family.name for family in text_string_to_metric_families(text)}
    assert names >= FAMILIES


@pytest.fixture
def scored_server(settings: Settings, tmp_path: Path) -> Iterator[tuple[LiveServer, str, Database]]:
    url = sqlite_url(tmp_path)
    migrate.upgrade(url)
    own = settings.model_copy(
        update={
            "database_url": url, "warm_models": [], "grpc_enabled": False, "scoring_interval_s": 0,
            "clock": "manual", "clock_start": NOW,
        }
    )  # fmt: skip
    key = new_api_key(own, "operator")
    db = Database(url)
    with LiveServer(own) as server:
        yield server, key, db
    db.dispose()


def test_the_gauges_on_metrics_equal_the_scores_accuracy_and_brier_skill(
    scored_server: tuple[LiveServer, str, Database],
) -> None:
    server, key, db = scored_server
    expected = reference(insert_scores(db))
    found = {
        (
            sample.name,
            sample.labels["model"],
            sample.labels["version"],
            sample.labels["horizon"],
        ): sample.value
        for family in text_string_to_metric_families(scrape(server.url, {"X-API-KEY": key}))
        if family.name in ("pp_realized_accuracy", "pp_realized_brier_skill")
        for sample in family.samples
    }
    assert len(found) == 2 * len(expected)
    for (model, version, horizon), (accuracy, skill) in expected.items():
        assert found[("pp_realized_accuracy", model, version, horizon)] == pytest.approx(accuracy, abs=1e-12)
        assert found[("pp_realized_brier_skill", model, version, horizon)] == pytest.approx(skill, abs=1e-12)
