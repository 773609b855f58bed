"""Open Inference Protocol v2 over gRPC, driven by the real ``tritonclient.grpc`` client."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton
from tritonclient.utils import InferenceServerException

from prediction_provider.features.pipeline import DIRECTION_CLASSES, FEATURE_NAMES
from tests.conftest import MODEL, Account, LiveServer, WithHeaders


@pytest.fixture
def grpc_client(
    grpc_server: LiveServer, client_headers: dict[str, str]
) -> Iterator[triton.InferenceServerClient]:
    port = grpc_server.services.grpc_port
    assert port
    client = triton.InferenceServerClient(f"127.0.0.1:{port}")
    yield WithHeaders(client, {k.lower(): v for k, v in client_headers.items()})  # type: ignore[misc]
    client.close()


def test_health_and_metadata(grpc_client: triton.InferenceServerClient) -> None:
    assert grpc_client.is_server_live()
    assert grpc_client.is_server_ready()
    server = grpc_client.get_server_metadata(as_json=True)
    assert server["name"] == "prediction-provider"
    assert grpc_client.is_model_ready(MODEL, "2")
    metadata = grpc_client.get_model_metadata(MODEL, "2", as_json=True)
    assert metadata["platform"] == "xgboost"
    assert [i["name"] for i in metadata["inputs"]] == list(FEATURE_NAMES)
    assert sorted(metadata["versions"]) == ["1", "2", "3", "4"]


def test_infer_matches_rest_predictions(
    grpc_client: triton.InferenceServerClient, client: httpx.Client, feature_rows: list[dict[str, float]]
) -> None:
    matrix = np.array([[row[n] for n in FEATURE_NAMES] for row in feature_rows[:10]])
    tensor = triton.InferInput("input-0", list(matrix.shape), "FP64")
    tensor.set_data_from_numpy(matrix)
    result = grpc_client.infer(MODEL, [tensor], model_version="1", request_id="g-1")
    expected = client.post(
        "/predict/batch",
        json={"model": f"models:/{MODEL}/1", "features_list": feature_rows[:10], "return_proba": True},
    ).json()
    assert [v.decode() for v in result.as_numpy("label")] == expected["predictions"]
    probabilities = [[row[c] for c in DIRECTION_CLASSES] for row in expected["probabilities"]]
    np.testing.assert_allclose(result.as_numpy("probabilities"), probabilities, rtol=1e-9)
    response = result.get_response(as_json=True)
    assert response["id"] == "g-1"
    assert response["model_version"] == "1"


def test_one_tensor_per_feature_and_requested_outputs(
    grpc_client: triton.InferenceServerClient, feature_rows: list[dict[str, float]]
) -> None:
    inputs = []
    for name in FEATURE_NAMES:
        tensor = triton.InferInput(name, [3], "FP32")
        tensor.set_data_from_numpy(np.array([row[name] for row in feature_rows[:3]], dtype=np.float32))
        inputs.append(tensor)
    result = grpc_client.infer(MODEL, inputs, outputs=[triton.InferRequestedOutput("probabilities")])
    assert result.as_numpy("probabilities").shape == (3, 3)
    assert result.as_numpy("label") is None


def test_errors_carry_grpc_status_codes(grpc_client: triton.InferenceServerClient) -> None:
    with pytest.raises(InferenceServerException) as unknown:
        grpc_client.get_model_metadata("no-such-model")
    assert unknown.value.status() == "StatusCode.NOT_FOUND"
    tensor = triton.InferInput("input-0", [1, 2], "FP64")
    tensor.set_data_from_numpy(np.zeros((1, 2)))
    with pytest.raises(InferenceServerException) as bad:
        grpc_client.infer(MODEL, [tensor])
    assert bad.value.status() == "StatusCode.INVALID_ARGUMENT"
    nan = triton.InferInput("input-0", [1, 16], "FP64")
    nan.set_data_from_numpy(np.full((1, 16), np.nan))
    with pytest.raises(InferenceServerException) as non_finite:
        grpc_client.infer(MODEL, [nan])
    assert non_finite.value.status() == "StatusCode.INVALID_ARGUMENT"


def test_repository_extension(
    grpc_client: triton.InferenceServerClient, grpc_server: LiveServer, accounts: dict[str, Account]
) -> None:
    with pytest.raises(InferenceServerException) as denied:
        grpc_client.load_model("goog-direction")
    assert denied.value.status() == "StatusCode.PERMISSION_DENIED"
    raw = triton.InferenceServerClient(f"127.0.0.1:{grpc_server.services.grpc_port}")
    provider = WithHeaders(raw, {"x-api-key": accounts["provider"].api_key})
    provider.load_model("goog-direction")
    index = provider.get_model_repository_index(as_json=True)["models"]
    assert any(m["name"] == "goog-direction" and m.get("state") == "READY" for m in index)
    matrix = np.array([[0.0] * len(FEATURE_NAMES)])
    tensor = triton.InferInput("input-0", list(matrix.shape), "FP64")
    tensor.set_data_from_numpy(matrix)
    provider.unload_model("goog-direction")
    try:
        # Unloaded until a load: not ready, and asking does not load it back; infer is UNAVAILABLE.
        assert not grpc_client.is_model_ready("goog-direction")
        assert not grpc_client.is_model_ready("goog-direction", "1")
        with pytest.raises(InferenceServerException) as refused:
            grpc_client.infer("goog-direction", [tensor])
        assert refused.value.status() == "StatusCode.UNAVAILABLE"
        assert "unloaded" in str(refused.value.message())
        index = provider.get_model_repository_index(as_json=True)["models"]
        assert {m.get("reason") for m in index if m["name"] == "goog-direction"} == {"unloaded"}
        with pytest.raises(InferenceServerException):
            provider.unload_model("no-such-model")
    finally:
        provider.load_model("goog-direction")
    assert grpc_client.is_model_ready("goog-direction")
    assert grpc_client.infer("goog-direction", [tensor]).as_numpy("label") is not None
    raw.close()


def test_calls_without_credentials_are_unauthenticated(grpc_server: LiveServer) -> None:
    raw = triton.InferenceServerClient(f"127.0.0.1:{grpc_server.services.grpc_port}")
    assert raw.is_server_live()
    with pytest.raises(InferenceServerException) as refused:
        raw.get_model_metadata(MODEL)
    assert refused.value.status() == "StatusCode.UNAUTHENTICATED"
    bad_key = WithHeaders(raw, {"x-api-key": "pp_not-a-key"})
    with pytest.raises(InferenceServerException) as forged:
        bad_key.get_model_metadata(MODEL)
    assert forged.value.status() == "StatusCode.UNAUTHENTICATED"
    raw.close()


def test_grpc_calls_are_audited(
    grpc_client: triton.InferenceServerClient, grpc_server: LiveServer, accounts: dict[str, Account]
) -> None:
    from prediction_provider.observability.audit import query_audit

    grpc_client.get_model_metadata(MODEL, "1")
    grpc_server.services.audit.flush()
    path = "/inference.GRPCInferenceService/ModelMetadata"
    entries, _ = query_audit(grpc_server.services.db, username=accounts["client"].username, path=path)
    assert entries
    assert (entries[0]["method"], entries[0]["status"], entries[0]["role"]) == ("GRPC", 200, "client")
