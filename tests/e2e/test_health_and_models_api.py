"""Health probes, the model catalogue and the OpenAPI docs over real HTTP."""

from __future__ import annotations

import httpx

from prediction_provider.features.pipeline import DIRECTION_CLASSES, FEATURE_NAMES
from tests.conftest import MODEL


def test_health_reports_registry_and_cache(client: httpx.Client) -> None:
    body = client.get("/health").json()
    assert body["status"] == "healthy"
    assert body["registry_connected"] is True
    assert isinstance(body["gpu_available"], bool)
    assert body["cached_models"] >= 1
    assert body["cache"]["loads"] >= 1


def test_probes_for_orchestrators(client: httpx.Client) -> None:
    assert client.get("/health/live").json()["status"] == "alive"
    ready = client.get("/health/ready")
    assert ready.status_code == 200
    assert ready.json()["details"]["warm_failures"] == {}


def test_models_lists_versions_aliases_and_metrics(client: httpx.Client) -> None:
    body = client.get("/models").json()
    names = {model["name"] for model in body["models"]}
    assert {"eurusd-direction", "goog-direction"} <= names
    eurusd = next(model for model in body["models"] if model["name"] == MODEL)
    assert {"champion", "challenger", "lightgbm", "xgboost", "sklearn", "onnx"} <= set(eurusd["aliases"])
    assert len(eurusd["versions"]) == 4
    for version in eurusd["versions"]:
        assert {"accuracy", "log_loss"} <= set(version["metrics"])
        assert version["run_tags"]["symbol"] == "EURUSD"
        assert "num_boost_round" in version["params"] or "n_estimators" in version["params"]


def test_models_filter_by_experiment_and_limit(client: httpx.Client) -> None:
    assert client.get("/models", params={"experiment_name": "no-such-experiment"}).json()["count"] == 0
    assert client.get("/models", params={"experiment_name": "prediction-provider-demo"}).json()["count"] >= 2
    assert client.get("/models", params={"limit": 1}).json()["count"] == 1
    assert client.get("/models", params={"limit": 0}).status_code == 422


def test_model_versions_newest_first(client: httpx.Client) -> None:
    body = client.get(f"/models/{MODEL}/versions").json()
    assert [v["version"] for v in body["versions"]] == ["4", "3", "2", "1"]
    assert client.get("/models/no-such-model/versions").status_code == 404


def test_model_info_gives_the_signature(client: httpx.Client) -> None:
    body = client.get(f"/models/{MODEL}/info", params={"version": "1"}).json()
    assert body["framework"] == "lightgbm"
    assert [f["name"] for f in body["signature"]["features"]] == list(FEATURE_NAMES)
    assert body["signature"]["classes"] == list(DIRECTION_CLASSES)
    assert "lightgbm" in body["aliases"]
    assert {"accuracy", "log_loss"} <= set(body["metrics"])
    assert client.get("/models/no-such-model/info").status_code == 404
    assert client.get(f"/models/{MODEL}/info", params={"version": "x"}).status_code == 422


def test_openapi_documents_the_prediction_bodies(client: httpx.Client) -> None:
    spec = client.get("/openapi.json").json()
    body = spec["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    # A row of features for a model, a symbol to forecast from its market data, the seed's legacy body.
    shapes = [set(shape["required"]) for shape in body["oneOf"]]
    assert shapes == [{"model", "features"}, {"symbol"}, {"instrument"}]
    batch = spec["paths"]["/predict/batch"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert [set(shape["required"]) for shape in batch["oneOf"]] == [{"model", "features_list"}, {"requests"}]
    requests = batch["oneOf"][1]["properties"]["requests"]["items"]
    assert "symbol" in requests["properties"]  # nested models written in place, no dangling $ref
    assert client.get("/docs").status_code == 200
