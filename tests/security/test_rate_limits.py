"""Brute force and flooding, each against a dedicated server with a tight limit.

The shared server's limits are set high for the rest of the suite, so these
start their own, with the same database. Every test runs well inside the
one-minute window it exercises; nothing sleeps.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from prediction_provider.config import Settings
from tests.conftest import Account, LiveServer
from tests.security.support import assert_rate_limited, assert_unauthorized, bearer, login, users_unchanged

OTHER_ADDRESS = "127.0.0.2"  # loopback too: the server sees a second client address


@pytest.fixture
def login_limited(settings: Settings, accounts: dict[str, Account]) -> Iterator[LiveServer]:
    with LiveServer(settings.model_copy(update={"login_rate_limit": "3/minute"})) as server:
        yield server


@pytest.fixture
def request_limited(settings: Settings, accounts: dict[str, Account]) -> Iterator[LiveServer]:
    with LiveServer(settings.model_copy(update={"rate_limit": "5/minute"})) as server:
        yield server


def http_from(server: LiveServer, address: str = "127.0.0.1", **headers: str) -> httpx.Client:
    transport = httpx.HTTPTransport(local_address=address)
    return httpx.Client(base_url=server.url, headers=headers, transport=transport, timeout=60)


def guess(
    http: httpx.Client, account: Account, password: str, route: str = "/api/v1/auth/login"
) -> httpx.Response:
    return http.post(route, json={"username": account.username, "password": password})


@pytest.mark.parametrize(
    ("route", "right_password"),
    [("/api/v1/auth/login", True), ("/api/v1/auth/login", False), ("/api/v1/auth/api-key", True)],
    ids=["login-right-password", "login-wrong-password", "api-key-right-password"],
)
def test_fourth_login_attempt_in_a_minute_is_refused(
    login_limited: LiveServer, accounts: dict[str, Account], route: str, right_password: bool
) -> None:
    target = accounts["client"]
    with http_from(login_limited) as http:
        for attempt in range(3):
            assert_unauthorized(guess(http, target, f"wrong-guess-{attempt}"))
        with users_unchanged(login_limited.services.db):
            fourth = guess(http, target, target.password if right_password else "wrong-guess-3", route)
    assert_rate_limited(fourth)


def test_login_limit_follows_the_username_to_another_address(
    login_limited: LiveServer, accounts: dict[str, Account]
) -> None:
    target, bystander = accounts["client"], accounts["provider"]
    with http_from(login_limited) as first:
        for attempt in range(3):
            assert_unauthorized(guess(first, target, f"wrong-guess-{attempt}"))
    with http_from(login_limited, OTHER_ADDRESS) as second:
        with users_unchanged(login_limited.services.db):
            assert_rate_limited(guess(second, target, target.password))
        # The second address itself is not blocked: only the attacked username is.
        assert guess(second, bystander, bystander.password).status_code == 200


def test_login_limit_follows_the_address_to_other_usernames(
    login_limited: LiveServer, accounts: dict[str, Account]
) -> None:
    """Credential stuffing: one address trying many accounts."""
    with http_from(login_limited) as http:
        for role in ("client", "provider", "evaluator"):
            assert_unauthorized(guess(http, accounts[role], "password-123456"))
        with users_unchanged(login_limited.services.db):
            assert_rate_limited(guess(http, accounts["operator"], accounts["operator"].password))


def test_sixth_request_in_a_minute_is_refused_for_that_user_only(
    request_limited: LiveServer, accounts: dict[str, Account]
) -> None:
    client, other = accounts["client"], accounts["provider"]
    with http_from(request_limited) as anonymous:
        token = login(anonymous, client.username, client.password)  # logging in is not a counted request
    with http_from(request_limited, **client.headers) as http:
        for _ in range(5):
            assert http.get("/api/v1/users/profile").status_code == 200
        with users_unchanged(request_limited.services.db):
            sixth = http.put("/api/v1/users/profile", json={"full_name": "one request too many"})
    assert_rate_limited(sixth)
    with http_from(request_limited, **bearer(token)) as same_user_by_token:
        # The limit is the user's, not the credential's: a token does not reset it.
        assert_rate_limited(same_user_by_token.get("/api/v1/users/profile"))
    with http_from(request_limited, **other.headers) as bystander:
        for _ in range(5):
            assert bystander.get("/api/v1/users/profile").status_code == 200
