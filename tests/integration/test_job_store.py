"""The job store's lifecycle rules on SQLite and on the real PostgreSQL: claims, leases, exactly-once."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from prediction_provider.accounts.principal import Principal
from prediction_provider.accounts.roles import Role
from prediction_provider.db import migrate
from prediction_provider.db.models import PredictionJob, PredictionJobEvent
from prediction_provider.db.session import Database
from prediction_provider.errors import Conflict, JobNotFound, JobStateConflict
from prediction_provider.jobs.records import Claim, ClaimRefused, JobFilter, JobStatus, NewJob, input_digest
from prediction_provider.jobs.store import JobStore
from tests.integration.database_fixtures import sqlite_url

OWNER = Principal(None, "someone", Role.CLIENT, "api_key")
LEASE = timedelta(minutes=5)


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    url = sqlite_url(tmp_path) if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    migrate.upgrade(url)
    db = Database(url)
    yield db
    db.dispose()


@pytest.fixture
def store(database: Database) -> JobStore:
    return JobStore(database, LEASE, max_attempts=2)


def new_job(features: dict[str, float] | None = None, key: str | None = None) -> NewJob:
    payload = {"features": features or {"x": 1.0}}
    return NewJob(
        kind="rows",
        model_reference="m",
        input=payload,
        input_hash=input_digest(payload),
        idempotency_key=key,
    )


def claimed(store: JobStore, job_id: str, worker: str = "w1") -> Claim:
    claim = store.claim(job_id, worker)
    assert isinstance(claim, Claim), claim
    return claim


def completions(db: Database, job_id: str) -> int:
    with db.session() as session:
        return int(
            session.scalar(
                select(func.count())
                .select_from(PredictionJobEvent)
                .where(PredictionJobEvent.job_id == job_id, PredictionJobEvent.status == "completed")
            )
            or 0
        )


def test_input_hash_ignores_key_order() -> None:
    assert input_digest({"a": 1, "b": [1, 2]}) == input_digest({"b": [1, 2], "a": 1})
    assert input_digest({"a": 1}) != input_digest({"a": 2})


def test_a_job_moves_from_pending_through_processing_to_completed_once(store: JobStore) -> None:
    job, created = store.create(OWNER, new_job())
    assert created
    assert job.status == JobStatus.PENDING
    claim = claimed(store, job.id)
    assert claim.job.status == JobStatus.PROCESSING
    assert claim.job.attempts == 1
    assert store.claim(job.id, "w2") is ClaimRefused.BUSY
    assert store.complete(claim, {"answer": 1}, model_name="m", model_version="1")
    assert not store.complete(claim, {"answer": 2}, model_name="m", model_version="1")
    stored = store.get(job.id)
    assert (stored.status, stored.result, stored.progress) == (JobStatus.COMPLETED, {"answer": 1}, 100.0)
    assert stored.finished_at is not None
    assert stored.finished_at.tzinfo is not None
    assert [event.status for event in store.events(job.id)] == ["pending", "processing", "completed"]
    assert store.claim(job.id, "w2") is ClaimRefused.FINISHED


def test_many_workers_racing_for_one_job_finish_it_once(store: JobStore) -> None:
    job, _ = store.create(OWNER, new_job())

    def attempt(worker: int) -> bool:
        claim = store.claim(job.id, f"w{worker}")
        return isinstance(claim, Claim) and store.complete(claim, worker, model_name=None, model_version=None)

    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(attempt, range(16)))
    assert outcomes.count(True) == 1
    assert completions(store.db, job.id) == 1


def test_a_job_whose_worker_went_silent_is_taken_over_and_the_old_claim_is_void(database: Database) -> None:
    expired = JobStore(database, timedelta(0), max_attempts=3)  # every lease has already run out
    job, _ = expired.create(OWNER, new_job())
    first = claimed(expired, job.id, "dead-worker")
    second = claimed(expired, job.id, "live-worker")
    assert second.job.attempts == 2
    assert not expired.complete(first, "late", model_name=None, model_version=None)
    assert not expired.heartbeat(first)
    assert expired.complete(second, "fresh", model_name=None, model_version=None)
    assert expired.get(job.id).result == "fresh"
    assert completions(database, job.id) == 1


def test_idempotency_key_returns_the_same_job_and_refuses_another_body(store: JobStore) -> None:
    first, created = store.create(OWNER, new_job(key="k1"))
    again, created_again = store.create(OWNER, new_job(key="k1"))
    assert (created, created_again) == (True, False)
    assert again.id == first.id
    with pytest.raises(Conflict):
        store.create(OWNER, new_job({"x": 2.0}, key="k1"))
    other, _ = store.create(OWNER, new_job(key="k2"))
    assert other.id != first.id


def test_only_pending_jobs_change_and_finished_jobs_do_not_cancel(store: JobStore) -> None:
    job, _ = store.create(OWNER, new_job())
    store.update_pending(job.id, {"input": {"features": {"x": 5.0}}})
    assert store.get(job.id).input == {"features": {"x": 5.0}}
    claim = claimed(store, job.id)
    with pytest.raises(JobStateConflict):
        store.update_pending(job.id, {"input": None})
    store.complete(claim, 1, model_name=None, model_version=None)
    with pytest.raises(JobStateConflict):
        store.cancel(job.id)
    assert store.get(job.id).status == JobStatus.COMPLETED
    with pytest.raises(JobNotFound):
        store.cancel("missing")


def test_cancelling_a_running_job_drops_its_late_result(store: JobStore) -> None:
    job, _ = store.create(OWNER, new_job())
    claim = claimed(store, job.id)
    assert store.cancel(job.id).status == JobStatus.CANCELLED
    assert not store.heartbeat(claim)
    assert not store.complete(claim, "too late", model_name=None, model_version=None)
    assert store.get(job.id).result is None


def test_a_released_job_is_retried_until_its_attempts_run_out(store: JobStore) -> None:
    job, _ = store.create(OWNER, new_job())
    assert store.release(claimed(store, job.id), "registry away")
    assert store.get(job.id).status == JobStatus.PENDING
    assert store.release(claimed(store, job.id), "registry still away")
    failed = store.get(job.id)
    assert failed.status == JobStatus.FAILED
    assert failed.error is not None
    assert failed.error["code"] == "attempts_exhausted"


def test_jobs_of_a_dead_process_are_recovered_at_once_and_live_ones_are_left(store: JobStore) -> None:
    dead, _ = store.create(OWNER, new_job({"x": 1.0}))
    live, _ = store.create(OWNER, new_job({"x": 2.0}))
    claimed(store, dead.id, "inprocess@host:111")
    claimed(store, live.id, "inprocess@host:222")
    recovered = store.recover_orphans("inprocess@host:", lambda worker: worker.endswith(":222"))
    assert recovered == [dead.id]
    assert store.get(dead.id).status == JobStatus.PENDING
    assert store.get(live.id).status == JobStatus.PROCESSING
    next_claim = store.claim_next("inprocess@host:333")
    assert next_claim is not None
    assert next_claim.job.id == dead.id
    assert store.claim_next("inprocess@host:333") is None


def test_a_split_job_finishes_when_its_last_chunk_does(store: JobStore) -> None:
    parent, _ = store.create(
        OWNER, NewJob(kind="dataset", model_reference="m", input_hash="h", input_path="/d.csv")
    )
    chunk_ids = store.split(claimed(store, parent.id), [{"start": 0, "stop": 5}, {"start": 5, "stop": 9}])
    assert chunk_ids is not None
    assert len(chunk_ids) == 2
    assert store.claim(parent.id, "w") is ClaimRefused.FINISHED  # nobody runs the parent itself now
    first = store.claim_next("w")
    assert first is not None
    assert first.job.id in chunk_ids
    [other] = set(chunk_ids) - {first.job.id}
    store.complete(first, {"rows": 5}, model_name=None, model_version=None)
    assert store.update_parent_progress(parent.id) == (1, 2)
    assert store.get(parent.id).progress == 50.0
    listed, total = store.search(JobFilter(), 10, 0)
    assert total == 1  # chunks are internal
    assert [job.id for job in listed] == [parent.id]
    assert store.finish_parent(parent.id, JobStatus.FAILED, {"error": {"code": "x"}}, "w", None)
    assert not store.finish_parent(parent.id, JobStatus.COMPLETED, {}, "w", None)
    assert store.get(other).status == JobStatus.CANCELLED


def test_counts_and_search_filters(store: JobStore) -> None:
    ids = [store.create(OWNER, new_job({"x": float(i)}))[0].id for i in range(3)]
    store.cancel(ids[0])
    counts = store.counts()
    assert (counts["pending"], counts["cancelled"]) == (2, 1)
    cancelled, total = store.search(JobFilter(status=JobStatus.CANCELLED), 10, 0)
    assert total == 1
    assert cancelled[0].id == ids[0]
    page, total = store.search(JobFilter(), 2, 0)
    assert total == 3
    assert len(page) == 2
    with store.db.session() as session:
        assert session.scalar(select(func.count()).select_from(PredictionJob)) == 3


def test_a_job_never_dispatched_is_discarded_without_a_trace(store: JobStore) -> None:
    job, _ = store.create(OWNER, new_job())
    store.discard(job.id)
    with pytest.raises(JobNotFound):
        store.get(job.id)
    assert store.events(job.id) == []


def test_only_jobs_pending_since_long_before_are_sent_again(store: JobStore) -> None:
    job, _ = store.create(OWNER, new_job())
    assert store.undispatched(timedelta(hours=1)) == []  # just created: its message is on its way
    assert store.undispatched(timedelta(0)) == [job.id]
    store.mark_dispatched([job.id])
    assert store.undispatched(timedelta(hours=1)) == []
    claimed(store, job.id)
    assert store.undispatched(timedelta(0)) == []  # running: nothing to send


def test_workers_claiming_the_next_job_at_once_each_get_a_different_one(store: JobStore) -> None:
    ids = {store.create(OWNER, new_job({"x": float(i)}))[0].id for i in range(24)}

    def drain(worker: int) -> list[str]:
        taken = []
        while (claim := store.claim_next(f"w{worker}")) is not None:
            taken.append(claim.job.id)
        return taken

    with ThreadPoolExecutor(4) as pool:
        taken = [job_id for batch in pool.map(drain, range(4)) for job_id in batch]
    assert sorted(taken) == sorted(ids)  # every job once, none twice
    assert store.claim_next("late") is None


def test_a_split_job_whose_finisher_died_after_the_last_chunk_is_found(store: JobStore) -> None:
    parent, _ = store.create(
        OWNER, NewJob(kind="dataset", model_reference="m", input_hash="h", input_path="/d.csv")
    )
    [chunk_id] = store.split(claimed(store, parent.id), [{"start": 0, "stop": 5}]) or []
    assert store.stalled_parents() == []  # its chunk has not run yet
    store.complete(claimed(store, chunk_id), {"rows": 5}, model_name="m", model_version="1")
    assert store.stalled_parents() == [(parent.id, 1)]  # completed chunk, parent never finished
    assert store.finish_parent(parent.id, JobStatus.COMPLETED, {"result": {"rows": 5}}, "w", None)
    assert store.stalled_parents() == []


def test_the_events_page_lists_each_transition_with_the_status_it_left(store: JobStore) -> None:
    job, _ = store.create(OWNER, new_job())
    assert store.release(claimed(store, job.id, "w1"), "registry away")
    assert store.complete(claimed(store, job.id, "w2"), {"ok": 1}, model_name="m", model_version="1")
    everything, total = store.events_page(job.id, 100, 0)
    assert total == 5
    moves = [(left, event.status, event.worker) for event, left in everything]
    assert moves == [
        (None, "pending", None),
        ("pending", "processing", "w1"),
        ("processing", "pending", "w1"),
        ("pending", "processing", "w2"),
        ("processing", "completed", "w2"),
    ]
    assert everything[0][0].detail == "submitted"
    assert everything[2][0].detail == "released: registry away"
    assert [event.at for event, _ in everything] == sorted(event.at for event, _ in everything)
    middle, total = store.events_page(job.id, 2, 2)
    assert total == 5
    assert [(left, event.status) for event, left in middle] == [
        ("processing", "pending"),
        ("pending", "processing"),
    ]
    assert store.events_page(job.id, 2, 5) == ([], 5)
    assert store.events_page("no-such-job", 10, 0) == ([], 0)


def test_a_read_token_digest_is_stored_and_can_be_replaced(store: JobStore) -> None:
    anonymous = Principal.guest()
    job, _ = store.create(anonymous, replace(new_job(), read_token_digest="a" * 64))
    assert store.get(job.id).read_token_digest == "a" * 64
    store.replace_read_token(job.id, "b" * 64)
    assert store.get(job.id).read_token_digest == "b" * 64
