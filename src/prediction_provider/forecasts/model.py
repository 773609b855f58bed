"""Multi-horizon forecast models: the on-disk format, its loader, and one-row inference.

A forecast model is an MLflow model directory whose ``MLmodel`` names the
``prediction_provider_forecast`` flavor. The directory holds ``forecast.json``
(the manifest: symbol, interval, horizons, the label definition, the feature
pipeline, the quantiles and the file of every booster) and LightGBM text
models, one direction classifier (down / flat / up) and one quantile regressor
per quantile for each horizon. Only text is read: nothing is unpickled, so a
forecast model may come from an untrusted root like any LightGBM text model.

Why LightGBM's single-row fast path: a forecast of five horizons runs twenty
boosters on one row. ``Booster.predict`` spends ~55 us per call in Python
checks before the trees run; the C API's ``SingleRowFast`` functions (a handle
prepared once per booster) take a few microseconds, so all horizons together
cost about what one ``/predict`` call costs (bench/forecast_bench.py).
"""

from __future__ import annotations

import ctypes
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from prediction_provider.errors import InvalidInput
from prediction_provider.serving.loaders.base import FloatMatrix, LoadedModel, ModelLoader, ModelSource
from prediction_provider.serving.signature import ModelSignature

FLAVOR = "prediction_provider_forecast"
MANIFEST = "forecast.json"
FORMAT_VERSION = 1
QUANTILES = (0.1, 0.5, 0.9)
DIRECTION_CLASSES = ("down", "flat", "up")


@dataclass(frozen=True, slots=True)
class HorizonFiles:
    """The boosters of one horizon, by file name inside the model directory."""

    direction: str
    quantiles: tuple[str, ...]  # in QUANTILES order


@dataclass(frozen=True, slots=True)
class ForecastManifest:
    """What ``forecast.json`` declares; ``as_json``/``from_json`` are exact inverses."""

    symbol: str
    interval: str
    horizons: tuple[int, ...]
    feature_names: tuple[str, ...]
    feature_pipeline: str
    flat_band: float  # a move is flat within flat_band * 20-bar volatility * sqrt(horizon)
    source: str
    files: dict[int, HorizonFiles]
    quantiles: tuple[float, ...] = QUANTILES
    classes: tuple[str, ...] = DIRECTION_CLASSES

    def as_json(self) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION,
            "symbol": self.symbol,
            "interval": self.interval,
            "task": ["direction", "return"],
            "horizons": list(self.horizons),
            "feature_names": list(self.feature_names),
            "feature_pipeline": self.feature_pipeline,
            "label": {
                "direction": "log(close[t+h] / close[t]) beyond +/- flat_band * vol20 * sqrt(h)",
                "return": "log(close[t+h] / close[t])",
                "flat_band": self.flat_band,
            },
            "source": self.source,
            "quantiles": list(self.quantiles),
            "classes": list(self.classes),
            "files": {
                str(h): {"direction": f.direction, "quantiles": list(f.quantiles)}
                for h, f in self.files.items()
            },
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ForecastManifest:
        if data.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"unsupported forecast format {data.get('format_version')!r}")
        files = {
            int(h): HorizonFiles(str(entry["direction"]), tuple(str(q) for q in entry["quantiles"]))
            for h, entry in data["files"].items()
        }
        return cls(
            symbol=str(data["symbol"]),
            interval=str(data["interval"]),
            horizons=tuple(int(h) for h in data["horizons"]),
            feature_names=tuple(str(n) for n in data["feature_names"]),
            feature_pipeline=str(data["feature_pipeline"]),
            flat_band=float(data["label"]["flat_band"]),
            source=str(data["source"]),
            files=files,
            quantiles=tuple(float(q) for q in data["quantiles"]),
            classes=tuple(str(c) for c in data["classes"]),
        )


@dataclass(frozen=True, slots=True)
class StepForecast:
    """One horizon's answer: class probabilities in ``classes`` order and log-return quantiles."""

    step: int
    probabilities: tuple[float, ...]
    quantiles: tuple[float, ...]  # in the manifest's quantiles order, sorted (never crossing)


