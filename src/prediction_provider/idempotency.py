"""Idempotency-Key: one contract for every mutating route, jobs and money included.

A keyed request is answered once; every retry within 24 h gets that first answer again. The
state lives in ``idempotency_keys`` (PK ``(user_id, key)``):

* ``begin`` claims the key (a committed ``in_progress`` row) and answers ``Started``, or
  ``Replay`` with the stored answer, or refuses: the same key with another fingerprint
  (method, path, canonical body) → 422 ``idempotency_key_reused``; a first request still in
  flight → 409 ``idempotency_in_progress``.
* ``finish`` stores a 2xx answer (state ``done``); ``abandon`` deletes the claim of a refused or
  failed request, so a refusal (any non-2xx) stores nothing and the key stays free, as at
  Stripe and Alpaca.

Rows past ``expires_at`` (created + 24 h) are free: a ``begin`` takes them over in place, and
``purge_expired`` deletes them (``begin`` runs it at most once per ``purge_interval``).

An ``in_progress`` row older than ``stale_after`` (a process killed between claim and answer)
is free again. That cannot execute a request twice where it matters, because the claim is the
first guard, not the only one: a job submit is ``UNIQUE(owner_id, idempotency_key)`` on
``prediction_jobs`` (a retry finds the first job), a paid request is such a job, and every ledger
transfer id is deterministic (``hold:{rid}``, ``dep:{key}``...), so re-running a money step
hits a unique key instead of moving money twice. A route that wants its answer stored in its
own business transaction calls ``finish_in(session, ...)`` there; the middleware's later
``finish`` then leaves the row as it is.

Service layer only: no FastAPI here (api/idempotency.py is the ASGI side).
"""

from __future__ import annotations

import base64
import hashlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import and_, delete, or_, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from prediction_provider.clock import Clock, SystemClock
from prediction_provider.db.ledger_models import IdempotencyKey
from prediction_provider.db.session import Database
from prediction_provider.errors import IdempotencyInProgress, IdempotencyKeyInvalid, IdempotencyKeyReused

log = logging.getLogger(__name__)

MAX_KEY_LENGTH = 255
TTL = timedelta(hours=24)
STALE_AFTER = timedelta(minutes=5)
PURGE_INTERVAL = timedelta(minutes=10)
IN_PROGRESS = "in_progress"
DONE = "done"
# Stored beside the replayed headers when a body is not UTF-8 (a binary tensor answer).
BODY_ENCODING = "__body_encoding__"


@dataclass(frozen=True, slots=True)
class Started:
    """The key is claimed for this request: answer it, then ``finish`` or ``abandon``.

    ``created_at`` identifies this claim: a later claim of the same key (after this one went
    stale) has another, so a slow first request cannot overwrite or delete the newer one."""

    user_id: int
    key: str
    fingerprint: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Replay:
    """The first answer to this key, to send again as it was."""

    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


def check_key(key: str) -> str:
    """``key`` if it is 1 to 255 printable ASCII characters; else 422 ``idempotency_key_invalid``."""
    if not 1 <= len(key) <= MAX_KEY_LENGTH or not key.isascii() or not key.isprintable():
        raise IdempotencyKeyInvalid(
            f"Idempotency-Key must be 1 to {MAX_KEY_LENGTH} printable ASCII characters",
            [{"field": "Idempotency-Key", "error": f"1 to {MAX_KEY_LENGTH} printable ASCII characters"}],
        )
    return key


def canonical_body(body: bytes) -> bytes:
    """JSON bodies with sorted keys and no insignificant whitespace, so ``{"a":1, "b":2}`` and
    ``{"b": 2, "a": 1}`` are one request; anything else (form data, a file, broken JSON) as sent."""
    if not body:
        return b""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body
    return orjson.dumps(parsed, option=orjson.OPT_SORT_KEYS)


def fingerprint(method: str, path: str, body: bytes) -> str:
    """SHA-256 of the method, the path (with its query string, if any) and the canonical body."""
    digest = hashlib.sha256()
    digest.update(method.upper().encode())
    digest.update(b"\n")
    digest.update(path.encode())
    digest.update(b"\n")
    digest.update(canonical_body(body))
    return digest.hexdigest()


