"""The webhook outbox against a real HTTP receiver: written in the change's transaction, delivered
at least once with a valid signature, retried on the schedule (a manual clock, no sleeping), dead
after the last attempt, re-armed by hand; on PostgreSQL two dispatchers never send one message twice
in one pass."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select

from prediction_provider.clock import ManualClock
from prediction_provider.config import Settings
from prediction_provider.db import migrate
from prediction_provider.db.market_models import WebhookDelivery, WebhookMessage
from prediction_provider.db.models import User
from prediction_provider.db.session import Database
from prediction_provider.webhooks.endpoints import (
    AlreadyDelivered,
    create_endpoint,
    delete_endpoint,
    list_deliveries,
    retry_message,
)
from prediction_provider.webhooks.outbox import (
    CLAIM_LEASE_S,
    MAX_ATTEMPTS,
    RETRY_DELAYS_S,
    WebhookDispatcher,
    announce,
)
from prediction_provider.webhooks.signing import verify
from tests.integration.database_fixtures import sqlite_url
from tests.webhook_receiver import WebhookReceiver

START = datetime(2026, 11, 2, 12, 0, tzinfo=UTC)
DATA = {"request_id": "01JREQ", "status": "completed", "money": {"price": "0.500000", "charged": "0.500000"}}


def make_database(url: str) -> Database:
    migrate.upgrade(url)
    return Database(url)


def add_user(db: Database, name: str) -> int:
    with db.session() as session:
        user = User(
            username=name, email=f"{name}@example.com", role="client", is_active=True, password_hash="-"
        )
        session.add(user)
        session.flush()
        return user.id


def settings_for(tmp_path: Path, *, allow_private: bool = True) -> Settings:
    return Settings(data_dir=tmp_path, webhook_secret="webhook-test-secret-" + "w" * 30,
                    webhook_allow_private=allow_private)  # fmt: skip


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START)


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = make_database(sqlite_url(tmp_path))
    yield database
    database.dispose()


@pytest.fixture
def dispatcher(db: Database, clock: ManualClock, tmp_path: Path) -> Iterator[WebhookDispatcher]:
    sender = WebhookDispatcher(db, clock, settings_for(tmp_path))
    yield sender
    sender.stop()


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as server:
        yield server


def endpoint(
    db: Database, clock: ManualClock, user_id: int, url: str, events: list[str] | None = None
) -> dict:
    return create_endpoint(db, clock, user_id, url, events or ["*"], allow_private=True)


def announce_committed(
    db: Database, clock: ManualClock, user_id: int, event: str, **kwargs: object
) -> list[str]:
    with db.session() as session:
        return announce(session, clock=clock, user_id=user_id, event_type=event, data=DATA, **kwargs)  # type: ignore[arg-type]


def message(db: Database, message_id: str) -> WebhookMessage:
    with db.session() as session:
        row = session.get(WebhookMessage, message_id)
        assert row is not None
        return row


def attempts_of(db: Database, message_id: str) -> list[WebhookDelivery]:
    with db.session() as session:
        query = (
            select(WebhookDelivery)
            .where(WebhookDelivery.message_id == message_id)
            .order_by(WebhookDelivery.id)
        )
        return list(session.scalars(query).all())


def test_an_announcement_rolled_back_with_its_change_is_never_sent(
    db: Database, clock: ManualClock, dispatcher: WebhookDispatcher, receiver: WebhookReceiver
) -> None:
    user = add_user(db, "alice")
    endpoint(db, clock, user, receiver.url)
    written: list[str] = []

    def change_that_fails() -> None:
        with db.session() as session:
            event = "prediction_request.completed"
            written.extend(announce(session, clock=clock, user_id=user, event_type=event, data=DATA))
            raise RuntimeError("the state change failed")

    with pytest.raises(RuntimeError):
        change_that_fails()
    assert len(written) == 1  # written, then rolled back with the change
    assert dispatcher.deliver_due() == 0
    assert receiver.received == []
    with db.session() as session:
        assert session.scalars(select(WebhookMessage)).all() == []


def test_a_committed_announcement_is_delivered_once_with_a_valid_signature(
    db: Database, clock: ManualClock, dispatcher: WebhookDispatcher, receiver: WebhookReceiver
) -> None:
    user = add_user(db, "alice")
    created = endpoint(db, clock, user, receiver.url)
    [message_id] = announce_committed(db, clock, user, "prediction_request.completed")
    assert dispatcher.deliver_due() == 1
    assert dispatcher.deliver_due() == 0
    clock.advance(3600)
    assert dispatcher.deliver_due() == 0
    [got] = receiver.received
    assert verify(created["secret"], got.headers, got.body, now=START) == message_id
    assert got.headers["webhook-timestamp"] == str(int(START.timestamp()))
    assert got.headers["content-type"] == "application/json"
    body = json.loads(got.body)
    assert body == {"type": "prediction_request.completed", "id": message_id,
                    "created_at": "2026-11-02T12:00:00Z", "data": DATA}  # fmt: skip
    assert message(db, message_id).delivered_at == START
    [attempt] = attempts_of(db, message_id)
    assert (attempt.attempt, attempt.status_code, attempt.error) == (1, 200, None)
    assert attempt.duration_ms is not None
    assert attempt.duration_ms >= 0


def test_a_per_request_url_is_signed_with_the_users_default_secret(
    db: Database, clock: ManualClock, dispatcher: WebhookDispatcher, receiver: WebhookReceiver
) -> None:
    alice, bob = add_user(db, "alice"), add_user(db, "bob")
    [message_id] = announce_committed(db, clock, alice, "prediction_request.queued", webhook_url=receiver.url)
    assert dispatcher.deliver_due() == 1
    [got] = receiver.received
    assert verify(dispatcher.user_secret(alice), got.headers, got.body, now=clock.now()) == message_id
    assert dispatcher.user_secret(alice) != dispatcher.user_secret(bob)


def test_each_endpoint_gets_the_events_it_subscribed_to(
    db: Database, clock: ManualClock, dispatcher: WebhookDispatcher, receiver: WebhookReceiver
) -> None:
    alice, bob = add_user(db, "alice"), add_user(db, "bob")
    endpoint(db, clock, alice, receiver.url + "/completed", ["prediction_request.completed"])
    endpoint(db, clock, alice, receiver.url + "/requests", ["prediction_request.*"])
    endpoint(db, clock, alice, receiver.url + "/all", ["*"])
    endpoint(db, clock, bob, receiver.url + "/bob", ["*"])
    for event in ("prediction_request.queued", "prediction_request.completed", "wallet.low_balance"):
        announce_committed(db, clock, alice, event)
    assert dispatcher.deliver_due() == 6
    by_path: dict[str, list[str]] = {}
    for got in receiver.received:
        by_path.setdefault(got.path, []).append(json.loads(got.body)["type"])
    assert sorted(by_path["/hook/completed"]) == ["prediction_request.completed"]
    assert sorted(by_path["/hook/requests"]) == ["prediction_request.completed", "prediction_request.queued"]
    assert len(by_path["/hook/all"]) == 3
    assert "/hook/bob" not in by_path


def test_a_failing_receiver_is_retried_on_the_schedule_with_the_same_id_then_dead(
    db: Database, clock: ManualClock, dispatcher: WebhookDispatcher, receiver: WebhookReceiver
) -> None:
    user = add_user(db, "alice")
    created = endpoint(db, clock, user, receiver.url)
    receiver.status = 500
    [message_id] = announce_committed(db, clock, user, "prediction_request.failed")
    assert dispatcher.deliver_due() == 1
    for delay in RETRY_DELAYS_S:
        clock.advance(delay - 1)
        assert dispatcher.deliver_due() == 0, f"retried before {delay} s"
        clock.advance(1)
        assert dispatcher.deliver_due() == 1, f"not retried after {delay} s"
    assert len(receiver.received) == MAX_ATTEMPTS == 8
    assert set(receiver.ids()) == {message_id}
    for got in receiver.received:  # each attempt is signed afresh, at its own time
        assert (
            verify(created["secret"], got.headers, got.body, now=clock.now(), tolerance_s=10**6) == message_id
        )
    assert len({got.headers["webhook-timestamp"] for got in receiver.received}) == MAX_ATTEMPTS
    clock.advance(7 * 24 * 3600)
    assert dispatcher.deliver_due() == 0
    dead = message(db, message_id)
    assert dead.dead
    assert dead.delivered_at is None
    assert dead.attempts == MAX_ATTEMPTS
    assert dead.last_status == 500
    assert [(row.attempt, row.status_code, row.error) for row in attempts_of(db, message_id)] == [
        (n, 500, "HTTP 500") for n in range(1, MAX_ATTEMPTS + 1)
    ]
    [listed], total = list_deliveries(db, user, 10, 0)
    assert total == 1
    assert listed["status"] == "dead"
    assert len(listed["deliveries"]) == MAX_ATTEMPTS

    receiver.status = 204
    rearmed = retry_message(db, clock, message_id, user)
    assert rearmed["status"] == "pending"
    assert rearmed["attempts"] == 0
    assert dispatcher.deliver_due() == 1
    assert receiver.ids()[-1] == message_id
    assert message(db, message_id).delivered_at == clock.now()
    with pytest.raises(AlreadyDelivered):
        retry_message(db, clock, message_id, user)


def test_a_manual_retry_sends_a_failing_message_at_once(
    db: Database, clock: ManualClock, dispatcher: WebhookDispatcher, receiver: WebhookReceiver
) -> None:
    user = add_user(db, "alice")
    endpoint(db, clock, user, receiver.url)
    receiver.status = 503
    [message_id] = announce_committed(db, clock, user, "prediction_request.expired")
    assert dispatcher.deliver_due() == 1
    receiver.status = 200
    assert dispatcher.deliver_due() == 0  # next attempt in 10 s
    retry_message(db, clock, message_id, user)
    assert dispatcher.deliver_due() == 1
    assert receiver.ids() == [message_id, message_id]
    assert message(db, message_id).delivered_at is not None


def test_redirects_are_not_followed_and_count_as_failures(
    db: Database, clock: ManualClock, dispatcher: WebhookDispatcher, receiver: WebhookReceiver
) -> None:
    user = add_user(db, "alice")
    endpoint(db, clock, user, receiver.url)
    receiver.status = 302
    [message_id] = announce_committed(db, clock, user, "prediction_request.claimed")
    assert dispatcher.deliver_due() == 1
    assert len(receiver.received) == 1
    [attempt] = attempts_of(db, message_id)
    assert attempt.status_code == 302
    assert attempt.error == "HTTP 302"
    assert message(db, message_id).next_attempt_at == START.replace(second=10)


def test_a_receiver_that_is_down_is_logged_and_retried(
    db: Database, clock: ManualClock, dispatcher: WebhookDispatcher
) -> None:
    user = add_user(db, "alice")
    with WebhookReceiver() as gone:
        url = gone.url  # a port that nothing listens on once the receiver stops
    endpoint(db, clock, user, url)
    [message_id] = announce_committed(db, clock, user, "prediction_request.cancelled")
    assert dispatcher.deliver_due() == 1
    [attempt] = attempts_of(db, message_id)
    assert attempt.status_code is None
    assert attempt.error
    assert "Connect" in attempt.error
    assert not message(db, message_id).dead


def test_a_message_whose_sender_died_mid_send_is_sent_again_after_the_lease(
    db: Database, clock: ManualClock, dispatcher: WebhookDispatcher, receiver: WebhookReceiver
) -> None:
    user = add_user(db, "alice")
    endpoint(db, clock, user, receiver.url)
    [message_id] = announce_committed(db, clock, user, "prediction_request.completed")
    assert [claimed.message_id for claimed in dispatcher._claim(10)] == [message_id]  # then "kill -9"
    assert dispatcher.deliver_due() == 0
    clock.advance(CLAIM_LEASE_S)
    assert dispatcher.deliver_due() == 1
    assert receiver.ids() == [message_id]
    assert [row.attempt for row in attempts_of(db, message_id)] == [2]


def test_a_deleted_endpoint_gets_nothing_more(
    db: Database, clock: ManualClock, dispatcher: WebhookDispatcher, receiver: WebhookReceiver
) -> None:
    user = add_user(db, "alice")
    created = endpoint(db, clock, user, receiver.url)
    [waiting] = announce_committed(db, clock, user, "prediction_request.completed")
    delete_endpoint(db, user, created["id"])
    assert announce_committed(db, clock, user, "prediction_request.completed") == []
    assert dispatcher.deliver_due() == 1
    assert receiver.received == []
    assert message(db, waiting).dead
    assert attempts_of(db, waiting)[0].error == "the endpoint was deleted"


def test_private_targets_are_refused_at_delivery_unless_allowed(
    db: Database, clock: ManualClock, tmp_path: Path, receiver: WebhookReceiver
) -> None:
    guarded = WebhookDispatcher(db, clock, settings_for(tmp_path, allow_private=False))
    try:
        user = add_user(db, "alice")
        [message_id] = announce_committed(
            db, clock, user, "prediction_request.queued", webhook_url=receiver.url
        )
        assert guarded.deliver_due() == 1
        assert receiver.received == []
        assert message(db, message_id).dead
        [attempt] = attempts_of(db, message_id)
        assert attempt.status_code is None
        assert "private" in (attempt.error or "")
    finally:
        guarded.stop()


def test_the_background_thread_delivers_what_is_due(
    db: Database, clock: ManualClock, tmp_path: Path, receiver: WebhookReceiver
) -> None:
    sender = WebhookDispatcher(db, clock, settings_for(tmp_path).model_copy(update={"webhook_poll_s": 0.01}))
    user = add_user(db, "alice")
    endpoint(db, clock, user, receiver.url)
    [message_id] = announce_committed(db, clock, user, "prediction_request.completed")
    sender.start()
    try:
        for _ in range(500):  # waits for the thread, at most 5 s; no time-based assert
            if receiver.received:
                break
            threading.Event().wait(0.01)
    finally:
        sender.stop()
    assert receiver.ids() == [message_id]


def test_two_dispatchers_on_postgresql_never_send_one_message_twice_in_a_pass(
    postgres_url: str, clock: ManualClock, tmp_path: Path, receiver: WebhookReceiver
) -> None:
    first_db = make_database(postgres_url)
    second_db = Database(first_db.url)
    settings = settings_for(tmp_path)
    first, second = (
        WebhookDispatcher(first_db, clock, settings),
        WebhookDispatcher(second_db, clock, settings),
    )
    try:
        users = [add_user(first_db, f"user{n}") for n in range(4)]
        for user in users:
            endpoint(first_db, clock, user, receiver.url)
        written = [
            message_id
            for n in range(15)
            for user in users
            for message_id in announce_committed(first_db, clock, user, "prediction_request.completed")
        ]
        assert len(written) == 60
        gate = threading.Barrier(2)
        counts: dict[str, int] = {}

        def run(name: str, sender: WebhookDispatcher) -> None:
            gate.wait()
            total = 0
            while made := sender.deliver_due(limit=7):
                total += made
            counts[name] = total

        threads = [threading.Thread(target=run, args=item) for item in (("a", first), ("b", second))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        with first_db.session() as session:
            rows = session.scalars(select(WebhookDelivery)).all()
            failed = [(row.message_id, row.status_code, row.error) for row in rows if row.status_code != 200]
            assert not failed, failed
            assert sorted(receiver.ids()) == sorted(written)  # each exactly once
            assert counts["a"] + counts["b"] == 60
            assert sorted(row.message_id for row in rows) == sorted(written)
            assert all(row.attempt == 1 and row.status_code == 200 for row in rows)
    finally:
        first.stop()
        second.stop()
        first_db.dispose()
        second_db.dispose()
