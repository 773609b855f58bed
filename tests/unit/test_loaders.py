"""Each built-in loader on real small models saved in the formats users ship."""

from __future__ import annotations

import json
import pickle
import sys
from pathlib import Path

import joblib
import lightgbm
import numpy as np
import pandas as pd
import pytest
import xgboost
from sklearn.linear_model import LogisticRegression

from prediction_provider.errors import ModelLoadFailed, UnsupportedModelFormat, UntrustedModelPath
from prediction_provider.features.market_data import load_sample_bars
from prediction_provider.features.pipeline import (
    DIRECTION_CLASSES,
    FEATURE_NAMES,
    compute_features,
    direction_labels,
)
from prediction_provider.serving.loaders import LOADER_GROUP, discover_loaders, load_model, open_source

LOADERS = discover_loaders()


@pytest.fixture(scope="module")
def training_data() -> tuple[pd.DataFrame, np.ndarray]:
    bars = load_sample_bars("GOOG").iloc[-600:]
    features = compute_features(bars)
    labels = direction_labels(bars, 0.25).reindex(features.index)
    frame = features.assign(y=labels).dropna()
    return frame.loc[:, list(FEATURE_NAMES)], frame["y"].to_numpy(dtype=int)


def write_sidecar(path: Path, **metadata: object) -> None:
    path.with_name(path.name + ".meta.json").write_text(json.dumps(metadata))


def load(path: Path, roots: list[Path]):  # type: ignore[no-untyped-def]
    return load_model(open_source(path, threads=1), LOADERS, roots)


def test_builtin_loaders_are_found_through_entry_points() -> None:
    names = {loader.name for loader in LOADERS}
    assert {"lightgbm", "xgboost", "sklearn", "onnx", "pyfunc", "torchscript"} <= names


