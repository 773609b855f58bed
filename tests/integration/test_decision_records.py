"""Every trading decision is recorded, on both databases: what was decided, by which model, from which
features and bars; refused decisions too; who may read them; and what survives a database outage."""

from __future__ import annotations

import gc
import hashlib
import struct
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import func, select

from prediction_provider.accounts.principal import Principal
from prediction_provider.accounts.roles import Role
from prediction_provider.accounts.service import AccountService
from prediction_provider.config import Settings
from prediction_provider.db import migrate
from prediction_provider.db.models import TradingDecision
from prediction_provider.db.session import Database
from prediction_provider.errors import DecisionNotFound
from prediction_provider.features.pipeline import FEATURE_NAMES
from prediction_provider.trading.accounts import AccountUpdate, TradingAccountService
from prediction_provider.trading.decisions import DecisionRequest, DecisionService
from prediction_provider.trading.factory import feature_source
from prediction_provider.trading.records import (
    DecisionFilter,
    DecisionRecorder,
    feature_hash,
    find_decision,
    search_decisions,
)
from prediction_provider.trading.specialists import STRATEGIES, DecisionModels
from prediction_provider.trading.training import DecisionTraining, train_decision_models
from tests.integration.database_fixtures import sqlite_url
from tests.integration.tcp_proxy import TcpProxy

AS_OF = datetime(2018, 1, 10, 12, tzinfo=UTC)
TRIED_TIMES = (AS_OF, datetime(2017, 11, 1, 9, tzinfo=UTC), datetime(2017, 6, 15, 15, tzinfo=UTC))


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data_dir = tmp_path_factory.mktemp("decision-records")
    train_decision_models(data_dir, ["EURUSD"], DecisionTraining(max_bars=900, n_estimators=10))
    return data_dir


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    url = sqlite_url(tmp_path) if request.param == "sqlite" else str(request.getfixturevalue("postgres_url"))
    migrate.upgrade(url)
    return url


@pytest.fixture
def database(store_url: str) -> Iterator[Database]:
    db = Database(store_url)
    yield db
    db.dispose()


@pytest.fixture
def people(database: Database) -> dict[str, Principal]:
    users = AccountService(database, "s" * 40, timedelta(minutes=5), require_activation=False)
    made = {}
    for name, role in (("alice", Role.CLIENT), ("bob", Role.PROVIDER), ("ops", Role.OPERATOR)):
        user = users.create_user(name, f"{name}@example.com", f"{name}-password-1", role.value, active=True)
        made[name] = Principal(user["id"], name, role, "api_key")
    return made


@pytest.fixture
def recorder(database: Database) -> Iterator[DecisionRecorder]:
    writer = DecisionRecorder(database)
    yield writer
    writer.close()


def decision_service(trained: Path, database: Database, recorder: DecisionRecorder | None) -> DecisionService:
    settings = Settings(data_dir=trained)
    return DecisionService(
        DecisionModels.load(trained),
        feature_source(settings),
        TradingAccountService(database),
        settings,
        recorder=recorder,
    )


@pytest.fixture
def service(trained: Path, database: Database, recorder: DecisionRecorder) -> DecisionService:
    return decision_service(trained, database, recorder)


async def a_trade(service: DecisionService, principal: Principal) -> DecisionRequest:
    """A request whose decision is BUY or SELL with a size, for the risk checks to bite on."""
    for moment in TRIED_TIMES:
        for strategy in STRATEGIES:
            request = DecisionRequest("EURUSD", moment, strategy_override=strategy)
            decision = await service.decide(request, principal)
            if decision.action != "HOLD" and decision.quantity > 0:
                return request
    pytest.fail("no EURUSD decision other than HOLD at any of the tried times and strategies")


def stored(db: Database) -> int:
    with db.session() as session:
        return int(session.scalar(select(func.count()).select_from(TradingDecision)) or 0)


def test_the_feature_hash_is_sha256_of_little_endian_float64s() -> None:
    values = [1.5, -0.25, 1e-300, 0.0]
    expected = hashlib.sha256(struct.pack("<4d", *values)).hexdigest()
    assert feature_hash(np.asarray([values], dtype=np.float64)) == expected
    assert feature_hash(np.asarray([values], dtype=">f8")) == expected  # byte order does not matter
    assert feature_hash(np.asarray([[1.5, -0.25, 1e-300, -0.0]])) != expected


