"""``prediction-provider``: serve, run the demo, train the demo models, inspect the registry."""

from __future__ import annotations

import json
import os
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.table import Table

from prediction_provider import __version__, cli_jobs, cli_ledger, cli_train, config_errors, loadtest
from prediction_provider.config import Settings

if TYPE_CHECKING:
    from prediction_provider.demo.credentials import DemoCredentials

app = typer.Typer(
    help="Prediction Provider: serve financial prediction models over HTTP.", no_args_is_help=True
)
models_app = typer.Typer(help="Inspect the model registry.", no_args_is_help=True)
app.add_typer(models_app, name="models")
db_app = typer.Typer(help="Database migrations (Alembic).", no_args_is_help=True)
app.add_typer(db_app, name="db")
users_app = typer.Typer(help="Accounts.", no_args_is_help=True)
app.add_typer(users_app, name="users")
app.add_typer(cli_ledger.ledger_app, name="ledger")
console = Console()

DataDir = Annotated[Path | None, typer.Option(help="Data directory (PP_DATA_DIR).")]
Host = Annotated[str | None, typer.Option(help="Bind address (PP_HOST).")]
Port = Annotated[int | None, typer.Option(help="Port (PP_PORT).")]


class GrpcFrontend(StrEnum):
    python = "python"
    native = "native"


def load_settings(**flags: Any) -> Settings:
    """CLI flags rank above the environment and the config file; unset flags are left out.

    A setting that does not validate ends the command with one line on stderr and exit code 2.
    """
    try:
        return config_errors.load(**{key: value for key, value in flags.items() if value is not None})
    except config_errors.ConfigurationError as exc:
        exit_with(exc)


def exit_with(error: config_errors.ConfigurationError) -> NoReturn:
    typer.echo(str(error), err=True)
    raise typer.Exit(config_errors.EXIT_CODE)


def _configure_logging(level: str) -> None:
    from prediction_provider.observability.logs import configure_logging

    configure_logging(level)


def settings_env(settings: Settings) -> dict[str, str]:
    """Every setting as ``PP_*`` variables, so worker processes rebuild the same Settings."""
    env = {}
    for name, value in settings.model_dump(mode="json").items():
        if value is None:
            continue
        text = json.dumps(value) if isinstance(value, list | dict | bool) else str(value)
        env[f"PP_{name.upper()}"] = text
    return env


def _serve(settings: Settings, workers: int = 1) -> None:
    import uvicorn

    from prediction_provider.app import create_app
    from prediction_provider.observability.logs import log_config

    options: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "log_level": settings.log_level,
        # Each worker process configures logging from this alone (the parent's set-up is not inherited).
        "log_config": log_config(settings.log_level),
        "access_log": settings.access_log,
    }
    if workers <= 1:
        uvicorn.run(create_app(settings), **options)
        return
    from prediction_provider.accounts.machine_limits import shared_by_workers
    from prediction_provider.observability.multiprocess import multiprocess_metrics

    # Limits counted over the worker processes, whichever one a request reaches; metrics summed
    # over them, whichever one Prometheus scrapes.
    with shared_by_workers(settings) as settings, multiprocess_metrics(settings):
        # Worker processes import the app factory and read their settings from the
        # environment; each binds the gRPC port too (SO_REUSEPORT shares it).
        os.environ.update(settings_env(settings))
        uvicorn.run("prediction_provider.app:create_app", factory=True, workers=workers, **options)


@app.command()
def serve(
    data_dir: DataDir = None,
    host: Host = None,
    port: Port = None,
    warm: Annotated[list[str] | None, typer.Option(help="Model to load at start-up (repeatable).")] = None,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes sharing the port.")] = 1,
    grpc_port: Annotated[int | None, typer.Option(help="gRPC port (PP_GRPC_PORT).")] = None,
    pin_workers: Annotated[
        bool | None,
        typer.Option("--pin-workers/--no-pin-workers", help="Pin each worker to a CPU (PP_PIN_WORKERS)."),
    ] = None,
    grpc_frontend: Annotated[
        GrpcFrontend | None,
        typer.Option(help="What terminates gRPC: grpcio, or pp-grpc-frontend processes (PP_GRPC_FRONTEND)."),
    ] = None,
) -> None:
    """Serve the models of the configured registry over REST and gRPC."""
    flags = {
        "warm_models": warm, "grpc_port": grpc_port, "pin_workers": pin_workers,
        "grpc_frontend": grpc_frontend.value if grpc_frontend else None,
    }  # fmt: skip
    settings = load_settings(data_dir=data_dir, host=host, port=port, **flags)
    try:  # here, before any worker process starts and fails on it in its lifespan
        config_errors.require_jwt_secret(settings)
    except config_errors.ConfigurationError as exc:
        exit_with(exc)
    _configure_logging(settings.log_level)
    _serve(settings, workers)


