"""Ensembles over real HTTP: operators create them from the demo model versions, anyone who reads
models sees them in the catalogue, and ``/predict`` by the ensemble's name answers exactly the
combination of what the pinned member versions answer on their own."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton

from prediction_provider.features.pipeline import DIRECTION_CLASSES, FEATURE_NAMES
from tests.conftest import MODEL, Account, LiveServer, WithHeaders
from tests.upload_models import feature_list, lightgbm_text, xgboost_json

PATH = "/api/v1/ensembles"
VERSIONS = ("1", "2", "3", "4")


def fresh(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def error_of(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    error: dict[str, Any] = body["error"]
    return error


@pytest.fixture
def http(live_server: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live_server.url, timeout=120) as client:
        yield client


def members(weights: tuple[float, ...] = (0.4, 0.3, 0.2, 0.1), **extra: Any) -> list[dict[str, Any]]:
    return [
        {"name": f"v{version}", "target": f"models:/{MODEL}/{version}", "weight": weight, **extra}
        for version, weight in zip(VERSIONS, weights, strict=False)
    ]


def create(http: httpx.Client, operator: Account, **body: Any) -> httpx.Response:
    config = {"name": fresh("ens"), "method": "weighted_mean_proba", "members": members(), **body}
    return http.post(PATH, headers=operator.headers, json=config)


def member_probabilities(http: httpx.Client, client: Account, row: dict[str, float]) -> np.ndarray:
    """Each pinned version's own /predict answer, in the ensemble's class order."""
    answers = []
    for version in VERSIONS:
        response = http.post(
            "/predict", headers=client.headers, json={"model": f"models:/{MODEL}/{version}", "features": row}
        )
        assert response.status_code == 200, response.text
        answers.append([response.json()["probabilities"][label] for label in DIRECTION_CLASSES])
    return np.array(answers)


def test_routes_need_credentials_then_the_operator_role(
    http: httpx.Client, accounts: dict[str, Account]
) -> None:
    assert error_of(http.post(PATH, json={"not": "valid"}), 401)["code"] == "unauthorized"
    assert http.get(PATH).status_code == 401
    assert http.delete(f"{PATH}/whatever").status_code == 401
    refused = create(http, accounts["client"])
    assert error_of(refused, 403)["code"] == "forbidden"
    assert http.get(PATH, headers=accounts["client"].headers).status_code == 200
    assert http.delete(f"{PATH}/whatever", headers=accounts["client"].headers).status_code == 403


def test_a_weighted_ensemble_of_the_demo_versions_answers_their_weighted_mean(
    http: httpx.Client, accounts: dict[str, Account], feature_rows: list[dict[str, float]]
) -> None:
    operator, client = accounts["operator"], accounts["client"]
    created = create(http, operator)
    assert created.status_code == 201, created.text
    ensemble = created.json()
    name = ensemble["name"]
    assert (ensemble["type"], ensemble["uri"], ensemble["created_by"]) == (
        "ensemble", f"ensemble:{name}", operator.username,
    )  # fmt: skip
    assert [f["name"] for f in ensemble["signature"]["features"]] == list(FEATURE_NAMES)
    assert ensemble["signature"]["classes"] == list(DIRECTION_CLASSES)
    assert http.get(f"{PATH}/{name}", headers=client.headers).json()["version"] == ensemble["version"]

    row = feature_rows[-3]
    answer = http.post(
        "/predict", headers=client.headers, json={"model": name, "features": row, "return_members": True}
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    weights = np.array([0.4, 0.3, 0.2, 0.1])
    expected = weights @ member_probabilities(http, client, row) / weights.sum()
    got = np.array([body["probabilities"][label] for label in DIRECTION_CLASSES])
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-12)
    assert body["prediction"] == DIRECTION_CLASSES[int(np.argmax(expected))]
    assert body["model"] == {"name": name, "version": ensemble["version"], "uri": f"ensemble:{name}"}
    assert body["ensemble"]["members_used"] == 4
    assert answer.headers["X-PP-Members-Used"] == "4"
    assert [m["name"] for m in body["ensemble"]["members"]] == ["v1", "v2", "v3", "v4"]
    assert {m["status"] for m in body["ensemble"]["members"]} == {"ok"}
    assert [m["version"] for m in body["ensemble"]["members"]] == list(VERSIONS)


def test_geometric_and_vote_ensembles_combine_the_members_answers(
    http: httpx.Client, accounts: dict[str, Account], feature_rows: list[dict[str, float]]
) -> None:
    operator, client = accounts["operator"], accounts["client"]
    row = feature_rows[-7]
    own = member_probabilities(http, client, row)
    weights = np.array([0.4, 0.3, 0.2, 0.1])

    geometric = create(http, operator, method="geometric_mean").json()["name"]
    body = http.post("/predict", headers=client.headers, json={"model": geometric, "features": row}).json()
    raw = np.exp((weights / weights.sum()) @ np.log(np.maximum(own, 1e-12)))
    got = np.array([body["probabilities"][label] for label in DIRECTION_CLASSES])
    np.testing.assert_allclose(got, raw / raw.sum(), rtol=1e-9)

    vote = create(http, operator, method="majority_vote").json()["name"]
    body = http.post("/predict", headers=client.headers, json={"model": vote, "features": row}).json()
    shares = np.zeros(3)
    for member, weight in zip(own, weights, strict=True):
        shares[int(np.argmax(member))] += weight
    got = np.array([body["probabilities"][label] for label in DIRECTION_CLASSES])
    np.testing.assert_allclose(got, shares / weights.sum(), rtol=1e-9)
    top = np.isclose(shares, shares.max())
    assert body["prediction"] == DIRECTION_CLASSES[int(np.argmax(np.where(top, own.mean(axis=0), -1)))]


def test_a_batch_by_the_ensembles_name_answers_every_row(
    http: httpx.Client, accounts: dict[str, Account], feature_rows: list[dict[str, float]]
) -> None:
    operator, client = accounts["operator"], accounts["client"]
    name = create(http, operator, method="mean_proba", members=members((1, 1))).json()["name"]
    rows = feature_rows[-4:]
    response = http.post(
        "/predict/batch", headers=client.headers, json={"model": name, "features_list": rows}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert len(body["predictions"]) == 4
    for index, row in enumerate(rows):
        expected = member_probabilities(http, client, row)[:2].mean(axis=0)
        got = np.array([body["probabilities"][index][label] for label in DIRECTION_CLASSES])
        np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-12)


def test_the_catalogue_lists_ensembles_after_the_registered_models(
    http: httpx.Client, accounts: dict[str, Account]
) -> None:
    name = create(http, accounts["operator"]).json()["name"]
    catalogue = http.get("/models", headers=accounts["client"].headers, params={"limit": 500}).json()
    by_name = {entry["name"]: entry for entry in catalogue["models"]}
    assert by_name[MODEL]["type"] == "model"
    assert by_name[name]["type"] == "ensemble"
    assert by_name[name]["members"] == [f"models:/{MODEL}/{v}" for v in VERSIONS]
    assert catalogue["total"] >= len(catalogue["models"])
    listed = http.get(PATH, headers=accounts["client"].headers, params={"limit": 500}).json()
    assert name in {item["name"] for item in listed["items"]}
    assert error_of(http.get(PATH, headers=accounts["client"].headers, params={"page": 2}), 422)


def upload(http: httpx.Client, provider: Account, fmt: str, content: bytes, **fields: str) -> str:
    name = fresh(f"ens-up-{fmt.split('_')[0]}")
    response = http.post(
        "/api/v1/provider/models",
        headers=provider.headers,
        data={"name": name, "format": fmt, **fields},
        files={"file": ("model.bin", content, "application/octet-stream")},
    )
    assert response.status_code == 201, response.text
    return name


def test_members_that_do_not_agree_or_do_not_exist_are_422_and_nothing_is_created(
    http: httpx.Client, accounts: dict[str, Account]
) -> None:
    operator = accounts["operator"]
    binary = upload(http, accounts["provider"], "lightgbm", lightgbm_text())
    regressor = upload(http, accounts["provider"], "xgboost_json", xgboost_json(), features=feature_list())
    cases = {
        "classes": [members()[0], {"name": "bin", "target": f"models:/{binary}/1"}],
        "task": [members()[0], {"name": "reg", "target": f"models:/{regressor}/1"}],
        "missing": [members()[0], {"name": "gone", "target": f"models:/{MODEL}/99"}],
    }
    for case, listed in cases.items():
        name = fresh(f"bad-{case}")
        error = error_of(create(http, operator, name=name, members=listed), 422)
        assert error["code"] == "invalid_ensemble", case
        assert error["details"][0]["field"] == "members.1.target", case
        assert http.get(f"{PATH}/{name}", headers=operator.headers).status_code == 404
    assert "differ" in error_of(create(http, operator, members=cases["classes"]), 422)["details"][0]["error"]
    mixed = error_of(create(http, operator, members=cases["task"]), 422)["details"][0]["error"]
    assert "mix classifiers and regressors" in mixed
    assert error_of(create(http, operator, method="mean", members=members()[:1]), 422)["details"][0][
        "field"
    ] == ("method")
    zero = error_of(create(http, operator, members=members((1.0, 0.0))), 422)
    assert zero["code"] == "validation_error"
    too_many = error_of(create(http, operator, members=members((1.0, 1.0)), min_members=3), 422)
    assert too_many["code"] == "validation_error"


def test_names_are_unique_among_ensembles_and_registered_models_and_delete_removes_one(
    http: httpx.Client, accounts: dict[str, Account], feature_rows: list[dict[str, float]]
) -> None:
    operator, client = accounts["operator"], accounts["client"]
    assert error_of(create(http, operator, name=MODEL), 409)["code"] == "ensemble_conflict"
    name = create(http, operator).json()["name"]
    assert error_of(create(http, operator, name=name), 409)["code"] == "ensemble_conflict"

    assert http.delete(f"{PATH}/{name}", headers=operator.headers).status_code == 204
    assert error_of(http.get(f"{PATH}/{name}", headers=client.headers), 404)["code"] == "ensemble_not_found"
    assert http.delete(f"{PATH}/{name}", headers=operator.headers).status_code == 404
    gone = http.post("/predict", headers=client.headers, json={"model": name, "features": feature_rows[0]})
    assert gone.status_code == 404


def test_an_optional_member_the_breaker_shut_off_is_dropped_from_the_answer(
    http: httpx.Client,
    accounts: dict[str, Account],
    live_server: LiveServer,
    feature_rows: list[dict[str, float]],
) -> None:
    operator, client = accounts["operator"], accounts["client"]
    name = create(http, operator, members=members((0.4, 0.3)), min_members=1).json()["name"]
    cached = live_server.services.ensembles.cached(name)
    cached.model.breakers["v2"].force("force_open")  # as a run of failures would leave it
    row = feature_rows[-2]
    body = http.post(
        "/predict", headers=client.headers, json={"model": name, "features": row, "return_members": True}
    ).json()
    assert body["ensemble"]["members_used"] == 1
    assert [m["status"] for m in body["ensemble"]["members"]] == ["ok", "circuit_open"]
    got = np.array([body["probabilities"][label] for label in DIRECTION_CLASSES])
    np.testing.assert_allclose(got, member_probabilities(http, client, row)[0], rtol=1e-9, atol=1e-12)


def test_the_open_inference_and_mlflow_protocols_serve_the_ensemble_by_name(
    http: httpx.Client,
    accounts: dict[str, Account],
    live_server: LiveServer,
    feature_rows: list[dict[str, float]],
) -> None:
    operator, client = accounts["operator"], accounts["client"]
    name = create(http, operator, members=members((3, 1))).json()["name"]
    rows = feature_rows[-3:]
    batch = http.post("/predict/batch", headers=client.headers, json={"model": name, "features_list": rows})
    assert batch.status_code == 200, batch.text
    expected = np.array([[p[label] for label in DIRECTION_CLASSES] for p in batch.json()["probabilities"]])
    matrix = [[row[feature] for feature in FEATURE_NAMES] for row in rows]

    tensor = {
        "name": "input-0",
        "datatype": "FP64",
        "shape": [3, len(FEATURE_NAMES)],
        "data": [value for row in matrix for value in row],
    }
    infer = http.post(f"/v2/models/{name}/infer", headers=client.headers, json={"inputs": [tensor]})
    assert infer.status_code == 200, infer.text
    outputs = {output["name"]: output for output in infer.json()["outputs"]}
    assert outputs["label"]["data"] == batch.json()["predictions"]
    np.testing.assert_allclose(np.reshape(outputs["probabilities"]["data"], (3, 3)), expected, rtol=1e-9)

    scoring = {"dataframe_split": {"columns": list(FEATURE_NAMES), "data": matrix}}
    invoked = http.post(f"/models/{name}/invocations", headers=client.headers, json=scoring)
    assert invoked.status_code == 200, invoked.text
    np.testing.assert_allclose(np.asarray(invoked.json()["predictions"]), expected, rtol=1e-9)

    port = live_server.services.grpc_port
    assert port
    grpc = triton.InferenceServerClient(f"127.0.0.1:{port}")
    try:
        signed_in = WithHeaders(grpc, {"x-api-key": client.api_key})
        grpc_input = triton.InferInput("input-0", [3, len(FEATURE_NAMES)], "FP64")
        grpc_input.set_data_from_numpy(np.array(matrix, dtype=np.float64))
        result = signed_in.infer(name, [grpc_input])  # type: ignore[attr-defined]
    finally:
        grpc.close()
    assert [label.decode() for label in result.as_numpy("label")] == batch.json()["predictions"]
    np.testing.assert_allclose(result.as_numpy("probabilities"), expected, rtol=1e-9)
