"""The ensemble store on both databases: what creation checks and stores, how a second worker
follows a change through the ops stamp, rebuilding on a new config, and stacking through a
registered meta model."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import select

from prediction_provider.db import migrate
from prediction_provider.db.modelops_models import Ensemble
from prediction_provider.db.session import Database
from prediction_provider.errors import (
    EnsembleConflict,
    EnsembleNotFound,
    InvalidEnsemble,
    ModelLoadFailed,
    ModelNotFound,
)
from prediction_provider.modelops import stamp
from prediction_provider.modelops.ensembles import EnsembleCreate, Ensembles, config_version
from prediction_provider.modelops.metrics import OpsMetrics
from prediction_provider.modelops.stamp import StampFollower
from prediction_provider.serving.cache import CachedModel
from prediction_provider.serving.loaders.base import LoadedModel
from prediction_provider.serving.registry import ResolvedModel
from prediction_provider.serving.signature import ModelSignature
from tests.integration.database_fixtures import sqlite_url

CLASSES = ("down", "flat", "up")


class Softmax(LoadedModel):
    framework = "test"

    def __init__(self, features: tuple[str, ...], classes: tuple[str, ...], seed: int) -> None:
        super().__init__(ModelSignature.from_names(features, classes))
        self.weights = np.random.default_rng(seed).normal(size=(len(features), len(classes)))

    def predict_scores(self, matrix: np.ndarray) -> np.ndarray:
        logits = matrix @ self.weights
        exp = np.exp(logits - logits.max(axis=1, keepdims=True))
        return np.asarray(exp / exp.sum(axis=1, keepdims=True))


class FakeCache:
    """The model cache's ``get`` over a fixed set of loaded models."""

    def __init__(self, models: dict[str, LoadedModel]) -> None:
        self.models = models
        self.gets: list[str] = []

    def get(self, target: str) -> CachedModel:
        self.gets.append(target)
        if target not in self.models:
            raise ModelNotFound(f"no model {target}")
        name, version = target.removeprefix("models:/").split("/")
        return CachedModel(
            ResolvedModel(name, version, target, Path(".")),
            self.models[target],
            "test",
            datetime.now(UTC),
            0.0,
        )


class FakeRegistry:
    class Client:
        def __init__(self, names: set[str]) -> None:
            self.names = names

        def get_registered_model(self, name: str) -> object:
            from mlflow.exceptions import MlflowException
            from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST

            if name not in self.names:
                raise MlflowException("missing", error_code=RESOURCE_DOES_NOT_EXIST)
            return object()

    def __init__(self, names: set[str]) -> None:
        self.client = self.Client(names)


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    url = sqlite_url(tmp_path) if request.param == "sqlite" else str(request.getfixturevalue("postgres_url"))
    migrate.upgrade(url)
    db = Database(url)
    yield db
    db.dispose()


MODELS: dict[str, LoadedModel] = {
    "models:/dir/1": Softmax(("a", "b"), CLASSES, 1),
    "models:/dir/2": Softmax(("b", "c"), ("up", "flat", "down"), 2),
    "models:/binary/1": Softmax(("a",), ("0", "1"), 3),
    "models:/meta/1": Softmax(
        tuple(f"{m}__{c}" for m in ("x", "y") for c in CLASSES), ("up", "down", "flat"), 4
    ),
    "models:/meta/2": Softmax(("y__down", "x__down"), CLASSES, 5),
}


def make(database: Database, registered: set[str] | None = None) -> tuple[Ensembles, FakeCache]:
    cache = FakeCache(MODELS)
    ensembles = Ensembles(database, cache, OpsMetrics(), FakeRegistry(registered or set()))  # type: ignore[arg-type]
    with database.session() as session:
        ensembles.reload(session)
    return ensembles, cache


def body(name: str = "ens", **changes: Any) -> EnsembleCreate:
    config: dict[str, Any] = {
        "name": name,
        "method": "weighted_mean_proba",
        "members": [
            {"name": "x", "target": "models:/dir/1", "weight": 2, "required": True},
            {"name": "y", "target": "models:/dir/2", "weight": 1},
        ],
        **changes,
    }
    return EnsembleCreate.model_validate(config)


