"""The Idempotency-Key store's cases (tests/unit/test_idempotency_store.py) on the real PostgreSQL:
the same claims, replays, refusals, expiry, stale takeovers and races, under its row locking."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from prediction_provider.db import migrate
from prediction_provider.db.session import Database
from tests.unit.test_idempotency_store import (  # noqa: F401 - collected here on PostgreSQL
    clock,
    store,
    test_a_255_character_key_is_accepted,
    test_a_finished_key_never_goes_stale,
    test_a_finished_key_replays_its_first_answer,
    test_a_key_in_flight_answers_409,
    test_a_stale_claim_is_free_again_and_the_slow_first_request_cannot_overwrite_it,
    test_an_abandoned_key_is_free_and_stores_nothing,
    test_begin_purges_now_and_then,
    test_binary_answers_replay_byte_for_byte,
    test_expired_keys_are_purged,
    test_finish_in_stores_the_answer_with_the_callers_transaction,
    test_keys_belong_to_a_user,
    test_keys_expire_after_24_hours,
    test_malformed_keys_are_refused,
    test_racing_begins_claim_a_free_key_once,
    test_the_same_key_with_another_request_is_refused,
)


@pytest.fixture
def database(postgres_url: str) -> Iterator[Database]:
    migrate.upgrade(postgres_url)
    db = Database(postgres_url)
    yield db
    db.dispose()
