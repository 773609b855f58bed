"""Model ownership and providers' uploads against a real MLflow registry and real databases
(SQLite and PostgreSQL): safe formats are registered, served and owned; anything else is refused
from its bytes and leaves nothing behind."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select

from prediction_provider.accounts.principal import Principal
from prediction_provider.accounts.roles import Role
from prediction_provider.app import account_service
from prediction_provider.clock import ManualClock
from prediction_provider.config import Settings
from prediction_provider.db import migrate
from prediction_provider.db.market_models import ModelOwner
from prediction_provider.db.session import Database
from prediction_provider.errors import (
    InvalidInput,
    InvalidModelFile,
    ModelFileTooLarge,
    ModelNameTaken,
    ModelNotFound,
    UnsafeModelFormat,
    UserNotFound,
)
from prediction_provider.marketplace.ownership import ModelOwnership
from prediction_provider.marketplace.uploads import ModelUpload, ModelUploads
from prediction_provider.serving.cache import ModelCache
from prediction_provider.serving.factory import build_model_serving
from prediction_provider.serving.registry import ModelRegistry
from tests.integration.database_fixtures import sqlite_url
from tests.upload_models import (
    FEATURES,
    as_matrix,
    joblib_dump,
    lightgbm_booster,
    lightgbm_text,
    onnx_model_bytes,
    onnx_probabilities,
    pickled_sklearn,
    probe_row,
    xgboost_booster,
    xgboost_json,
)

START = datetime(2031, 1, 6, 9, 0, tzinfo=UTC)
SECRET = "ownership-test-secret-" + "x" * 40


@dataclass
class World:
    settings: Settings
    db: Database
    clock: ManualClock
    registry: ModelRegistry
    cache: ModelCache
    ownership: ModelOwnership
    uploads: ModelUploads
    users: dict[str, Principal]


@pytest.fixture(scope="module")
def registry_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One MLflow store for the module (creating one costs seconds); names are unique per test."""
    return tmp_path_factory.mktemp("ownership_registry")


@pytest.fixture(params=["sqlite", "postgresql"])
def world(request: pytest.FixtureRequest, tmp_path: Path, registry_dir: Path) -> Iterator[World]:
    url = sqlite_url(tmp_path) if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    migrate.upgrade(url)
    settings = Settings(data_dir=registry_dir, database_url=url, jwt_secret=SECRET, max_upload_bytes=200_000)
    accounts = account_service(settings)
    users = {}
    for username, role in (
        ("admin-ann", Role.ADMIN),
        ("provider-pia", Role.PROVIDER),
        ("provider-pat", Role.PROVIDER),
        ("client-cal", Role.CLIENT),
    ):
        made = accounts.create_user(username, f"{username}@example.com", "password-123456", role, active=True)
        users[username] = Principal(made["id"], username, role, "api_key")
    accounts.db.dispose()
    db = Database(url)
    clock = ManualClock(START)
    serving = build_model_serving(settings)
    ownership = ModelOwnership(db, clock, serving.registry)
    uploads = ModelUploads(settings, serving.registry, ownership, serving.cache.loaders)
    yield World(settings, db, clock, serving.registry, serving.cache, ownership, uploads, users)
    db.dispose()


def fresh_name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def owners(world: World) -> dict[str, int]:
    with world.db.session() as session:
        return {row.model_name: row.provider_id for row in session.scalars(select(ModelOwner))}


def test_a_lightgbm_text_upload_is_registered_owned_and_served_as_the_booster_predicts(world: World) -> None:
    pia = world.users["provider-pia"]
    name = fresh_name("lgb")
    uploaded = world.uploads.upload(pia, ModelUpload(name, "lightgbm", lightgbm_text()))
    assert (uploaded.model, uploaded.version, uploaded.format) == (name, "1", "lightgbm")
    assert uploaded.uri == f"models:/{name}/1"
    assert uploaded.features == list(FEATURES)
    assert world.ownership.owner_of(name) == pia.user_id
    assert world.ownership.is_owner(pia.user_id or 0, name)
    assert name in world.ownership.owned_by(pia.user_id or 0)

    cached = world.cache.get(name)
    row = probe_row()
    output = cached.model.predict(as_matrix(row))
    expected = float(lightgbm_booster().predict(as_matrix(row))[0])
    assert output.probabilities is not None
    assert output.probabilities[0][1] == pytest.approx(expected, rel=1e-9)
    assert cached.loader == "lightgbm"
    # Stored under data_dir, outside every trusted root: nothing there may be unpickled.
    assert cached.resolved.location.is_relative_to(world.uploads.root)
    assert not any(cached.resolved.location.is_relative_to(root) for root in world.settings.trusted_roots)


