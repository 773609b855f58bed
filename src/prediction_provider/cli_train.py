"""``prediction-provider train``: forecast and trading-decision models for any symbol a feeder supplies.

The bars come from a feeder spec (``--source csv:bars/acme.csv``, ``yfinance``,
``database``; see ``features.feeders.spec``). The forecast model is registered
as ``<symbol>-<interval>-forecast`` with the spec in its ``source`` tag, and the
decision models' manifest names the same spec, so the server reads the symbol's
bars from where it was trained. A mistake (a bad spec, a path outside the data
roots, a symbol the feeder lacks, too few bars) ends with one line on stderr and
exit code 2, like a configuration error.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer
from rich.console import Console
from rich.table import Table

from prediction_provider.config_errors import EXIT_CODE
from prediction_provider.errors import PredictionProviderError

if TYPE_CHECKING:
    import pandas as pd

    from prediction_provider.config import Settings
    from prediction_provider.features.feeders.spec import FeederSpec

console = Console()

_METRICS = ("accuracy", "log_loss", "pinball_loss", "interval_coverage", "test_rows")


def train_command(
    symbol: Annotated[str, typer.Option(help="The symbol, as the feeder names it (ACME, EURUSD, AAPL).")],
    interval: Annotated[str, typer.Option(help="The bars' interval: 1h, 4h, 1d, ...")],
    source: Annotated[
        str,
        typer.Option(
            help="Feeder spec: backtesting, database, yfinance, csv:<path>, parquet:<path> or "
            "<plugin>[:<path>]. Paths lie under the data dir or PP_DATA_ROOTS; a relative one under "
            "<data dir>/datasets."
        ),
    ],
    horizons: Annotated[
        str | None, typer.Option(help="Forecast horizons in bars, e.g. 1,3,6 (default: by interval).")
    ] = None,
    force: Annotated[bool, typer.Option(help="Retrain a symbol that has decision models already.")] = False,
    data_dir: Annotated[Path | None, typer.Option(help="Data directory (PP_DATA_DIR).")] = None,
) -> None:
    """Train and register the forecast model and the trading-decision models of one symbol."""
    from prediction_provider.cli import load_settings

    settings = load_settings(data_dir=data_dir)
    try:
        _train(settings, symbol, interval, source, parse_horizons(horizons), force)
    except (PredictionProviderError, ValueError) as exc:
        fail(exc)


def parse_horizons(text: str | None) -> list[int] | None:
    """``"1,3,6"`` -> ``[1, 3, 6]``; positive whole numbers of bars only."""
    if text is None:
        return None
    try:
        steps = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        steps = []
    if not steps or min(steps) < 1:
        fail(f"--horizons takes positive bar counts separated by commas (1,3,6), not {text!r}")
    return sorted(set(steps))


def fail(error: Exception | str) -> NoReturn:
    """One line on stderr, exit code 2: the user can act on it, a traceback would not help."""
    typer.echo(f"error: {one_line(error)}", err=True)
    raise typer.Exit(EXIT_CODE)


def one_line(error: Exception | str) -> str:
    if isinstance(error, PredictionProviderError):
        text = error.message
        details = error.details if isinstance(error.details, dict) else {}
        available = details.get("available")
        if isinstance(available, list):
            text += f" (available: {', '.join(map(str, available)) or 'none'})"
    else:
        text = str(error)
    return " ".join(text.split())


def _train(
    settings: Settings, symbol: str, interval: str, source: str, horizons: list[int] | None, force: bool
) -> None:
    from prediction_provider.features.feeders.base import normalise_symbol
    from prediction_provider.features.feeders.intervals import Interval
    from prediction_provider.features.feeders.spec import resolve_feeder_spec
    from prediction_provider.trading.specialists import MANIFEST, symbol_dir

    symbol = normalise_symbol(symbol)
    interval = Interval.parse(interval).text
    spec = resolve_feeder_spec(source, settings)
    existing = symbol_dir(settings.data_dir, symbol)
    if not force and (existing / MANIFEST).is_file():
        fail(f"{symbol} has decision models in {existing}; pass --force to retrain")
    bars = _read_bars(settings, spec, symbol, interval)
    _train_forecast(settings, symbol, interval, bars, spec, horizons)
    _train_decisions(settings, symbol, interval, bars, spec)


def _read_bars(settings: Settings, spec: FeederSpec, symbol: str, interval: str) -> pd.DataFrame:
    from prediction_provider.features.feeders.spec import feeder_for_spec
    from prediction_provider.trading.training import MIN_BARS

    feeder = feeder_for_spec(spec, settings, interval=interval)
    try:
        with console.status(f"reading {symbol} {interval} bars from {spec} ..."):
            bars = feeder.bars(symbol, interval)
    finally:
        feeder.close()
    if len(bars) < MIN_BARS:
        fail(f"{spec} has {len(bars)} {interval} bars of {symbol}; training needs at least {MIN_BARS}")
    console.print(
        f"read {len(bars)} {symbol} {interval} bars from {spec}: "
        f"{bars.index[0].isoformat()} .. {bars.index[-1].isoformat()}"
    )
    return bars


def _train_forecast(
    settings: Settings,
    symbol: str,
    interval: str,
    bars: pd.DataFrame,
    spec: FeederSpec,
    horizons: list[int] | None,
) -> None:
    try:
        from prediction_provider.forecasts.training import train_forecast_model
    except ImportError as exc:  # a build without forecasts still trains the decision models
        console.print(f"[yellow]forecast models are not available in this build ({exc})")
        return
    with console.status(f"training the {symbol} {interval} forecast model ..."):
        trained = train_forecast_model(
            settings, symbol, interval, bars, source=str(spec), horizons=horizons, progress=console.print
        )
    table = Table(title=f"{trained.name} version {trained.version}: test metrics per horizon")
    table.add_column("horizon (bars)", justify="right")
    shown = [name for name in _METRICS if any(name in values for values in trained.metrics.values())]
    for name in shown:
        table.add_column(name.replace("_", " "), justify="right")
    for step, values in sorted(trained.metrics.items()):
        table.add_row(str(step), *(_cell(name, values.get(name)) for name in shown))
    console.print(table)


def _cell(name: str, value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.0f}" if name.endswith("_rows") else f"{value:.4f}"


def _train_decisions(
    settings: Settings, symbol: str, interval: str, bars: pd.DataFrame, spec: FeederSpec
) -> None:
    from prediction_provider.trading.training import DecisionTraining, TrainingBars, train_decision_models

    with console.status(f"training the {symbol} decision models ..."):
        written = train_decision_models(
            settings.data_dir,
            [TrainingBars(symbol, interval, bars, str(spec))],
            DecisionTraining(),
            force=True,
            progress=console.print,
        )
    console.print(f"[green]decision models of {symbol} in {written[0]}, reading bars from {spec}")
