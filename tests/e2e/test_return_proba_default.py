"""One default for ``return_proba`` on every route that takes it: omitted means true."""

from __future__ import annotations

import math

import httpx
import pytest

from prediction_provider.features.pipeline import DIRECTION_CLASSES, FEATURE_NAMES
from tests.conftest import MODEL
from tests.e2e.test_jobs_api import finished, wait_for


def assert_distribution(probabilities: dict[str, float]) -> None:
    assert set(probabilities) == set(DIRECTION_CLASSES)
    assert math.isclose(sum(probabilities.values()), 1.0, rel_tol=1e-5)


def test_predict_without_return_proba_gives_probabilities(
    client: httpx.Client, feature_rows: list[dict[str, float]]
) -> None:
    body = client.post("/predict", json={"model": MODEL, "features": feature_rows[0]}).json()
    assert_distribution(body["probabilities"])


@pytest.mark.parametrize("layout", ["records", "columns"])
def test_batch_without_return_proba_gives_probabilities(
    client: httpx.Client, feature_rows: list[dict[str, float]], layout: str
) -> None:
    rows = feature_rows[:4]
    features_list = rows if layout == "records" else {n: [r[n] for r in rows] for n in FEATURE_NAMES}
    response = client.post("/predict/batch", json={"model": MODEL, "features_list": features_list})
    assert response.status_code == 200, response.text
    probabilities = response.json()["probabilities"]
    assert len(probabilities) == 4
    for row in probabilities:
        assert_distribution(row)


def test_opting_out_still_works_on_batch(client: httpx.Client, feature_rows: list[dict[str, float]]) -> None:
    body = {"model": MODEL, "features_list": feature_rows[:2], "return_proba": False}
    assert client.post("/predict/batch", json=body).json()["probabilities"] is None


@pytest.mark.parametrize("shape", ["features", "features_list"])
def test_prediction_jobs_without_return_proba_give_probabilities(
    client: httpx.Client, feature_rows: list[dict[str, float]], shape: str
) -> None:
    rows = feature_rows[:3]
    body = {"model": MODEL, shape: rows[0] if shape == "features" else rows}
    submitted = client.post("/api/v1/predictions", json=body)
    assert submitted.status_code == 202, submitted.text
    job = finished(client, submitted.json()["id"])
    assert job["status"] == "completed", job
    if shape == "features":
        assert_distribution(job["result"]["probabilities"])
    else:
        assert len(job["result"]["probabilities"]) == 3
        for row in job["result"]["probabilities"]:
            assert_distribution(row)


def test_predict_async_without_return_proba_gives_probabilities(
    client: httpx.Client, feature_rows: list[dict[str, float]]
) -> None:
    accepted = client.post("/predict/async", json={"model": MODEL, "features": feature_rows[2]})
    assert accepted.status_code == 202, accepted.text
    task = f"/monitoring/task_status/{accepted.json()['task_id']}"
    status = wait_for(client, task, {"SUCCESS", "FAILURE"})
    assert status["status"] == "SUCCESS", status
    assert_distribution(status["result"]["probabilities"])


def test_v2_infer_without_requested_outputs_gives_probabilities(
    client: httpx.Client, feature_rows: list[dict[str, float]]
) -> None:
    matrix = [[feature_rows[0][name] for name in FEATURE_NAMES]]
    tensor = {"name": "x", "datatype": "FP64", "shape": [1, len(FEATURE_NAMES)], "data": matrix}
    request = {"inputs": [tensor]}
    response = client.post(f"/v2/models/{MODEL}/infer", json=request)
    assert response.status_code == 200, response.text
    outputs = {output["name"]: output for output in response.json()["outputs"]}
    assert outputs["probabilities"]["shape"] == [1, len(DIRECTION_CLASSES)]
    assert math.isclose(sum(outputs["probabilities"]["data"]), 1.0, rel_tol=1e-5)
