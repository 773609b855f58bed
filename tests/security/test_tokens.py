"""Bearer tokens that must not pass: expired, forged, unsigned, tampered, orphaned, garbage.

Every forged token claims the admin, and is sent to promote the client to admin:
were one accepted, the users table would change. A control test shows the same
claims, properly signed, are accepted, so each refusal is down to its one defect.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import jwt
import pytest

from prediction_provider.config import Settings
from prediction_provider.db.session import Database
from tests.conftest import Account
from tests.security.support import (
    assert_unauthorized,
    b64url_json,
    hand_signed,
    login,
    unb64url_json,
    users_unchanged,
)

WRONG_SECRET = "not-the-server-secret-" + "y" * 40


@dataclass(frozen=True)
class Forge:
    secret: str
    admin: Account
    client: Account
    client_token: str

    def claims(self, **changes: Any) -> dict[str, Any]:
        now = datetime.now(UTC)
        claims: dict[str, Any] = {
            "sub": str(self.admin.user_id),
            "name": self.admin.username,
            "role": "admin",
            "iat": now,
            "exp": now + timedelta(minutes=30),
        }
        claims.update(changes)
        return {name: value for name, value in claims.items() if value is not None}

    def signed(self, secret: str | None = None, **changes: Any) -> str:
        return jwt.encode(self.claims(**changes), secret or self.secret, algorithm="HS256")

    def tampered(self, **changes: Any) -> str:
        """The client's real token with its payload edited and its signature kept."""
        header, payload, signature = self.client_token.split(".")
        return ".".join([header, b64url_json({**unb64url_json(payload), **changes}), signature])

    def with_header(self, header: dict[str, Any]) -> str:
        """A valid admin token whose header is swapped, signature kept."""
        _, payload, signature = self.signed().split(".")
        return ".".join([b64url_json(header), payload, signature])

    def epoch_claims(self) -> dict[str, Any]:
        return {k: int(v.timestamp()) if isinstance(v, datetime) else v for k, v in self.claims().items()}


def bearer_of(make: Callable[[Forge], str]) -> Callable[[Forge], dict[str, str]]:
    return lambda forge: {"Authorization": f"Bearer {make(forge)}"}


def raw_authorization(make: Callable[[Forge], str]) -> Callable[[Forge], dict[str, str]]:
    return lambda forge: {"Authorization": make(forge)}


NOW = datetime.now(UTC)
ATTACKS: dict[str, Callable[[Forge], dict[str, str]]] = {
    "expired-an-hour-ago": bearer_of(
        lambda f: f.signed(iat=NOW - timedelta(hours=2), exp=NOW - timedelta(hours=1))
    ),
    "expired-a-second-ago": bearer_of(
        lambda f: f.signed(
            iat=datetime.now(UTC) - timedelta(hours=1), exp=datetime.now(UTC) - timedelta(seconds=1)
        )
    ),
    "wrong-secret": bearer_of(lambda f: f.signed(WRONG_SECRET)),
    "alg-none-unsigned": bearer_of(
        lambda f: hand_signed({"alg": "none", "typ": "JWT"}, f.epoch_claims(), None)
    ),
    "alg-None-unsigned": bearer_of(
        lambda f: hand_signed({"alg": "None", "typ": "JWT"}, f.epoch_claims(), None)
    ),
    "alg-none-with-the-real-signature": bearer_of(lambda f: f.with_header({"alg": "none", "typ": "JWT"})),
    "hs512-with-the-real-secret": bearer_of(
        lambda f: hand_signed({"alg": "HS512", "typ": "JWT"}, f.epoch_claims(), f.secret)
    ),
    "tampered-sub-to-admin": bearer_of(
        lambda f: f.tampered(sub=str(f.admin.user_id), name=f.admin.username, role="admin")
    ),
    "tampered-role-claim": bearer_of(lambda f: f.tampered(role="admin")),
    "tampered-expiry": bearer_of(lambda f: f.tampered(exp=int((NOW + timedelta(days=365)).timestamp()))),
    "non-existent-user": bearer_of(lambda f: f.signed(sub="987654321", name="ghost")),
    "non-numeric-sub": bearer_of(lambda f: f.signed(sub=f.admin.username)),
    "no-expiry": bearer_of(lambda f: f.signed(exp=None)),
    "garbage": bearer_of(lambda f: "garbage"),
    "three-garbage-segments": bearer_of(lambda f: "a.b.c"),
    "only-dots": bearer_of(lambda f: ".."),
    "header-only": bearer_of(lambda f: f.signed().split(".")[0]),
    "oversized": bearer_of(lambda f: "A" * 4000),
    # h11 will not send a header value ending in a space, so "Bearer " goes as "Bearer": the same empty token.
    "scheme-without-token": raw_authorization(lambda f: "Bearer"),
    "no-space-after-scheme": raw_authorization(lambda f: "Bearer" + f.signed()),
    "basic-with-the-right-password": raw_authorization(
        lambda f: "Basic " + base64.b64encode(f"{f.admin.username}:{f.admin.password}".encode()).decode()
    ),
    "token-scheme-with-a-valid-jwt": raw_authorization(lambda f: "Token " + f.signed()),
    "valid-jwt-without-a-scheme": raw_authorization(lambda f: f.signed()),
    "valid-jwt-as-api-key": lambda f: {"X-API-KEY": f.signed()},
}


@pytest.fixture
def forge(settings: Settings, accounts: dict[str, Account], anonymous: httpx.Client) -> Forge:
    client = accounts["client"]
    return Forge(
        settings.jwt_secret, accounts["admin"], client, login(anonymous, client.username, client.password)
    )


def test_properly_signed_admin_claims_are_accepted(anonymous: httpx.Client, forge: Forge) -> None:
    """The control: the claims every attack starts from do pass when nothing is wrong with them."""
    for token in (
        forge.signed(),
        hand_signed({"alg": "HS256", "typ": "JWT"}, forge.epoch_claims(), forge.secret),
    ):
        response = anonymous.get("/api/v1/users/profile", headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 200, response.text
        assert response.json()["role"] == "admin"


@pytest.mark.parametrize("attack", ATTACKS)
def test_forged_or_broken_token_cannot_promote_the_client(
    anonymous: httpx.Client, forge: Forge, db: Database, attack: str
) -> None:
    headers = ATTACKS[attack](forge)
    with users_unchanged(db):
        response = anonymous.put(
            f"/api/v1/admin/users/{forge.client.user_id}",
            json={"role": "admin", "full_name": "promoted by a forged token"},
            headers=headers,
        )
    assert_unauthorized(response)
