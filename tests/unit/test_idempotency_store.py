"""The Idempotency-Key store on SQLite (tests/integration/test_idempotency_store_postgres.py runs
the same cases on PostgreSQL): fingerprints, replays, refusals, expiry and stale claims."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from prediction_provider.clock import ManualClock
from prediction_provider.db import migrate
from prediction_provider.db.ledger_models import IdempotencyKey
from prediction_provider.db.session import Database
from prediction_provider.errors import IdempotencyInProgress, IdempotencyKeyInvalid, IdempotencyKeyReused
from prediction_provider.idempotency import (
    IdempotencyStore,
    Replay,
    Started,
    canonical_body,
    fingerprint,
)
from tests.integration.database_fixtures import sqlite_url

START = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
USER = 7
PATH = "/api/v1/predictions"
BODY = b'{"model": "m", "features": {"x": 1.0, "y": 2.0}}'


@pytest.fixture
def database(tmp_path: Path) -> Iterator[Database]:
    url = sqlite_url(tmp_path)
    migrate.upgrade(url)
    db = Database(url)
    yield db
    db.dispose()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START)


@pytest.fixture
def store(database: Database, clock: ManualClock) -> IdempotencyStore:
    return IdempotencyStore(database, clock)


def started(store: IdempotencyStore, key: str = "k-1", body: bytes = BODY, user: int = USER) -> Started:
    claim = store.begin(user, key, "POST", PATH, body)
    assert isinstance(claim, Started), claim
    return claim


def rows(db: Database) -> int:
    with db.session() as session:
        return int(session.scalar(select(func.count()).select_from(IdempotencyKey)) or 0)


def test_json_bodies_are_fingerprinted_canonically() -> None:
    reordered = b'{"features":{"y":2.0,"x":1.0},\n "model":"m"}'
    assert canonical_body(BODY) == canonical_body(reordered)
    assert fingerprint("POST", PATH, BODY) == fingerprint("post", PATH, reordered)
    assert fingerprint("POST", PATH, BODY) != fingerprint("PUT", PATH, BODY)
    assert fingerprint("POST", PATH, BODY) != fingerprint("POST", PATH + "/batch", BODY)
    assert fingerprint("POST", PATH, BODY) != fingerprint("POST", PATH, BODY.replace(b"2.0", b"3.0"))
    # Not JSON: the bytes as sent, whitespace included.
    assert canonical_body(b"a=1&b=2") == b"a=1&b=2"
    assert fingerprint("POST", PATH, b"{broken") != fingerprint("POST", PATH, b"{broken ")


def test_a_finished_key_replays_its_first_answer(store: IdempotencyStore) -> None:
    claim = started(store)
    answer = b'{"id": "job-1", "created": true}'
    assert store.finish(claim, 202, answer, {"content-type": "application/json"})
    replay = store.begin(USER, "k-1", "POST", PATH, BODY)
    assert replay == Replay(202, answer, {"content-type": "application/json"})
    # The same request in another JSON spelling is the same request.
    assert isinstance(
        store.begin(USER, "k-1", "POST", PATH, b'{"features":{"y":2.0,"x":1.0},"model":"m"}'), Replay
    )


def test_binary_answers_replay_byte_for_byte(store: IdempotencyStore) -> None:
    claim = started(store)
    answer = bytes(range(256))
    store.finish(claim, 200, answer, {"content-type": "application/octet-stream"})
    replay = store.begin(USER, "k-1", "POST", PATH, BODY)
    assert isinstance(replay, Replay)
    assert replay.body == answer
    assert replay.headers == {"content-type": "application/octet-stream"}


def test_the_same_key_with_another_request_is_refused(store: IdempotencyStore) -> None:
    claim = started(store)
    for method, path, body in (
        ("POST", PATH, b'{"model": "other"}'),
        ("PUT", PATH, BODY),
        ("POST", "/x", BODY),
    ):
        with pytest.raises(IdempotencyKeyReused) as refused:
            store.begin(USER, "k-1", method, path, body)
        assert refused.value.code == "idempotency_key_reused"
    store.finish(claim, 201, b"{}")
    with pytest.raises(IdempotencyKeyReused):
        store.begin(USER, "k-1", "POST", PATH, b'{"model": "other"}')


def test_a_key_in_flight_answers_409(store: IdempotencyStore) -> None:
    started(store)
    with pytest.raises(IdempotencyInProgress) as busy:
        store.begin(USER, "k-1", "POST", PATH, BODY)
    assert busy.value.code == "idempotency_in_progress"


def test_keys_belong_to_a_user(store: IdempotencyStore) -> None:
    started(store, user=1)
    started(store, user=2, body=b'{"model": "other"}')


def test_an_abandoned_key_is_free_and_stores_nothing(store: IdempotencyStore, database: Database) -> None:
    claim = started(store)
    assert store.abandon(claim)
    assert rows(database) == 0
    again = started(store, body=b'{"model": "corrected"}')  # a refusal does not pin the body
    assert again.fingerprint != claim.fingerprint


@pytest.mark.parametrize("key", ["", "k" * 256, "caf\u00e9", "line\nbreak"])
def test_malformed_keys_are_refused(store: IdempotencyStore, key: str) -> None:
    with pytest.raises(IdempotencyKeyInvalid) as refused:
        store.begin(USER, key, "POST", PATH, BODY)
    assert refused.value.code == "idempotency_key_invalid"


def test_a_255_character_key_is_accepted(store: IdempotencyStore) -> None:
    started(store, key="k" * 255)


def test_keys_expire_after_24_hours(store: IdempotencyStore, clock: ManualClock, database: Database) -> None:
    store.finish(started(store), 202, b'{"first": true}')
    clock.advance(timedelta(hours=24).total_seconds() - 1)
    assert isinstance(store.begin(USER, "k-1", "POST", PATH, BODY), Replay)
    clock.advance(1)
    # Expired: free, even for another body, and taken over in place.
    fresh = started(store, body=b'{"model": "new"}')
    assert fresh.created_at == clock.now()
    assert rows(database) == 1


def test_expired_keys_are_purged(store: IdempotencyStore, clock: ManualClock, database: Database) -> None:
    store.finish(started(store, key="old"), 200, b"{}")
    clock.advance(3600)
    started(store, key="newer")
    clock.advance(23 * 3600)
    assert store.purge_expired() == 1
    assert rows(database) == 1


def test_begin_purges_now_and_then(database: Database, clock: ManualClock) -> None:
    store = IdempotencyStore(database, clock, purge_interval=timedelta(hours=1))
    for n in range(3):
        store.finish(started(store, key=f"k-{n}"), 200, b"{}")
    clock.advance(25 * 3600)
    started(store, key="later")
    assert rows(database) == 1


def test_a_stale_claim_is_free_again_and_the_slow_first_request_cannot_overwrite_it(
    store: IdempotencyStore, clock: ManualClock
) -> None:
    crashed = started(store)
    clock.advance(store.stale_after.total_seconds() - 1)
    with pytest.raises(IdempotencyInProgress):
        store.begin(USER, "k-1", "POST", PATH, BODY)
    clock.advance(1)
    retry = started(store)
    assert retry.created_at > crashed.created_at
    assert not store.finish(crashed, 202, b'{"from": "the first"}')
    assert not store.abandon(crashed)
    assert store.finish(retry, 202, b'{"from": "the retry"}')
    replay = store.begin(USER, "k-1", "POST", PATH, BODY)
    assert isinstance(replay, Replay)
    assert replay.body == b'{"from": "the retry"}'


def test_a_finished_key_never_goes_stale(store: IdempotencyStore, clock: ManualClock) -> None:
    store.finish(started(store), 202, b"{}")
    clock.advance(3600)
    assert isinstance(store.begin(USER, "k-1", "POST", PATH, BODY), Replay)


def test_finish_in_stores_the_answer_with_the_callers_transaction(
    store: IdempotencyStore, database: Database
) -> None:
    claim = started(store)

    def failing_business_write() -> None:
        with database.session() as session:
            assert store.finish_in(session, claim, 201, b'{"rolled": "back"}')
            raise RuntimeError("the business write failed")

    with pytest.raises(RuntimeError):
        failing_business_write()
    with pytest.raises(IdempotencyInProgress):  # still in flight: nothing was stored
        store.begin(USER, "k-1", "POST", PATH, BODY)
    with database.session() as session:
        assert store.finish_in(session, claim, 201, b'{"in": "the transaction"}')
    assert not store.finish(claim, 201, b'{"the": "middleware later"}')  # already done: left as is
    replay = store.begin(USER, "k-1", "POST", PATH, BODY)
    assert isinstance(replay, Replay)
    assert replay.body == b'{"in": "the transaction"}'


def test_racing_begins_claim_a_free_key_once(store: IdempotencyStore, clock: ManualClock) -> None:
    def attempt(_: int) -> str:
        try:
            return type(store.begin(USER, "race", "POST", PATH, BODY)).__name__
        except IdempotencyInProgress:
            return "in_progress"

    for _ in range(2):  # a free key, then the same key once its claim has gone stale
        with ThreadPoolExecutor(8) as pool:
            outcomes = list(pool.map(attempt, range(16)))
        assert outcomes.count("Started") == 1, outcomes
        assert outcomes.count("in_progress") == 15
        clock.advance(store.stale_after.total_seconds())
