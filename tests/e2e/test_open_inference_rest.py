"""Open Inference Protocol v2 over REST, driven by the real ``tritonclient.http`` client."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from prediction_provider.features.pipeline import DIRECTION_CLASSES, FEATURE_NAMES
from tests.conftest import MODEL, Account, LiveServer, WithHeaders


@pytest.fixture
def triton_client(
    live_server: LiveServer, client_headers: dict[str, str]
) -> Iterator[triton.InferenceServerClient]:
    client = triton.InferenceServerClient(live_server.url.removeprefix("http://"))
    yield WithHeaders(client, client_headers)  # type: ignore[misc]
    client.close()


def text(values: np.ndarray) -> list[str]:
    """BYTES outputs arrive as bytes in binary form and as str in JSON form."""
    return [v.decode() if isinstance(v, bytes) else str(v) for v in values]


def rows_matrix(feature_rows: list[dict[str, float]], count: int) -> np.ndarray:
    return np.array([[row[name] for name in FEATURE_NAMES] for row in feature_rows[:count]])


def native_predictions(
    client: httpx.Client, feature_rows: list[dict[str, float]], count: int, model: str
) -> list:
    body = {"model": model, "features_list": feature_rows[:count], "return_proba": True}
    return client.post("/predict/batch", json=body).json()


def test_server_and_model_metadata(triton_client: triton.InferenceServerClient) -> None:
    assert triton_client.is_server_live()
    assert triton_client.is_server_ready()
    server = triton_client.get_server_metadata()
    assert server["name"] == "prediction-provider"
    assert "binary_tensor_data" in server["extensions"]
    assert triton_client.is_model_ready(MODEL)
    assert triton_client.is_model_ready(MODEL, "1")
    metadata = triton_client.get_model_metadata(MODEL, "1")
    assert metadata["platform"] == "lightgbm"
    assert [i["name"] for i in metadata["inputs"]] == list(FEATURE_NAMES)
    assert {o["name"] for o in metadata["outputs"]} == {"label", "probabilities"}
    assert set(metadata["versions"]) == {"1", "2", "3", "4"}


@pytest.mark.parametrize("binary", [True, False])
def test_infer_with_one_2d_tensor_matches_predict(
    triton_client: triton.InferenceServerClient,
    client: httpx.Client,
    feature_rows: list[dict[str, float]],
    binary: bool,
) -> None:
    matrix = rows_matrix(feature_rows, 8)
    tensor = triton.InferInput("input-0", list(matrix.shape), "FP64")
    tensor.set_data_from_numpy(matrix, binary_data=binary)
    outputs = [triton.InferRequestedOutput(n, binary_data=binary) for n in ("label", "probabilities")]
    result = triton_client.infer(MODEL, [tensor], model_version="1", outputs=outputs, request_id="req-7")
    expected = native_predictions(client, feature_rows, 8, f"models:/{MODEL}/1")
    labels = text(result.as_numpy("label"))
    assert labels == expected["predictions"]
    probabilities = result.as_numpy("probabilities")
    assert probabilities.shape == (8, len(DIRECTION_CLASSES))
    expected_probabilities = [[row[c] for c in DIRECTION_CLASSES] for row in expected["probabilities"]]
    np.testing.assert_allclose(probabilities, expected_probabilities, rtol=1e-9)
    response = result.get_response()
    assert response["id"] == "req-7"
    assert response["model_version"] == "1"


def test_infer_with_one_tensor_per_feature(
    triton_client: triton.InferenceServerClient, client: httpx.Client, feature_rows: list[dict[str, float]]
) -> None:
    matrix = rows_matrix(feature_rows, 5)
    inputs = []
    for i, name in enumerate(FEATURE_NAMES):
        tensor = triton.InferInput(name, [5, 1], "FP32")
        tensor.set_data_from_numpy(matrix[:, [i]].astype(np.float32))
        inputs.append(tensor)
    result = triton_client.infer(MODEL, inputs, model_version="xgboost")
    assert result.get_response()["model_version"] == "2"
    labels = text(result.as_numpy("label"))
    assert all(label in DIRECTION_CLASSES for label in labels)
    assert result.as_numpy("probabilities").shape == (5, 3)


def test_protocol_errors(
    triton_client: triton.InferenceServerClient, live_server: LiveServer, client: httpx.Client
) -> None:
    tensor = triton.InferInput("input-0", [1, 3], "FP64")
    tensor.set_data_from_numpy(np.zeros((1, 3)))
    with pytest.raises(InferenceServerException) as wrong_width:
        triton_client.infer(MODEL, [tensor])
    assert wrong_width.value.status() == "400"
    with pytest.raises(InferenceServerException) as unknown:
        triton_client.get_model_metadata("no-such-model")
    assert unknown.value.status() == "404"
    body = client.post(f"{live_server.url}/v2/models/no-such-model/infer", json={"inputs": []})
    assert body.status_code == 404
    assert set(body.json()) == {"error"}
    malformed = client.post(
        f"{live_server.url}/v2/models/{MODEL}/infer",
        json={"inputs": [{"name": "x", "datatype": "FP64", "shape": [1, 16], "data": [1.0] * 15}]},
    )
    assert malformed.status_code == 400
    assert "16 values" in malformed.json()["error"]
    nan = client.post(
        f"{live_server.url}/v2/models/{MODEL}/infer",
        content=b'{"inputs": [{"name": "x", "datatype": "FP64", "shape": [1, 16], "data": ['
        + b"NaN," * 15
        + b"1]}]}",
    )
    assert nan.status_code == 400


def test_json_request_without_requested_outputs_returns_all_as_json(
    live_server: LiveServer, client: httpx.Client, feature_rows: list[dict[str, float]]
) -> None:
    matrix = rows_matrix(feature_rows, 2)
    request = {
        "id": "abc",
        "inputs": [{"name": "rows", "datatype": "FP64", "shape": [2, 16], "data": matrix.tolist()}],
    }
    response = client.post(f"{live_server.url}/v2/models/{MODEL}/versions/champion/infer", json=request)
    assert response.status_code == 200
    body = response.json()
    assert body["id"] == "abc"
    outputs = {o["name"]: o for o in body["outputs"]}
    assert outputs["probabilities"]["shape"] == [2, 3]
    assert len(outputs["probabilities"]["data"]) == 6
    assert all(label in DIRECTION_CLASSES for label in outputs["label"]["data"])


def test_repository_extension(
    triton_client: triton.InferenceServerClient, live_server: LiveServer, accounts: dict[str, Account]
) -> None:
    with pytest.raises(InferenceServerException) as denied:
        triton_client.load_model("goog-direction")
    assert denied.value.status() == "403"
    raw = triton.InferenceServerClient(live_server.url.removeprefix("http://"))
    provider = WithHeaders(raw, accounts["provider"].headers)
    provider.load_model("goog-direction")
    index = provider.get_model_repository_index()
    states = {(m["name"], m["version"]): m["state"] for m in index}
    champion = provider.get_model_metadata("goog-direction")["parameters"]["version"]
    assert states[("goog-direction", champion)] == "READY"
    provider.unload_model("goog-direction")
    try:
        assert all(e.resolved.name != "goog-direction" for e in live_server.services.cache.entries())
        with pytest.raises(InferenceServerException):
            provider.unload_model("no-such-model")
    finally:
        provider.load_model("goog-direction")
    raw.close()


def test_an_unloaded_model_stays_unloaded_until_a_load(
    triton_client: triton.InferenceServerClient,
    live_server: LiveServer,
    accounts: dict[str, Account],
    feature_rows: list[dict[str, float]],
) -> None:
    """Ready is false (400, as Triton), infer is refused, nothing loads it back but a load."""
    provider = httpx.Client(base_url=live_server.url, headers=accounts["provider"].headers, timeout=60)
    client = httpx.Client(base_url=live_server.url, headers=accounts["client"].headers, timeout=60)
    name, inputs = "goog-direction", rows_matrix(feature_rows, 1)
    infer_input = triton.InferInput("input", list(inputs.shape), "FP64")
    infer_input.set_data_from_numpy(inputs)
    assert provider.post(f"/v2/repository/models/{name}/unload").status_code == 200
    try:
        for path in (f"/v2/models/{name}/ready", f"/v2/models/{name}/versions/1/ready"):
            answer = client.get(path)
            assert (answer.status_code, answer.json()) == (400, {"name": name, "ready": False})
            assert client.get(path).status_code == 400  # asking did not load it back
        assert not triton_client.is_model_ready(name)
        with pytest.raises(InferenceServerException) as refused:
            triton_client.infer(name, [infer_input])
        assert refused.value.status() == "400"
        assert "unloaded" in str(refused.value.message())
        refused_predict = client.post("/predict", json={"model": name, "features": feature_rows[0]})
        assert refused_predict.status_code == 503
        assert refused_predict.json()["error"]["code"] == "model_unloaded"
        refused_job = client.post("/api/v1/predictions", json={"model": name, "features": feature_rows[0]})
        assert (refused_job.status_code, refused_job.json()["error"]["code"]) == (503, "model_unloaded")
        scoring = client.post(f"/models/{name}/invocations", json={"dataframe_records": feature_rows[:1]})
        assert (scoring.status_code, scoring.json()["error_code"]) == (503, "MODEL_UNLOADED")
        index = provider.post("/v2/repository/index", json={}).json()
        assert {m["reason"] for m in index if m["name"] == name} == {"unloaded"}
        assert all(e.resolved.name != name for e in live_server.services.cache.entries())
        assert client.get("/health/ready").status_code == 200  # unloaded on purpose: still ready
    finally:
        assert provider.post(f"/v2/repository/models/{name}/load").status_code == 200
    assert client.get(f"/v2/models/{name}/ready").json() == {"name": name, "ready": True}
    assert triton_client.infer(name, [infer_input]).as_numpy("label") is not None
    provider.close()
    client.close()


def test_v2_needs_credentials_except_for_health(anonymous: httpx.Client) -> None:
    assert anonymous.get("/v2").status_code == 200
    assert anonymous.get("/v2/health/live").status_code == 200
    refused = anonymous.get(f"/v2/models/{MODEL}")
    assert refused.status_code == 401
    assert set(refused.json()) == {"error"}
