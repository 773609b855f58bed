"""What the webhook routes do: a user's endpoints (secret shown once), the delivery log of their
messages, and re-arming a message that failed."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from prediction_provider.clock import Clock
from prediction_provider.db.market_models import WebhookDelivery, WebhookEndpoint, WebhookMessage
from prediction_provider.db.session import Database
from prediction_provider.errors import Conflict, InvalidInput, MarketNotFound
from prediction_provider.webhooks.outbox import ALL_EVENTS, EVENT_TYPES, iso, new_id
from prediction_provider.webhooks.signing import generate_secret
from prediction_provider.webhooks.urls import check_webhook_url

MAX_ENDPOINTS_PER_USER = 20


class WebhookNotFound(MarketNotFound):
    """No such endpoint or message, or not the caller's (the two are not told apart)."""

    code = "webhook_not_found"


class TooManyWebhookEndpoints(Conflict):
    code = "too_many_webhook_endpoints"


class AlreadyDelivered(Conflict):
    code = "webhook_already_delivered"


def check_events(events: list[str]) -> list[str]:
    """The subscription list, deduplicated in order: event names, ``family.*`` or ``*``."""
    families = {event.split(".", 1)[0] + ".*" for event in EVENT_TYPES}
    unknown = [event for event in events if event not in EVENT_TYPES | families | {ALL_EVENTS}]
    if not events or unknown:
        error = f"unknown events {unknown}" if unknown else "name at least one event, or *"
        known = ", ".join(sorted(EVENT_TYPES))
        raise InvalidInput(
            f"{error}; events are {known}, family.* or *", [{"field": "events", "error": error}]
        )
    return list(dict.fromkeys(events))


def endpoint_public(endpoint: WebhookEndpoint) -> dict[str, Any]:
    return {
        "id": endpoint.id,
        "url": endpoint.url,
        "events": endpoint.events,
        "active": endpoint.active,
        "created_at": iso(endpoint.created_at),
    }


def create_endpoint(
    db: Database, clock: Clock, user_id: int, url: str, events: list[str], *, allow_private: bool
) -> dict[str, Any]:
    """A new endpoint, with its ``secret`` (shown only in this answer)."""
    url = check_webhook_url(url, allow_private=allow_private)
    events = check_events(events)
    with db.session() as session:
        active = session.scalar(
            select(func.count())
            .select_from(WebhookEndpoint)
            .where(WebhookEndpoint.user_id == user_id, WebhookEndpoint.active.is_(True))
        )
        if (active or 0) >= MAX_ENDPOINTS_PER_USER:
            raise TooManyWebhookEndpoints(
                f"at most {MAX_ENDPOINTS_PER_USER} webhook endpoints per user; delete one first",
                {"limit": MAX_ENDPOINTS_PER_USER},
            )
        now = clock.now()
        endpoint = WebhookEndpoint(
            id=new_id("ep_", now), user_id=user_id, url=url, secret=generate_secret(), events=events,
            active=True, created_at=now,
        )  # fmt: skip
        session.add(endpoint)
        session.flush()
        return {**endpoint_public(endpoint), "secret": endpoint.secret}


def list_endpoints(db: Database, user_id: int, limit: int, offset: int) -> tuple[list[dict[str, Any]], int]:
    mine = (WebhookEndpoint.user_id == user_id, WebhookEndpoint.active.is_(True))
    with db.session() as session:
        total = session.scalar(select(func.count()).select_from(WebhookEndpoint).where(*mine)) or 0
        rows = session.scalars(
            select(WebhookEndpoint)
            .where(*mine)
            .order_by(WebhookEndpoint.created_at, WebhookEndpoint.id)
            .limit(limit)
            .offset(offset)
        ).all()
        return [endpoint_public(row) for row in rows], total


def delete_endpoint(db: Database, user_id: int, endpoint_id: str) -> dict[str, Any]:
    """Deactivates the endpoint (kept for the delivery log): nothing more is sent to it, including
    messages still waiting for a retry."""
    with db.session() as session:
        endpoint = session.get(WebhookEndpoint, endpoint_id)
        if endpoint is None or endpoint.user_id != user_id or not endpoint.active:
            raise WebhookNotFound(f"no webhook endpoint {endpoint_id!r}")
        endpoint.active = False
        session.flush()
        return endpoint_public(endpoint)


def message_status(message: WebhookMessage) -> str:
    if message.delivered_at is not None:
        return "delivered"
    return "dead" if message.dead else "pending"


def message_public(message: WebhookMessage, attempts: list[WebhookDelivery]) -> dict[str, Any]:
    return {
        "id": message.id,
        "event_type": message.event_type,
        "endpoint_id": message.endpoint_id,
        "url": message.url,
        "status": message_status(message),
        "attempts": message.attempts,
        "next_attempt_at": None if message.delivered_at or message.dead else iso(message.next_attempt_at),
        "delivered_at": iso(message.delivered_at) if message.delivered_at else None,
        "last_status": message.last_status,
        "created_at": iso(message.created_at),
        "payload": message.payload,
        "deliveries": [
            {
                "attempt": row.attempt,
                "at": iso(row.at),
                "status_code": row.status_code,
                "error": row.error,
                "duration_ms": row.duration_ms,
            }
            for row in attempts
        ],
    }


def with_attempts(session: Session, messages: list[WebhookMessage]) -> list[dict[str, Any]]:
    ids = [message.id for message in messages]
    log: dict[str, list[WebhookDelivery]] = {message_id: [] for message_id in ids}
    if ids:
        rows = session.scalars(
            select(WebhookDelivery)
            .where(WebhookDelivery.message_id.in_(ids))
            .order_by(WebhookDelivery.message_id, WebhookDelivery.id)
        ).all()
        for row in rows:
            log[row.message_id].append(row)
    return [message_public(message, log[message.id]) for message in messages]


def list_deliveries(
    db: Database, user_id: int | None, limit: int, offset: int
) -> tuple[list[dict[str, Any]], int]:
    """Messages, newest first, each with its attempts; ``user_id`` None: everyone's (admins)."""
    mine = () if user_id is None else (WebhookMessage.user_id == user_id,)
    with db.session() as session:
        total = session.scalar(select(func.count()).select_from(WebhookMessage).where(*mine)) or 0
        messages = session.scalars(
            select(WebhookMessage)
            .where(*mine)
            .order_by(WebhookMessage.created_at.desc(), WebhookMessage.id.desc())
            .limit(limit)
            .offset(offset)
        ).all()
        return with_attempts(session, list(messages)), total


def retry_message(db: Database, clock: Clock, message_id: str, user_id: int | None) -> dict[str, Any]:
    """Re-arms a dead or failing message: due now, with a fresh budget of attempts (the log keeps
    the earlier ones). ``user_id`` None: any user's message (admins)."""
    with db.session() as session:
        message = session.get(WebhookMessage, message_id)
        if message is None or (user_id is not None and message.user_id != user_id):
            raise WebhookNotFound(f"no webhook message {message_id!r}")
        if message.delivered_at is not None:
            raise AlreadyDelivered(f"message {message_id} was delivered at {iso(message.delivered_at)}")
        session.execute(
            update(WebhookMessage)
            .where(WebhookMessage.id == message_id, WebhookMessage.delivered_at.is_(None))
            .values(dead=False, attempts=0, next_attempt_at=clock.now())
            .execution_options(synchronize_session=False)
        )
        session.refresh(message)
        return with_attempts(session, [message])[0]