async def test_a_decision_is_recorded_with_its_model_features_and_as_of_time(
    service: DecisionService, recorder: DecisionRecorder, people: dict[str, Principal], database: Database
) -> None:
    alice = people["alice"]
    decision = await service.decide(DecisionRequest("EURUSD", AS_OF), alice)
    snapshot = service.market.snapshot("EURUSD", AS_OF)
    seen = np.asarray([[snapshot.values[name] for name in FEATURE_NAMES]], dtype=np.float64)
    assert decision.feature_hash == hashlib.sha256(seen.astype("<f8").tobytes()).hexdigest()
    recorder.flush()
    record = find_decision(database, decision.decision_id, alice)
    assert (record.user_id, record.username, record.account_name) == (alice.user_id, "alice", None)
    assert (record.symbol, record.action, record.strategy) == ("EURUSD", decision.action, decision.strategy)
    assert f"{record.model_name}:{record.model_version}" == decision.model.identity
    assert record.feature_hash == decision.feature_hash
    assert record.data_as_of == decision.data_as_of == snapshot.data_as_of
    assert record.data_as_of.tzinfo is not None
    assert record.created_at.tzinfo is not None
    assert record.created_at == decision.decided_at
    assert record.confidence == decision.confidence
    assert record.recommended_quantity == decision.quantity
    assert record.approved is True
    assert record.regime_probabilities == pytest.approx(decision.regime.as_dict())
    assert record.strategy_weights == pytest.approx(decision.strategy_weights)
    assert set(record.risk_checks) == set(decision.risk.checks)
    assert record.latency_ms == pytest.approx(decision.latency_ms)


async def test_a_refused_decision_is_recorded_with_its_reasons(
    service: DecisionService, recorder: DecisionRecorder, people: dict[str, Principal], database: Database
) -> None:
    alice = people["alice"]
    trade = await a_trade(service, alice)
    service.accounts.create(alice, "alice-main", Decimal("100000"))
    service.accounts.update("alice-main", alice, AccountUpdate(equity=Decimal("97500")))  # 2.5 % down today
    decision = await service.decide(replace(trade, account="alice-main"), alice)
    assert not decision.approved
    recorder.flush()
    record = find_decision(database, decision.decision_id, alice)
    assert record.approved is False
    assert record.account_name == "alice-main"
    assert record.risk_checks["daily_loss_limit"]["code"] == "daily_loss_limit_reached"
    assert record.risk_checks["daily_loss_limit"]["passed"] is False
    assert record.risk_warnings == list(decision.risk.warnings)
    assert record.recommended_quantity == decision.quantity > 0


async def test_quantities_are_stored_exactly(
    service: DecisionService, recorder: DecisionRecorder, people: dict[str, Principal], database: Database
) -> None:
    decision = await service.decide(DecisionRequest("EURUSD", AS_OF), people["alice"])
    exact = replace(decision, decision_id="exact-quantity", quantity=Decimal("12345678.12345678"))
    recorder.record_decision(exact, people["alice"], None)
    recorder.flush()
    assert find_decision(database, "exact-quantity", people["alice"]).recommended_quantity == Decimal(
        "12345678.12345678"
    )


