"""The demo's accounts: new passwords and keys on every start that work as printed and as written."""

from __future__ import annotations

import io
import stat
from pathlib import Path

import pytest

from prediction_provider.accounts.service import AccountService
from prediction_provider.app import account_service
from prediction_provider.config import Settings
from prediction_provider.demo.credentials import (
    credentials_file,
    print_credentials,
    refresh_demo_accounts,
    write_credentials,
)
from prediction_provider.errors import AuthenticationFailed


@pytest.fixture
def accounts(tmp_path: Path) -> AccountService:
    return account_service(Settings(data_dir=tmp_path, demo_mode=True))


def test_every_start_gives_each_demo_account_a_new_password_and_key_that_work(
    accounts: AccountService,
) -> None:
    first = refresh_demo_accounts(accounts)
    second = refresh_demo_accounts(accounts)
    assert [(c.role, c.username) for c in second] == [("admin", "admin"), ("client", "demo-client")]
    for old, new in zip(first, second, strict=True):
        assert (old.password, old.api_key) != (new.password, new.api_key)
        assert accounts.login(new.username, new.password)["token_type"] == "bearer"
        assert accounts.principal_for_key(new.api_key).role == new.role
        with pytest.raises(AuthenticationFailed):
            accounts.login(old.username, old.password)
        with pytest.raises(AuthenticationFailed):
            accounts.principal_for_key(old.api_key)


def test_printed_credentials_are_never_wrapped_on_a_narrow_pipe(
    accounts: AccountService, tmp_path: Path
) -> None:
    credentials = refresh_demo_accounts(accounts)
    out = io.StringIO()  # not a terminal, as when the demo's output is piped or logged
    long_path = tmp_path / ("a-long-directory-name-" * 4) / "demo-credentials.txt"
    print_credentials(credentials, long_path, out)
    lines = out.getvalue().splitlines()
    for account in credentials:
        for value in (account.username, account.password, account.api_key):
            # Whole, on a line of its own that ends with it: a double-click or a copy takes it all.
            assert [line for line in lines if line.endswith(f" {value}")], (value, lines)
    assert str(long_path) in out.getvalue()


def test_the_credentials_file_is_the_owners_alone_and_loads_in_a_shell(
    accounts: AccountService, tmp_path: Path
) -> None:
    path = credentials_file(tmp_path)
    path.write_text("stale\n")
    path.chmod(0o644)
    credentials = refresh_demo_accounts(accounts)
    write_credentials(path, credentials, "http://127.0.0.1:8000")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    values = dict(line.split("=", 1) for line in path.read_text().splitlines() if not line.startswith("#"))
    admin, client = credentials
    assert values == {
        "ADMIN_USERNAME": "admin", "ADMIN_PASSWORD": admin.password, "ADMIN_KEY": admin.api_key,
        "CLIENT_USERNAME": "demo-client", "CLIENT_PASSWORD": client.password, "KEY": client.api_key,
    }  # fmt: skip
    assert accounts.login(values["CLIENT_USERNAME"], values["CLIENT_PASSWORD"])["access_token"]