class SingleRowBooster:
    """A LightGBM booster behind the C API's single-row fast path (see the module docstring).

    The call goes through a ``ctypes.PyDLL`` handle of LightGBM's own library, which keeps the
    GIL for the ~10 us the trees take. Releasing it (as ``ctypes.CDLL`` does) would invite
    another thread to take it for up to a switch interval (5 ms) before each booster's result
    could be read back; holding it also serialises the calls, as the prepared handle's buffers
    require, without a lock of our own.
    """

    def __init__(self, booster: Any, features: int, outputs: int) -> None:
        from lightgbm.basic import _LIB, _c_str, _safe_call  # type: ignore[attr-defined]

        self._booster = booster  # keeps the native booster alive as long as the handle
        self._check = _safe_call
        self._lib = _LIB
        self._handle = ctypes.c_void_p()
        self._check(
            _LIB.LGBM_BoosterPredictForMatSingleRowFastInit(
                booster._handle,
                ctypes.c_int(0),  # C_API_PREDICT_NORMAL: probabilities / values
                ctypes.c_int(0),  # start iteration
                ctypes.c_int(-1),  # all iterations
                ctypes.c_int(1),  # C_API_DTYPE_FLOAT64
                ctypes.c_int32(features),
                _c_str("num_threads=1"),
                ctypes.byref(self._handle),
            )
        )
        self._predict = _holding_gil(_LIB).LGBM_BoosterPredictForMatSingleRowFast
        self._out = np.empty(outputs, dtype=np.float64)
        self._out_pointer = self._out.ctypes.data
        self._written = ctypes.c_int64(0)
        self._written_pointer = ctypes.addressof(self._written)

    def predict(self, row: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """``row``: C-contiguous float64 of the booster's features."""
        return self.predict_at(row.ctypes.data)

    def predict_at(self, row_address: int) -> npt.NDArray[np.float64]:
        """The same, given the address of such a row (computed once for many boosters)."""
        if self._predict(self._handle, row_address, self._written_pointer, self._out_pointer) != 0:
            self._check(-1)  # raises LightGBM's last error
        return self._out.copy()

    def close(self) -> None:
        if self._handle:
            self._check(self._lib.LGBM_FastConfigFree(self._handle))
            self._handle = ctypes.c_void_p()


_GIL_HOLDING_LIBRARIES: dict[str, ctypes.PyDLL] = {}


def _holding_gil(library: ctypes.CDLL) -> ctypes.PyDLL:
    """The same shared library, called without releasing the GIL; argument types declared once."""
    found = _GIL_HOLDING_LIBRARIES.get(library._name)
    if found is None:
        found = ctypes.PyDLL(library._name)
        function = found.LGBM_BoosterPredictForMatSingleRowFast
        function.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
        function.restype = ctypes.c_int
        _GIL_HOLDING_LIBRARIES[library._name] = found
    return found


class ForecastModel(LoadedModel):
    """A loaded forecast model. ``forecast(row, steps)`` answers every asked horizon."""

    framework = "forecast"

    def __init__(self, manifest: ForecastManifest, boosters: dict[int, tuple[Any, list[Any]]]) -> None:
        super().__init__(ModelSignature.from_names(list(manifest.feature_names)))
        self.manifest = manifest
        width = len(manifest.feature_names)
        self._steps = {
            step: (
                SingleRowBooster(direction, width, len(manifest.classes)),
                [SingleRowBooster(q, width, 1) for q in quantiles],
            )
            for step, (direction, quantiles) in boosters.items()
        }

    @property
    def horizons(self) -> tuple[int, ...]:
        return self.manifest.horizons

    def forecast(self, row: npt.ArrayLike, steps: Sequence[int]) -> list[StepForecast]:
        vector = np.ascontiguousarray(row, dtype=np.float64)
        address = vector.ctypes.data
        answers = []
        for step in steps:
            direction, quantile_boosters = self._steps[step]
            probabilities = direction.predict_at(address).tolist()
            # Separately fitted quantiles can cross; sorting is the standard rearrangement and
            # keeps each value a prediction of one of the models.
            values = sorted(booster.predict_at(address)[0].item() for booster in quantile_boosters)
            answers.append(StepForecast(step, tuple(probabilities), tuple(values)))
        return answers

    def predict_scores(self, matrix: FloatMatrix) -> npt.NDArray[Any]:
        raise InvalidInput(
            f"{self.manifest.symbol.lower()} forecasts are asked for by symbol, not by features",
            [{"field": "model", "error": f'send {{"symbol": "{self.manifest.symbol}"}} to POST /predict'}],
        )

    def unload(self) -> None:
        for direction, quantiles in self._steps.values():
            direction.close()
            for booster in quantiles:
                booster.close()


class ForecastLoader(ModelLoader):
    name = "forecast"
    flavors = (FLAVOR,)
    priority = 5

    def load(self, source: ModelSource) -> LoadedModel:
        import lightgbm

        manifest_file = _inside(source.path, str(source.flavor(FLAVOR).get("manifest", MANIFEST)))
        manifest = ForecastManifest.from_json(json.loads(manifest_file.read_text(encoding="utf-8")))
        boosters = {}
        for step in manifest.horizons:
            files = manifest.files[step]
            direction = lightgbm.Booster(model_file=str(_inside(source.path, files.direction)))
            quantiles = [lightgbm.Booster(model_file=str(_inside(source.path, f))) for f in files.quantiles]
            boosters[step] = (direction, quantiles)
        return ForecastModel(manifest, boosters)


def _inside(directory: Path, relative: str) -> Path:
    candidate = (directory / relative).resolve()
    if not candidate.is_relative_to(directory.resolve()):
        raise ValueError(f"forecast model file points outside its directory: {relative}")
    return candidate
