"""The direction models a decision chooses from: one specialist per regime and a universal one.

Each symbol's models live in ``<data_dir>/models/decisions/<symbol>/``: the
regime model as JSON, every direction model as a LightGBM text model (with a
``.meta.json`` sidecar, so the same file is also servable by ``/predict`` as a
``file://`` model), and ``manifest.json`` naming them with their content
hashes as versions. Nothing there is pickled.

Models are small and predict one row in tens of microseconds, so they are held
here rather than in the general model cache: a decision calls them directly,
and their native per-feature contributions are at hand for explanations.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from prediction_provider.errors import UnknownSymbol
from prediction_provider.serving.explanations import Explanation
from prediction_provider.trading.regime import REGIMES, RegimeModel

log = logging.getLogger(__name__)

SPECIALISTS = tuple(f"{regime}_specialist" for regime in REGIMES)
UNIVERSAL = "universal"
STRATEGIES = (*SPECIALISTS, UNIVERSAL)
EXPLANATION_METHOD = "lightgbm pred_contrib (TreeSHAP), raw score of the class"
MANIFEST = "manifest.json"
REGIME_FILE = "regime.json"
FloatArray = npt.NDArray[np.float64]


def models_root(data_dir: Path) -> Path:
    return data_dir / "models" / "decisions"


def symbol_dir(data_dir: Path, symbol: str) -> Path:
    return models_root(data_dir) / symbol.lower().replace("/", "_")


def model_name(symbol: str, strategy: str) -> str:
    """``eurusd-bull-specialist``, ``eurusd-universal``."""
    return f"{symbol.lower().replace('/', '_')}-{strategy.replace('_', '-')}"


def content_version(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]


@dataclass(frozen=True)
class DirectionModel:
    """A LightGBM booster predicting down/flat/up from the pipeline's features."""

    name: str
    strategy: str
    version: str
    booster: Any
    feature_names: tuple[str, ...]
    classes: tuple[str, ...]

    @property
    def identity(self) -> str:
        return f"{self.name}:{self.version}"

    def row(self, values: dict[str, float] | Any) -> FloatArray:
        return np.asarray([[float(values[name]) for name in self.feature_names]], dtype=np.float64)

    def probabilities(self, row: FloatArray) -> FloatArray:
        """Class probabilities of one row; cheap enough to run on the event loop."""
        scores = np.asarray(self.booster.predict(row, num_threads=1), dtype=np.float64)
        return scores.reshape(len(self.classes))

    def explain(self, row: FloatArray, class_index: int) -> Explanation:
        """TreeSHAP contributions: a millisecond or so, so callers run it off the event loop."""
        raw = np.asarray(self.booster.predict(row, pred_contrib=True, num_threads=1), dtype=np.float64)
        width = len(self.feature_names) + 1  # features, then the expected value
        block = raw.reshape(len(self.classes), width)[class_index]
        contributions = {
            name: float(value) for name, value in zip(self.feature_names, block[:-1], strict=True)
        }
        return Explanation(
            self.name, self.classes[class_index], float(block[-1]), contributions, EXPLANATION_METHOD
        )


@dataclass
class SymbolModels:
    """Everything a decision on one symbol needs; ``strategies`` lacks specialists never trained."""

    symbol: str
    regime: RegimeModel
    strategies: dict[str, DirectionModel] = field(default_factory=dict)
    trained_at: str = ""
    # The bars' interval and the feeder spec they are read from (None: PP_FEEDER), from the manifest.
    interval: str | None = None
    source: str | None = None

    @property
    def universal(self) -> DirectionModel | None:
        return self.strategies.get(UNIVERSAL)


def load_symbol(directory: Path) -> SymbolModels:
    """Rebuild one symbol's models from its manifest; a missing model file is left out."""
    import lightgbm

    manifest = json.loads((directory / MANIFEST).read_text(encoding="utf-8"))
    symbol = str(manifest["symbol"])
    regime = RegimeModel.load(directory / str(manifest["regime"]["file"]))
    loaded = SymbolModels(
        symbol=symbol,
        regime=regime,
        trained_at=str(manifest.get("trained_at", "")),
        interval=_optional_text(manifest.get("interval")),
        source=_optional_text(manifest.get("source")),
    )
    for strategy, entry in manifest["models"].items():
        if strategy not in STRATEGIES:
            log.warning("%s: ignoring unknown strategy %r in %s", symbol, strategy, directory)
            continue
        path = directory / str(entry["file"])
        if not path.is_file():
            log.warning("%s: %s model %s is missing; decisions fall back", symbol, strategy, path)
            continue
        booster = lightgbm.Booster(model_file=str(path))
        loaded.strategies[strategy] = DirectionModel(
            name=model_name(symbol, strategy),
            strategy=strategy,
            version=content_version(path),
            booster=booster,
            feature_names=tuple(str(name) for name in manifest["feature_names"]),
            classes=tuple(str(name) for name in manifest["classes"]),
        )
    return loaded


def _optional_text(value: object) -> str | None:
    return None if value is None or value == "" else str(value)


class DecisionModels:
    """The decision models of every symbol under the data dir, loaded once at start-up."""

    def __init__(self, symbols: dict[str, SymbolModels]) -> None:
        self._symbols = symbols

    @classmethod
    def load(cls, data_dir: Path) -> DecisionModels:
        symbols: dict[str, SymbolModels] = {}
        root = models_root(data_dir)
        if root.is_dir():
            for directory in sorted(path for path in root.iterdir() if (path / MANIFEST).is_file()):
                try:
                    models = load_symbol(directory)
                except (OSError, ValueError, KeyError, TypeError) as exc:
                    log.error("could not load the decision models in %s: %s", directory, exc)
                    continue
                symbols[models.symbol] = models
        return cls(symbols)

    def symbols(self) -> list[str]:
        return sorted(self._symbols)

    def for_symbol(self, symbol: str) -> SymbolModels:
        models = self._symbols.get(symbol)
        if models is None:
            raise UnknownSymbol(
                f"no decision models for {symbol}; train them with `prediction-provider train "
                f"--symbol {symbol} --interval <interval> --source <feeder spec>` (csv:<path>, "
                "parquet:<path>, database, yfinance)",
                {"symbol": symbol, "available": self.symbols()},
            )
        return models

    def market_of(self, symbol: str) -> tuple[str | None, str | None]:
        """The (interval, feeder spec) a symbol's bars are read at; (None, None) for an unknown one."""
        models = self._symbols.get(symbol)
        return (None, None) if models is None else (models.interval, models.source)
