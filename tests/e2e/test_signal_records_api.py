"""Every answered entry/exit signal is recorded (channel "signal"), with what its outcome is later
judged on: the answer's bar, the levels per side and the end of its week."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
from sqlalchemy import select

from prediction_provider.db.models import PredictionRecord
from tests.conftest import Account, LiveServer

ENTRY = "/api/v1/predict/entry"
EXIT = "/api/v1/predict/exit"
ASKED = datetime(2018, 2, 5, 10, 0, tzinfo=UTC)  # a Monday inside the demo's EURUSD bars, on a bar's stamp


def signal_records_of(server: LiveServer, user_id: int) -> list[PredictionRecord]:
    server.services.signal_records.flush()
    with server.services.db.session() as session:
        return list(
            session.scalars(
                select(PredictionRecord).where(
                    PredictionRecord.channel == "signal", PredictionRecord.user_id == user_id
                )
            )
        )


def test_an_entry_signal_writes_one_signal_record(
    client: httpx.Client, live_server: LiveServer, accounts: dict[str, Account]
) -> None:
    user = accounts["client"]
    before = {r.request_id for r in signal_records_of(live_server, user.user_id)}
    response = client.post(ENTRY, json={"datetime": "2018-02-05T10:00:00Z", "tp": 50, "sl": 25})
    assert response.status_code == 200, response.text
    body = response.json()
    (record,) = [r for r in signal_records_of(live_server, user.user_id) if r.request_id not in before]
    assert record.model_name == "lightgbm"  # the shared server's predictor: no look-ahead
    assert record.username == user.username
    assert (record.symbol, record.interval) == ("EURUSD", "1h")
    assert record.as_of == ASKED
    assert record.data_as_of == ASKED  # bars labelled by close time: the bar closing at the request
    assert record.role == "primary"
    assert record.target_time == datetime(2018, 2, 9, 20, 0, tzinfo=UTC)  # the week's last bar
    assert record.label == f"buy:{body['buy_entry_binary']},sell:{body['sell_entry_binary']}"
    assert record.answer["signals"] == {"buy": body["buy_entry_binary"], "sell": body["sell_entry_binary"]}
    assert set(record.answer["levels"]) == {"buy", "sell"}
    buy = record.answer["levels"]["buy"]
    entry_close = float(record.answer["entry_close"])
    assert float(buy["stop_loss"]) < entry_close < float(buy["take_profit"])
    p_buy = body["buy_confidence"] if body["buy_entry_binary"] == 1 else 1 - body["buy_confidence"]
    assert record.probabilities is not None
    assert record.probabilities["buy"] == p_buy
    assert record.latency_ms >= 0


def test_an_exit_signal_writes_one_signal_record_of_side_exit(
    client: httpx.Client, live_server: LiveServer, accounts: dict[str, Account]
) -> None:
    user = accounts["client"]
    before = {r.request_id for r in signal_records_of(live_server, user.user_id)}
    body = {"datetime": "05.02.2018 10:00:00.000", "direction": "sell", "tp_price": 1.2, "sl_price": 1.26}
    response = client.post(EXIT, json=body)
    assert response.status_code == 200, response.text
    (record,) = [r for r in signal_records_of(live_server, user.user_id) if r.request_id not in before]
    assert record.answer["side"] == "exit"
    assert record.answer["signals"] == {"exit": response.json()["exit_binary"]}
    assert record.answer["levels"]["exit"] == {"direction": "sell", "take_profit": "1.2", "stop_loss": "1.26"}
