"""The MLflow scoring protocol, checked against MLflow's own payload helpers and pyfunc answers."""

from __future__ import annotations

import io
import json

import httpx
import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from mlflow.models import convert_input_example_to_serving_input
from mlflow.pyfunc.scoring_server import predictions_to_json

from prediction_provider.config import Settings
from tests.conftest import MODEL, LiveServer


@pytest.fixture(scope="module")
def frame(eurusd_features: pd.DataFrame) -> pd.DataFrame:
    return eurusd_features.iloc[-6:].reset_index(drop=True)


def pyfunc_answer(settings: Settings, version: str, frame: pd.DataFrame) -> object:
    source = (
        MlflowClient(settings.tracking_uri, settings.tracking_uri).get_model_version(MODEL, version).source
    )
    model = mlflow.pyfunc.load_model(
        MlflowClient(settings.tracking_uri, settings.tracking_uri)
        .get_logged_model(source.removeprefix("models:/"))
        .artifact_location
    )
    buffer = io.StringIO()
    predictions_to_json(model.predict(frame), buffer)
    return json.loads(buffer.getvalue())


def payloads(frame: pd.DataFrame) -> dict[str, str]:
    records = frame.to_dict(orient="records")
    return {
        "dataframe_split": convert_input_example_to_serving_input(frame),
        "dataframe_records": json.dumps({"dataframe_records": records}),
        "instances": json.dumps({"instances": records}),
        "inputs": json.dumps({"inputs": {c: frame[c].tolist() for c in frame.columns}, "params": {}}),
        "instances_as_lists": json.dumps({"instances": frame.to_numpy().tolist()}),
    }


# MLflow's in-process pyfunc hands the forest a DataFrame although it was fitted on arrays.
@pytest.mark.filterwarnings("ignore:X has feature names:UserWarning")
@pytest.mark.parametrize("version", ["1", "2", "3"])
def test_every_request_format_matches_the_pyfunc_answer(
    live_server: LiveServer, client: httpx.Client, settings: Settings, frame: pd.DataFrame, version: str
) -> None:
    expected = pyfunc_answer(settings, version, frame)
    url = f"{live_server.url}/models/{MODEL}/versions/{version}/invocations"
    for name, payload in payloads(frame).items():
        response = client.post(url, content=payload, headers={"Content-Type": "application/json"})
        assert response.status_code == 200, (name, response.text)
        np.testing.assert_allclose(
            np.asarray(response.json()["predictions"]), np.asarray(expected["predictions"]), rtol=1e-7
        )
    csv = client.post(url, content=frame.to_csv(index=False), headers={"Content-Type": "text/csv"})
    assert csv.status_code == 200
    np.testing.assert_allclose(
        np.asarray(csv.json()["predictions"]), np.asarray(expected["predictions"]), rtol=1e-7
    )


def test_onnx_answers_every_graph_output(
    live_server: LiveServer, client: httpx.Client, frame: pd.DataFrame
) -> None:
    payload = convert_input_example_to_serving_input(frame)
    url = f"{live_server.url}/models/{MODEL}/versions/onnx/invocations"
    body = client.post(url, content=payload, headers={"Content-Type": "application/json"}).json()
    assert set(body["predictions"]) == {"label", "probabilities"}
    assert len(body["predictions"]["label"]) == len(frame)
    np.testing.assert_allclose(np.asarray(body["predictions"]["probabilities"]).sum(axis=1), 1.0, rtol=1e-5)


def test_default_model_ping_and_version(
    live_server: LiveServer, client: httpx.Client, frame: pd.DataFrame
) -> None:
    payload = convert_input_example_to_serving_input(frame)
    scored = client.post(
        f"{live_server.url}/invocations", content=payload, headers={"Content-Type": "application/json"}
    )
    assert scored.status_code == 200
    assert len(scored.json()["predictions"]) == len(frame)
    assert client.get(f"{live_server.url}/ping").status_code == 200
    assert client.get(f"{live_server.url}/version").text == mlflow.__version__


def test_errors_use_the_mlflow_shape(
    live_server: LiveServer, client: httpx.Client, frame: pd.DataFrame
) -> None:
    url = f"{live_server.url}/invocations"
    missing = frame.drop(columns=["rsi_14"])
    response = client.post(
        url,
        content=convert_input_example_to_serving_input(missing),
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 400
    assert response.json()["error_code"] == "BAD_REQUEST"
    assert "rsi_14" in response.json()["message"]
    for content in (b"{", b"[]", b'{"dataframe_split": 1}', b'{"instances": [], "inputs": []}'):
        bad = client.post(url, content=content, headers={"Content-Type": "application/json"})
        assert bad.status_code == 400, content
        assert bad.json()["error_code"] == "BAD_REQUEST"
    unknown = client.post(f"{live_server.url}/models/no-such-model/invocations", json={"instances": [[1.0]]})
    assert unknown.status_code == 404
    assert unknown.json()["error_code"] == "RESOURCE_DOES_NOT_EXIST"
    wrong_type = client.post(url, content=b"x", headers={"Content-Type": "application/xml"})
    assert wrong_type.status_code == 415