async def test_others_decisions_are_not_found_except_for_those_who_see_all(
    service: DecisionService, recorder: DecisionRecorder, people: dict[str, Principal], database: Database
) -> None:
    alice, bob, ops = people["alice"], people["bob"], people["ops"]
    mine = [await service.decide(DecisionRequest("EURUSD", moment), alice) for moment in TRIED_TIMES]
    theirs = await service.decide(DecisionRequest("EURUSD", AS_OF), bob)
    recorder.flush()
    with pytest.raises(DecisionNotFound):
        find_decision(database, mine[0].decision_id, bob)
    with pytest.raises(DecisionNotFound):
        find_decision(database, "no-such-decision", alice)
    with pytest.raises(DecisionNotFound):
        find_decision(database, mine[0].decision_id, Principal.guest())
    assert find_decision(database, mine[0].decision_id, ops).username == "alice"

    own, total = search_decisions(database, alice, DecisionFilter(), 2, 0)
    newest_first = sorted(mine, key=lambda d: d.decided_at, reverse=True)
    assert total == 3
    assert [r.decision_id for r in own] == [d.decision_id for d in newest_first[:2]]
    rest, _ = search_decisions(database, alice, DecisionFilter(), 2, 2)
    assert [r.decision_id for r in rest] == [newest_first[2].decision_id]
    everyone, total = search_decisions(database, ops, DecisionFilter(symbol="EURUSD"), 50, 0)
    assert total == 4
    assert theirs.decision_id in {r.decision_id for r in everyone}
    only_bob, total = search_decisions(database, ops, DecisionFilter(username="bob"), 50, 0)
    assert [r.decision_id for r in only_bob] == [theirs.decision_id]
    assert search_decisions(database, alice, DecisionFilter(username="bob"), 50, 0) == ([], 0)
    assert search_decisions(database, alice, DecisionFilter(symbol="GOOG"), 50, 0) == ([], 0)
    assert search_decisions(database, Principal.guest(), DecisionFilter(), 50, 0) == ([], 0)


async def test_a_row_the_database_refuses_costs_only_itself(
    service: DecisionService, recorder: DecisionRecorder, people: dict[str, Principal], database: Database
) -> None:
    first = await service.decide(DecisionRequest("EURUSD", AS_OF), people["alice"])
    recorder.record_decision(first, people["alice"], None)  # the same id again: refused
    second = await service.decide(DecisionRequest("EURUSD", AS_OF), people["alice"])
    recorder.flush()
    assert stored(database) == 2
    assert find_decision(database, second.decision_id, people["alice"]).decision_id == second.decision_id
    assert recorder.lost == 1


async def test_closing_writes_what_is_still_queued(
    trained: Path, people: dict[str, Principal], database: Database
) -> None:
    # An hour between batches: only closing can have written these. The decisions come from a
    # service that records nothing itself, or its own recorder could write them first.
    slow = DecisionRecorder(database, flush_interval_s=3600)
    unrecorded = decision_service(trained, database, None)
    decisions = [await unrecorded.decide(DecisionRequest("EURUSD", AS_OF), people["alice"]) for _ in range(3)]
    before = stored(database)
    for decision in decisions:
        slow.record_decision(decision, people["alice"], None)
    slow.close()
    assert stored(database) == before + 3
    slow.record_decision(decisions[0], people["alice"], None)  # nothing is left to write it
    slow.flush()
    assert slow.lost == 1


def wait_for(condition: Callable[[], bool], seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


async def test_decisions_made_while_the_database_is_down_are_written_when_it_returns(
    trained: Path, postgres_url: str
) -> None:
    migrate.upgrade(postgres_url)
    host, port = "127.0.0.1", int(postgres_url.rsplit(":", 1)[1].split("/", 1)[0])
    everyone = Principal(None, None, Role.ADMIN, "jwt")
    with TcpProxy((host, port)) as proxy:
        db = Database(postgres_url.replace(f"{host}:{port}", f"{host}:{proxy.port}"))
        recorder = DecisionRecorder(db)
        settings = Settings(data_dir=trained)
        models, market = DecisionModels.load(trained), feature_source(settings)
        service = DecisionService(models, market, TradingAccountService(db), settings, recorder=recorder)
        before = await service.decide(DecisionRequest("EURUSD", AS_OF), Principal.guest())
        recorder.flush()
        proxy.go_down()
        during = await service.decide(DecisionRequest("EURUSD", AS_OF), Principal.guest())
        wait_for(lambda: recorder.failed_attempts > 0)
        proxy.come_back()
        recorder.flush()
        assert recorder.lost == 0
        for decision in (before, during):
            assert find_decision(db, decision.decision_id, everyone).feature_hash == decision.feature_hash
        recorder.close()
        db.dispose()
    # The cut left the driver holding connections whose sockets died under it; collect them here,
    # where that is expected, rather than in whichever later test the garbage collector runs.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()


def test_the_invariants_fields_are_never_empty() -> None:
    """Model name, version, feature hash and data as-of time: every record has them."""
    columns = TradingDecision.__table__.columns
    for name in ("model_name", "model_version", "feature_hash", "data_as_of"):
        assert not columns[name].nullable, name
