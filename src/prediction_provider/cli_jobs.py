"""CLI commands for scale-out and offline scoring: ``worker`` and ``batch-infer``."""

from __future__ import annotations

import os
import socket
import uuid
from pathlib import Path
from typing import Annotated, Literal, cast

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from prediction_provider.config import Settings
from prediction_provider.jobs import datasets

console = Console(stderr=True)

Pool = Literal["prefork", "threads", "solo"]


def run_worker(settings: Settings, concurrency: int, pool: Pool, hostname: str | None, loglevel: str) -> None:
    """A Celery worker consuming the predictions queue of ``settings.broker_url``."""
    from prediction_provider.cli import settings_env
    from prediction_provider.jobs.celery_app import make_celery, worker_runner

    if not settings.broker_url:
        raise typer.BadParameter("set PP_BROKER_URL (redis://... or amqp://...) or pass --broker-url")
    # Pool processes rebuild their settings from the environment.
    os.environ.update(settings_env(settings.model_copy(update={"job_backend": "celery"})))
    celery = make_celery(settings)
    if pool != "prefork":
        worker_runner()  # one process serves every task: load the models now, not at the first task
    celery.worker_main(
        [
            "worker",
            f"--concurrency={concurrency}",
            f"--pool={pool}",
            f"--queues={settings.job_queue}",
            f"--loglevel={loglevel.upper()}",
            f"--hostname={hostname or f'pp-{uuid.uuid4().hex[:6]}@{socket.gethostname()}'}",
            "--without-mingle",
            "--without-gossip",
        ]
    )


def batch_infer(
    settings: Settings, model: str, data: Path, out: Path, key_column: str | None, chunk_rows: int
) -> int:
    """Score ``data`` with ``model`` into a Parquet file of precomputed predictions; returns rows.

    The output has a string ``key`` column (from ``key_column``, else the first non-feature column,
    else the row number), the input's other non-feature columns, ``prediction`` and ``proba_<class>``.
    """
    from prediction_provider.serving.factory import build_model_serving

    serving = build_model_serving(settings)
    cached = serving.cache.get(model)
    signature = cached.model.signature
    data = data.expanduser().resolve()
    if not data.is_file():
        raise typer.BadParameter(f"no dataset at {data}")
    total = datasets.count_rows(data)
    out.parent.mkdir(parents=True, exist_ok=True)
    temporary = out.with_name(f".{out.name}.{uuid.uuid4().hex}.tmp")
    writer: pq.ParquetWriter | None = None
    written = 0
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
    )
    try:
        with Progress(*columns, console=console) as progress:
            task = progress.add_task(f"scoring with {cached.resolved.uri}", total=total)
            for start in range(0, total, chunk_rows):
                frame = datasets.read_rows(data, start, min(total, start + chunk_rows))
                matrix = datasets.feature_matrix(frame, signature, start)
                scored = datasets.scored_frame(
                    frame, signature, serving.predictions.run_matrix(cached, matrix)
                )
                scored.insert(0, "key", _keys(frame, signature.feature_index, key_column, start))
                table = pa.Table.from_pandas(scored, preserve_index=False)
                if writer is None:
                    writer = pq.ParquetWriter(temporary, table.schema)
                writer.write_table(table.cast(writer.schema))
                written += len(frame)
                progress.update(task, advance=len(frame))
        if writer is None:
            raise typer.BadParameter(f"{data} has no rows")
        writer.close()
        writer = None
        os.replace(temporary, out)
    finally:
        if writer is not None:
            writer.close()
        temporary.unlink(missing_ok=True)
    return written


def _keys(frame: pd.DataFrame, features: dict[str, int], key_column: str | None, start: int) -> list[str]:
    if key_column is not None:
        if key_column not in frame.columns:
            raise typer.BadParameter(f"the dataset has no column {key_column!r}")
        return [_key_text(value) for value in frame[key_column]]
    if "key" in frame.columns:
        return [_key_text(value) for value in frame["key"]]
    others = [column for column in frame.columns if column not in features]
    if others:
        return [_key_text(value) for value in frame[others[0]]]
    return [str(start + i) for i in range(len(frame))]


def _key_text(value: object) -> str:
    return value.isoformat() if hasattr(value, "isoformat") else str(value)


def worker_command(
    broker_url: Annotated[str | None, typer.Option(help="Celery broker (PP_BROKER_URL).")] = None,
    concurrency: Annotated[int, typer.Option(min=1, help="Tasks run at once by this worker.")] = 2,
    pool: Annotated[str, typer.Option(help="prefork (default), threads or solo.")] = "prefork",
    hostname: Annotated[str | None, typer.Option(help="Worker name, e.g. w1@%h.")] = None,
    loglevel: Annotated[str, typer.Option(help="Log level.")] = "info",
    warm: Annotated[list[str] | None, typer.Option(help="Model to load at start (repeatable).")] = None,
) -> None:
    """Run a Celery worker for asynchronous prediction jobs (scale-out)."""
    from prediction_provider.cli import load_settings

    if pool not in ("prefork", "threads", "solo"):
        raise typer.BadParameter("--pool must be prefork, threads or solo")
    settings = load_settings(broker_url=broker_url, warm_models=warm)
    run_worker(settings, concurrency, cast(Pool, pool), hostname, loglevel)


def batch_infer_command(
    model: Annotated[str, typer.Option(help="Model reference, e.g. models:/eurusd-direction@champion.")],
    data: Annotated[Path, typer.Option(help="CSV or Parquet file with the model's feature columns.")],
    out: Annotated[Path, typer.Option(help="Parquet file to write.")] = Path("predictions.parquet"),
    key_column: Annotated[str | None, typer.Option(help="Column whose values become the keys.")] = None,
    chunk_rows: Annotated[int, typer.Option(min=1, help="Rows scored per step.")] = 10_000,
) -> None:
    """Precompute predictions for a dataset, served later by GET /predict/precomputed/{key}."""
    from prediction_provider.cli import load_settings

    rows = batch_infer(load_settings(), model, data, out, key_column, chunk_rows)
    console.print(f"[green]wrote {rows} predictions to {out}")
