"""Password hashing (argon2), API keys (random, stored as SHA-256 digests) and JWTs (HS256)."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

API_KEY_PREFIX = "pp_"
API_KEY_BYTES = 32
JWT_ALGORITHM = "HS256"

_hasher = PasswordHasher()


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def new_api_key() -> str:
    """32 random bytes, URL-safe; shown to the user once and never stored."""
    return API_KEY_PREFIX + secrets.token_urlsafe(API_KEY_BYTES)


def api_key_digest(api_key: str) -> str:
    return hashlib.sha256(api_key.encode("utf-8")).hexdigest()


def digests_match(stored: str, presented: str) -> bool:
    return hmac.compare_digest(stored.encode(), presented.encode())


class InvalidToken(Exception):
    pass


@dataclass(frozen=True, slots=True)
class TokenClaims:
    user_id: int
    username: str
    role: str
    expires_at: datetime
    issued_at: datetime


def issue_token(
    secret: str, user_id: int, username: str, role: str, lifetime: timedelta
) -> tuple[str, datetime]:
    now = datetime.now(UTC)
    expires = now + lifetime
    # ``iat`` to the microsecond (a NumericDate may have a fraction, RFC 7519 section 2), so a
    # token from just before a deactivation is told apart from one just after a reactivation.
    claims = {"sub": str(user_id), "name": username, "role": role, "iat": now.timestamp(), "exp": expires}
    return jwt.encode(claims, secret, algorithm=JWT_ALGORITHM), expires


def read_token(secret: str, token: str) -> TokenClaims:
    """Verify signature and expiry; only HS256 is accepted, so ``alg=none`` never passes."""
    try:
        claims: dict[str, Any] = jwt.decode(
            token, secret, algorithms=[JWT_ALGORITHM], options={"require": ["sub", "exp", "iat"]}
        )
        return TokenClaims(
            user_id=int(claims["sub"]),
            username=str(claims.get("name", "")),
            role=str(claims.get("role", "")),
            expires_at=datetime.fromtimestamp(int(claims["exp"]), UTC),
            issued_at=datetime.fromtimestamp(float(claims["iat"]), UTC),
        )
    except (jwt.PyJWTError, ValueError, KeyError) as exc:
        raise InvalidToken(str(exc)) from exc
