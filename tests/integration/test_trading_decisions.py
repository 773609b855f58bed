"""The decision service on freshly trained files: fallbacks, persistence, and what it refuses to load."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from pathlib import Path

import pytest

from prediction_provider.accounts.principal import Principal
from prediction_provider.accounts.roles import Role
from prediction_provider.config import Settings
from prediction_provider.db import migrate
from prediction_provider.db.session import Database
from prediction_provider.errors import ModelNotFound, UnknownStrategy, UnknownSymbol
from prediction_provider.trading.accounts import TradingAccountService
from prediction_provider.trading.decisions import DecisionRequest, DecisionService, new_decision_id
from prediction_provider.trading.factory import feature_source
from prediction_provider.trading.specialists import MANIFEST, DecisionModels, symbol_dir
from prediction_provider.trading.training import (
    DecisionTraining,
    decision_models_exist,
    train_decision_models,
)
from tests.integration.database_fixtures import sqlite_url

CLIENT = Principal(1, "someone", Role.CLIENT, "api_key")
AS_OF = datetime(2018, 1, 10, 12, tzinfo=UTC)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data_dir = tmp_path_factory.mktemp("decisions")
    train_decision_models(data_dir, ["EURUSD"], DecisionTraining(max_bars=900, n_estimators=10))
    return data_dir


def service_for(data_dir: Path, tmp_path: Path) -> DecisionService:
    settings = Settings(data_dir=data_dir)
    url = sqlite_url(tmp_path)
    migrate.upgrade(url)
    accounts = TradingAccountService(Database(url))
    return DecisionService(DecisionModels.load(data_dir), feature_source(settings), accounts, settings)


def copy_models(source: Path, target: Path) -> Path:
    for path in symbol_dir(source, "EURUSD").iterdir():
        destination = symbol_dir(target, "EURUSD") / path.name
        destination.parent.mkdir(parents=True, exist_ok=True)
        destination.write_bytes(path.read_bytes())
    return symbol_dir(target, "EURUSD")


def test_training_writes_a_manifest_of_safe_files(trained: Path) -> None:
    directory = symbol_dir(trained, "EURUSD")
    manifest = json.loads((directory / MANIFEST).read_text())
    assert manifest["symbol"] == "EURUSD"
    assert "universal" in manifest["models"]
    assert {path.suffix for path in directory.iterdir()} <= {".json", ".lgb"}
    assert decision_models_exist(trained, ["EURUSD"])
    assert not decision_models_exist(trained, ["EURUSD", "GOOG"])
    loaded = DecisionModels.load(trained).for_symbol("EURUSD")
    assert set(loaded.strategies) == set(manifest["models"])


def test_training_skips_symbols_already_trained(trained: Path) -> None:
    manifest = symbol_dir(trained, "EURUSD") / MANIFEST
    before = manifest.stat().st_mtime_ns
    assert train_decision_models(trained, ["EURUSD"], DecisionTraining(max_bars=900, n_estimators=10)) == []
    assert manifest.stat().st_mtime_ns == before


async def test_a_missing_specialist_falls_back_to_the_universal_model(trained: Path, tmp_path: Path) -> None:
    directory = copy_models(trained, tmp_path / "data")
    service = service_for(tmp_path / "data", tmp_path)
    full = await service.decide(DecisionRequest("EURUSD", AS_OF), CLIENT)
    chosen = full.strategy
    (directory / f"{chosen}.lgb").unlink()

    degraded = service_for(tmp_path / "data", tmp_path)
    decision = await degraded.decide(DecisionRequest("EURUSD", AS_OF), CLIENT)
    assert decision.strategy == chosen
    assert decision.model.name == "eurusd-universal"
    assert decision.strategy_weights == full.strategy_weights
    assert any(f"{chosen} is not trained for EURUSD" in warning for warning in decision.risk.warnings)


async def test_without_any_usable_model_the_decision_is_refused(trained: Path, tmp_path: Path) -> None:
    directory = copy_models(trained, tmp_path / "data")
    for model_file in directory.glob("*.lgb"):
        model_file.unlink()
    service = service_for(tmp_path / "data", tmp_path)
    with pytest.raises(ModelNotFound, match="neither"):
        await service.decide(DecisionRequest("EURUSD", AS_OF), CLIENT)


async def test_unknown_symbols_and_strategies_are_refused(trained: Path, tmp_path: Path) -> None:
    service = service_for(trained, tmp_path)
    with pytest.raises(UnknownSymbol):
        await service.decide(DecisionRequest("GOOG", AS_OF), CLIENT)
    with pytest.raises(UnknownStrategy):
        await service.decide(DecisionRequest("EURUSD", AS_OF, strategy_override="bull"), CLIENT)


def test_a_corrupt_manifest_is_skipped_and_logged(
    trained: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    directory = copy_models(trained, tmp_path / "data")
    (directory / MANIFEST).write_text('{"symbol": "EURUSD", "regime": {"file": "regime.json"}}')
    with caplog.at_level(logging.ERROR):
        models = DecisionModels.load(tmp_path / "data")
    assert models.symbols() == []
    assert "could not load the decision models" in caplog.text


def test_a_tampered_regime_file_is_refused(trained: Path, tmp_path: Path) -> None:
    directory = copy_models(trained, tmp_path / "data")
    regime = json.loads((directory / "regime.json").read_text())
    regime["variances"][0][0] = -1.0
    (directory / "regime.json").write_text(json.dumps(regime))
    assert DecisionModels.load(tmp_path / "data").symbols() == []


def test_decision_ids_are_random_128_bit_hex_and_never_repeat() -> None:
    ids = [new_decision_id() for _ in range(2000)]  # several reads of the OS's random source
    assert len(set(ids)) == len(ids)
    assert all(len(value) == 32 and int(value, 16) >= 0 for value in ids)
    # Random, not a random prefix and a counter: the leading 32 bits differ too.
    assert len({value[:8] for value in ids}) >= len(ids) - 5
