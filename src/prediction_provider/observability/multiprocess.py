"""Where ``serve --workers N`` keeps its metrics, so that a scrape of any process counts them all.

prometheus-client's multiprocess mode: each process writes its counter and
histogram values to memory-mapped files in ``PROMETHEUS_MULTIPROC_DIR``, and
the process that answers a scrape sums every file there. The variable must be
set before the worker processes import prometheus-client, and the directory
emptied between runs (every file found is summed, a previous run's included).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from prediction_provider.config import Settings

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def metrics_directory(settings: Settings) -> Path:
    """One directory per host and port under the data dir. Containers may share the data volume
    and their process ids repeat (the first workers are pid 7, 8, ... in each), and two servers on
    one host need two ports: either way, their files must not mix."""
    return settings.data_dir / "prometheus" / f"{socket.gethostname()}-{settings.port}"


@contextmanager
def multiprocess_metrics(settings: Settings) -> Iterator[Path]:
    """``PROMETHEUS_MULTIPROC_DIR`` for the worker processes started inside the block: the variable
    as given, else a directory under the data dir; emptied of old values before and after."""
    configured = os.environ.get(MULTIPROC_ENV)
    directory = Path(configured) if configured else metrics_directory(settings)
    directory.mkdir(parents=True, exist_ok=True)
    _remove_values(directory)
    os.environ[MULTIPROC_ENV] = str(directory)
    try:
        yield directory
    finally:
        _remove_values(directory)
        if configured is None:
            os.environ.pop(MULTIPROC_ENV, None)


def _remove_values(directory: Path) -> None:
    # Only the files prometheus-client writes (counter_<pid>.db, histogram_<pid>.db, ...).
    for path in directory.glob("*.db"):
        path.unlink(missing_ok=True)
