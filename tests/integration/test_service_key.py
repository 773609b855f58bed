"""`users service-key`: what docker-compose.yml's setup service runs to give Prometheus its key."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from prediction_provider.app import account_service
from prediction_provider.cli import app
from prediction_provider.config import Settings
from prediction_provider.errors import AuthenticationFailed


def service_key(data_dir: Path, out: Path, *extra: str) -> tuple[int, str]:
    result = CliRunner(env={"COLUMNS": "200"}).invoke(
        app, ["users", "service-key", "prometheus", "--out", str(out), "--data-dir", str(data_dir), *extra]
    )
    return result.exit_code, result.output


def test_first_run_creates_the_operator_and_writes_a_key_that_reads_metrics(tmp_path: Path) -> None:
    out = tmp_path / "secrets" / "pp_api_key"  # the volume's directory may not exist yet
    code, output = service_key(tmp_path, out)
    assert code == 0, output
    key = out.read_text()
    assert key.startswith("pp_")
    assert key == key.strip()  # the key alone: Prometheus sends the file verbatim
    assert stat.S_IMODE(out.stat().st_mode) == 0o644  # Prometheus reads it as another user
    accounts = account_service(Settings(data_dir=tmp_path))
    principal = accounts.principal_for_key(key)
    assert (principal.username, principal.role) == ("prometheus", "operator")


def test_each_run_rotates_the_key_and_the_old_one_stops_working(tmp_path: Path) -> None:
    out = tmp_path / "pp_api_key"
    assert service_key(tmp_path, out)[0] == 0
    first = out.read_text()
    assert service_key(tmp_path, out)[0] == 0
    second = out.read_text()
    assert second != first
    accounts = account_service(Settings(data_dir=tmp_path))
    assert accounts.principal_for_key(second).username == "prometheus"
    with pytest.raises(AuthenticationFailed):
        accounts.principal_for_key(first)
    assert not list(tmp_path.glob(".pp_api_key*"))  # no partial file left beside it


def test_an_existing_account_of_another_role_is_refused_not_changed(tmp_path: Path) -> None:
    accounts = account_service(Settings(data_dir=tmp_path))
    accounts.create_user("prometheus", "p@example.com", "a-password-123", "client", active=True)
    out = tmp_path / "pp_api_key"
    code, output = service_key(tmp_path, out)
    assert code == 1
    assert "prometheus exists with the client role, not operator" in output
    assert not out.exists()
    assert accounts.get("prometheus")["role"] == "client"
