"""Server-side sessions of the web dashboard: a random id in a cookie, only its digest stored.

A session is the dashboard's own credential and is never read by the API. It ends at sign-out, after
``idle`` without use, at ``lifetime`` after sign-in, and with every change that must cut a user off:
deactivation, a role change, a new password or a new API key (``end_for_user``, which the account
service calls in the same transaction as the change, so no window is left where both hold).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from prediction_provider.accounts import credentials
from prediction_provider.accounts.principal import Principal
from prediction_provider.accounts.roles import Role
from prediction_provider.db.base import utcnow
from prediction_provider.db.models import DashboardSession, User
from prediction_provider.db.session import Database

SESSION_BYTES = 32
# last_seen_at is written at most this often per session, not on every page view.
TOUCH_EVERY = timedelta(minutes=1)


@dataclass(frozen=True, slots=True)
class WebSession:
    """A live session, as a page needs it: who, and the digest its CSRF token is derived from."""

    session_id: int
    digest: str
    principal: Principal
    expires_at: datetime


def end_for_user(session: Session, user_id: int) -> None:
    """End every dashboard session of ``user_id`` inside the caller's transaction."""
    session.execute(delete(DashboardSession).where(DashboardSession.user_id == user_id))


class WebSessions:
    def __init__(self, db: Database, secret: str, idle: timedelta, lifetime: timedelta) -> None:
        self.db = db
        self.secret = secret  # CSRF tokens are HMACs of a session's digest under it
        self.idle = idle
        self.lifetime = lifetime

    def create(self, principal: Principal, via: str, address: str | None, user_agent: str | None) -> str:
        """A new session for a signed-in user; returns the cookie value (shown to nobody else)."""
        if principal.user_id is None:
            raise ValueError("a dashboard session needs an account")
        token = secrets.token_urlsafe(SESSION_BYTES)
        now = utcnow()
        with self.db.session() as session:
            session.add(
                DashboardSession(
                    digest=credentials.api_key_digest(token),
                    user_id=principal.user_id,
                    created_at=now,
                    last_seen_at=now,
                    expires_at=now + min(self.idle, self.lifetime),
                    address=(address or "")[:64] or None,
                    user_agent=(user_agent or "")[:256] or None,
                    via=via,
                )
            )
        return token

    def lookup(self, token: str) -> WebSession | None:
        """The live session behind a cookie value; None when unknown, expired or its user inactive."""
        digest = credentials.api_key_digest(token)
        now = utcnow()
        with self.db.session() as session:
            row = session.execute(
                select(DashboardSession, User)
                .join(User, User.id == DashboardSession.user_id)
                .where(DashboardSession.digest == digest)
            ).first()
            if row is None:
                return None
            record, user = row
            if not credentials.digests_match(record.digest, digest):
                return None
            if record.expires_at <= now or not user.is_active:
                session.delete(record)
                return None
            if now - record.last_seen_at >= TOUCH_EVERY:
                record.last_seen_at = now
                record.expires_at = min(now + self.idle, record.created_at + self.lifetime)
            principal = Principal(user.id, user.username, Role(user.role), "session")
            return WebSession(record.id, digest, principal, record.expires_at)

    def end(self, token: str) -> bool:
        """Sign-out: delete the session behind ``token``."""
        with self.db.session() as session:
            result = session.execute(
                delete(DashboardSession).where(DashboardSession.digest == credentials.api_key_digest(token))
            )
            return bool(getattr(result, "rowcount", 0))

    def revoke(self, session_id: int) -> bool:
        """An admin's revoke of one session (the admin page)."""
        with self.db.session() as session:
            result = session.execute(delete(DashboardSession).where(DashboardSession.id == session_id))
            return bool(getattr(result, "rowcount", 0))

    def is_live(self, session_id: int) -> bool:
        """For live streams, which re-check every tick that their session still stands."""
        with self.db.session() as session:
            found = session.scalar(
                select(DashboardSession.id)
                .join(User, User.id == DashboardSession.user_id)
                .where(
                    DashboardSession.id == session_id,
                    DashboardSession.expires_at > utcnow(),
                    User.is_active.is_(True),
                )
            )
            return found is not None

    def active(
        self, *, limit: int, offset: int, user_id: int | None = None
    ) -> tuple[list[dict[str, Any]], int]:
        """Live sessions, newest first, and how many there are (the admin page)."""
        query = (
            select(DashboardSession, User.username, User.role)
            .join(User, User.id == DashboardSession.user_id)
            .where(DashboardSession.expires_at > utcnow())
        )
        if user_id is not None:
            query = query.where(DashboardSession.user_id == user_id)
        with self.db.session() as session:
            total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
            rows = session.execute(
                query.order_by(DashboardSession.created_at.desc(), DashboardSession.id.desc())
                .offset(offset)
                .limit(limit)
            ).all()
            return [_public(record, username, role) for record, username, role in rows], total

    def sweep(self) -> int:
        """Delete expired sessions; returns how many."""
        with self.db.session() as session:
            result = session.execute(delete(DashboardSession).where(DashboardSession.expires_at <= utcnow()))
            return int(getattr(result, "rowcount", 0) or 0)


def _public(record: DashboardSession, username: str, role: str) -> dict[str, Any]:
    return {
        "id": record.id, "user_id": record.user_id, "username": username, "role": role,
        "created_at": record.created_at, "last_seen_at": record.last_seen_at, "expires_at": record.expires_at,
        "address": record.address, "user_agent": record.user_agent, "via": record.via,
    }  # fmt: skip
