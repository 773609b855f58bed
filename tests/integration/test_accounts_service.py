"""The account service and audit queries on both databases: SQLite and the real PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import StatementError

from prediction_provider.accounts.service import AccountService
from prediction_provider.db import migrate
from prediction_provider.db.models import AuditRecord, User
from prediction_provider.db.session import Database
from prediction_provider.errors import (
    AccountInactive,
    AuthenticationFailed,
    Conflict,
    InvalidInput,
    UserNotFound,
)
from prediction_provider.observability.audit import AuditWriter, query_audit, usage_of
from tests.integration.database_fixtures import sqlite_url

SECRET = "s" * 40


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Database]:
    if request.param == "sqlite":
        url = sqlite_url(tmp_path_factory.mktemp("db"))
    else:
        url = request.getfixturevalue("postgres_url")
    migrate.upgrade(url)
    db = Database(url)
    yield db
    db.dispose()


@pytest.fixture
def accounts(database: Database) -> AccountService:
    return AccountService(database, SECRET, timedelta(minutes=5), require_activation=True)


def count_users(db: Database) -> int:
    with db.session() as session:
        return int(session.scalar(select(func.count()).select_from(User)) or 0)


def test_new_users_start_inactive_and_need_activation(accounts: AccountService) -> None:
    user = accounts.create_user("alice", "Alice@Example.com", "correct horse battery")
    assert user["is_active"] is False
    assert user["email"] == "alice@example.com"
    with pytest.raises(AccountInactive):
        accounts.login("alice", "correct horse battery")
    accounts.set_active("alice", True)
    assert accounts.login("alice", "correct horse battery")["token_type"] == "bearer"


def test_duplicates_and_bad_fields_change_nothing(accounts: AccountService, database: Database) -> None:
    accounts.create_user("bob", "bob@example.com", "a long password")
    before = count_users(database)
    with pytest.raises(Conflict):
        accounts.create_user("bob", "other@example.com", "a long password")
    with pytest.raises(InvalidInput) as bad:
        accounts.create_user("Bad Name", "not-an-email", "short", "superuser")
    assert {e["field"] for e in bad.value.details["errors"]} == {"username", "email", "password", "role"}
    assert count_users(database) == before


def test_api_keys_are_stored_as_digests_and_regeneration_revokes(
    accounts: AccountService, database: Database
) -> None:
    user = accounts.create_user("carol", "carol@example.com", "a long password", active=True)
    first = accounts.api_key_from_password("carol", "a long password")["api_key"]
    assert len(first) >= 43
    with database.session() as session:
        stored = session.get(User, user["id"])
        assert stored is not None
        assert first not in (stored.api_key_digest, stored.password_hash)
    assert accounts.principal_for_key(first).username == "carol"
    second = accounts.regenerate_api_key(user["id"])["api_key"]
    with pytest.raises(AuthenticationFailed):
        accounts.principal_for_key(first)
    assert accounts.principal_for_key(second).user_id == user["id"]


def test_deactivation_revokes_keys_and_tokens_at_once(accounts: AccountService) -> None:
    user = accounts.create_user("dave", "dave@example.com", "a long password", "operator", active=True)
    key = accounts.regenerate_api_key(user["id"])["api_key"]
    token = accounts.login("dave", "a long password")["access_token"]
    accounts.set_active("dave", False)
    with pytest.raises(AccountInactive):
        accounts.principal_for_key(key)
    with pytest.raises(AccountInactive):
        accounts.principal_for_token(token)


def test_tokens_carry_the_current_role(accounts: AccountService) -> None:
    user = accounts.create_user("erin", "erin@example.com", "a long password", "client", active=True)
    token = accounts.login("erin", "a long password")["access_token"]
    accounts.update_user(user["id"], {"role": "operator"})
    assert accounts.principal_for_token(token).role == "operator"


def test_wrong_passwords_and_unknown_users_look_the_same(accounts: AccountService) -> None:
    accounts.create_user("frank", "frank@example.com", "a long password", active=True)
    with pytest.raises(AuthenticationFailed) as wrong:
        accounts.login("frank", "not the password")
    with pytest.raises(AuthenticationFailed) as unknown:
        accounts.login("nobody", "not the password")
    assert wrong.value.message == unknown.value.message


def test_password_change_and_profile_edit(accounts: AccountService) -> None:
    user = accounts.create_user("gina", "gina@example.com", "a long password", active=True)
    with pytest.raises(AuthenticationFailed):
        accounts.change_password(user["id"], "wrong", "a new long password")
    accounts.change_password(user["id"], "a long password", "a new long password")
    accounts.login("gina", "a new long password")
    edited = accounts.update_profile(user["id"], "gina@new.example.com", "Gina G")
    assert (edited["email"], edited["full_name"], edited["role"]) == (
        "gina@new.example.com",
        "Gina G",
        "client",
    )


def test_listing_filters_and_paginates(accounts: AccountService) -> None:
    for i in range(5):
        accounts.create_user(
            f"user{i}", f"user{i}@example.com", "a long password", "client", active=i % 2 == 0
        )
    accounts.create_user("ops1", "ops1@example.com", "a long password", "operator", active=True)
    page, total = accounts.list_users("client", True, None, limit=2, offset=0)
    assert total == 3
    assert [u["username"] for u in page] == ["user0", "user2"]
    rest, total = accounts.list_users("client", True, None, limit=2, offset=2)
    assert (total, [u["username"] for u in rest]) == (3, ["user4"])
    found, total = accounts.list_users(None, None, "ops", limit=10, offset=0)
    assert (total, found[0]["username"]) == (1, "ops1")
    with pytest.raises(UserNotFound):
        accounts.set_active("ghost", True)


def test_bootstrap_admin_only_once(accounts: AccountService) -> None:
    assert accounts.bootstrap_admin("root-admin", "a long password", "root@example.com") is not None
    assert accounts.bootstrap_admin("second-admin", "a long password", "second@example.com") is None


def test_audit_trail_is_written_in_batches_and_queried(accounts: AccountService, database: Database) -> None:
    writer = AuditWriter(database)
    start = datetime.now(UTC)
    for i in range(30):
        writer.record({
            "at": start + timedelta(milliseconds=i), "request_id": f"req-{i:04d}", "user_id": None,
            "username": "hank" if i % 3 else "ivy", "role": "client", "method": "POST",
            "path": "/predict" if i % 2 else "/v2/models/m/infer", "status": 200 if i % 5 else 422,
            "latency_ms": 1.5, "client_address": "127.0.0.1",
        })  # fmt: skip
    writer.flush()
    entries, total = query_audit(database, username="hank", path="/predict")
    assert total == len(entries) == sum(1 for i in range(30) if i % 3 and i % 2)
    assert entries[0]["at"] >= entries[-1]["at"]
    assert entries[0]["at"].tzinfo is not None
    errors, _ = query_audit(database, min_status=400)
    assert {e["status"] for e in errors} == {422}
    usage = usage_of(database, "ivy")
    assert usage["requests"] == 10
    assert usage["rejected"] == sum(1 for i in range(30) if not i % 3 and not i % 5)
    assert usage["server_errors"] == 0
    writer.close()
    with database.session() as session:
        assert session.scalar(select(func.count()).select_from(AuditRecord)) == 30


def test_naive_datetimes_are_refused(database: Database) -> None:
    writer_entry = {
        "at": datetime(2026, 1, 1), "request_id": "naive-0001", "method": "GET", "path": "/", "status": 200,
        "latency_ms": 1.0,
    }  # fmt: skip
    with database.session() as session:
        session.add(AuditRecord(**writer_entry))
        with pytest.raises(StatementError, match="naive datetime"):
            session.flush()
        session.rollback()