class IdempotencyStore:
    """Keys of one database; thread-safe (each call has its own session)."""

    def __init__(
        self,
        db: Database,
        clock: Clock | None = None,
        ttl: timedelta = TTL,
        stale_after: timedelta = STALE_AFTER,
        purge_interval: timedelta = PURGE_INTERVAL,
    ) -> None:
        self.db = db
        self.clock: Clock = clock if clock is not None else SystemClock()
        self.ttl = ttl
        self.stale_after = stale_after
        self.purge_interval = purge_interval
        self._next_purge: datetime | None = None

    # -- the request's life ----------------------------------------------------------------------

    def begin(self, user_id: int, key: str, method: str, path: str, body: bytes) -> Started | Replay:
        """Claim ``key`` for this request, or the stored first answer to it.

        Raises ``IdempotencyKeyInvalid`` (422), ``IdempotencyKeyReused`` (422) when the key's
        first request differs, ``IdempotencyInProgress`` (409) while that one is still running."""
        check_key(key)
        sha = fingerprint(method, path, body)
        now = self.clock.now()
        self._purge_now_and_then(now)
        for _ in range(3):  # a race for the same free key: one insert or takeover wins, others re-read
            claim = IdempotencyKey(
                user_id=user_id, key=key, method=method.upper()[:8], path=path[:512], body_sha256=sha,
                state=IN_PROGRESS, created_at=now, expires_at=now + self.ttl,
            )  # fmt: skip
            with self.db.session() as session:
                row = session.get(IdempotencyKey, (user_id, key))
                if row is None:
                    session.add(claim)
                    try:
                        session.flush()
                    except IntegrityError:
                        session.rollback()
                        continue
                    return Started(user_id, key, sha, now)
                if self._is_free(row, now):
                    if self._take_over(session, row, claim):
                        return Started(user_id, key, sha, now)
                    continue
                return self._answer_for(row, sha, key)
        # Three lost races in a row: someone else holds it now.
        raise IdempotencyInProgress(*_in_progress(key))

    def finish(
        self, started: Started, status: int, body: bytes, headers: Mapping[str, str] | None = None
    ) -> bool:
        """Store the answer under the claim (state ``done``). ``False`` when the claim is no longer
        this request's (it went stale and was taken over, or ``finish_in`` stored it already)."""
        with self.db.session() as session:
            return self.finish_in(session, started, status, body, headers)

    def finish_in(
        self,
        session: Session,
        started: Started,
        status: int,
        body: bytes,
        headers: Mapping[str, str] | None = None,
    ) -> bool:
        """``finish`` inside the caller's transaction: the answer commits or rolls back with the
        business rows it describes, so a crash cannot leave them written and the key unanswered."""
        stored_headers = dict(headers or {})
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            text = base64.b64encode(body).decode("ascii")
            stored_headers[BODY_ENCODING] = "base64"
        result = session.execute(
            update(IdempotencyKey)
            .where(*_this_claim(started))
            .values(state=DONE, response_status=status, response_body=text, response_headers=stored_headers)
        )
        return _rowcount(result) == 1

    def abandon(self, started: Started) -> bool:
        """Free the key of a request that was refused or failed: nothing is stored, a retry runs."""
        with self.db.session() as session:
            result = session.execute(delete(IdempotencyKey).where(*_this_claim(started)))
            return _rowcount(result) == 1

    def purge_expired(self) -> int:
        """Delete every key past its 24 h; the number deleted."""
        now = self.clock.now()
        with self.db.session() as session:
            result = session.execute(delete(IdempotencyKey).where(IdempotencyKey.expires_at <= now))
            return _rowcount(result)

    # -- inside begin ----------------------------------------------------------------------------

    def _is_free(self, row: IdempotencyKey, now: datetime) -> bool:
        if row.expires_at <= now:
            return True
        return row.state == IN_PROGRESS and row.created_at <= now - self.stale_after

    def _take_over(self, session: Session, row: IdempotencyKey, claim: IdempotencyKey) -> bool:
        """Replace an expired or stale row by this claim; a conditional ``UPDATE``, so of two
        requests taking over one row only one matches (the other re-reads the new claim)."""
        now = claim.created_at
        free = or_(
            IdempotencyKey.expires_at <= now,
            and_(IdempotencyKey.state == IN_PROGRESS, IdempotencyKey.created_at <= now - self.stale_after),
        )
        values = {
            "method": claim.method, "path": claim.path, "body_sha256": claim.body_sha256,
            "state": IN_PROGRESS, "response_status": None, "response_body": None,
            "response_headers": None, "created_at": claim.created_at, "expires_at": claim.expires_at,
        }  # fmt: skip
        result = session.execute(
            update(IdempotencyKey)
            .where(IdempotencyKey.user_id == row.user_id, IdempotencyKey.key == row.key, free)
            .values(**values)
            .execution_options(synchronize_session=False)
        )
        if _rowcount(result) == 1:
            log.info("idempotency key %r of user %s taken over (%s)", row.key, row.user_id, row.state)
            return True
        session.rollback()
        return False

    @staticmethod
    def _answer_for(row: IdempotencyKey, sha: str, key: str) -> Replay:
        if row.body_sha256 != sha:
            raise IdempotencyKeyReused(
                "this Idempotency-Key was already used for a different request",
                {"idempotency_key": key, "method": row.method, "path": row.path},
            )
        if row.state != DONE or row.response_status is None:
            raise IdempotencyInProgress(*_in_progress(key))
        headers = dict(row.response_headers or {})
        encoding = headers.pop(BODY_ENCODING, None)
        text = row.response_body or ""
        body = base64.b64decode(text) if encoding == "base64" else text.encode("utf-8")
        return Replay(row.response_status, body, {str(k): str(v) for k, v in headers.items()})

    def _purge_now_and_then(self, now: datetime) -> None:
        if self._next_purge is not None and now < self._next_purge:
            return
        self._next_purge = now + self.purge_interval
        try:
            purged = self.purge_expired()
        except Exception:  # housekeeping: expired rows are free to begin anyway
            log.exception("could not purge expired idempotency keys")
            return
        if purged:
            log.info("purged %d expired idempotency keys", purged)


def _this_claim(started: Started) -> tuple[Any, ...]:
    return (
        IdempotencyKey.user_id == started.user_id,
        IdempotencyKey.key == started.key,
        IdempotencyKey.state == IN_PROGRESS,
        IdempotencyKey.body_sha256 == started.fingerprint,
        IdempotencyKey.created_at == started.created_at,
    )


def _in_progress(key: str) -> tuple[str, dict[str, str]]:
    return (
        "the first request with this Idempotency-Key is still in progress; retry when it has finished",
        {"idempotency_key": key},
    )


def _rowcount(result: Any) -> int:
    return int(getattr(result, "rowcount", 0) or 0)
