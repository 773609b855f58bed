"""`prediction-provider ledger verify` and `ledger trial-balance`: the ledger check and the trial
balance from the command line, exit code 1 when the journal does not add up."""

from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy import text
from typer.testing import CliRunner

from prediction_provider.cli import app
from prediction_provider.clock import ManualClock
from prediction_provider.config import Settings
from prediction_provider.db import migrate
from prediction_provider.db.session import Database
from prediction_provider.ledger.journal import Journal
from tests.integration.test_ledger_checks import START, Market, busy_day


def ledger(data_dir: Path, *args: str) -> tuple[int, str]:
    result = CliRunner(env={"COLUMNS": "200"}).invoke(app, ["ledger", *args, "--data-dir", str(data_dir)])
    return result.exit_code, result.output


def journal_in(data_dir: Path) -> Database:
    url = Settings(data_dir=data_dir).database
    migrate.upgrade(url)
    db = Database(url)
    clock = ManualClock(START)
    busy_day(Market(db, Journal(clock), clock))
    return db


def test_verify_passes_on_a_healthy_journal_and_fails_on_a_tampered_one(tmp_path: Path) -> None:
    db = journal_in(tmp_path)
    code, output = ledger(tmp_path, "verify")
    assert code == 0, output
    assert "ledger ok" in output
    code, output = ledger(tmp_path, "verify", "--json")
    assert code == 0, output
    report = json.loads(output)
    assert report["ok"] is True
    assert report["transfers"] == 15
    with db.engine.begin() as connection:
        connection.execute(text("UPDATE ledger_transfers SET amount = amount + 1 WHERE seq = 1"))
    db.dispose()
    code, output = ledger(tmp_path, "verify")
    assert code == 1
    assert "hash_chain" in output
    assert "ledger check failed" in output


def test_trial_balance_prints_each_currency(tmp_path: Path) -> None:
    journal_in(tmp_path).dispose()
    code, output = ledger(tmp_path, "trial-balance", "--json")
    assert code == 0, output
    [usd] = json.loads(output)["currencies"]
    assert (usd["currency"], usd["posted_difference"], usd["pending_difference"]) == (
        "USD",
        "0.000000",
        "0.000000",
    )
    code, output = ledger(tmp_path, "trial-balance")
    assert code == 0
    assert "USD" in output
