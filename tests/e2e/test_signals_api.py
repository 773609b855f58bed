"""Entry/exit signals over real HTTP, on the paths and fields existing strategy clients use.

The shared server answers with the demo-trained ``lightgbm`` predictor (no
``PP_ORACLE_CSV``); two more servers answer with the oracle (reading the demo's
EURUSD CSV) and with ``mc_dropout``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from prediction_provider.config import Settings
from prediction_provider.signals.levels import Direction, TradeCosts
from prediction_provider.signals.oracle import BinaryIdealOracle
from prediction_provider.signals.predictor import EntryQuery, ExitQuery
from prediction_provider.signals.request_fields import parse_request_time
from tests.conftest import Account, LiveServer

ENTRY = "/api/v1/predict/entry"
EXIT = "/api/v1/predict/exit"
INFO = "/api/v1/model/info"
WHEN = "05.02.2018 10:00:00.000"  # a Monday inside the demo's EURUSD bars
ENTRY_FIELDS = {
    "buy_entry_binary",
    "sell_entry_binary",
    "bars_remaining",
    "buy_confidence",
    "sell_confidence",
}
INFO_FIELDS = {
    "model_name",
    "window_size",
    "supported_types",
    "entry_directions",
    "exit_directions",
    "prediction_scope",
    "required_columns",
    "accepts_ohlc_window",
}


def error_of(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "details"}
    assert body["error"]["code"] == code, body
    return dict(body["error"])


def demo_csv(settings: Settings) -> Path:
    return settings.data_dir / "oracle" / "EURUSD_1h.csv"


@pytest.fixture(scope="module")
def oracle_server(settings: Settings, accounts: dict[str, Account]) -> Iterator[LiveServer]:
    with LiveServer(settings.model_copy(update={"oracle_csv": demo_csv(settings)})) as server:
        yield server


@pytest.fixture(scope="module")
def mc_server(settings: Settings, accounts: dict[str, Account]) -> Iterator[LiveServer]:
    with LiveServer(settings.model_copy(update={"signal_predictor": "mc_dropout"})) as server:
        yield server


def client_of(server: LiveServer, account: Account) -> httpx.Client:
    return httpx.Client(base_url=server.url, headers=account.headers, timeout=60)


def test_model_info_has_the_fields_clients_read(client: httpx.Client) -> None:
    response = client.get(INFO)
    assert response.status_code == 200, response.text
    info = response.json()
    assert set(info) == INFO_FIELDS | {"look_ahead"}
    assert info["model_name"] == "lightgbm"
    assert info["supported_types"] == ["entry", "exit"]
    assert info["entry_directions"] == info["exit_directions"] == ["buy", "sell"]
    assert info["required_columns"] == ["OPEN", "HIGH", "LOW", "CLOSE"]
    assert info["accepts_ohlc_window"] is False
    assert info["look_ahead"] is False


def test_entry_answers_with_exactly_the_fields_clients_read(client: httpx.Client) -> None:
    response = client.post(ENTRY, json={"datetime": WHEN, "tp": 50, "sl": 25})
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == ENTRY_FIELDS
    assert body["buy_entry_binary"] in (0, 1)
    assert body["sell_entry_binary"] in (0, 1)
    assert isinstance(body["bars_remaining"], int)
    assert body["bars_remaining"] > 0
    assert 0.5 <= body["buy_confidence"] <= 1.0
    assert 0.5 <= body["sell_confidence"] <= 1.0


def test_entry_accepts_costs_and_iso_8601_times(client: httpx.Client) -> None:
    costs = {"tp": 50, "sl": 25, "spread_pips": 1.5, "commission_per_lot": 7.0, "slippage_pips": 0.5}
    day_first = client.post(ENTRY, json={"datetime": WHEN, **costs})
    iso = client.post(ENTRY, json={"datetime": "2018-02-05T10:00:00Z", **costs})
    assert day_first.status_code == iso.status_code == 200
    assert day_first.json() == iso.json()


def test_exit_answers_keep_open_or_close(client: httpx.Client) -> None:
    response = client.post(
        EXIT, json={"datetime": WHEN, "direction": "buy", "tp_price": 1.25, "sl_price": 1.2}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"exit_binary", "exit_confidence"}
    assert body["exit_binary"] in (0, 1)
    assert 0.5 <= body["exit_confidence"] <= 1.0


@pytest.mark.parametrize("stamp", ["2018-02-05 10:00 PM", "02/05/2018 10:00:00", "05.02.2018", "Monday"])
@pytest.mark.parametrize("path", [ENTRY, EXIT])
def test_a_datetime_in_another_format_is_a_400_naming_the_expected_one(
    client: httpx.Client, path: str, stamp: str
) -> None:
    body = {"datetime": stamp, "tp": 5, "sl": 5, "direction": "buy", "tp_price": 1.3, "sl_price": 1.1}
    error = error_of(client.post(path, json=body), 400, "invalid_datetime")
    assert "DD.MM.YYYY HH:MM:SS.fff" in error["message"]
    assert "ISO 8601" in error["message"]


def test_an_unknown_direction_is_a_400(client: httpx.Client) -> None:
    body = {"datetime": WHEN, "direction": "long", "tp_price": 1.3, "sl_price": 1.1}
    error = error_of(client.post(EXIT, json=body), 400, "unknown_direction")
    assert error["details"]["accepted"] == ["buy", "sell"]


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        (ENTRY, {"tp": 5, "sl": 5}, "datetime"),
        (ENTRY, {"datetime": WHEN, "tp": "five", "sl": 5}, "tp"),
        (ENTRY, {"datetime": WHEN, "tp": 5, "sl": 5, "spread_pips": -1}, "spread_pips"),
        (EXIT, {"datetime": WHEN, "tp_price": 1.3, "sl_price": 1.1}, "direction"),
        (EXIT, {"datetime": WHEN, "direction": "buy", "sl_price": 1.1}, "tp_price"),
        (EXIT, {"datetime": WHEN, "direction": "sell", "tp_price": 1.1}, "sl_price"),
        (EXIT, {"datetime": 20180205, "direction": "buy", "tp_price": 1.3, "sl_price": 1.1}, "datetime"),
    ],
)
def test_missing_or_mistyped_fields_are_a_422_naming_them(
    client: httpx.Client, path: str, body: dict[str, Any], field: str
) -> None:
    error = error_of(client.post(path, json=body), 422, "validation_error")
    assert field in {detail["field"] for detail in error["details"]}


def test_non_finite_numbers_are_a_422(client: httpx.Client) -> None:
    raw = '{"datetime": "05.02.2018 10:00:00.000", "tp": NaN, "sl": 5}'
    response = client.post(ENTRY, content=raw, headers={"Content-Type": "application/json"})
    error = error_of(response, 422, "validation_error")
    assert error["details"][0]["field"] == "tp"


def test_malformed_json_is_a_400(client: httpx.Client) -> None:
    response = client.post(ENTRY, content=b'{"datetime": ', headers={"Content-Type": "application/json"})
    error_of(response, 400, "malformed_json")


def test_a_time_before_the_bars_the_features_need_is_a_422(client: httpx.Client) -> None:
    error = error_of(
        client.post(ENTRY, json={"datetime": "01.01.2010 00:00:00.000", "tp": 5, "sl": 5}),
        422,
        "invalid_input",
    )
    assert error["details"][0]["field"] == "datetime"


def test_times_far_outside_the_bars_are_answered_from_their_ends(client: httpx.Client) -> None:
    last = client.post(ENTRY, json={"datetime": "31.12.9999 23:59:59.999", "tp": 5, "sl": 5})
    assert last.status_code == 200, last.text
    first = client.post(ENTRY, json={"datetime": "0001-01-01T00:00:00", "tp": 5, "sl": 5})
    error_of(first, 422, "invalid_input")


@pytest.mark.parametrize("path", [ENTRY, EXIT, INFO])
def test_anonymous_callers_are_refused(anonymous: httpx.Client, path: str) -> None:
    response = anonymous.get(path) if path == INFO else anonymous.post(path, json={"datetime": WHEN})
    error_of(response, 401, "unauthorized")


@pytest.mark.parametrize("path", [ENTRY, EXIT])
def test_a_role_that_may_not_predict_is_refused_before_its_body_is_read(
    live_server: LiveServer, accounts: dict[str, Account], path: str
) -> None:
    with client_of(live_server, accounts["evaluator"]) as evaluator:
        error_of(evaluator.post(path, json={"datetime": "not even a date"}), 403, "forbidden")
        assert evaluator.get(INFO).status_code == 200  # reading models is allowed


def test_the_oracle_answers_over_http_as_it_does_in_process(
    oracle_server: LiveServer, accounts: dict[str, Account], settings: Settings
) -> None:
    reference = BinaryIdealOracle.from_settings(
        settings.model_copy(update={"oracle_csv": demo_csv(settings)})
    )
    stamps = [f"{day:02d}.01.2018 {hour:02d}:00:00.000" for day in (8, 10, 12) for hour in (3, 11, 19)]
    with client_of(oracle_server, accounts["client"]) as http:
        info = http.get(INFO).json()
        assert (info["model_name"], info["look_ahead"], info["prediction_scope"]) == (
            "binary_ideal_oracle",
            True,
            "path_scanning",
        )
        for stamp in stamps:
            body = {"datetime": stamp, "tp": 40, "sl": 30, "spread_pips": 1.0}
            answer = http.post(ENTRY, json=body).json()
            expected = reference.entry(
                EntryQuery(parse_request_time(stamp), 40, 30, TradeCosts(spread_pips=1.0))
            )
            assert answer == expected.payload()
            assert answer["buy_confidence"] == 1.0
            close = float(reference.bars.close[reference.bars.nearest(parse_request_time(stamp))])
            for direction, tp, sl in (
                ("buy", close + 0.002, close - 0.001),
                ("sell", close - 0.002, close + 0.001),
            ):
                kept = http.post(
                    EXIT, json={"datetime": stamp, "direction": direction, "tp_price": tp, "sl_price": sl}
                )
                query = ExitQuery(parse_request_time(stamp), Direction(direction), tp, sl)
                assert kept.json() == reference.exit(query).payload()


def test_entry_without_tp_or_sl_uses_the_stated_defaults(
    oracle_server: LiveServer, accounts: dict[str, Account], settings: Settings
) -> None:
    """Seed clients leave tp and sl out: that means 5 and 10 points, as 0 or less does."""
    reference = BinaryIdealOracle.from_settings(
        settings.model_copy(update={"oracle_csv": demo_csv(settings)})
    )
    stamps = [f"{day:02d}.01.2018 {hour:02d}:00:00.000" for day in (8, 9, 10, 11, 12) for hour in (3, 11, 19)]
    with client_of(oracle_server, accounts["client"]) as http:
        for stamp in stamps:
            expected = reference.entry(EntryQuery(parse_request_time(stamp), 5, 10, TradeCosts())).payload()
            for extra in ({}, {"tp": 0, "sl": -1}, {"tp": 5, "sl": 10}, {"sl": 10}, {"tp": 5}):
                response = http.post(ENTRY, json={"datetime": stamp, **extra})
                assert response.status_code == 200, response.text
                assert response.json() == expected, (stamp, extra)
        # The defaults matter: a wider target changes some answers (else this test could not fail).
        wide = [http.post(ENTRY, json={"datetime": s, "tp": 3000, "sl": 3000}).json() for s in stamps]
        default = [http.post(ENTRY, json={"datetime": s}).json() for s in stamps]
        assert wide != default


def test_mc_dropout_adds_its_uncertainty_to_entries_and_exits(
    mc_server: LiveServer, accounts: dict[str, Account]
) -> None:
    with client_of(mc_server, accounts["client"]) as http:
        assert http.get(INFO).json()["model_name"] == "mc_dropout"
        entry = http.post(ENTRY, json={"datetime": WHEN, "tp": 50, "sl": 25}).json()
        assert set(entry) == ENTRY_FIELDS | {"buy_uncertainty", "sell_uncertainty"}
        exit_ = http.post(
            EXIT, json={"datetime": WHEN, "direction": "sell", "tp_price": 1.2, "sl_price": 1.3}
        ).json()
        assert set(exit_) == {"exit_binary", "exit_confidence", "exit_uncertainty"}
    for spread in (entry["buy_uncertainty"], entry["sell_uncertainty"], exit_["exit_uncertainty"]):
        assert set(spread) == {"mean", "std", "lower", "upper", "passes", "level"}
        assert spread["std"] > 0
        assert spread["lower"] <= spread["mean"] <= spread["upper"]
        assert spread["passes"] == 30
    assert entry["buy_entry_binary"] == int(entry["buy_uncertainty"]["mean"] >= 0.5)
