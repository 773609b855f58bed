"""Rate limits and in-flight caps, in memory and on the real Redis server."""

from __future__ import annotations

import os
import uuid

import pytest

from prediction_provider.accounts.throttle import Throttle
from prediction_provider.errors import RateLimited
from tests.integration.database_fixtures import services_required

REDIS_URL = os.environ.get("PP_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


@pytest.fixture
def redis_url() -> str:
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3).ping()
    except redis.RedisError as exc:
        if services_required():
            pytest.fail(f"Redis is required (CI or PP_REQUIRE_SERVICES=1) but unreachable: {exc}")
        pytest.skip(f"Redis unreachable: {exc}")
    return REDIS_URL


@pytest.fixture(params=["memory", "redis"])
def storage_url(request: pytest.FixtureRequest) -> str | None:
    return None if request.param == "memory" else request.getfixturevalue("redis_url")


def throttle(
    url: str | None, requests: str = "5/minute", logins: str = "3/minute", in_flight: int = 2
) -> Throttle:
    return Throttle(url, requests, logins, in_flight)


def test_the_request_after_the_limit_is_refused_with_a_retry_time(storage_url: str | None) -> None:
    limits = throttle(storage_url)
    caller = f"user:{uuid.uuid4().hex}"
    for _ in range(5):
        limits.request(caller)
    with pytest.raises(RateLimited) as refused:
        limits.request(caller)
    assert 0 < refused.value.retry_after <= 60
    limits.request(f"user:{uuid.uuid4().hex}")  # someone else is unaffected


def test_login_attempts_count_per_address_and_per_username(storage_url: str | None) -> None:
    limits = throttle(storage_url)
    address, user = f"10.0.0.{uuid.uuid4().int % 250}-{uuid.uuid4().hex}", f"u-{uuid.uuid4().hex}"
    for _ in range(3):
        limits.login_attempt(user, address)
    with pytest.raises(RateLimited):
        limits.login_attempt(user, f"other-{uuid.uuid4().hex}")  # same user, other address
    with pytest.raises(RateLimited):
        limits.login_attempt(f"other-{uuid.uuid4().hex}", address)  # same address, other user


def test_in_flight_predictions_are_capped_per_user_and_released(storage_url: str | None) -> None:
    limits = throttle(storage_url, in_flight=2)
    user = f"user:{uuid.uuid4().hex}"
    with limits.in_flight(user), limits.in_flight(user):
        with pytest.raises(RateLimited), limits.in_flight(user):
            pass
        with limits.in_flight(f"user:{uuid.uuid4().hex}"):
            pass
    with limits.in_flight(user), limits.in_flight(user):
        pass  # both slots are free again


def test_two_processes_share_limits_through_redis(redis_url: str) -> None:
    first, second = throttle(redis_url), throttle(redis_url)
    caller = f"user:{uuid.uuid4().hex}"
    for i in range(5):
        (first if i % 2 else second).request(caller)
    with pytest.raises(RateLimited):
        first.request(caller)
