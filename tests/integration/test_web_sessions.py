"""Dashboard sessions on both databases: sign-in, lookup, sign-out, revoke, expiry and the sign-outs
that account changes force (deactivation, role, password, API key)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest
from sqlalchemy import select

from prediction_provider.accounts import web_sessions as web_sessions_module
from prediction_provider.accounts.principal import Principal
from prediction_provider.accounts.roles import Role
from prediction_provider.accounts.service import AccountService
from prediction_provider.accounts.web_sessions import WebSessions
from prediction_provider.db import migrate
from prediction_provider.db.base import utcnow
from prediction_provider.db.models import DashboardSession, User
from prediction_provider.db.session import Database
from tests.integration.database_fixtures import sqlite_url

SECRET = "s" * 40
IDLE = timedelta(minutes=30)
LIFETIME = timedelta(hours=12)
PASSWORD = "a-good-password-1"


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
    return AccountService(database, SECRET, timedelta(minutes=5), require_activation=False)


@pytest.fixture
def sessions(database: Database) -> WebSessions:
    return WebSessions(database, SECRET, IDLE, LIFETIME)


def user(accounts: AccountService, name: str, role: str = "client") -> Principal:
    made = accounts.create_user(name, f"{name}@example.com", PASSWORD, role, active=True)
    return Principal(made["id"], made["username"], Role(made["role"]), "password")


def sign_in(sessions: WebSessions, principal: Principal) -> str:
    return sessions.create(principal, "password", "127.0.0.1", "pytest")


def stored(db: Database) -> list[DashboardSession]:
    with db.session() as session:
        rows = list(session.scalars(select(DashboardSession)))
        session.expunge_all()
        return rows


def test_a_session_names_its_user_and_only_its_digest_is_stored(
    accounts: AccountService, sessions: WebSessions, database: Database
) -> None:
    alice = user(accounts, "alice", "provider")
    token = sign_in(sessions, alice)
    found = sessions.lookup(token)
    assert found is not None
    assert (found.principal.user_id, found.principal.username) == (alice.user_id, "alice")
    assert (found.principal.role, found.principal.via) == (Role.PROVIDER, "session")
    (row,) = stored(database)
    assert row.id == found.session_id
    assert row.digest == found.digest
    assert token not in (row.digest, row.address, row.user_agent, row.via)
    assert (row.address, row.user_agent, row.via) == ("127.0.0.1", "pytest", "password")
    # The idle expiry comes first, and never after the absolute one.
    assert found.expires_at - row.created_at == IDLE
    assert sessions.lookup(token + "x") is None
    assert sessions.lookup("") is None


def test_every_sign_in_is_a_new_session(accounts: AccountService, sessions: WebSessions) -> None:
    alice = user(accounts, "alice")
    first, second = sign_in(sessions, alice), sign_in(sessions, alice)
    assert first != second
    one, two = sessions.lookup(first), sessions.lookup(second)
    assert one is not None
    assert two is not None
    assert one.session_id != two.session_id


def test_a_session_needs_an_account(sessions: WebSessions) -> None:
    with pytest.raises(ValueError, match="needs an account"):
        sessions.create(Principal(None, None, Role.GUEST, "anonymous"), "password", None, None)


def test_sign_out_ends_only_that_session(accounts: AccountService, sessions: WebSessions) -> None:
    alice = user(accounts, "alice")
    mine, other = sign_in(sessions, alice), sign_in(sessions, alice)
    assert sessions.end(mine) is True
    assert sessions.lookup(mine) is None
    assert sessions.end(mine) is False
    assert sessions.lookup(other) is not None


def test_an_admin_revokes_one_session_by_id(accounts: AccountService, sessions: WebSessions) -> None:
    alice = user(accounts, "alice")
    token, kept = sign_in(sessions, alice), sign_in(sessions, alice)
    found = sessions.lookup(token)
    assert found is not None
    assert sessions.is_live(found.session_id)
    assert sessions.revoke(found.session_id) is True
    assert sessions.lookup(token) is None
    assert not sessions.is_live(found.session_id)
    assert sessions.revoke(found.session_id) is False
    assert sessions.lookup(kept) is not None


def test_an_idle_expiry_ends_the_session(accounts: AccountService, database: Database) -> None:
    alice = user(accounts, "alice")
    born_idle = WebSessions(database, SECRET, timedelta(0), LIFETIME)
    token = sign_in(born_idle, alice)
    (row,) = stored(database)
    assert not born_idle.is_live(row.id)
    assert born_idle.lookup(token) is None
    assert stored(database) == []  # an expired session found at lookup is deleted


def test_the_absolute_expiry_ends_the_session_however_recent_its_use(
    accounts: AccountService, database: Database
) -> None:
    alice = user(accounts, "alice")
    born_old = WebSessions(database, SECRET, IDLE, timedelta(0))
    assert born_old.lookup(sign_in(born_old, alice)) is None


def test_use_moves_the_idle_expiry_but_never_past_the_absolute_one(
    accounts: AccountService, database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice = user(accounts, "alice")
    sessions = WebSessions(database, SECRET, timedelta(minutes=30), timedelta(minutes=45))
    token = sign_in(sessions, alice)
    (row,) = stored(database)
    start = row.created_at

    def at(moment: datetime) -> None:
        monkeypatch.setattr(web_sessions_module, "utcnow", lambda: moment)

    at(start + timedelta(minutes=20))  # used within the idle time: moved on by another 30 min
    found = sessions.lookup(token)
    assert found is not None
    assert found.expires_at == start + timedelta(minutes=45)
    at(start + timedelta(minutes=44))  # used again: still capped at 45 min after sign-in
    found = sessions.lookup(token)
    assert found is not None
    assert found.expires_at == start + timedelta(minutes=45)
    at(start + timedelta(minutes=45))
    assert sessions.lookup(token) is None


def test_a_session_unused_for_the_idle_time_has_ended(
    accounts: AccountService, database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice = user(accounts, "alice")
    sessions = WebSessions(database, SECRET, timedelta(minutes=30), LIFETIME)
    token = sign_in(sessions, alice)
    later = utcnow() + timedelta(minutes=31)
    monkeypatch.setattr(web_sessions_module, "utcnow", lambda: later)
    assert sessions.lookup(token) is None


def test_sweep_deletes_expired_sessions_only(
    accounts: AccountService, sessions: WebSessions, database: Database
) -> None:
    alice = user(accounts, "alice")
    born_idle = WebSessions(database, SECRET, timedelta(0), LIFETIME)
    sign_in(born_idle, alice)
    sign_in(born_idle, alice)
    live = sign_in(sessions, alice)
    assert sessions.sweep() == 2
    assert sessions.sweep() == 0
    assert sessions.lookup(live) is not None
    assert len(stored(database)) == 1


def test_active_lists_live_sessions_newest_first_and_counts_them(
    accounts: AccountService, sessions: WebSessions, database: Database
) -> None:
    alice, bob = user(accounts, "alice"), user(accounts, "bob", "operator")
    WebSessions(database, SECRET, timedelta(0), LIFETIME).create(alice, "password", None, None)  # expired
    tokens = [sign_in(sessions, alice), sign_in(sessions, bob), sign_in(sessions, alice)]
    ids = [found.session_id for found in map(sessions.lookup, tokens) if found is not None]
    rows, total = sessions.active(limit=2, offset=0)
    assert total == 3
    assert [row["id"] for row in rows] == ids[::-1][:2]
    assert rows[0]["username"] == "alice"
    assert rows[1]["role"] == "operator"
    rest, total = sessions.active(limit=2, offset=2)
    assert ([row["id"] for row in rest], total) == ([ids[0]], 3)
    of_bob, count = sessions.active(limit=50, offset=0, user_id=bob.user_id)
    assert ([row["id"] for row in of_bob], count) == ([ids[1]], 1)
    assert all("digest" not in row for row in rows)


def _deactivate(accounts: AccountService, who: Principal) -> None:
    accounts.set_active(str(who.username), False)


def _deactivate_by_edit(accounts: AccountService, who: Principal) -> None:
    assert who.user_id is not None
    accounts.update_user(who.user_id, {"is_active": False})


def _new_role(accounts: AccountService, who: Principal) -> None:
    assert who.user_id is not None
    accounts.update_user(who.user_id, {"role": "provider"})


def _new_password(accounts: AccountService, who: Principal) -> None:
    assert who.user_id is not None
    accounts.change_password(who.user_id, PASSWORD, "another-password-2")


def _regenerate_key(accounts: AccountService, who: Principal) -> None:
    assert who.user_id is not None
    accounts.regenerate_api_key(who.user_id)


def _admin_issues_key(accounts: AccountService, who: Principal) -> None:
    accounts.issue_api_key(str(who.username))


def _key_from_password(accounts: AccountService, who: Principal) -> None:
    accounts.api_key_from_password(str(who.username), PASSWORD)


@pytest.mark.parametrize(
    "change",
    [_deactivate, _deactivate_by_edit, _new_role, _new_password, _regenerate_key, _admin_issues_key,
     _key_from_password],
)  # fmt: skip
def test_account_changes_that_cut_a_user_off_end_all_its_sessions(
    accounts: AccountService, sessions: WebSessions, change: object
) -> None:
    alice, bob = user(accounts, "alice"), user(accounts, "bob")
    hers = [sign_in(sessions, alice), sign_in(sessions, alice)]
    his = sign_in(sessions, bob)
    assert callable(change)
    change(accounts, alice)
    assert [sessions.lookup(token) for token in hers] == [None, None]
    assert sessions.lookup(his) is not None  # nobody else is signed out


def test_edits_that_change_no_access_keep_the_session(
    accounts: AccountService, sessions: WebSessions
) -> None:
    alice = user(accounts, "alice")
    token = sign_in(sessions, alice)
    assert alice.user_id is not None
    accounts.update_profile(alice.user_id, "new@example.com", "Alice A.")
    accounts.update_user(alice.user_id, {"role": "client"})  # the same role
    accounts.set_active("alice", True)  # already active
    assert sessions.lookup(token) is not None


def test_a_session_of_an_inactive_user_is_refused(
    accounts: AccountService, sessions: WebSessions, database: Database
) -> None:
    """Even a row left behind (say, written by an older release) gives no access once inactive."""
    alice = user(accounts, "alice")
    token = sign_in(sessions, alice)
    (row,) = stored(database)
    with database.session() as session:
        found = session.get(User, alice.user_id)
        assert found is not None
        found.is_active = False
    assert not sessions.is_live(row.id)
    assert sessions.lookup(token) is None
