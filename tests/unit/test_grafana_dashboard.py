"""deploy/grafana/prediction-provider.json against what the app exposes: a metric name a panel gets
wrong fails nothing, the panel just stays empty, so every expression is checked against ``/metrics``."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import Account, LiveServer

REPOSITORY = Path(__file__).resolve().parents[2]
DASHBOARD = REPOSITORY / "deploy" / "grafana" / "prediction-provider.json"
DATASOURCE = "${DS_PROMETHEUS}"

# The sample names each family type exposes: ``x_bucket`` is a metric only where x is a histogram.
SAMPLE_SUFFIXES = {
    "counter": ("_total",),
    "histogram": ("_bucket", "_sum", "_count"),
    "gaugehistogram": ("_bucket", "_gsum", "_gcount"),
    "summary": ("", "_sum", "_count"),
    "info": ("_info",),
}
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless",
            "offset", "inf", "nan"}  # fmt: skip
# Label lists of grouping and matching modifiers, then label matchers, range selectors and strings.
GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
MATCHERS = re.compile(r"\{[^}]*\}")
RANGES = re.compile(r"\[[^\]]*\]")
STRINGS = re.compile(r"\"(?:[^\"\\]|\\.)*\"|'(?:[^'\\]|\\.)*'")
IDENTIFIER = re.compile(r"(?<![\w$.])([a-zA-Z_:][a-zA-Z0-9_:]*)(?!\w)(\s*\()?")


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects: identifiers that are not functions, aggregations,
    keywords, label names or Grafana variables."""
    bare = STRINGS.sub('""', expr)
    bare = RANGES.sub("", MATCHERS.sub("", GROUPING.sub("", bare)))
    found = set()
    for match in IDENTIFIER.finditer(bare):
        name, call = match.group(1), match.group(2)
        if call is None and name.lower() not in KEYWORDS:
            found.add(name)
    return found


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    found = []
    for panel in board["panels"]:
        found.append(panel)
        found.extend(panel.get("panels", []))
    return found


def expressions() -> list[str]:
    return [target["expr"] for panel in panels(dashboard()) for target in panel.get("targets", [])]


def exposed_names(text: str) -> set[str]:
    names: set[str] = set()
    for family in text_string_to_metric_families(text):
        names.update(family.name + suffix for suffix in SAMPLE_SUFFIXES.get(family.type, ("",)))
        names.update(sample.name for sample in family.samples)
    return names


@pytest.fixture(scope="module")
def exposed(live_server: LiveServer, accounts: dict[str, Account]) -> set[str]:
    response = httpx.get(f"{live_server.url}/metrics", headers=accounts["operator"].headers, timeout=60)
    assert response.status_code == 200, response.text
    return exposed_names(response.text)


def test_names_are_read_from_selectors_only() -> None:
    expr = (
        'histogram_quantile(0.95, sum by (le, route) (rate(pp_x_bucket{status=~"5..", a="by(b)"}[5m])))'
        " / on (route) group_left sum without (pid) (pp_y offset 5m) > bool 0 or vector(1)"
    )
    assert metric_names(expr) == {"pp_x_bucket", "pp_y"}
    assert metric_names("rate(pp_z_total[$__rate_interval]) * $scale") == {"pp_z_total"}


def test_suffixes_name_a_metric_only_for_the_matching_family_type() -> None:
    text = '# TYPE a counter\na_total 1\n# TYPE b histogram\nb_bucket{le="+Inf"} 1\nb_sum 1\nb_count 1\n'
    names = exposed_names(text)
    assert {"a_total", "b_bucket", "b_sum", "b_count"} <= names
    assert not {"a_bucket", "b_total", "a", "b"} & names


def test_every_panel_reads_the_prometheus_datasource_input() -> None:
    board = dashboard()
    assert board["schemaVersion"] >= 39
    assert [entry["name"] for entry in board["__inputs"]] == ["DS_PROMETHEUS"]
    for panel in panels(board):
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == DATASOURCE, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == DATASOURCE, panel["title"]


def test_every_expression_names_metrics_the_app_exposes(exposed: set[str]) -> None:
    found = expressions()
    assert len(found) >= 20
    for expr in found:
        names = metric_names(expr)
        assert names, expr
        assert names <= exposed, f"{sorted(names - exposed)} in {expr}"


def test_red_panels_cover_routes_and_quantiles() -> None:
    found = " ".join(expressions())
    assert "sum by (route) (rate(pp_http_requests_total[1m]))" in found
    for quantile in ("0.5", "0.95", "0.99"):
        assert (
            f"histogram_quantile({quantile}, sum by (le, route) (rate(pp_http_request_duration_seconds_bucket"
            in found
        )
