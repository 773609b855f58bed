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


class Clock:
    """Stands in for the ``time`` module where the limits read the clock."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def time(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.now


def test_memory_limits_start_no_thread_per_request_and_still_expire(monkeypatch: pytest.MonkeyPatch) -> None:
    import limits.storage.memory

    import prediction_provider.accounts.throttle as throttle_module

    clock = Clock()
    limits_ = throttle(None, requests="3/second")
    started: list[object] = []
    real_timer = limits.storage.memory.threading.Timer
    monkeypatch.setattr(limits.storage.memory, "time", clock)
    monkeypatch.setattr(throttle_module, "time", clock)
    monkeypatch.setattr(
        limits.storage.memory.threading, "Timer", lambda *a, **k: started.append(a) or real_timer(*a, **k)
    )
    for _second in range(50):
        clock.now += 2.0  # a sliding window: the previous second still weighs in after one
        for _ in range(3):
            limits_.request("user:1")
        with pytest.raises(RateLimited):
            limits_.request("user:1")
    assert started == []  # the parent storage started a timer thread whenever the last had ended
    storage = limits_._storage
    assert isinstance(storage, throttle_module.SweepingMemoryStorage)
    clock.now += 10.0
    limits_.request("user:2")  # the sweep runs inline and drops the expired windows of user:1
    assert not [key for key in storage.storage if "user:1" in key]
