from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from prediction_provider.config import Settings


def test_environment_overrides_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PP_MAX_MODELS", "3")
    monkeypatch.setenv("PP_WARM_MODELS", "a, models:/b/1")
    monkeypatch.setenv("PP_TRUSTED_MODEL_ROOTS", f'["{tmp_path}"]')
    settings = Settings()
    assert settings.max_models == 3
    assert settings.warm_models == ["a", "models:/b/1"]
    assert tmp_path.resolve() in settings.trusted_roots


def test_precedence_is_file_then_environment_then_flags(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config = tmp_path / "pp.toml"
    config.write_text("max_models = 5\nport = 9000\nmax_batch_rows = 50\n")
    monkeypatch.setenv("PP_CONFIG_FILE", str(config))
    monkeypatch.setenv("PP_PORT", "9100")
    settings = Settings(max_batch_rows=70)
    assert settings.max_models == 5  # from the file
    assert settings.port == 9100  # environment beats the file
    assert settings.max_batch_rows == 70  # a flag beats both


def test_a_missing_config_file_is_an_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PP_CONFIG_FILE", str(tmp_path / "absent.toml"))
    with pytest.raises(FileNotFoundError):
        Settings()


def test_embedded_defaults_live_under_the_data_dir(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    assert settings.tracking_uri == f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}"
    assert settings.artifacts_dir in settings.trusted_roots
    assert settings.downloads_dir not in settings.trusted_roots


def test_invalid_values_are_refused() -> None:
    with pytest.raises(ValidationError):
        Settings(max_models=0)
    with pytest.raises(ValidationError):
        Settings(confidence_high=0.4, confidence_medium=0.5)


def test_a_redis_visibility_timeout_shorter_than_the_task_time_limit_is_refused() -> None:
    with pytest.raises(ValidationError, match="broker_visibility_timeout"):
        Settings(job_time_limit_seconds=600, broker_visibility_timeout=300)
    assert Settings(job_time_limit_seconds=60, broker_visibility_timeout=300).broker_visibility_timeout == 300