@app.command("train-demo")
def train_demo(
    data_dir: DataDir = None,
    force: Annotated[bool, typer.Option(help="Retrain even if the demo models exist.")] = False,
) -> None:
    """Train the demo models on the EURUSD and GOOG bars and register them."""
    settings = load_settings(data_dir=data_dir)
    _train(settings, force)


def _train(settings: Settings, force: bool) -> None:
    from prediction_provider.demo.training import train_demo_models

    with console.status("training the demo models on EURUSD and GOOG bars..."):
        summary = train_demo_models(settings, force=force, progress=console.print)
    if not summary.skipped:
        console.print(f"[green]registered {len(summary.models)} models in {settings.tracking_uri}")


def curl_example(settings: Settings, model: str, api_key: str) -> str:
    """A ready-to-paste request built from the latest real EURUSD bar."""
    from prediction_provider.features.market_data import load_sample_bars
    from prediction_provider.features.pipeline import compute_features

    latest = compute_features(load_sample_bars("EURUSD")).iloc[-1]
    body = {
        "model": model,
        "features": {k: round(float(v), 8) for k, v in latest.items()},
        "return_proba": True,
    }
    return (
        f"curl -s -X POST http://{settings.host}:{settings.port}/predict "
        f"-H 'X-API-KEY: {api_key}' -H 'Content-Type: application/json' -d '{json.dumps(body)}'"
    )


def forecast_curl_example(settings: Settings, api_key: str) -> str:
    body = json.dumps({"symbol": "EURUSD", "prediction_horizon": 6})
    return (
        f"curl -s -X POST http://{settings.host}:{settings.port}/predict "
        f"-H 'X-API-KEY: {api_key}' -H 'Content-Type: application/json' -d '{body}'"
    )


@app.command()
def demo(data_dir: DataDir = None, host: Host = None, port: Port = None) -> None:
    """Train the demo models if needed, then serve them with the champions warmed."""
    from prediction_provider.demo.credentials import credentials_file, print_credentials, write_credentials
    from prediction_provider.demo.replay import demo_market_settings, replay_line
    from prediction_provider.demo.training import DemoConfig, registered_name

    settings = load_settings(data_dir=data_dir, host=host, port=port, demo_mode=True)
    _configure_logging(settings.log_level)
    _train(settings, force=False)
    names = [registered_name(symbol) for symbol in DemoConfig().symbols]
    settings = settings.model_copy(
        update={
            "warm_models": [*settings.warm_models, *names],
            "default_model": settings.default_model or names[0],
            **demo_market_settings(settings),
        }
    )
    credentials = demo_accounts(settings)
    url = f"http://{settings.host}:{settings.port}"
    # Plain lines from here: Rich wraps at 80 columns when stdout is not a terminal.
    console.print(f"\n[bold]Serving {', '.join(names)} on {url}[/bold]", soft_wrap=True)
    print(f"API docs: {url}/docs")
    if settings.dashboard_enabled:
        print(f"Dashboard: {url}/dashboard (sign in with a username and password, or an API key, below)")
    print_credentials(credentials, write_credentials(credentials_file(settings.data_dir), credentials, url))
    print("Try:\n")
    client_key = next(c.api_key for c in credentials if c.role == "client")
    print(curl_example(settings, names[0], client_key), flush=True)
    print("\nor ask for a forecast by symbol (the server reads the bars and computes the features):\n")
    print(forecast_curl_example(settings, client_key), flush=True)
    market_line = replay_line(settings)
    if market_line is not None:
        print(f"\n{market_line}", flush=True)
    print(flush=True)
    _serve(settings)


