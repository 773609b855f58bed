"""A real MLflow tracking server over HTTP: any tracking URI works, remote artifacts are untrusted."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import lightgbm
import numpy as np
import pytest
from mlflow import MlflowClient
from sklearn.linear_model import LogisticRegression

from prediction_provider.app import build_services, close_services
from prediction_provider.config import Settings
from prediction_provider.errors import UntrustedModelPath
from tests.conftest import TEST_JWT_SECRET
from tests.processes import free_port, stop, wait_until_healthy


@pytest.fixture(scope="module")
def tracking_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("mlflow_server")
    port = free_port()
    command = [
        str(Path(sys.executable).with_name("mlflow")), "server",
        "--backend-store-uri", f"sqlite:///{root / 'store.db'}",
        "--artifacts-destination", str(root / "artifacts"),
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
    ]  # fmt: skip
    log_path = root / "server.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        try:
            url = f"http://127.0.0.1:{port}"
            wait_until_healthy(process, f"{url}/health", log_path)
            yield url
        finally:
            stop(process)


def register(url: str, name: str, log_model) -> None:  # type: ignore[no-untyped-def]
    import mlflow

    previous = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    mlflow.set_tracking_uri(url)
    mlflow.set_registry_uri(url)
    try:
        with mlflow.start_run():
            log_model(name)
    finally:
        mlflow.set_tracking_uri(previous[0])
        mlflow.set_registry_uri(previous[1])


def test_models_from_a_tracking_server_are_downloaded_and_served(
    tracking_server: str, tmp_path: Path
) -> None:
    import mlflow.lightgbm

    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(300, 4)), rng.integers(0, 2, 300)
    booster = lightgbm.train({"objective": "binary", "verbose": -1}, lightgbm.Dataset(x, y), 5)
    register(
        tracking_server,
        "remote-lgbm",
        lambda name: mlflow.lightgbm.log_model(booster, name="model", registered_model_name=name),
    )
    settings = Settings(
        data_dir=tmp_path, mlflow_tracking_uri=tracking_server, grpc_enabled=False, jwt_secret=TEST_JWT_SECRET
    )
    services = build_services(settings)
    assert services.registry.ping()
    cached = services.cache.get("remote-lgbm")
    assert cached.resolved.location.is_relative_to(settings.downloads_dir)
    np.testing.assert_allclose(cached.model.predict(x[:5]).probabilities[:, 1], booster.predict(x[:5]))
    assert [m["name"] for m in services.registry.list_models(None, 10)] == ["remote-lgbm"]
    close_services(services)


def test_pickled_models_from_a_tracking_server_are_refused(tracking_server: str, tmp_path: Path) -> None:
    import mlflow.sklearn

    estimator = LogisticRegression().fit([[0.0], [1.0]], [0, 1])
    register(
        tracking_server,
        "remote-pickle",
        lambda name: mlflow.sklearn.log_model(
            estimator, name="model", serialization_format="cloudpickle", registered_model_name=name
        ),
    )
    settings = Settings(
        data_dir=tmp_path, mlflow_tracking_uri=tracking_server, grpc_enabled=False, jwt_secret=TEST_JWT_SECRET
    )
    services = build_services(settings)
    with pytest.raises(UntrustedModelPath):
        services.cache.get("remote-pickle")
    close_services(services)
    assert (
        MlflowClient(tracking_server, tracking_server).get_registered_model("remote-pickle").name
        == "remote-pickle"
    )