def stamp_of(database: Database) -> int:
    with database.session() as session:
        return stamp.read(session)


def test_creation_stores_the_validated_body_bumps_the_stamp_and_serves_by_name(database: Database) -> None:
    ensembles, _ = make(database)
    before = stamp_of(database)
    created = ensembles.create(body(), "op")
    assert stamp_of(database) == before + 1
    with database.session() as session:
        row = session.scalars(select(Ensemble)).one()
        assert (row.name, row.created_by) == ("ens", "op")
        assert row.config == body().model_dump(mode="json")
    assert created["version"] == config_version(row.config)
    assert created["uri"] == "ensemble:ens"

    ensembles.refresh(None)
    cached = ensembles.cached("ens")
    assert cached is not None
    assert (cached.loader, cached.resolved.name, cached.resolved.version) == (
        "ensemble",
        "ens",
        created["version"],
    )
    assert cached.model.signature.feature_names == ("a", "b", "c")
    assert ensembles.cached("ens") is cached  # built once
    assert ensembles.resolve_target("ensemble:ens") is cached
    assert ensembles.cached("dir") is None  # a registered model's name is not an ensemble

    matrix = np.random.default_rng(0).normal(size=(3, 3))
    x = MODELS["models:/dir/1"].predict(matrix[:, [0, 1]]).probabilities
    y = MODELS["models:/dir/2"].predict(matrix[:, [1, 2]]).probabilities
    assert x is not None
    assert y is not None
    expected = (2 * x + 1 * y[:, [2, 1, 0]]) / 3
    np.testing.assert_allclose(cached.model.predict(matrix).probabilities, expected)  # type: ignore[arg-type]


def test_names_taken_by_an_ensemble_or_a_registered_model_are_conflicts(database: Database) -> None:
    ensembles, _ = make(database, registered={"dir"})
    ensembles.create(body(), None)
    ensembles.refresh(None)
    with pytest.raises(EnsembleConflict):
        ensembles.create(body(), None)
    with pytest.raises(EnsembleConflict):
        ensembles.create(body("dir"), None)
    other_worker = Ensembles(database, FakeCache(MODELS), OpsMetrics())  # type: ignore[arg-type]
    with pytest.raises(EnsembleConflict):  # has not followed the stamp: the stored row refuses it
        other_worker.create(body(), None)


def test_unknown_members_and_disagreeing_members_are_refused_and_nothing_is_stored(
    database: Database,
) -> None:
    ensembles, _ = make(database)
    with pytest.raises(InvalidEnsemble) as unknown:
        ensembles.create(
            body(
                members=[{"name": "x", "target": "models:/dir/1"}, {"name": "y", "target": "models:/dir/9"}]
            ),
            None,
        )
    assert unknown.value.details == [
        {"field": "members.1.target", "error": "models:/dir/9: no model models:/dir/9"}
    ]
    with pytest.raises(InvalidEnsemble) as classes:
        ensembles.create(
            body(
                members=[
                    {"name": "x", "target": "models:/dir/1"},
                    {"name": "y", "target": "models:/binary/1"},
                ]
            ),
            None,
        )
    assert classes.value.details[0]["field"] == "members.1.target"
    assert "differ" in classes.value.details[0]["error"]
    with database.session() as session:
        assert session.scalars(select(Ensemble)).all() == []


