"""Which signal predictor answers, found by name among the ``prediction_provider.predictors`` plugins.

``PP_SIGNAL_PREDICTOR`` names it; left unset, it is ``binary_ideal_oracle``
when ``PP_ORACLE_CSV`` is set (a backtest setup: bars given, perfect answers
wanted) and the model-based ``lightgbm`` otherwise (serving: no look-ahead).
The built-ins register under the entry point group as plugins do.

The predictor is built on first use, not at start-up: a server without an
oracle file or trained signal models serves everything else, and the signal
routes answer 503 with the reason until the files exist.
"""

from __future__ import annotations

import logging
import threading
from importlib.metadata import entry_points

from prediction_provider.config import Settings
from prediction_provider.errors import ModelLoadFailed
from prediction_provider.signals.predictor import SignalPredictor

PREDICTOR_GROUP = "prediction_provider.predictors"
ORACLE = "binary_ideal_oracle"
DEFAULT_MODEL_PREDICTOR = "lightgbm"

log = logging.getLogger(__name__)


def selected_predictor(settings: Settings) -> str:
    if settings.signal_predictor:
        return settings.signal_predictor
    return ORACLE if settings.oracle_csv is not None else DEFAULT_MODEL_PREDICTOR


def installed_predictors() -> list[str]:
    return sorted({entry_point.name for entry_point in entry_points(group=PREDICTOR_GROUP)})


def predictor_class(name: str) -> type[SignalPredictor]:
    for entry_point in entry_points(group=PREDICTOR_GROUP, name=name):
        try:
            loaded = entry_point.load()
        except Exception as exc:  # a broken plugin is reported, not fatal to the server
            raise ModelLoadFailed(f"signal predictor plugin {name} failed to load: {exc}") from exc
        if not (isinstance(loaded, type) and issubclass(loaded, SignalPredictor)):
            raise ModelLoadFailed(f"signal predictor plugin {name} is not a SignalPredictor")
        return loaded
    raise ModelLoadFailed(
        f"no signal predictor named {name!r} is installed",
        {"installed": installed_predictors()},
    )


def build_signal_predictor(settings: Settings) -> SignalPredictor:
    name = selected_predictor(settings)
    predictor = predictor_class(name).from_settings(settings)
    log.info("signal predictor %s ready", name)
    return predictor


class SignalPredictorSlot:
    """The app's signal predictor, built once on first use; a failed build is retried by the next call."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._lock = threading.Lock()
        self.predictor: SignalPredictor | None = None

    def get(self) -> SignalPredictor:
        """Blocking (it may read files and import frameworks): call from a worker thread."""
        with self._lock:
            if self.predictor is None:
                self.predictor = build_signal_predictor(self._settings)
            return self.predictor
