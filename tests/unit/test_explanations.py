"""Explanations of the shapes the demo's three-class models do not reach: binary models with a single
output, regressors, forests of several kinds, and models that cannot explain."""

from __future__ import annotations

import lightgbm
import numpy as np
import pytest
import xgboost
from sklearn.ensemble import ExtraTreesRegressor, RandomForestClassifier
from sklearn.linear_model import LogisticRegression

from prediction_provider.errors import ExplanationUnsupported
from prediction_provider.serving.explanations import explain
from prediction_provider.serving.loaders.base import LoadedModel
from prediction_provider.serving.loaders.lightgbm import LightGBMModel
from prediction_provider.serving.loaders.sklearn import SklearnModel
from prediction_provider.serving.loaders.xgboost import XGBoostModel
from prediction_provider.serving.signature import ModelSignature

NAMES = ("a", "b", "c", "d")
BINARY = ("no", "yes")


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    x = rng.normal(size=(400, len(NAMES)))
    y = (x[:, 0] + 0.5 * x[:, 1] + rng.normal(scale=0.5, size=400) > 0).astype(int)
    return x, y


def sigmoid(value: float) -> float:
    return float(1 / (1 + np.exp(-value)))


def check_binary(model: LoadedModel, matrix: np.ndarray) -> None:
    """Each row's class, whichever it is: the sums are that class's margin, ``P = sigmoid(margin)``."""
    output = model.predict(matrix)
    assert output.probabilities is not None
    explanations = explain(model, "m/1", matrix, output.predictions)
    assert {e.predicted_class for e in explanations} == set(BINARY)  # both branches are taken
    for explanation, probabilities in zip(explanations, output.probabilities, strict=True):
        margin = explanation.base_value + sum(explanation.contributions.values())
        probability = probabilities[BINARY.index(str(explanation.predicted_class))]
        assert sigmoid(margin) == pytest.approx(probability, abs=1e-6)


def test_binary_lightgbm_explains_either_class(data: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = data
    params = {"objective": "binary", "verbose": -1, "num_leaves": 8}
    booster = lightgbm.train(params, lightgbm.Dataset(x, y), num_boost_round=15)
    check_binary(LightGBMModel(booster, ModelSignature.from_names(NAMES, BINARY), 1), x[:30])


def test_binary_xgboost_explains_either_class(data: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = data
    booster = xgboost.train({"objective": "binary:logistic"}, xgboost.DMatrix(x, label=y), 15)
    check_binary(XGBoostModel(booster, ModelSignature.from_names(NAMES, BINARY)), x[:30])


def test_a_regressor_is_explained_to_its_value(data: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = data
    forest = ExtraTreesRegressor(n_estimators=10, max_depth=5, random_state=0).fit(x, y.astype(float))
    model = SklearnModel(forest, ModelSignature.from_names(NAMES))
    output = model.predict(x[:10])
    for explanation, value in zip(
        explain(model, "r", x[:10], output.predictions), output.predictions, strict=True
    ):
        assert explanation.predicted_class is None
        assert explanation.base_value + sum(explanation.contributions.values()) == pytest.approx(
            value, abs=1e-6
        )


def test_a_binary_forest_is_explained_to_its_probability(data: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = data
    forest = RandomForestClassifier(n_estimators=10, max_depth=5, random_state=0).fit(x, y)
    model = SklearnModel(forest, ModelSignature.from_names(NAMES, ("0", "1")))
    output = model.predict(x[:20])
    assert output.probabilities is not None
    explanations = explain(model, "f", x[:20], output.predictions)
    for explanation, probabilities in zip(explanations, output.probabilities, strict=True):
        total = explanation.base_value + sum(explanation.contributions.values())
        assert total == pytest.approx(probabilities.max(), abs=1e-6)


def test_a_linear_model_cannot_explain(data: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = data
    model = SklearnModel(LogisticRegression().fit(x, y), ModelSignature.from_names(NAMES, ("0", "1")))
    with pytest.raises(ExplanationUnsupported, match="LightGBM, XGBoost and scikit-learn tree models"):
        explain(model, "l", x[:1], model.predict(x[:1]).predictions)
