"""``explain: true`` on /predict and /predict/batch: per-feature contributions that add up to the
model's own raw score for the predicted class, checked against the framework's model loaded apart."""

from __future__ import annotations

from typing import Any

import httpx
import mlflow.lightgbm
import mlflow.xgboost
import numpy as np
import pytest
import xgboost

from prediction_provider.features.pipeline import DIRECTION_CLASSES, FEATURE_NAMES
from prediction_provider.serving.references import parse_model_reference
from tests.conftest import MODEL, LiveServer

LIGHTGBM = f"models:/{MODEL}/1"
XGBOOST = f"models:/{MODEL}/2"
FOREST = f"models:/{MODEL}@sklearn"
ONNX = f"models:/{MODEL}@onnx"


def matrix_of(rows: list[dict[str, float]]) -> np.ndarray:
    return np.array([[row[name] for name in FEATURE_NAMES] for row in rows], dtype=np.float64)


def raw_scores(live_server: LiveServer, reference: str, rows: list[dict[str, float]]) -> np.ndarray:
    """``(rows, classes)`` raw scores from the framework itself: LightGBM's and XGBoost's margins."""
    location = str(live_server.services.registry.resolve(parse_model_reference(reference)).location)
    if reference == LIGHTGBM:
        booster = mlflow.lightgbm.load_model(location)
        return np.asarray(booster.predict(matrix_of(rows), raw_score=True))
    booster = mlflow.xgboost.load_model(location)
    dmatrix = xgboost.DMatrix(matrix_of(rows), feature_names=list(FEATURE_NAMES))
    return np.asarray(booster.predict(dmatrix, output_margin=True))


def assert_explains(explanation: dict[str, Any], prediction: str, score: float, method: str) -> None:
    assert explanation["class"] == prediction
    assert list(explanation["contributions"]) == list(FEATURE_NAMES)
    assert method in explanation["method"]
    total = explanation["base_value"] + sum(explanation["contributions"].values())
    assert total == pytest.approx(score, abs=1e-6)


@pytest.mark.parametrize(("reference", "method"), [(LIGHTGBM, "lightgbm"), (XGBOOST, "xgboost")])
def test_predict_explains_the_predicted_class_of_boosted_trees(
    client: httpx.Client,
    live_server: LiveServer,
    feature_rows: list[dict[str, float]],
    reference: str,
    method: str,
) -> None:
    rows = feature_rows[-5:]
    scores = raw_scores(live_server, reference, rows)
    for row, score in zip(rows, scores, strict=True):
        response = client.post("/predict", json={"model": reference, "features": row, "explain": True})
        assert response.status_code == 200, response.text
        body = response.json()
        predicted = DIRECTION_CLASSES.index(body["prediction"])
        assert body["prediction"] == DIRECTION_CLASSES[int(np.argmax(score))]
        assert_explains(body["explanation"], body["prediction"], float(score[predicted]), method)
        assert body["explanation"]["model"] == f"{MODEL}/{body['model']['version']}"
        assert body["probabilities"] is not None  # the rest of the answer is as without explain


@pytest.mark.parametrize(("reference", "method"), [(LIGHTGBM, "lightgbm"), (XGBOOST, "xgboost")])
@pytest.mark.parametrize("layout", ["records", "columns"])
def test_batch_explains_every_row(
    client: httpx.Client,
    live_server: LiveServer,
    feature_rows: list[dict[str, float]],
    reference: str,
    method: str,
    layout: str,
) -> None:
    rows = feature_rows[:40]
    features_list: Any = rows if layout == "records" else {n: [r[n] for r in rows] for n in FEATURE_NAMES}
    response = client.post(
        "/predict/batch", json={"model": reference, "features_list": features_list, "explain": True}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert len(body["explanations"]) == body["count"] == 40
    scores = raw_scores(live_server, reference, rows)
    for explanation, prediction, score in zip(body["explanations"], body["predictions"], scores, strict=True):
        assert_explains(explanation, prediction, float(score[DIRECTION_CLASSES.index(prediction)]), method)


def test_the_forest_is_explained_by_treeshap_to_its_probability(
    client: httpx.Client, feature_rows: list[dict[str, float]]
) -> None:
    """A forest's raw score is its probability: the answer's own ``probability``."""
    for row in feature_rows[-3:]:
        response = client.post("/predict", json={"model": FOREST, "features": row, "explain": True})
        assert response.status_code == 200, response.text
        body = response.json()
        assert_explains(body["explanation"], body["prediction"], body["probability"], "TreeExplainer")


def test_a_model_that_cannot_explain_answers_422(
    client: httpx.Client, feature_rows: list[dict[str, float]]
) -> None:
    for path, rows in (
        ("/predict", {"features": feature_rows[0]}),
        ("/predict/batch", {"features_list": feature_rows[:2]}),
    ):
        response = client.post(path, json={"model": ONNX, **rows, "explain": True})
        assert response.status_code == 422, response.text
        error = response.json()["error"]
        assert error["code"] == "explanation_unsupported"
        assert "onnx" in error["message"]
        assert "LightGBM, XGBoost and scikit-learn tree models" in error["message"]


def test_predict_async_refuses_explain_rather_than_ignoring_it(
    client: httpx.Client, feature_rows: list[dict[str, float]]
) -> None:
    response = client.post(
        "/predict/async", json={"model": MODEL, "features": feature_rows[0], "explain": True}
    )
    assert response.status_code == 422
    assert response.json()["error"]["details"][0]["field"] == "explain"


def test_without_explain_the_answer_is_unchanged(
    client: httpx.Client, feature_rows: list[dict[str, float]]
) -> None:
    single = client.post("/predict", json={"model": LIGHTGBM, "features": feature_rows[0]}).json()
    batch = client.post("/predict/batch", json={"model": LIGHTGBM, "features_list": feature_rows[:2]}).json()
    assert "explanation" not in single
    assert "explanations" not in batch
