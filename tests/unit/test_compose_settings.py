"""docker-compose.yml configures the stack with real settings: every PP_* variable exists and validates."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from prediction_provider.config import Settings

ROOT = Path(__file__).resolve().parents[2]


def compose_environment() -> dict[str, str]:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    environment: dict[str, str] = compose["services"]["api"]["environment"]
    # ${VAR:?message} is filled in by the operator at `docker compose up`.
    return {name: re.sub(r"\$\{[^}]+\}", "x" * 40, str(value)) for name, value in environment.items()}


def test_every_service_of_the_stack_shares_one_environment() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    shared = compose["services"]["api"]["environment"]
    for name in ("setup", "api", "worker"):
        assert compose["services"][name]["environment"] == shared


def test_compose_settings_are_known_and_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    environment = compose_environment()
    known = {f"PP_{name.upper()}" for name in Settings.model_fields}
    assert set(environment) <= known, set(environment) - known
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    settings = Settings()
    assert settings.job_backend == "celery"
    assert settings.broker_url == "redis://redis:6379/0"
    assert settings.database.startswith("postgresql+psycopg://")
    assert settings.broker_visibility_timeout > settings.job_time_limit_seconds
