"""First admin, secrets and migrations: what an operator does before the first request."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from prediction_provider.app import account_service, build_services, close_services
from prediction_provider.cli import app
from prediction_provider.config import Settings
from prediction_provider.db import migrate
from tests.conftest import TEST_JWT_SECRET


def test_the_server_refuses_to_start_without_a_jwt_secret(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="PP_JWT_SECRET"):
        build_services(Settings(data_dir=tmp_path, grpc_enabled=False))
    with pytest.raises(RuntimeError, match="PP_JWT_SECRET"):
        build_services(Settings(data_dir=tmp_path, jwt_secret="too-short", grpc_enabled=False))
    demo = build_services(Settings(data_dir=tmp_path, demo_mode=True, grpc_enabled=False))
    close_services(demo)


def test_bootstrap_admin_from_the_environment_on_first_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PP_BOOTSTRAP_ADMIN_USERNAME", "first-admin")
    monkeypatch.setenv("PP_BOOTSTRAP_ADMIN_PASSWORD", "first-admin-password")
    monkeypatch.setenv("PP_BOOTSTRAP_ADMIN_EMAIL", "first@example.com")
    services = build_services(Settings(data_dir=tmp_path, jwt_secret=TEST_JWT_SECRET, grpc_enabled=False))
    admin = services.accounts.get("first-admin")
    assert (admin["role"], admin["is_active"]) == ("admin", True)
    assert services.accounts.login("first-admin", "first-admin-password")["access_token"]
    close_services(services)
    # A second start with other credentials adds no admin.
    monkeypatch.setenv("PP_BOOTSTRAP_ADMIN_USERNAME", "second-admin")
    again = build_services(Settings(data_dir=tmp_path, jwt_secret=TEST_JWT_SECRET, grpc_enabled=False))
    users, total = again.accounts.list_users("admin", None, None, limit=10, offset=0)
    assert [u["username"] for u in users] == ["first-admin"]
    assert total == 1
    close_services(again)


def test_cli_creates_an_admin_and_migrates(tmp_path: Path) -> None:
    runner = CliRunner()
    upgraded = runner.invoke(app, ["db", "upgrade", "--data-dir", str(tmp_path)])
    assert upgraded.exit_code == 0, upgraded.output
    assert migrate.current(Settings(data_dir=tmp_path).database) == "0011"
    created = runner.invoke(
        app,
        ["users", "create-admin", "--data-dir", str(tmp_path), "--username", "cli-admin",
         "--email", "cli@example.com", "--password", "cli-admin-password"],
    )  # fmt: skip
    assert created.exit_code == 0, created.output
    accounts = account_service(Settings(data_dir=tmp_path))
    assert accounts.get("cli-admin")["role"] == "admin"
    accounts.db.dispose()
    downgraded = runner.invoke(app, ["db", "downgrade", "base", "--data-dir", str(tmp_path)])
    assert downgraded.exit_code == 0
    assert migrate.current(Settings(data_dir=tmp_path).database) is None
