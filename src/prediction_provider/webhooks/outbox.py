"""Webhooks delivered at least once from a transactional outbox.

``announce`` is called inside the transaction of the state change it reports: it writes one
``webhook_outbox`` row per recipient, so the event exists exactly when the change does (a rollback
takes both away, a commit keeps both, a crash in between loses neither). ``WebhookDispatcher`` then
sends what is due, in every API process: on PostgreSQL each pass claims its rows with
``FOR UPDATE SKIP LOCKED`` and a conditional update, so two processes never send one message at
once; on SQLite one process delivers.

Schedule: the first attempt as soon as a dispatcher sees the message, then retries 10 s, 1 min,
5 min, 30 min, 2 h, 6 h and 6 h after each failure: 8 attempts in all (about 14.6 hours), then
the message is dead until someone re-arms it (``POST /api/v1/webhooks/deliveries/{id}/retry``).
A 2xx answer within the timeout is a delivery; anything else (another status, a redirect, a
timeout, a refused connection) is a failed attempt, logged in ``webhook_deliveries``. Every attempt
of a message carries the same ``webhook-id``, so receivers drop duplicates by it.
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from prediction_provider import __version__
from prediction_provider.clock import Clock
from prediction_provider.config import Settings
from prediction_provider.db.market_models import WebhookDelivery, WebhookEndpoint, WebhookMessage
from prediction_provider.db.session import Database
from prediction_provider.webhooks.signing import derived_secret, signed_headers
from prediction_provider.webhooks.urls import UnsafeWebhookUrl, resolve_target

log = logging.getLogger(__name__)

REQUEST_EVENTS = ("queued", "claimed", "completed", "failed", "cancelled", "expired", "scored", "rescored")
EVENT_TYPES = frozenset({*(f"prediction_request.{name}" for name in REQUEST_EVENTS), "wallet.low_balance"})
ALL_EVENTS = "*"

# Seconds from a failed attempt to the next; attempt n + 1 waits RETRY_DELAYS_S[n - 1].
RETRY_DELAYS_S = (10, 60, 300, 1800, 7200, 21600, 21600)
MAX_ATTEMPTS = len(RETRY_DELAYS_S) + 1  # 8
SEND_TIMEOUT_S = 10.0
# A claimed message is not due again for this long: if the process dies mid-send, another
# dispatcher sends it again afterwards (at least once). Longer than any one send.
CLAIM_LEASE_S = 60
MAX_ERROR_CHARS = 500
CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def subscribed(events: list[str], event_type: str) -> bool:
    """``events`` names ``event_type``, its family (``prediction_request.*``) or everything (``*``)."""
    family = event_type.split(".", 1)[0] + ".*"
    return any(event in (ALL_EVENTS, event_type, family) for event in events)


def new_id(prefix: str, now: datetime) -> str:
    """``prefix`` + a ULID: 48 bits of milliseconds then 80 random bits, in Crockford base32, so ids
    sort by creation time (``msg_...`` for messages, ``ep_...`` for endpoints)."""
    value = (int(now.timestamp() * 1000) << 80) | secrets.randbits(80)
    return prefix + "".join(CROCKFORD[(value >> shift) & 31] for shift in range(125, -1, -5))


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def announce(
    session: Session,
    *,
    clock: Clock,
    user_id: int,
    event_type: str,
    data: dict[str, Any],
    webhook_url: str | None = None,
) -> list[str]:
    """Writes the event for ``user_id`` into the outbox, in ``session``'s transaction; returns the
    message ids written.

    One message per active endpoint of the user subscribed to ``event_type``, plus one to
    ``webhook_url`` (a request's own URL, signed with the user's default secret, see
    ``GET /api/v1/webhooks/secret``). Nothing is sent here: the dispatcher sends once the
    transaction has committed. ``data`` must be JSON (money as decimal strings); the body is
    ``{"type", "id", "created_at", "data"}``, where ``id`` is the message's ``webhook-id``.
    """
    if event_type not in EVENT_TYPES:
        raise ValueError(f"unknown webhook event {event_type!r}")
    json.dumps(data, allow_nan=False)  # a non-JSON value fails the caller's transaction, not a send
    now = clock.now()
    endpoints = session.scalars(
        select(WebhookEndpoint).where(WebhookEndpoint.user_id == user_id, WebhookEndpoint.active.is_(True))
    ).all()
    targets: list[tuple[str | None, str]] = [
        (endpoint.id, endpoint.url) for endpoint in endpoints if subscribed(endpoint.events, event_type)
    ]
    if webhook_url:
        targets.append((None, webhook_url))
    written = []
    for endpoint_id, url in targets:
        message_id = new_id("msg_", now)
        payload = {"type": event_type, "id": message_id, "created_at": iso(now), "data": data}
        session.add(
            WebhookMessage(
                id=message_id, user_id=user_id, endpoint_id=endpoint_id, url=url, event_type=event_type,
                payload=payload, attempts=0, next_attempt_at=now, dead=False, created_at=now,
            )
        )  # fmt: skip
        written.append(message_id)
    session.flush()
    return written


@dataclass(frozen=True, slots=True)
class Claimed:
    """A message taken for one attempt: the attempt number fences the result (a dispatcher whose
    claim was overtaken records its attempt in the log but changes nothing else)."""

    message_id: str
    attempt: int
    url: str
    secret: str | None  # None: undeliverable (endpoint deleted, user gone)
    body: bytes


@dataclass(frozen=True, slots=True)
class Attempt:
    claimed: Claimed
    at: datetime
    status_code: int | None
    error: str | None
    duration_ms: float
    final: bool = False  # refused outright: no retry would do better

    @property
    def delivered(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


class WebhookDispatcher:
    """Sends due outbox messages: ``start()``/``stop()`` a background thread polling every
    ``PP_WEBHOOK_POLL_S``, or ``deliver_due()`` for one synchronous pass (tests, with a manual clock).

    Signing secrets: an endpoint's own, or for a per-request URL the user's default secret derived
    from ``server_secret`` (default ``PP_WEBHOOK_SECRET``, else ``PP_JWT_SECRET``; a random one per
    process when neither is set, as in the demo).
    """

    def __init__(
        self,
        db: Database,
        clock: Clock,
        settings: Settings,
        *,
        server_secret: str | None = None,
        concurrency: int = 8,
    ) -> None:
        self.db = db
        self.clock = clock
        self.allow_private = settings.webhook_allow_private
        self.poll_s = settings.webhook_poll_s
        chosen = server_secret or settings.webhook_secret or settings.jwt_secret
        if not chosen:
            log.warning("no PP_WEBHOOK_SECRET or PP_JWT_SECRET: default webhook secrets last one process")
            chosen = secrets.token_urlsafe(48)
        self._server_secret = chosen
        self._http = httpx.Client(
            timeout=SEND_TIMEOUT_S, follow_redirects=False, trust_env=False,
            headers={"user-agent": f"prediction-provider-webhooks/{__version__}"},
        )  # fmt: skip
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="webhook-send")
        self._pass_lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def user_secret(self, user_id: int) -> str:
        """The secret that signs deliveries to ``user_id``'s per-request ``webhook_url``s."""
        return derived_secret(self._server_secret, user_id)

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="webhook-dispatcher", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=SEND_TIMEOUT_S * 2)
            self._thread = None
        self._pool.shutdown(wait=True)
        self._http.close()

    def _run(self) -> None:
        while not self._stopping.wait(self.poll_s):
            try:
                self.deliver_due()
            except Exception:  # a bad pass (database away) must not end the thread
                log.exception("webhook delivery pass failed")

    def deliver_due(self, limit: int = 100) -> int:
        """One pass: claims up to ``limit`` due messages, attempts each once (concurrently), records
        the outcomes; returns how many attempts were made."""
        with self._pass_lock:
            claimed = self._claim(limit)
            attempts = list(self._pool.map(self._send, claimed))
            for attempt in attempts:
                self._record(attempt)
            return len(attempts)

    def _claim(self, limit: int) -> list[Claimed]:
        now = self.clock.now()
        taken = []
        with self.db.session() as session:
            due = session.scalars(
                select(WebhookMessage)
                .where(
                    WebhookMessage.delivered_at.is_(None),
                    WebhookMessage.dead.is_(False),
                    WebhookMessage.next_attempt_at <= now,
                )
                .order_by(WebhookMessage.next_attempt_at, WebhookMessage.id)
                .limit(limit)
                .with_for_update(skip_locked=True)
            ).all()
            for message in due:
                if message.attempts >= MAX_ATTEMPTS:  # its last attempt died with its process
                    session.execute(
                        update(WebhookMessage).where(WebhookMessage.id == message.id).values(dead=True)
                    )
                    continue
                attempt = message.attempts + 1
                won = session.execute(
                    update(WebhookMessage)
                    .where(
                        WebhookMessage.id == message.id,
                        WebhookMessage.attempts == message.attempts,
                        WebhookMessage.delivered_at.is_(None),
                        WebhookMessage.dead.is_(False),
                    )
                    .values(attempts=attempt, next_attempt_at=now + timedelta(seconds=CLAIM_LEASE_S))
                    .execution_options(synchronize_session=False)
                )
                if won.rowcount != 1:  # type: ignore[attr-defined]
                    continue
                body = json.dumps(message.payload, separators=(",", ":"), ensure_ascii=False).encode()
                taken.append(
                    Claimed(message.id, attempt, message.url, self._secret_of(session, message), body)
                )
        return taken

    def _secret_of(self, session: Session, message: WebhookMessage) -> str | None:
        if message.endpoint_id is not None:
            endpoint = session.get(WebhookEndpoint, message.endpoint_id)
            return endpoint.secret if endpoint is not None and endpoint.active else None
        if message.user_id is not None and message.url:
            return self.user_secret(message.user_id)
        return None

    def _send(self, claimed: Claimed) -> Attempt:
        at = self.clock.now()
        started = time.perf_counter()

        def elapsed_ms() -> float:
            return round((time.perf_counter() - started) * 1000, 3)

        if claimed.secret is None:
            return Attempt(claimed, at, None, "the endpoint was deleted", 0.0, final=True)
        try:
            target = resolve_target(claimed.url, allow_private=self.allow_private)
        except UnsafeWebhookUrl as exc:
            return Attempt(claimed, at, None, exc.message, elapsed_ms(), final=True)
        headers = signed_headers(claimed.secret, claimed.message_id, int(at.timestamp()), claimed.body)
        if target.host_header:
            headers["host"] = target.host_header
        extensions = {"sni_hostname": target.sni_hostname} if target.sni_hostname else None
        try:
            # Streamed and closed unread: only the status counts, and a huge answer costs nothing.
            with self._http.stream(
                "POST", target.url, content=claimed.body, headers=headers, extensions=extensions
            ) as response:
                status = response.status_code
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"[:MAX_ERROR_CHARS]
            return Attempt(claimed, at, None, error, elapsed_ms())
        failure = None if 200 <= status < 300 else f"HTTP {status}"
        return Attempt(claimed, at, status, failure, elapsed_ms())

    def _record(self, attempt: Attempt) -> None:
        claimed = attempt.claimed
        now = self.clock.now()
        values: dict[str, Any] = {"last_status": attempt.status_code}
        if attempt.delivered:
            values["delivered_at"] = now
        elif attempt.final or claimed.attempt >= MAX_ATTEMPTS:
            values["dead"] = True
        else:
            values["next_attempt_at"] = now + timedelta(seconds=RETRY_DELAYS_S[claimed.attempt - 1])
        with self.db.session() as session:
            session.add(
                WebhookDelivery(
                    message_id=claimed.message_id, attempt=claimed.attempt, at=attempt.at,
                    status_code=attempt.status_code, error=attempt.error, duration_ms=attempt.duration_ms,
                )
            )  # fmt: skip
            session.execute(
                update(WebhookMessage)
                .where(WebhookMessage.id == claimed.message_id, WebhookMessage.attempts == claimed.attempt)
                .values(**values)
                .execution_options(synchronize_session=False)
            )