def test_an_xgboost_json_upload_takes_its_feature_names_from_the_form(world: World) -> None:
    pia = world.users["provider-pia"]
    name = fresh_name("xgb")
    with pytest.raises(InvalidModelFile) as missing:
        world.uploads.upload(pia, ModelUpload(name, "xgboost_json", xgboost_json()))
    assert missing.value.details[0]["field"] == "features"
    with pytest.raises(InvalidModelFile):
        world.uploads.upload(pia, ModelUpload(name, "xgboost_json", xgboost_json(), features=["a", "b"]))
    assert name not in owners(world)

    uploaded = world.uploads.upload(pia, ModelUpload(name, "xgboost_json", xgboost_json(), list(FEATURES)))
    cached = world.cache.get(uploaded.uri)
    row = probe_row(5)
    expected = float(xgboost_booster().inplace_predict(as_matrix(row))[0])
    assert cached.model.predict(as_matrix(row)).predictions[0] == pytest.approx(expected, rel=1e-6)


def test_an_onnx_upload_is_served_as_onnxruntime_runs_it(world: World) -> None:
    pat = world.users["provider-pat"]
    name = fresh_name("onnx")
    uploaded = world.uploads.upload(
        pat, ModelUpload(name, "onnx", onnx_model_bytes(), list(FEATURES), classes=["down", "up"])
    )
    assert uploaded.classes == ["down", "up"]
    cached = world.cache.get(uploaded.uri)
    row = probe_row(7)
    output = cached.model.predict(as_matrix(row))
    assert output.probabilities is not None
    np.testing.assert_allclose(output.probabilities[0], onnx_probabilities(row), rtol=1e-6)
    assert output.predictions[0] == ("up" if onnx_probabilities(row)[1] > 0.5 else "down")


@pytest.mark.parametrize("declared", ["lightgbm", "xgboost_json", "onnx"])
@pytest.mark.parametrize(
    "content",
    [pickled_sklearn, lambda: joblib_dump(0), lambda: joblib_dump(3), lambda: b"PK\x03\x04 an archive"],
    ids=["pickle", "joblib", "joblib-zlib", "zip"],
)
def test_pickles_joblib_and_archives_are_refused_and_nothing_is_registered(
    world: World, declared: str, content: object
) -> None:
    name = fresh_name("bad")
    assert callable(content)
    with pytest.raises(UnsafeModelFormat) as refused:
        world.uploads.upload(
            world.users["provider-pia"], ModelUpload(name, declared, content(), list(FEATURES))
        )
    assert refused.value.code == "unsafe_model_format"
    assert name not in owners(world)
    with pytest.raises(ModelNotFound):
        world.registry.versions(name)


def test_a_format_outside_the_safe_three_and_mislabelled_files_are_refused(world: World) -> None:
    pia = world.users["provider-pia"]
    with pytest.raises(UnsafeModelFormat):
        world.uploads.upload(pia, ModelUpload(fresh_name("m"), "sklearn", pickled_sklearn()))
    with pytest.raises(UnsafeModelFormat) as mislabelled:
        world.uploads.upload(pia, ModelUpload(fresh_name("m"), "onnx", lightgbm_text()))
    assert mislabelled.value.details["detected"] == "lightgbm text"
    with pytest.raises(InvalidModelFile):  # JSON, but not an XGBoost model
        world.uploads.upload(pia, ModelUpload(fresh_name("m"), "xgboost_json", b'{"a": 1}'))
    with pytest.raises(InvalidModelFile):  # looks like LightGBM text, is not one
        world.uploads.upload(pia, ModelUpload(fresh_name("m"), "lightgbm", b"tree\nnonsense"))


