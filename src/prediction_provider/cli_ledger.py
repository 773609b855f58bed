"""``prediction-provider ledger verify`` and ``ledger trial-balance``: the ledger check and the
trial balance, read straight from the database (no server needed). ``verify`` exits 1 when any
check fails, so a cron job or a deploy step can gate on it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from prediction_provider.db.session import Database

ledger_app = typer.Typer(
    help="The money ledger: verify the journal, print the trial balance.", no_args_is_help=True
)
console = Console()

DataDir = Annotated[Path | None, typer.Option(help="Data directory (PP_DATA_DIR).")]
AsJson = Annotated[bool, typer.Option("--json", help="Print the JSON the admin route answers.")]


def _database(data_dir: Path | None) -> Database:
    from prediction_provider.app import open_database
    from prediction_provider.cli import load_settings

    return open_database(load_settings(data_dir=data_dir))


@ledger_app.command("verify")
def verify(data_dir: DataDir = None, as_json: AsJson = False) -> None:
    """Recompute every balance from the journal; check conservation, bounds, clearing, the hash
    chain and the gapless sequence. Exit code 1 when any check fails."""
    from prediction_provider.ledger.checks import check_ledger, consistent_snapshot

    db = _database(data_dir)
    try:
        with db.session() as session:
            consistent_snapshot(session)
            report = check_ledger(session)
    finally:
        db.dispose()
    if as_json:
        print(json.dumps(report.as_dict(), indent=2, default=str))
    else:
        table = Table(
            "check", "result", title=f"ledger: {report.transfers} transfers, {report.accounts} accounts"
        )
        for name, passed in report.checks.items():
            table.add_row(name, "[green]ok[/green]" if passed else "[red]FAILED[/red]")
        console.print(table)
        for violation in report.violations:
            console.print(f"[red]{violation['check']}[/red]: {violation['message']}")
        console.print("[green]ledger ok[/green]" if report.ok else "[red]ledger check failed[/red]")
    if not report.ok:
        raise typer.Exit(1)


@ledger_app.command("trial-balance")
def trial_balance_command(data_dir: DataDir = None, as_json: AsJson = False) -> None:
    """Per currency: the four totals and the posted and pending differences (0 when balanced).
    Exit code 1 when a currency does not balance."""
    from prediction_provider.ledger.checks import consistent_snapshot, trial_balance

    db = _database(data_dir)
    try:
        with db.session() as session:
            consistent_snapshot(session)
            balances = trial_balance(session)
    finally:
        db.dispose()
    if as_json:
        print(json.dumps({"currencies": balances}, indent=2))
    else:
        table = Table(
            "currency", "accounts", "debits pending", "credits pending", "debits posted", "credits posted",
            "pending diff", "posted diff",
        )  # fmt: skip
        for row in balances:
            table.add_row(
                row["currency"], str(row["accounts"]), row["debits_pending"], row["credits_pending"],
                row["debits_posted"], row["credits_posted"], row["pending_difference"],
                row["posted_difference"],
            )  # fmt: skip
        console.print(table)
    if not all(row["balanced"] for row in balances):
        raise typer.Exit(1)
