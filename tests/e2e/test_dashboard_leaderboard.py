"""The leaderboard page's numbers equal the API's: on a replay server with a manual clock, a
client's forecasts are scored, then every cell of the page's table (n resolved, n pending, score and
hit rate with their 95 % intervals, rank) is the API's answer to the same query, formatted by the
page's own ``num``; provisional entries are listed unranked, and an empty board says so."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime
from html import unescape
from typing import Any

import httpx
import pytest

from prediction_provider.config import Settings
from prediction_provider.dashboard.render import num
from prediction_provider.dashboard.views.leaderboard import DIGITS
from tests.conftest import Account, LiveServer, live_settings
from tests.dashboard_client import DashboardClient

START = datetime(2018, 1, 15, 10, 30, tzinfo=UTC)  # a Monday, mid-bar (as tests/e2e/test_outcomes_api.py)
ROW = re.compile(r"<tr (data-key=[^>]*)>(.*?)</tr>", re.S)
ATTR = re.compile(r'data-([a-z_]+)="([^"]*)"')
CELL = re.compile(r'<td[^>]*data-field="([a-z_]+)"[^>]*>(.*?)</td>', re.S)


@pytest.fixture(scope="module")
def replay_server(settings: Settings, accounts: dict[str, Account]) -> Iterator[LiveServer]:
    changed = live_settings(
        settings, market_clock="manual", market_clock_start=START, bar_label="open", grpc_enabled=False,
        scoring_interval_s=0,
    )  # fmt: skip
    with LiveServer(changed) as server:
        yield server


@pytest.fixture(scope="module")
def scored(replay_server: LiveServer, accounts: dict[str, Account]) -> None:
    """Two forecasts, each scored an hour later: the board has entries."""
    client, admin = accounts["client"], accounts["admin"]
    with httpx.Client(base_url=replay_server.url, timeout=60) as http:
        for _ in range(2):
            answer = http.post("/predict", json={"symbol": "EURUSD", "horizons": [1]}, headers=client.headers)
            assert answer.status_code == 200, answer.text
            replay_server.services.forecasts.recorder.flush()
            moved = http.post("/api/v1/admin/clock", json={"advance_s": 3600}, headers=admin.headers)
            assert moved.status_code == 200, moved.text
            ran = http.post("/api/v1/admin/scoring/run", headers=admin.headers)
            assert ran.status_code == 200, ran.text


def page_rows(html: str) -> list[dict[str, Any]]:
    rows = []
    for attrs, body in ROW.findall(html):
        row: dict[str, Any] = dict(ATTR.findall(attrs))
        row["cells"] = {
            name: unescape(re.sub(r"<[^>]+>", "", text)).strip() for name, text in CELL.findall(body)
        }
        rows.append(row)
    return rows


def expected_cells(entry: dict[str, Any]) -> dict[str, str]:
    primary = entry.get("primary") or {}
    hit = entry.get("hit_rate") if isinstance(entry.get("hit_rate"), dict) else {}
    p_ci, h_ci = primary.get("ci95"), hit.get("ci95")
    return {
        "rank": "-" if entry["rank"] is None else str(entry["rank"]),
        "n": str(entry["n"]),
        "n_pending": "-" if entry["n_pending"] is None else str(entry["n_pending"]),
        "days": str(entry["days"]),
        "primary": num(primary.get("value"), DIGITS),
        "primary_low": num(p_ci[0] if p_ci else None, DIGITS),
        "primary_high": num(p_ci[1] if p_ci else None, DIGITS),
        "hit_rate": num(hit.get("value"), DIGITS),
        "hit_low": num(h_ci[0] if h_ci else None, DIGITS),
        "hit_high": num(h_ci[1] if h_ci else None, DIGITS),
        "brier": num(entry.get("brier"), DIGITS),
        "log_loss": num(entry.get("log_loss"), DIGITS),
        "ece": num(entry.get("ece"), DIGITS),
    }


def compare(server: LiveServer, account: Account, query: dict[str, Any]) -> dict[str, Any]:
    """The page and the API on one query: the same rows, in the same order, with the same numbers."""
    with httpx.Client(base_url=server.url, timeout=60) as http:
        board = http.get("/api/v1/leaderboard", params=query, headers=account.headers)
    assert board.status_code == 200, board.text
    api = board.json()
    with DashboardClient(server.url, username=account.username, password=account.password) as dash:
        page = dash.get("/dashboard/leaderboard", params=query)
        table = dash.get("/dashboard/leaderboard/table", params=query, headers={"HX-Request": "true"})
    assert page.status_code == 200, page.text
    assert table.status_code == 200
    assert "<html" not in table.text
    entries = [*api["entries"], *api["provisional"]]
    rows = page_rows(page.text)
    assert [r["key"] for r in rows] == [unescape(e["key"]) for e in entries]
    for row, entry in zip(rows, entries, strict=True):
        assert unescape(row["model"]) == (entry["model_name"] or "")
        assert unescape(row["version"]) == (entry["model_version"] or "")
        expected = expected_cells(entry)
        assert {k: row["cells"][k] for k in expected} == expected, entry["key"]
        if entry["rank"] is None:
            assert row["rank"] == ""
            assert "provisional" in row["cells"]["status"]
    assert [r["key"] for r in page_rows(table.text)] == [r["key"] for r in rows]
    if not entries:
        assert 'data-field="empty"' in page.text
    return api


def test_the_pages_numbers_equal_the_apis(
    replay_server: LiveServer, scored: None, accounts: dict[str, Account]
) -> None:
    query = {"target": "direction", "window": "all", "min_n": 1, "min_days": 1, "symbol": "EURUSD"}
    api = compare(replay_server, accounts["client"], query)
    assert api["entries"], "nothing was ranked: the scoring pass scored nothing"


def test_entries_under_the_minimum_are_provisional_and_unranked(
    replay_server: LiveServer, scored: None, accounts: dict[str, Account]
) -> None:
    query = {"target": "direction", "window": "all", "min_n": 1_000_000, "symbol": "EURUSD"}
    api = compare(replay_server, accounts["evaluator"], query)
    assert api["provisional"]
    assert not api["entries"]


def test_an_empty_board_says_so(replay_server: LiveServer, accounts: dict[str, Account]) -> None:
    api = compare(
        replay_server, accounts["provider"], {"target": "quantiles", "symbol": "NOSUCH", "window": "7d"}
    )
    assert api["entries"] == api["provisional"] == []


def test_the_page_takes_the_apis_query_and_no_other(
    replay_server: LiveServer, accounts: dict[str, Account]
) -> None:
    client = accounts["client"]
    with DashboardClient(replay_server.url, username=client.username, password=client.password) as dash:
        assert dash.get("/dashboard/leaderboard", params={"window": "1y"}).status_code == 422
        assert dash.get("/dashboard/leaderboard", params={"sort": "n"}).status_code == 422
        page = dash.get("/dashboard/leaderboard")
    assert 'hx-get="/dashboard/leaderboard/table"' in page.text
    assert 'hx-trigger="every 30s"' in page.text
    assert "Brier skill score" in page.text  # the formula, as the API documents it
    assert 'href="/docs#/outcomes"' in page.text
    operator = accounts["operator"]
    with DashboardClient(replay_server.url, username=operator.username, password=operator.password) as dash:
        assert dash.get("/dashboard/leaderboard").status_code == 403