def test_an_onnx_graph_with_external_data_is_refused(world: World) -> None:
    import onnx

    graph = onnx.load_model_from_string(onnx_model_bytes())
    tensor = graph.graph.initializer.add()
    tensor.CopyFrom(onnx.helper.make_tensor("weights", onnx.TensorProto.FLOAT, [1], [0.0]))
    tensor.ClearField("float_data")
    tensor.data_location = onnx.TensorProto.EXTERNAL
    entry = tensor.external_data.add()
    entry.key, entry.value = "location", "../../../../etc/passwd"
    with pytest.raises(UnsafeModelFormat) as refused:
        world.uploads.upload(
            world.users["provider-pia"],
            ModelUpload(fresh_name("ext"), "onnx", graph.SerializeToString(), list(FEATURES)),
        )
    assert refused.value.details["detected"] == "external data"


def test_a_file_over_the_upload_limit_and_a_bad_name_are_refused(world: World) -> None:
    pia = world.users["provider-pia"]
    with pytest.raises(ModelFileTooLarge):
        world.uploads.upload(pia, ModelUpload(fresh_name("big"), "lightgbm", b"tree\n" + b"x" * 200_001))
    with pytest.raises(InvalidInput):
        world.uploads.upload(pia, ModelUpload("../escape", "lightgbm", lightgbm_text()))


def test_a_name_owned_by_another_provider_is_taken_and_the_owner_adds_versions(world: World) -> None:
    pia, pat = world.users["provider-pia"], world.users["provider-pat"]
    name = fresh_name("shared")
    world.uploads.upload(pia, ModelUpload(name, "lightgbm", lightgbm_text()))
    with pytest.raises(ModelNameTaken) as taken:
        world.uploads.upload(pat, ModelUpload(name, "lightgbm", lightgbm_text()))
    assert taken.value.code == "model_name_taken"
    assert [v["version"] for v in world.registry.versions(name)] == ["1"]
    again = world.uploads.upload(pia, ModelUpload(name, "lightgbm", lightgbm_text()))
    assert again.version == "2"
    assert world.ownership.owner_of(name) == pia.user_id


def test_a_registered_model_nobody_owns_cannot_be_taken_by_an_upload(world: World) -> None:
    pia, pat = world.users["provider-pia"], world.users["provider-pat"]
    name = fresh_name("unowned")
    world.uploads.upload(pia, ModelUpload(name, "lightgbm", lightgbm_text()))
    world.ownership.release(name, pia.user_id or 0)  # as if registered by an operator
    with pytest.raises(ModelNameTaken):
        world.uploads.upload(pat, ModelUpload(name, "lightgbm", lightgbm_text()))
    assert world.ownership.owner_of(name) is None


def test_an_admin_assigns_and_reassigns_a_registered_model(world: World) -> None:
    admin, pia, pat = world.users["admin-ann"], world.users["provider-pia"], world.users["provider-pat"]
    name = fresh_name("assigned")
    world.uploads.upload(pia, ModelUpload(name, "lightgbm", lightgbm_text()))
    world.clock.advance(90)
    owned = world.ownership.assign(name, "provider-pat", admin)
    assert (owned.model_name, owned.provider, owned.provider_id) == (name, "provider-pat", pat.user_id)
    assert owned.assigned_by == "admin-ann"
    assert owned.assigned_at == START + timedelta(seconds=90)
    assert world.ownership.owner_of(name) == pat.user_id
    assert name not in world.ownership.owned_by(pia.user_id or 0)
    assert world.ownership.assign(name, "admin-ann", admin).provider == "admin-ann"  # admins own too

    rows, total = world.ownership.page(None, limit=500, offset=0)
    assert total == len(owners(world))
    assert any(row.model_name == name and row.provider == "admin-ann" for row in rows)
    mine, my_total = world.ownership.page(admin.user_id, limit=1, offset=0)
    assert my_total >= 1
    assert len(mine) == 1


def test_assigning_an_unknown_model_user_or_a_client_is_refused(world: World) -> None:
    admin, pia = world.users["admin-ann"], world.users["provider-pia"]
    with pytest.raises(ModelNotFound):
        world.ownership.assign(fresh_name("nope"), "provider-pia", admin)
    name = fresh_name("owned")
    world.uploads.upload(pia, ModelUpload(name, "lightgbm", lightgbm_text()))
    with pytest.raises(UserNotFound):
        world.ownership.assign(name, "nobody-here", admin)
    with pytest.raises(InvalidInput):
        world.ownership.assign(name, "client-cal", admin)
    assert world.ownership.owner_of(name) == pia.user_id
