"""Brute force and flooding, each against a dedicated server with a tight limit.

The shared server's limits are set high for the rest of the suite, so these
start their own, with the same database. Every test runs well inside the
one-minute window it exercises; nothing sleeps.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from prediction_provider.app import account_service
from prediction_provider.config import Settings
from tests.conftest import Account, LiveServer
from tests.security.support import (
    assert_rate_limited,
    assert_unauthorized,
    bearer,
    login,
    unique,
    users_unchanged,
)

OTHER_ADDRESS = "127.0.0.2"  # loopback too: the server sees a second client address


@pytest.fixture
def login_limited(settings: Settings, accounts: dict[str, Account]) -> Iterator[LiveServer]:
    """The shipped login limits: 5 failures per username in 15 minutes, 30 per address a minute."""
    defaults = {
        name: Settings.model_fields[name].default for name in ("login_lockout", "login_failure_limit")
    }
    with LiveServer(settings.model_copy(update=defaults)) as server:
        yield server


@pytest.fixture
def address_limited(settings: Settings, accounts: dict[str, Account]) -> Iterator[LiveServer]:
    with LiveServer(settings.model_copy(update={"login_failure_limit": "3/minute"})) as server:
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


def test_eight_users_fetch_their_keys_from_one_address_within_a_minute(
    login_limited: LiveServer, settings: Settings
) -> None:
    """An admin onboarding an office: right passwords are never counted."""
    service = account_service(settings)
    newcomers = []
    for _ in range(8):
        name = unique("onboarded")
        service.create_user(name, f"{name}@example.com", f"{name}-password", "client", active=True)
        newcomers.append((name, f"{name}-password"))
    service.db.dispose()
    with http_from(login_limited) as office:
        for name, password in newcomers:
            issued = office.post("/api/v1/auth/api-key", json={"username": name, "password": password})
            assert issued.status_code == 201, issued.text
            assert office.get(
                "/api/v1/users/profile", headers={"X-API-KEY": issued.json()["api_key"]}
            ).is_success
            login(office, name, password)


@pytest.mark.parametrize("route", ["/api/v1/auth/login", "/api/v1/auth/api-key"])
def test_five_wrong_passwords_lock_that_username_even_for_the_right_one(
    login_limited: LiveServer, accounts: dict[str, Account], route: str
) -> None:
    target, bystander = accounts["client"], accounts["provider"]
    with http_from(login_limited) as http:
        for attempt in range(5):
            assert_unauthorized(guess(http, target, f"wrong-guess-{attempt}", route))
        with users_unchanged(login_limited.services.db):
            sixth = guess(http, target, target.password, route)
        retry_after = assert_rate_limited(sixth, window_seconds=15 * 60)
        assert retry_after > 14 * 60  # locked until the first failure is 15 minutes old
        # The same address may still sign another user in: only the attacked username is locked.
        assert guess(http, bystander, bystander.password).status_code == 200


def test_lockout_follows_the_username_to_another_address(
    login_limited: LiveServer, accounts: dict[str, Account]
) -> None:
    target = accounts["evaluator"]
    with http_from(login_limited) as first:
        for attempt in range(5):
            assert_unauthorized(guess(first, target, f"wrong-guess-{attempt}"))
    with http_from(login_limited, OTHER_ADDRESS) as second, users_unchanged(login_limited.services.db):
        assert_rate_limited(guess(second, target, target.password), window_seconds=15 * 60)


def test_failures_from_one_address_are_limited_over_all_usernames(
    address_limited: LiveServer, accounts: dict[str, Account]
) -> None:
    """Credential stuffing: one address trying one password on many accounts."""
    with http_from(address_limited) as http:
        for role in ("client", "provider", "evaluator"):
            assert_unauthorized(guess(http, accounts[role], "password-123456"))
        with users_unchanged(address_limited.services.db):
            assert_rate_limited(guess(http, accounts["operator"], accounts["operator"].password))
    with http_from(address_limited, OTHER_ADDRESS) as elsewhere:
        assert guess(elsewhere, accounts["operator"], accounts["operator"].password).status_code == 200


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
