"""Remembered credentials: fast repeat calls, and revocation that still applies at once."""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path

import pytest

from prediction_provider.accounts.principal_cache import PrincipalCache
from prediction_provider.accounts.service import AccountService
from prediction_provider.db import migrate
from prediction_provider.db.session import Database
from prediction_provider.errors import AccountInactive, AuthenticationFailed
from tests.integration.database_fixtures import sqlite_url
from tests.integration.test_throttle import redis_url  # noqa: F401 - fixture

SECRET = "s" * 40


def service(db: Database, cache: PrincipalCache) -> AccountService:
    return AccountService(db, SECRET, timedelta(minutes=5), require_activation=False, cache=cache)


@pytest.fixture
def database(tmp_path: Path) -> Database:
    url = sqlite_url(tmp_path)
    migrate.upgrade(url)
    return Database(url)


def test_a_known_key_is_answered_from_memory_until_its_user_changes(database: Database) -> None:
    accounts = service(database, PrincipalCache(ttl_s=60))
    user = accounts.create_user("cached", "cached@example.com", "a long password")
    key = accounts.regenerate_api_key(user["id"])["api_key"]
    assert accounts.cached_principal_for_key(key) is None
    accounts.principal_for_key(key)
    assert accounts.cached_principal_for_key(key) == accounts.principal_for_key(key)
    new_key = accounts.regenerate_api_key(user["id"])["api_key"]
    assert accounts.cached_principal_for_key(key) is None
    with pytest.raises(AuthenticationFailed):
        accounts.principal_for_key(key)
    accounts.principal_for_key(new_key)
    accounts.set_active("cached", False)
    assert accounts.cached_principal_for_key(new_key) is None
    with pytest.raises(AccountInactive):
        accounts.principal_for_key(new_key)


def test_a_change_in_one_process_reaches_the_others_through_redis(database: Database, redis_url: str) -> None:  # noqa: F811
    serving = service(database, PrincipalCache(ttl_s=60, redis_url=redis_url))
    admin = service(database, PrincipalCache(ttl_s=60, redis_url=redis_url))
    user = admin.create_user("shared", "shared@example.com", "a long password")
    key = admin.regenerate_api_key(user["id"])["api_key"]
    serving.principal_for_key(key)
    assert serving.cached_principal_for_key(key) is not None
    admin.set_active("shared", False)
    deadline = time.monotonic() + 10
    while serving.cached_principal_for_key(key) is not None and time.monotonic() < deadline:
        time.sleep(0.01)  # waiting for the pub/sub message, not for time to pass
    assert serving.cached_principal_for_key(key) is None
    with pytest.raises(AccountInactive):
        serving.principal_for_key(key)
