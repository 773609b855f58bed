"""Account lifecycle: users, activation, passwords, API keys, tokens, and who a credential is.

Every operation runs in one database transaction, so a failed step leaves
stored data as it was.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, object_session

from prediction_provider.accounts import credentials
from prediction_provider.accounts.principal import Principal
from prediction_provider.accounts.principal_cache import PrincipalCache
from prediction_provider.accounts.roles import Role
from prediction_provider.accounts.web_sessions import end_for_user
from prediction_provider.db.base import utcnow
from prediction_provider.db.models import User
from prediction_provider.db.session import Database
from prediction_provider.errors import (
    AccountInactive,
    AuthenticationFailed,
    Conflict,
    InvalidInput,
    UserNotFound,
)

USERNAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_.-]{2,63}$")
EMAIL_PATTERN = re.compile(r"^[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9.-]{1,189}\.[A-Za-z]{2,24}$")
MIN_PASSWORD = 10
MAX_PASSWORD = 128


def public_user(user: User) -> dict[str, Any]:
    return {
        "id": user.id,
        "username": user.username,
        "email": user.email,
        "full_name": user.full_name,
        "role": user.role,
        "is_active": user.is_active,
        "has_api_key": user.api_key_digest is not None,
        "created_at": user.created_at,
        "updated_at": user.updated_at,
    }


ROLE_NAMES = tuple(r.value for r in Role)
# The seed's names for roles, accepted on input and stored as ours.
ROLE_ALIASES: dict[str, str] = {"administrator": Role.ADMIN.value}


def validate_fields(
    username: str | None = None,
    email: str | None = None,
    password: str | None = None,
    role: str | None = None,
) -> None:
    checks = [
        ("username", username, lambda v: bool(USERNAME_PATTERN.match(v)),
         "3-64 characters: lower-case letters, digits, '_', '.', '-'"),
        ("email", email, lambda v: bool(EMAIL_PATTERN.match(v)), "not an e-mail address"),
        ("password", password, lambda v: MIN_PASSWORD <= len(v) <= MAX_PASSWORD,
         f"{MIN_PASSWORD} to {MAX_PASSWORD} characters"),
        ("role", role, lambda v: v in ROLE_NAMES, f"one of {list(ROLE_NAMES)}"),
    ]  # fmt: skip
    errors = [{"field": f, "error": e} for f, value, ok, e in checks if value is not None and not ok(value)]
    if errors:
        raise InvalidInput("invalid account fields", {"errors": errors})


class AccountService:
    def __init__(
        self,
        db: Database,
        jwt_secret: str,
        token_lifetime: timedelta,
        require_activation: bool,
        cache: PrincipalCache | None = None,
    ) -> None:
        self.db = db
        self._secret = jwt_secret
        self._lifetime = token_lifetime
        self._require_activation = require_activation
        self.cache = cache or PrincipalCache(ttl_s=0)

    # -- users -------------------------------------------------------------------

    def create_user(
        self,
        username: str,
        email: str,
        password: str,
        role: str = Role.CLIENT,
        full_name: str | None = None,
        active: bool | None = None,
    ) -> dict[str, Any]:
        role = ROLE_ALIASES.get(str(role), role)
        validate_fields(username, email, password, role)
        if role == Role.GUEST:
            raise InvalidInput(
                "guest is for anonymous callers", {"errors": [{"field": "role", "error": "guest"}]}
            )
        user = User(
            username=username,
            email=email.lower(),
            full_name=full_name,
            role=str(role),
            is_active=(not self._require_activation) if active is None else active,
            password_hash=credentials.hash_password(password),
        )
        try:
            with self.db.session() as session:
                session.add(user)
                session.flush()
                return public_user(user)
        except IntegrityError as exc:
            raise Conflict("username or e-mail already registered", {"username": username}) from exc

    def bootstrap_admin(self, username: str, password: str, email: str) -> dict[str, Any] | None:
        """Create the first admin, active, unless an admin exists already."""
        with self.db.session() as session:
            if session.scalar(select(func.count()).select_from(User).where(User.role == Role.ADMIN)):
                return None
        return self.create_user(username, email, password, Role.ADMIN, active=True)

    def _user(self, session: Session, username: str | None = None, user_id: int | None = None) -> User:
        query = select(User).where(User.username == username if username is not None else User.id == user_id)
        user = session.scalar(query)
        if user is None:
            raise UserNotFound("no such user", {"user": username if username is not None else user_id})
        return user

    def get(self, username: str | None = None, user_id: int | None = None) -> dict[str, Any]:
        with self.db.session() as session:
            return public_user(self._user(session, username, user_id))

    def set_active(self, username: str, active: bool) -> dict[str, Any]:
        with self.db.session() as session:
            user = self._user(session, username)
            _apply_active(user, active)
            if not active:
                end_for_user(session, user.id)
            changed = public_user(user)
        self.cache.forget_user(changed["id"])
        return changed

    def update_user(self, user_id: int, changes: dict[str, Any]) -> dict[str, Any]:
        """Admin edit: e-mail, full name, role, active flag."""
        if isinstance(changes.get("role"), str):
            changes = {**changes, "role": ROLE_ALIASES.get(changes["role"], changes["role"])}
        validate_fields(email=changes.get("email"), role=changes.get("role"))
        try:
            with self.db.session() as session:
                user = self._user(session, user_id=user_id)
                if (changes.get("role") not in (None, user.role)) or changes.get("is_active") is False:
                    end_for_user(session, user.id)  # a role change or deactivation signs the user out
                for field in ("email", "full_name", "role"):
                    if field in changes and changes[field] is not None:
                        setattr(user, field, changes[field].lower() if field == "email" else changes[field])
                if changes.get("is_active") is not None:
                    _apply_active(user, bool(changes["is_active"]))
                session.flush()
                changed = public_user(user)
        except IntegrityError as exc:
            raise Conflict("e-mail already registered") from exc
        self.cache.forget_user(user_id)
        return changed

    def update_profile(self, user_id: int, email: str | None, full_name: str | None) -> dict[str, Any]:
        """A user's own edit: never role or active flag."""
        return self.update_user(user_id, {"email": email, "full_name": full_name})

    def change_password(self, user_id: int, current: str, new: str) -> None:
        validate_fields(password=new)
        with self.db.session() as session:
            user = self._user(session, user_id=user_id)
            if not credentials.verify_password(user.password_hash, current):
                raise AuthenticationFailed("current password is wrong")
            user.password_hash = credentials.hash_password(new)
            end_for_user(session, user_id)

    def set_password(self, user_id: int, new: str) -> None:
        """Without the current password: for the CLI and the demo (no route calls this)."""
        validate_fields(password=new)
        with self.db.session() as session:
            self._user(session, user_id=user_id).password_hash = credentials.hash_password(new)
            end_for_user(session, user_id)

    def list_users(
        self, role: str | None, active: bool | None, search: str | None, *, limit: int, offset: int
    ) -> tuple[list[dict[str, Any]], int]:
        """``limit`` users from ``offset`` in id order, and how many match in all."""
        query = select(User)
        if role:
            query = query.where(User.role == role)
        if active is not None:
            query = query.where(User.is_active == active)
        if search:
            pattern = f"%{search.replace('%', '').replace('_', '')}%"
            query = query.where(or_(User.username.ilike(pattern), User.email.ilike(pattern)))
        with self.db.session() as session:
            total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
            rows = session.scalars(query.order_by(User.id).offset(offset).limit(limit))
            return [public_user(u) for u in rows], total

    # -- credentials ---------------------------------------------------------------

    def _verified(self, session: Session, username: str, password: str) -> User:
        user = session.scalar(select(User).where(User.username == username))
        # Hash even for unknown users, so timing does not tell which usernames exist.
        if user is None:
            credentials.verify_password(_DUMMY_HASH, password)
            raise AuthenticationFailed("wrong username or password")
        if not credentials.verify_password(user.password_hash, password):
            raise AuthenticationFailed("wrong username or password")
        if not user.is_active:
            raise AccountInactive("this account is not active")
        return user

    def principal_for_password(self, username: str, password: str) -> Principal:
        """Who a username and password are (the dashboard's sign-in); the same checks as ``login``."""
        with self.db.session() as session:
            user = self._verified(session, username, password)
            return Principal(user.id, user.username, Role(user.role), "password")

    def login(self, username: str, password: str) -> dict[str, Any]:
        with self.db.session() as session:
            user = self._verified(session, username, password)
            token, expires = credentials.issue_token(
                self._secret, user.id, user.username, user.role, self._lifetime
            )
        return {"access_token": token, "token_type": "bearer", "expires_at": expires}

    def api_key_from_password(self, username: str, password: str) -> dict[str, Any]:
        """The account's first key, or a new one in place of the old (which stops working at once).

        A user who lost the key gets a new one with the password alone, as with any other
        credential; the answer says (``replaced``) whether an older key was revoked.
        """
        with self.db.session() as session:
            issued = self._new_key(self._verified(session, username, password))
        self.cache.forget_user(issued["user_id"])
        return issued

    def regenerate_api_key(self, user_id: int) -> dict[str, Any]:
        """A new key; the old one stops working at once."""
        with self.db.session() as session:
            issued = self._new_key(self._user(session, user_id=user_id))
        self.cache.forget_user(user_id)
        return issued

    def issue_api_key(self, username: str) -> dict[str, Any]:
        """An admin's issue or rotation of a user's key, without the user's password.

        Also for an inactive account: the key works once the account is activated (an
        activation revokes only keys issued before the last deactivation).
        """
        with self.db.session() as session:
            issued = self._new_key(self._user(session, username))
        self.cache.forget_user(issued["user_id"])
        return issued

    @staticmethod
    def _new_key(user: User) -> dict[str, Any]:
        """Also ends the user's dashboard sessions: a new key is what a user does when one leaked."""
        replaced = user.api_key_digest is not None
        session = object_session(user)
        if session is not None:
            end_for_user(session, user.id)
        key = credentials.new_api_key()
        user.api_key_digest = credentials.api_key_digest(key)
        user.api_key_created_at = utcnow()
        return {
            "api_key": key, "created_at": user.api_key_created_at, "username": user.username,
            "user_id": user.id, "replaced": replaced,
        }  # fmt: skip

    def cached_principal_for_key(self, api_key: str) -> Principal | None:
        """The caller from the cache, without I/O; None means: ask ``principal_for_key``."""
        return self.cache.get("key:" + credentials.api_key_digest(api_key))

    def principal_for_key(self, api_key: str) -> Principal:
        digest = credentials.api_key_digest(api_key)
        with self.db.session() as session:
            user = session.scalar(select(User).where(User.api_key_digest == digest))
            if (
                user is None
                or user.api_key_digest is None
                or not credentials.digests_match(user.api_key_digest, digest)
            ):
                raise AuthenticationFailed("invalid API key")
            if not user.is_active:
                raise AccountInactive("this account is not active")
            if _revoked(user, user.api_key_created_at):
                raise AuthenticationFailed("this API key was revoked when the account was deactivated")
            principal = Principal(user.id, user.username, Role(user.role), "api_key")
        self.cache.put("key:" + digest, principal)
        return principal

    def principal_for_token(self, token: str) -> Principal:
        try:
            claims = credentials.read_token(self._secret, token)
        except credentials.InvalidToken as exc:
            raise AuthenticationFailed("invalid or expired token") from exc
        # Per token, not per user: a token from before a deactivation must not ride on a newer one.
        cache_key = f"jwt:{claims.user_id}:{claims.issued_at.isoformat()}"
        cached = self.cache.get(cache_key)
        if cached is not None:
            return cached
        with self.db.session() as session:
            user = session.get(User, claims.user_id)
            if user is None:
                raise AuthenticationFailed("invalid or expired token")
            if not user.is_active:
                raise AccountInactive("this account is not active")
            if _revoked(user, claims.issued_at):
                raise AuthenticationFailed("this token was revoked when the account was deactivated")
            # The role is read now, not from the token, so a change applies at once.
            principal = Principal(user.id, user.username, Role(user.role), "jwt")
        self.cache.put(cache_key, principal)
        return principal


def _apply_active(user: User, active: bool) -> None:
    """Every (de)activation goes through here, so that a deactivation revokes for good.

    A deactivation stamps ``credentials_revoked_at``: keys and tokens issued until then never
    work again. Until the account is activated they still name it (so the answer is 403
    ``account_inactive``, not an unknown key); an activation then drops the revoked key.
    """
    if not active:
        user.credentials_revoked_at = utcnow()
    elif not user.is_active and _revoked(user, user.api_key_created_at):
        user.api_key_digest = None
        user.api_key_created_at = None
    user.is_active = active


def _revoked(user: User, issued_at: datetime | None) -> bool:
    """Whether a credential issued at ``issued_at`` predates the user's last deactivation."""
    revoked_at = user.credentials_revoked_at
    return revoked_at is not None and (issued_at is None or issued_at <= revoked_at)


_DUMMY_HASH = credentials.hash_password("not-a-real-password-0")
