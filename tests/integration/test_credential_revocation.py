"""Keys and tokens that must stop working: rotation (by password or by an admin) and deactivation.

Every account service here remembers credentials (a long cache), so each revocation is also
checked against a caller that was just answered from memory.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest

from prediction_provider.accounts.principal_cache import PrincipalCache
from prediction_provider.accounts.service import AccountService
from prediction_provider.db import migrate
from prediction_provider.db.session import Database
from prediction_provider.errors import AccountInactive, AuthenticationFailed
from tests.integration.database_fixtures import sqlite_url

SECRET = "s" * 40
PASSWORD = "a long password"


@pytest.fixture(params=["sqlite", "postgresql"])
def accounts(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[AccountService]:
    if request.param == "sqlite":
        url = sqlite_url(tmp_path_factory.mktemp("db"))
    else:
        url = request.getfixturevalue("postgres_url")
    migrate.upgrade(url)
    db = Database(url)
    yield AccountService(db, SECRET, timedelta(minutes=5), require_activation=True, cache=PrincipalCache(60))
    db.dispose()


def used(accounts: AccountService, key: str) -> None:
    """Authenticate with ``key`` so that its owner is remembered."""
    accounts.principal_for_key(key)
    assert accounts.cached_principal_for_key(key) is not None


def test_the_password_route_rotates_an_existing_key(accounts: AccountService) -> None:
    accounts.create_user("rota", "rota@example.com", PASSWORD, active=True)
    first = accounts.api_key_from_password("rota", PASSWORD)
    assert first["replaced"] is False
    used(accounts, first["api_key"])
    second = accounts.api_key_from_password("rota", PASSWORD)
    assert second["replaced"] is True
    with pytest.raises(AuthenticationFailed):
        accounts.principal_for_key(first["api_key"])
    assert accounts.principal_for_key(second["api_key"]).username == "rota"
    with pytest.raises(AuthenticationFailed):
        accounts.api_key_from_password("rota", "not the password")
    assert accounts.principal_for_key(second["api_key"]).username == "rota"


def test_an_admin_issues_and_rotates_a_key_without_the_password(accounts: AccountService) -> None:
    accounts.create_user("issued", "issued@example.com", PASSWORD, active=True)
    first = accounts.issue_api_key("issued")
    assert first["replaced"] is False
    used(accounts, first["api_key"])
    second = accounts.issue_api_key("issued")
    assert second["replaced"] is True
    with pytest.raises(AuthenticationFailed):
        accounts.principal_for_key(first["api_key"])
    assert accounts.principal_for_key(second["api_key"]).username == "issued"


def test_a_key_issued_to_an_inactive_account_works_once_it_is_activated(accounts: AccountService) -> None:
    accounts.create_user("pending", "pending@example.com", PASSWORD)
    key = accounts.issue_api_key("pending")["api_key"]
    with pytest.raises(AccountInactive):
        accounts.principal_for_key(key)
    assert accounts.set_active("pending", True)["has_api_key"] is True
    assert accounts.principal_for_key(key).username == "pending"


DEACTIVATIONS = {
    "deactivate": lambda accounts, user: accounts.set_active(user["username"], False),
    "edit is_active false": lambda accounts, user: accounts.update_user(user["id"], {"is_active": False}),
}
REACTIVATIONS = {
    "activate": lambda accounts, user: accounts.set_active(user["username"], True),
    "edit is_active true": lambda accounts, user: accounts.update_user(user["id"], {"is_active": True}),
}


@pytest.mark.parametrize("reactivation", list(REACTIVATIONS))
@pytest.mark.parametrize("deactivation", list(DEACTIVATIONS))
def test_a_reactivation_does_not_revive_keys_or_tokens_from_before_the_deactivation(
    accounts: AccountService, deactivation: str, reactivation: str
) -> None:
    user = accounts.create_user("revived", "revived@example.com", PASSWORD, active=True)
    key = accounts.issue_api_key("revived")["api_key"]
    token = accounts.login("revived", PASSWORD)["access_token"]
    used(accounts, key)
    accounts.principal_for_token(token)
    DEACTIVATIONS[deactivation](accounts, user)
    # While inactive the old credentials still name the account: the answer says why.
    with pytest.raises(AccountInactive):
        accounts.principal_for_key(key)
    with pytest.raises(AccountInactive):
        accounts.principal_for_token(token)
    assert REACTIVATIONS[reactivation](accounts, user)["has_api_key"] is False
    with pytest.raises(AuthenticationFailed):
        accounts.principal_for_key(key)
    with pytest.raises(AuthenticationFailed):
        accounts.principal_for_token(token)
    # New credentials, issued straight after the reactivation, work (and do not revive the old ones).
    new_token = accounts.login("revived", PASSWORD)["access_token"]
    new_key = accounts.api_key_from_password("revived", PASSWORD)
    assert new_key["replaced"] is False
    assert accounts.principal_for_token(new_token).username == "revived"
    assert accounts.principal_for_key(new_key["api_key"]).username == "revived"
    with pytest.raises(AuthenticationFailed):
        accounts.principal_for_token(token)