def demo_accounts(settings: Settings) -> list[DemoCredentials]:
    """An active admin and client for the demo, with new passwords and API keys."""
    from prediction_provider.app import account_service
    from prediction_provider.demo.credentials import refresh_demo_accounts

    accounts = account_service(settings)
    try:
        return refresh_demo_accounts(accounts)
    finally:
        accounts.db.dispose()


@models_app.command("list")
def list_models(data_dir: DataDir = None, experiment: Annotated[str | None, typer.Option()] = None) -> None:
    """Registered models, their versions, aliases and test metrics."""
    from prediction_provider.serving.registry import ModelRegistry

    registry = ModelRegistry(load_settings(data_dir=data_dir))
    table = Table("model", "version", "aliases", "framework", "accuracy", "log loss")
    for model in registry.list_models(experiment, limit=1000):
        for version in model["versions"]:
            metrics = version["metrics"]
            table.add_row(
                model["name"],
                version["version"],
                ", ".join(version["aliases"]),
                version["tags"].get("framework", ""),
                f"{metrics['accuracy']:.3f}" if "accuracy" in metrics else "",
                f"{metrics['log_loss']:.3f}" if "log_loss" in metrics else "",
            )
    console.print(table)


@db_app.command("upgrade")
def db_upgrade(data_dir: DataDir = None, revision: str = "head") -> None:
    """Apply migrations up to REVISION (default: the latest)."""
    from prediction_provider.db import migrate

    settings = load_settings(data_dir=data_dir)
    migrate.upgrade(settings.database, revision)
    console.print(f"database at revision {migrate.current(settings.database)}")


@db_app.command("downgrade")
def db_downgrade(revision: str, data_dir: DataDir = None) -> None:
    """Revert migrations down to REVISION ("base" for none)."""
    from prediction_provider.db import migrate

    settings = load_settings(data_dir=data_dir)
    migrate.downgrade(settings.database, revision)
    console.print(f"database at revision {migrate.current(settings.database)}")


@db_app.command("current")
def db_current(data_dir: DataDir = None) -> None:
    """The revision the database is at."""
    from prediction_provider.db import migrate

    print(migrate.current(load_settings(data_dir=data_dir).database) or "base")


@users_app.command("create-admin")
def create_admin(
    username: Annotated[str, typer.Option(prompt=True)],
    email: Annotated[str, typer.Option(prompt=True)],
    password: Annotated[str, typer.Option(prompt=True, hide_input=True, confirmation_prompt=True)],
    data_dir: DataDir = None,
) -> None:
    """Create an active admin account (the first one, or another)."""
    from prediction_provider.app import account_service

    accounts = account_service(load_settings(data_dir=data_dir))
    user = accounts.create_user(username, email, password, "admin", active=True)
    console.print(f"created admin {user['username']} (id {user['id']})")


@users_app.command("service-key")
def service_key(
    username: Annotated[str, typer.Argument(help="The program's account, e.g. prometheus.")],
    out: Annotated[Path, typer.Option(help="File to write the key to (the key alone, mode 0644).")],
    role: Annotated[str, typer.Option(help="The account's role, if it is created.")] = "operator",
    data_dir: DataDir = None,
) -> None:
    """Issue a key for a program's account (created if missing) and write it to a file.

    For Prometheus in docker-compose.yml: the `setup` service writes the scrape key this way.
    Each run issues a new key; the old one stops working at once.
    """
    from prediction_provider.accounts.roles import Role
    from prediction_provider.accounts.service_accounts import service_account_key, write_key_file
    from prediction_provider.app import account_service
    from prediction_provider.errors import PredictionProviderError

    accounts = account_service(load_settings(data_dir=data_dir))
    try:
        key = service_account_key(accounts, username, Role(role))
    except (PredictionProviderError, ValueError) as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from exc
    write_key_file(out, key)
    console.print(f"wrote a new API key of {username} ({role}) to {out}")


app.command("train")(cli_train.train_command)
app.command("worker")(cli_jobs.worker_command)
app.command("batch-infer")(cli_jobs.batch_infer_command)
app.command("loadtest")(loadtest.loadtest_command)


@app.command()
def version() -> None:
    """Print the version."""
    print(__version__)


if __name__ == "__main__":
    app()
