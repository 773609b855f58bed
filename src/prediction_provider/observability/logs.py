"""One logging set-up for the CLI process and for every uvicorn worker process.

``serve --workers N`` starts the workers as fresh processes that configure logging
from uvicorn's ``log_config`` alone: whatever the parent process set up is not
inherited, so the app's own lines (model loads, warm-ups, the gRPC bind line) were
lost. The same dictionary configures the parent and each worker; lines carry the
process id, so the lines of each worker can be told apart.
"""

from __future__ import annotations

import copy
import logging.config
from typing import Any

APP_FORMAT = "%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s"


def log_config(level: str) -> dict[str, Any]:
    """uvicorn's own configuration (its access and error lines unchanged), plus a root handler
    at ``level`` for the app's and the libraries' loggers."""
    from uvicorn.config import LOGGING_CONFIG

    config: dict[str, Any] = copy.deepcopy(LOGGING_CONFIG)
    config["formatters"]["app"] = {"format": APP_FORMAT}
    config["handlers"]["app"] = {
        "class": "logging.StreamHandler",
        "formatter": "app",
        "stream": "ext://sys.stderr",
    }
    config["root"] = {"handlers": ["app"], "level": level.upper()}
    return config


def configure_logging(level: str) -> None:
    logging.config.dictConfig(log_config(level))