def test_a_third_party_loader_is_discovered(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    package = tmp_path / "acme_loader.py"
    package.write_text(
        "from prediction_provider.serving.loaders.base import ModelLoader\n"
        "class AcmeLoader(ModelLoader):\n"
        "    name = 'acme'\n"
        "    suffixes = ('.acme',)\n"
        "    def load(self, source):\n"
        "        raise RuntimeError('not needed')\n"
    )
    dist = tmp_path / "acme_loader-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-loader\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(f"[{LOADER_GROUP}]\nacme = acme_loader:AcmeLoader\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert "acme" in {loader.name for loader in discover_loaders()}
    sys.modules.pop("acme_loader", None)


def test_lightgbm_text_model(tmp_path: Path, training_data: tuple[pd.DataFrame, np.ndarray]) -> None:
    x, y = training_data
    booster = lightgbm.train(
        {"objective": "multiclass", "num_class": 3, "verbose": -1}, lightgbm.Dataset(x, y), 10
    )
    path = tmp_path / "direction.lgb"
    booster.save_model(path)
    write_sidecar(path, class_labels=list(DIRECTION_CLASSES))
    model, loader = load(path, [])
    assert loader == "lightgbm"
    assert model.signature.feature_names == FEATURE_NAMES
    assert model.signature.classes == DIRECTION_CLASSES
    output = model.predict(x.to_numpy())
    np.testing.assert_allclose(output.probabilities, booster.predict(x))
    assert output.predictions[:5] == [DIRECTION_CLASSES[i] for i in booster.predict(x).argmax(1)[:5]]


def test_lightgbm_regression_gives_values(
    tmp_path: Path, training_data: tuple[pd.DataFrame, np.ndarray]
) -> None:
    x, y = training_data
    booster = lightgbm.train({"objective": "regression", "verbose": -1}, lightgbm.Dataset(x, y * 0.1), 5)
    path = tmp_path / "regressor.txt"
    booster.save_model(path)
    model, _ = load(path, [])
    assert model.signature.task == "regression"
    output = model.predict(x.to_numpy()[:3])
    assert output.probabilities is None
    assert output.predictions == pytest.approx(booster.predict(x.iloc[:3]).tolist())


@pytest.mark.parametrize("suffix", [".json", ".ubj"])
def test_xgboost_json_and_ubj(
    tmp_path: Path, training_data: tuple[pd.DataFrame, np.ndarray], suffix: str
) -> None:
    x, y = training_data
    train = xgboost.DMatrix(x, label=y)
    booster = xgboost.train({"objective": "multi:softprob", "num_class": 3}, train, 10)
    path = tmp_path / f"direction{suffix}"
    booster.save_model(path)
    model, loader = load(path, [])
    assert loader == "xgboost"
    assert model.signature.feature_names == FEATURE_NAMES
    assert model.signature.classes == ("0", "1", "2")
    np.testing.assert_allclose(model.predict(x.to_numpy()).probabilities, booster.predict(train), rtol=1e-6)


def test_xgboost_binary_expands_to_two_columns(
    tmp_path: Path, training_data: tuple[pd.DataFrame, np.ndarray]
) -> None:
    x, y = training_data
    booster = xgboost.train({"objective": "binary:logistic"}, xgboost.DMatrix(x, label=(y == 2)), 5)
    path = tmp_path / "up.json"
    booster.save_model(path)
    write_sidecar(path, class_labels=["not_up", "up"])
    output = load(path, [])[0].predict(x.to_numpy()[:4])
    assert output.probabilities is not None
    assert output.probabilities.shape == (4, 2)
    np.testing.assert_allclose(output.probabilities.sum(axis=1), 1.0)


def test_sklearn_joblib_under_a_trusted_root(
    tmp_path: Path, training_data: tuple[pd.DataFrame, np.ndarray]
) -> None:
    x, y = training_data
    estimator = LogisticRegression(max_iter=500).fit(x, y)
    path = tmp_path / "logit.joblib"
    joblib.dump(estimator, path)
    model, loader = load(path, [tmp_path])
    assert loader == "sklearn"
    assert model.signature.feature_names == FEATURE_NAMES
    np.testing.assert_allclose(model.predict(x.to_numpy()).probabilities, estimator.predict_proba(x))


class _Booby:
    """Unpickling this creates a marker file: proof that a file was opened."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (Path.touch, (self.marker,))


def test_untrusted_pickles_are_never_opened(tmp_path: Path) -> None:
    marker = tmp_path / "unpickled"
    outside = tmp_path / "outside"
    outside.mkdir()
    path = outside / "evil.pkl"
    path.write_bytes(pickle.dumps(_Booby(marker)))
    with pytest.raises(UntrustedModelPath):
        load(path, [tmp_path / "trusted"])
    assert not marker.exists()


def test_onnx_model_reads_names_and_classes_from_its_metadata(
    tmp_path: Path, training_data: tuple[pd.DataFrame, np.ndarray]
) -> None:
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType

    x, y = training_data
    estimator = LogisticRegression(max_iter=500).fit(x.to_numpy(), y)
    onnx_model = to_onnx(
        estimator,
        initial_types=[("input", FloatTensorType([None, len(FEATURE_NAMES)]))],
        options={id(estimator): {"zipmap": False}},
    )
    for key, value in (("feature_names", FEATURE_NAMES), ("class_labels", DIRECTION_CLASSES)):
        entry = onnx_model.metadata_props.add()
        entry.key, entry.value = key, json.dumps(list(value))
    path = tmp_path / "logit.onnx"
    path.write_bytes(onnx_model.SerializeToString())
    model, loader = load(path, [])
    assert loader == "onnx"
    assert model.signature.feature_names == FEATURE_NAMES
    assert model.signature.classes == DIRECTION_CLASSES
    np.testing.assert_allclose(
        model.predict(x.to_numpy()).probabilities, estimator.predict_proba(x.to_numpy()), atol=1e-5
    )


def test_mlflow_pyfunc_models_load_from_trusted_roots(tmp_path: Path) -> None:
    import mlflow.pyfunc
    from mlflow.models import infer_signature

    class Doubler(mlflow.pyfunc.PythonModel):
        def predict(self, context: object, model_input: pd.DataFrame, params: object = None) -> pd.Series:
            return model_input["a"] * 2 + model_input["b"]

    example = pd.DataFrame({"a": [1.0], "b": [2.0]})
    path = tmp_path / "doubler"
    mlflow.pyfunc.save_model(
        path, python_model=Doubler(), signature=infer_signature(example, np.array([4.0]))
    )
    with pytest.raises(UntrustedModelPath):
        load(path, [tmp_path / "elsewhere"])
    model, loader = load(path, [tmp_path])
    assert loader == "pyfunc"
    assert model.signature.feature_names == ("a", "b")
    assert model.predict(np.array([[1.0, 2.0], [3.0, 0.5]])).predictions == [4.0, 6.5]


def test_unknown_formats_and_corrupt_files_fail_clearly(tmp_path: Path) -> None:
    odd = tmp_path / "model.bin"
    odd.write_bytes(b"\x00")
    with pytest.raises(UnsupportedModelFormat):
        load(odd, [tmp_path])
    corrupt = tmp_path / "model.lgb"
    corrupt.write_text("this is not a LightGBM model")
    with pytest.raises(ModelLoadFailed, match="lightgbm"):
        load(corrupt, [tmp_path])
    with pytest.raises(ModelLoadFailed):
        load(tmp_path / "absent.onnx", [tmp_path])


# torch 2.13 deprecates TorchScript in favour of torch.export; models already
# shipped as TorchScript archives still have to load.
@pytest.mark.filterwarnings("ignore:`torch.jit.*deprecated:DeprecationWarning")
def test_torchscript_modules_load_with_their_sidecar(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch", reason="the torch extra is not installed")
    torch.manual_seed(0)
    module = torch.jit.script(
        torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    )
    path = tmp_path / "direction.pt"
    module.save(str(path))
    write_sidecar(path, feature_names=["a", "b", "c"], class_labels=list(DIRECTION_CLASSES), output="logits")
    with pytest.raises(UntrustedModelPath):
        load(path, [tmp_path / "elsewhere"])
    model, loader = load(path, [tmp_path])
    assert loader == "torchscript"
    assert model.signature.classes == DIRECTION_CLASSES
    rows = np.array([[0.1, -0.2, 0.3], [1.0, 2.0, -1.0]])
    expected = torch.softmax(module(torch.tensor(rows, dtype=torch.float32)), dim=1).detach().numpy()
    output = model.predict(rows)
    np.testing.assert_allclose(output.probabilities, expected, rtol=1e-5)
    np.testing.assert_allclose(output.probabilities.sum(axis=1), 1.0, rtol=1e-5)