def test_another_worker_follows_creation_and_deletion_through_the_stamp(database: Database) -> None:
    writer, _ = make(database)
    reader, reader_cache = make(database)
    follower = StampFollower(database, interval_s=0)
    follower.register(reader.reload)
    follower.refresh()
    writer.create(body(), None)
    assert reader.cached("ens") is None
    assert follower.refresh() is True  # what the follower's thread does every interval
    assert reader.is_ensemble("ens")
    assert reader.is_ensemble("ensemble:ens")
    assert reader.peek("ens") is None
    assert reader_cache.gets == []  # members load on the first request, not in the follower
    served = reader.cached("ens")
    assert served is not None
    assert reader.peek("ens") is served
    assert reader_cache.gets == ["models:/dir/1", "models:/dir/2"]

    writer.delete("ens")
    follower.refresh()
    assert reader.cached("ens") is None
    with pytest.raises(EnsembleNotFound):
        writer.delete("ens")
    with pytest.raises(EnsembleNotFound):
        reader.resolve_target("ensemble:ens")


def test_a_new_config_under_the_same_name_is_rebuilt_with_a_new_version(database: Database) -> None:
    ensembles, _ = make(database)
    ensembles.create(body(), None)
    ensembles.refresh(None)
    first = ensembles.cached("ens")
    ensembles.delete("ens")
    ensembles.create(body(method="geometric_mean"), None)
    ensembles.refresh(None)
    rebuilt = ensembles.peek("ens")  # it was in use: rebuilt by the reload, off the request path
    second = ensembles.cached("ens")
    assert rebuilt is second
    assert first is not None
    assert second is not None
    assert second is not first
    assert second.resolved.version != first.resolved.version
    assert ensembles.page(10, 0)["items"][0]["method"] == "geometric_mean"


def test_a_member_that_disappears_fails_the_build_as_a_load_failure(database: Database) -> None:
    ensembles, cache = make(database)
    ensembles.create(body(), None)
    cache.models = {k: v for k, v in MODELS.items() if k != "models:/dir/2"}
    ensembles.refresh(None)
    with pytest.raises(ModelLoadFailed, match="cannot be built"):
        ensembles.cached("ens")
    assert "cannot be built" in ensembles.get("ens")["error"]


def test_stacking_feeds_the_meta_model_the_members_columns_in_declared_order(database: Database) -> None:
    ensembles, _ = make(database)
    with pytest.raises(InvalidEnsemble) as wrong:
        ensembles.create(body("stack", method="stacking", meta_model="models:/meta/2"), None)
    assert wrong.value.details[0]["field"] == "meta_model"
    assert "x__down" in wrong.value.details[0]["error"]

    ensembles.create(body("stack", method="stacking", meta_model="models:/meta/1"), None)
    ensembles.refresh(None)
    cached = ensembles.cached("stack")
    assert cached is not None
    matrix = np.random.default_rng(1).normal(size=(2, 3))
    x = MODELS["models:/dir/1"].predict(matrix[:, [0, 1]]).probabilities
    y = MODELS["models:/dir/2"].predict(matrix[:, [1, 2]]).probabilities
    assert x is not None
    assert y is not None
    meta = MODELS["models:/meta/1"].predict(np.hstack([x, y[:, [2, 1, 0]]])).probabilities
    assert meta is not None
    output = cached.model.predict(matrix)
    np.testing.assert_allclose(output.probabilities, meta[:, [1, 2, 0]])  # type: ignore[arg-type]
    assert output.predictions == [CLASSES[i] for i in np.argmax(meta[:, [1, 2, 0]], axis=1)]


def test_listing_pages_by_name_and_the_catalogue_lists_every_ensemble(database: Database) -> None:
    ensembles, _ = make(database)
    for name in ("c-ens", "a-ens", "b-ens"):
        ensembles.create(body(name), "op")
    ensembles.refresh(None)
    assert ensembles.get("b-ens")["signature"]["features"][0]["name"] == "a"  # reading one builds it
    page = ensembles.page(2, 1)
    assert [item["name"] for item in page["items"]] == ["b-ens", "c-ens"]
    assert (page["total"], page["count"]) == (3, 2)
    assert page["items"][0]["signature"]["classes"] == list(CLASSES)
    assert page["items"][1]["signature"] is None  # a listing builds nothing
    catalogue = ensembles.catalogue()
    assert [entry["name"] for entry in catalogue] == ["a-ens", "b-ens", "c-ens"]
    assert {entry["type"] for entry in catalogue} == {"ensemble"}
