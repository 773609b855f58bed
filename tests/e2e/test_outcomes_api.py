"""Realized outcomes end to end on a server running the market replay with a manual clock: a
client's latest-bar forecast is pending until its target bars close by the clock, a scoring pass
scores it once against the sample bars (checked here with scikit-learn), the leaderboard counts
it with a digest that moves exactly when a new score lands, and the score shows on the answer."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pandas as pd
import pytest
from backtesting.test import EURUSD
from sklearn.metrics import brier_score_loss

from prediction_provider.config import Settings
from tests.conftest import Account, LiveServer, live_settings

START = datetime(2018, 1, 15, 10, 30, tzinfo=UTC)  # a Monday, mid-bar
MODEL = "eurusd-1h-forecast"
HOUR = timedelta(hours=1)


@pytest.fixture(scope="module")
def replay_server(settings: Settings, accounts: dict[str, Account]) -> Iterator[LiveServer]:
    changed = live_settings(
        settings, market_clock="manual", market_clock_start=START, bar_label="open", grpc_enabled=False,
        scoring_interval_s=0,
    )  # fmt: skip
    with LiveServer(changed) as server:
        yield server


def close_of(close_time: datetime) -> float:
    """The sample bars are labelled by open time: the bar closing at t is labelled t - 1 h."""
    return float(EURUSD.loc[pd.Timestamp(close_time - HOUR).tz_localize(None), "Close"])


def advance(http: httpx.Client, admin: Account, seconds: float) -> None:
    moved = http.post("/api/v1/admin/clock", json={"advance_s": seconds}, headers=admin.headers)
    assert moved.status_code == 200, moved.text


def score_now(http: httpx.Client, admin: Account) -> dict:
    ran = http.post("/api/v1/admin/scoring/run", headers=admin.headers)
    assert ran.status_code == 200, ran.text
    return ran.json()


def forecast(http: httpx.Client, server: LiveServer, client: Account) -> dict:
    answer = http.post("/predict", json={"symbol": "EURUSD", "horizons": [1, 3]}, headers=client.headers)
    assert answer.status_code == 200, answer.text
    server.services.forecasts.recorder.flush()
    return answer.json()


def test_a_latest_bar_forecast_is_scored_once_its_bars_close(
    replay_server: LiveServer, accounts: dict[str, Account]
) -> None:
    client, admin = accounts["client"], accounts["admin"]
    with httpx.Client(base_url=replay_server.url, timeout=60) as http:
        body = forecast(http, replay_server, client)
        as_of = datetime.fromisoformat(body["data_as_of"])
        assert as_of == datetime(2018, 1, 15, 10, 0, tzinfo=UTC)  # the 09:00 bar closed at 10:00
        score = http.get(f"/api/v1/predictions/{body['forecast_id']}/score", headers=client.headers).json()
        assert score["status"] == "pending"
        assert [row["status"] for row in score["rows"]] == ["pending", "pending"]

        advance(http, admin, 3600)  # 11:30: the 1-bar target closed at 11:00, the 3-bar one not yet
        first = score_now(http, admin)
        assert first["scored"] >= 1
        score = http.get(f"/api/v1/predictions/{body['forecast_id']}/score", headers=client.headers).json()
        by_horizon = {row["horizon"]: row for row in score["rows"]}
        assert by_horizon[1]["status"] == "scored"
        assert by_horizon[3]["status"] == "pending"

        step = next(s for s in body["forecasts"] if s["step"] == 1)
        realized = close_of(as_of + HOUR) / close_of(as_of) - 1
        scored = by_horizon[1]["score"]
        assert scored["realized_return"] == pytest.approx(realized, abs=1e-12)
        probabilities = step["probabilities"]
        p_up = probabilities["up"] / (probabilities["up"] + probabilities["down"])
        y = 1 if realized > 0 else 0
        assert scored["metrics"]["direction"]["brier"] == pytest.approx(
            brier_score_loss([y], [p_up]), abs=1e-12
        )
        assert scored["eligible"], scored["ineligible_reason"]
        assert [bar["version"] for bar in scored["bars"]] == [1, 1]
        assert score_now(http, admin)["scored"] == 0  # exactly once
        # The 3-bar answer is pending: counted apart per model version, never in a score.
        three_bars = {"horizon": 3, "window": "all"}
        before = http.get("/api/v1/leaderboard", params=three_bars, headers=client.headers).json()["pending"]
        assert sum(before.values()) >= 1

        advance(http, admin, 2 * 3600)
        score_now(http, admin)
        score = http.get(f"/api/v1/predictions/{body['forecast_id']}/score", headers=client.headers).json()
        assert score["status"] == "scored"
        after = http.get("/api/v1/leaderboard", params=three_bars, headers=client.headers).json()["pending"]
        assert sum(after.values()) < sum(before.values())

        other = http.get(
            f"/api/v1/predictions/{body['forecast_id']}/score", headers=accounts["provider"].headers
        )
        assert other.status_code == 404  # another client's prediction is not told apart from none
        assert other.json()["error"]["code"] == "prediction_not_found"


def test_the_leaderboard_counts_eligible_scores_and_its_digest_moves_with_them(
    replay_server: LiveServer, accounts: dict[str, Account]
) -> None:
    client, admin = accounts["client"], accounts["admin"]
    query = {"target": "direction", "window": "all", "min_n": 1, "min_days": 1, "symbol": "EURUSD"}
    with httpx.Client(base_url=replay_server.url, timeout=60) as http:
        forecast(http, replay_server, client)
        advance(http, admin, 3600)
        score_now(http, admin)
        board = http.get("/api/v1/leaderboard", params=query, headers=client.headers)
        assert board.status_code == 200, board.text
        first = board.json()
        again = http.get("/api/v1/leaderboard", params=query, headers=client.headers).json()
        assert again["digest"] == first["digest"]  # nothing scored in between: the same board
        mine = [e for e in first["entries"] + first["provisional"] if e["model_name"] == MODEL]
        assert mine
        assert mine[0]["n"] >= 1
        assert {"coin_flip", "base_rate", "persistence"} <= set(first["baselines"])

        forecast(http, replay_server, client)
        advance(http, admin, 3600)
        assert score_now(http, admin)["scored"] >= 1
        moved = http.get("/api/v1/leaderboard", params=query, headers=client.headers).json()
        assert moved["digest"] != first["digest"]
        later = [e for e in moved["entries"] + moved["provisional"] if e["model_name"] == MODEL]
        assert later[0]["n"] > mine[0]["n"]

        bad = http.get("/api/v1/leaderboard", params={"window": "1y"}, headers=client.headers)
        assert bad.status_code == 422
        unknown = http.get("/api/v1/leaderboard", params={"sort": "n"}, headers=client.headers)
        assert unknown.status_code == 422
        assert http.get("/api/v1/leaderboard").status_code == 401


def test_performance_per_version_and_scoring_permissions(
    replay_server: LiveServer, accounts: dict[str, Account]
) -> None:
    client, admin = accounts["client"], accounts["admin"]
    with httpx.Client(base_url=replay_server.url, timeout=60) as http:
        forecast(http, replay_server, client)
        advance(http, admin, 3 * 3600)
        score_now(http, admin)
        performance = http.get(f"/api/v1/models/{MODEL}/performance", params={"window": "all"},
                               headers=client.headers)  # fmt: skip
        assert performance.status_code == 200, performance.text
        versions = performance.json()["versions"]
        assert versions
        assert versions[0]["n"] >= 1
        assert {h["horizon"] for h in versions[0]["horizons"]} >= {1}
        refused = http.post("/api/v1/admin/scoring/run", headers=client.headers)
        assert refused.status_code == 403
        assert refused.json()["error"]["details"]["required_permissions"] == ["run_scoring"]


def test_reported_outcomes_are_accepted_once_and_only_for_ones_own_requests(
    replay_server: LiveServer, accounts: dict[str, Account], feature_rows: list[dict[str, float]]
) -> None:
    client, provider = accounts["client"], accounts["provider"]
    with httpx.Client(base_url=replay_server.url, timeout=60) as http:
        submitted = http.post(
            "/api/v1/predictions", json={"model": "eurusd-direction", "features_list": feature_rows[:3]},
            headers=client.headers,
        )  # fmt: skip
        assert submitted.status_code == 202, submitted.text
        job_id = submitted.json()["id"]
        for _ in range(600):  # the in-process executor runs it; each GET is a round trip
            job = http.get(f"/api/v1/predictions/{job_id}", headers=client.headers).json()
            if job["status"] in {"completed", "failed"}:
                break
        assert job["status"] == "completed", job
        predicted = job["result"]["predictions"][1]
        items = [{"request_id": job_id, "row": 1, "label": predicted}]
        stranger = http.post("/api/v1/outcomes", json=items, headers=provider.headers)
        assert stranger.status_code == 200
        assert stranger.json()["items"][0]["status"] == "unknown"  # not another client's
        first = http.post("/api/v1/outcomes", json=items, headers=client.headers).json()
        assert first["items"][0]["status"] == "accepted"
        again = http.post("/api/v1/outcomes", json=items, headers=client.headers).json()
        assert again["items"][0]["status"] == "duplicate"
        other = [{**items[0], "label": "something else"}]
        changed = http.post("/api/v1/outcomes", json=other, headers=client.headers).json()
        assert changed["items"][0]["status"] == "conflict"
        score = http.get(f"/api/v1/predictions/{job_id}/score", headers=client.headers).json()
        [row] = [r for r in score["rows"] if r["row"] == 1]
        assert row["score"]["metrics"]["label"]["hit"] == 1  # the first report was kept
        forecast_body = forecast(http, replay_server, client)
        market = [{"request_id": forecast_body["forecast_id"], "row": 0, "realized_return": 0.001}]
        refused = http.post("/api/v1/outcomes", json=market, headers=client.headers).json()
        assert refused["items"][0] == {
            "request_id": forecast_body["forecast_id"], "row": 0, "status": "refused",
            "reason": "scored_from_market",
        }  # fmt: skip
        empty = http.post("/api/v1/outcomes", json=[{"request_id": job_id}], headers=client.headers)
        assert empty.status_code == 422
