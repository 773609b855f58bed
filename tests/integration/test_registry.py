"""Resolving every reference form against the real embedded MLflow store."""

from __future__ import annotations

import pytest
from mlflow import MlflowClient

from prediction_provider.config import Settings
from prediction_provider.demo.training import DemoSummary
from prediction_provider.errors import ModelNotFound, UntrustedModelPath
from prediction_provider.serving.references import parse_model_reference
from prediction_provider.serving.registry import ModelRegistry
from tests.conftest import MODEL


@pytest.fixture(scope="module")
def registry(settings: Settings) -> ModelRegistry:
    return ModelRegistry(settings)


def resolve(registry: ModelRegistry, raw: str):  # type: ignore[no-untyped-def]
    return registry.resolve(parse_model_reference(raw))


def test_versions_aliases_and_names_resolve(registry: ModelRegistry) -> None:
    client = registry.client
    champion = client.get_model_version_by_alias(MODEL, "champion").version
    assert resolve(registry, f"models:/{MODEL}/2").version == "2"
    assert resolve(registry, f"models:/{MODEL}@xgboost").version == "2"
    assert resolve(registry, MODEL).version == str(champion)
    newest = max(int(v.version) for v in client.search_model_versions(f"name = '{MODEL}'"))
    assert resolve(registry, f"models:/{MODEL}/latest").version == str(newest)
    resolved = resolve(registry, f"models:/{MODEL}/1")
    assert resolved.uri == f"models:/{MODEL}/1"
    assert (resolved.location / "MLmodel").is_file()


def test_runs_uris_resolve_to_the_logged_model(registry: ModelRegistry, demo_summary: DemoSummary) -> None:
    run_id = demo_summary.models[MODEL][0].run_id
    resolved = resolve(registry, f"runs:/{run_id}/model")
    assert resolved.run_id == run_id
    assert (resolved.location / "MLmodel").is_file()
    with pytest.raises(ModelNotFound):
        resolve(registry, f"runs:/{run_id}/no-such-artifact")


def test_a_name_without_champion_means_its_latest_version(
    registry: ModelRegistry, settings: Settings
) -> None:
    client = registry.client
    name = "no-champion"
    client.create_registered_model(name)
    source = client.get_model_version(MODEL, "1")
    artifacts = client.get_logged_model(source.source.removeprefix("models:/")).artifact_location
    for _ in range(2):
        client.create_model_version(name, artifacts, run_id=source.run_id)
    assert resolve(registry, name).version == "2"
    with pytest.raises(ModelNotFound):
        resolve(registry, f"models:/{name}@champion")


def test_latest_is_the_newest_version_even_when_the_champion_is_older(registry: ModelRegistry) -> None:
    """MLflow's ``models:/<name>/latest`` is the highest version; a bare name is still the champion."""
    client = registry.client
    name = "older-champion"
    client.create_registered_model(name)
    source = client.get_model_version(MODEL, "1")
    artifacts = client.get_logged_model(source.source.removeprefix("models:/")).artifact_location
    for _ in range(3):
        client.create_model_version(name, artifacts, run_id=source.run_id)
    client.set_registered_model_alias(name, "champion", "1")
    assert resolve(registry, name).version == "1"
    assert resolve(registry, f"models:/{name}@champion").version == "1"
    latest = resolve(registry, f"models:/{name}/latest")
    assert latest.version == "3"
    assert latest.uri == f"models:/{name}/3"
    assert resolve(registry, f"models:/{name}/LATEST").version == "3"
    with pytest.raises(ModelNotFound):
        resolve(registry, "models:/no-such-model/latest")


def test_file_uris_are_confined_to_trusted_roots(registry: ModelRegistry, settings: Settings) -> None:
    outside = settings.data_dir.parent / "outside.onnx"
    outside.write_bytes(b"")
    with pytest.raises(UntrustedModelPath):
        resolve(registry, outside.as_uri())
    inside = settings.data_dir / "models" / "inside.onnx"
    inside.parent.mkdir(exist_ok=True)
    inside.write_bytes(b"")
    assert resolve(registry, inside.as_uri()).location == inside.resolve()


def test_other_tracking_uris_work(tmp_path_factory: pytest.TempPathFactory, settings: Settings) -> None:
    """A second, separate store given by PP_MLFLOW_TRACKING_URI-style settings."""
    other_dir = tmp_path_factory.mktemp("other_store")
    uri = f"sqlite:///{other_dir / 'store.db'}"
    client = MlflowClient(uri, uri)
    experiment = client.create_experiment("other", artifact_location=(other_dir / "art").as_uri())
    run = client.create_run(experiment)
    client.set_terminated(run.info.run_id)
    other = ModelRegistry(Settings(data_dir=other_dir, mlflow_tracking_uri=uri))
    assert other.ping()
    assert other.list_models(None, 10) == []
    with pytest.raises(ModelNotFound):
        resolve(other, MODEL)
