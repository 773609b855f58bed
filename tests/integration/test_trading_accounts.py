"""Trading accounts and positions on both databases: exact decimals, ownership, the day's roll-over."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import select

from prediction_provider.accounts.principal import Principal
from prediction_provider.accounts.roles import Role
from prediction_provider.accounts.service import AccountService
from prediction_provider.db import migrate
from prediction_provider.db.models import Position, TradingAccount
from prediction_provider.db.session import Database
from prediction_provider.errors import Conflict, InvalidInput, PermissionDenied, TradingAccountNotFound
from prediction_provider.trading.accounts import AccountUpdate, PositionUpdate, TradingAccountService, plain
from tests.integration.database_fixtures import sqlite_url

D = Decimal


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


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2024, 3, 1, 15, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def service(database: Database, clock: Clock) -> TradingAccountService:
    return TradingAccountService(database, clock)


@pytest.fixture
def people(database: Database) -> dict[str, Principal]:
    users = AccountService(database, "s" * 40, timedelta(minutes=5), require_activation=False)
    made = {}
    for name, role in (("alice", Role.CLIENT), ("bob", Role.CLIENT), ("root", Role.ADMIN)):
        user = users.create_user(name, f"{name}@example.com", f"{name}-password-1", role.value, active=True)
        made[name] = Principal(user["id"], name, role, "api_key")
    return made


def test_account_amounts_are_stored_and_read_exactly(
    service: TradingAccountService, people: dict[str, Principal], database: Database
) -> None:
    alice = people["alice"]
    created = service.create(alice, "alice-main", D("123456789.12345678"))
    assert created["equity"] == "123456789.12345678"
    assert created["owner"] == "alice"
    service.set_position(
        "alice-main",
        "EURUSD",
        alice,
        PositionUpdate(D("-25000.5"), D("1.0812345678"), D("1.0923456789"), "fx"),
    )
    with database.session() as session:
        stored = session.scalar(select(Position))
        assert stored is not None
        assert stored.quantity == D("-25000.5")
        assert stored.market_price == D("1.0923456789")
        assert isinstance(stored.quantity, Decimal)
    shown = service.get("alice-main", alice)
    (position,) = shown["positions"]
    assert position["market_value"] == plain(D("-25000.5") * D("1.0923456789"))
    assert position["unrealized_pnl"] == plain(D("-25000.5") * (D("1.0923456789") - D("1.0812345678")))
    assert shown["gross_exposure"] == plain(D("25000.5") * D("1.0923456789"))


def test_state_is_what_the_risk_checks_read(
    service: TradingAccountService, people: dict[str, Principal]
) -> None:
    alice = people["alice"]
    service.create(alice, "alice-main", D(50_000))
    service.set_position("alice-main", "GOOG", alice, PositionUpdate(D(10), D(500), D(600), "technology"))
    service.set_position("alice-main", "MSFT", alice, PositionUpdate(D(-5), D(300), D(280)))
    state = service.state("alice-main", alice)
    assert state.equity == D(50_000)
    assert {(p.symbol, p.sector, p.quantity, p.market_price) for p in state.positions} == {
        ("GOOG", "technology", D(10), D(600)),
        ("MSFT", None, D(-5), D(280)),
    }


def test_positions_are_replaced_and_closed(
    service: TradingAccountService, people: dict[str, Principal]
) -> None:
    alice = people["alice"]
    service.create(alice, "alice-main", D(50_000))
    service.set_position("alice-main", "GOOG", alice, PositionUpdate(D(10), D(500), D(600), "technology"))
    replaced = service.set_position("alice-main", "GOOG", alice, PositionUpdate(D(4), D(510), D(620)))
    assert [(p["quantity"], p["sector"]) for p in replaced["positions"]] == [("4", "technology")]
    assert (
        service.set_position("alice-main", "GOOG", alice, PositionUpdate(D(0), D(1), D(1)))["positions"] == []
    )
    service.set_position("alice-main", "GOOG", alice, PositionUpdate(D(1), D(1), D(1)))
    assert service.close_position("alice-main", "GOOG", alice)["positions"] == []
    with pytest.raises(TradingAccountNotFound):
        service.close_position("alice-main", "GOOG", alice)


def test_others_cannot_see_or_change_an_account_but_admins_can(
    service: TradingAccountService, people: dict[str, Principal]
) -> None:
    alice, bob, root = people["alice"], people["bob"], people["root"]
    service.create(alice, "alice-main", D(1000))
    with pytest.raises(TradingAccountNotFound):
        service.get("alice-main", bob)
    with pytest.raises(TradingAccountNotFound):
        service.state("alice-main", bob)
    with pytest.raises(TradingAccountNotFound):
        service.update("alice-main", bob, AccountUpdate(equity=D(1)))
    with pytest.raises(TradingAccountNotFound):
        service.set_position("alice-main", "GOOG", bob, PositionUpdate(D(1), D(1), D(1)))
    with pytest.raises(TradingAccountNotFound):
        service.get("alice-main", Principal.guest())
    assert service.get("alice-main", alice)["equity"] == "1000"
    assert service.update("alice-main", root, AccountUpdate(equity=D(900)))["equity"] == "900"
    assert service.list(bob, 50, 0) == ([], 0)
    assert [a["name"] for a in service.list(alice, 50, 0)[0]] == ["alice-main"]
    assert [a["name"] for a in service.list(root, 50, 0)[0]] == ["alice-main"]
    assert service.list(root, 50, 1) == ([], 1)


def test_only_admins_open_accounts_for_others(
    service: TradingAccountService, people: dict[str, Principal]
) -> None:
    with pytest.raises(PermissionDenied):
        service.create(people["bob"], "for-alice", D(1), owner="alice")
    created = service.create(people["root"], "for-alice", D(1), owner="alice")
    assert created["owner"] == "alice"
    assert service.get("for-alice", people["alice"])["name"] == "for-alice"
    with pytest.raises(InvalidInput):
        service.create(people["root"], "for-nobody", D(1), owner="nobody")
    with pytest.raises(PermissionDenied):
        service.create(Principal.guest(), "anonymous", D(1))


def test_account_names_are_unique_and_a_failed_create_stores_nothing(
    service: TradingAccountService, people: dict[str, Principal], database: Database
) -> None:
    service.create(people["alice"], "shared-name", D(1000))
    with pytest.raises(Conflict):
        service.create(people["bob"], "shared-name", D(5))
    with database.session() as session:
        accounts = list(session.scalars(select(TradingAccount)))
    assert [(a.name, a.equity) for a in accounts] == [("shared-name", D(1000))]


def test_the_days_pnl_rolls_over_at_midnight_utc(
    service: TradingAccountService, people: dict[str, Principal], clock: Clock, database: Database
) -> None:
    alice = people["alice"]
    service.create(alice, "alice-main", D(100_000))
    service.update("alice-main", alice, AccountUpdate(equity=D(97_000), realized_pnl_today=D(-1500)))
    today = service.state("alice-main", alice)
    assert (today.day_start_equity, today.equity, today.realized_pnl_today) == (
        D(100_000),
        D(97_000),
        D(-1500),
    )

    clock.now += timedelta(days=1)
    tomorrow = service.state("alice-main", alice)
    assert (tomorrow.day_start_equity, tomorrow.realized_pnl_today) == (D(97_000), D(0))
    with database.session() as session:
        stored = session.scalar(select(TradingAccount))
        assert stored is not None
        assert stored.day_start_equity == D(100_000), "a read must not store the roll-over"
    service.update("alice-main", alice, AccountUpdate(equity=D(96_000)))
    with database.session() as session:
        stored = session.scalar(select(TradingAccount))
        assert stored is not None
        assert (stored.day_start_equity, stored.realized_pnl_today) == (D(97_000), D(0))
        assert stored.pnl_date == clock.now.date()


def test_deleting_an_account_deletes_its_positions(
    service: TradingAccountService, people: dict[str, Principal], database: Database
) -> None:
    alice = people["alice"]
    service.create(alice, "alice-main", D(1000))
    service.set_position("alice-main", "GOOG", alice, PositionUpdate(D(1), D(1), D(1)))
    with database.session() as session:
        account = session.scalar(select(TradingAccount))
        session.delete(account)
    with database.session() as session:
        assert list(session.scalars(select(Position))) == []


def test_plain_renders_decimals_without_exponent_or_trailing_zeros() -> None:
    assert plain(D("10000.00000000")) == "10000"
    assert plain(D("0E-8")) == "0"
    assert plain(D("-0.50000")) == "-0.5"
    assert plain(D("1E+15")) == "1000000000000000"


def test_remembered_state_is_dropped_by_every_change(
    database: Database, people: dict[str, Principal], clock: Clock
) -> None:
    service = TradingAccountService(database, clock, cache_seconds=3600)
    alice, bob = people["alice"], people["bob"]
    service.create(alice, "alice-main", D(1000))
    assert service.cached_state("alice-main", alice) is None
    read = service.state("alice-main", alice)
    assert service.cached_state("alice-main", alice) == read
    assert service.cached_state("alice-main", bob) is None, "a remembered account stays private"
    assert service.cached_state("alice-main", people["root"]) == read

    service.set_position("alice-main", "GOOG", alice, PositionUpdate(D(3), D(10), D(11)))
    assert service.cached_state("alice-main", alice) is None
    assert [p.quantity for p in service.state("alice-main", alice).positions] == [D(3)]
    service.update("alice-main", alice, AccountUpdate(equity=D(990)))
    assert service.cached_state("alice-main", alice) is None
    assert service.state("alice-main", alice).equity == D(990)
    service.close_position("alice-main", "GOOG", alice)
    assert service.cached_state("alice-main", alice) is None


def test_remembered_state_rolls_over_at_midnight_too(
    database: Database, people: dict[str, Principal], clock: Clock
) -> None:
    service = TradingAccountService(database, clock, cache_seconds=3600)
    alice = people["alice"]
    service.create(alice, "alice-main", D(1000))
    service.update("alice-main", alice, AccountUpdate(equity=D(950), realized_pnl_today=D(-50)))
    service.state("alice-main", alice)
    clock.now += timedelta(days=1)
    remembered = service.cached_state("alice-main", alice)
    assert remembered is not None
    assert (remembered.day_start_equity, remembered.realized_pnl_today) == (D(950), D(0))


def test_without_a_cache_time_nothing_is_remembered(
    service: TradingAccountService, people: dict[str, Principal]
) -> None:
    service.create(people["alice"], "alice-main", D(1000))
    service.state("alice-main", people["alice"])
    assert service.cached_state("alice-main", people["alice"]) is None
