"""Rate limits, login failures and in-flight caps: in memory, in the machine's shared store
and on the real Redis server."""

from __future__ import annotations

import os
import uuid
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest

from prediction_provider.accounts.throttle import Throttle
from prediction_provider.errors import AccountInactive, AuthenticationFailed, RateLimited
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


@pytest.fixture(params=["memory", "machine", "redis"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Storage:
    """Where a throttle keeps its limits: this process, the machine's shared store, or Redis."""
    if request.param == "memory":
        return Storage()
    if request.param == "machine":
        return Storage(shared_dir=tmp_path / "limits")
    return Storage(redis_url=request.getfixturevalue("redis_url"))


@dataclass(frozen=True)
class Storage:
    redis_url: str | None = None
    shared_dir: Path | None = None


def throttle(
    where: Storage,
    requests: str = "5/minute",
    lockout: str = "5/15 minutes",
    failures: str = "30/minute",
    in_flight: int = 2,
) -> Throttle:
    return Throttle(where.redis_url, requests, lockout, failures, in_flight, where.shared_dir)


def test_the_request_after_the_limit_is_refused_with_a_retry_time(storage: Storage) -> None:
    limits = throttle(storage)
    caller = f"user:{uuid.uuid4().hex}"
    for _ in range(5):
        limits.request(caller)
    with pytest.raises(RateLimited) as refused:
        limits.request(caller)
    assert 0 < refused.value.retry_after <= 60
    limits.request(f"user:{uuid.uuid4().hex}")  # someone else is unaffected


def check_password(limits: Throttle, user: str, address: str, right: bool) -> None:
    """One password check under the throttle, as the auth routes run it."""
    with limits.login_attempt(user, address):
        if not right:
            raise AuthenticationFailed("wrong username or password")


def test_five_failures_lock_the_username_even_for_the_right_password(storage: Storage) -> None:
    limits = throttle(storage, lockout="5/15 minutes")
    user, other = f"u-{uuid.uuid4().hex}", f"v-{uuid.uuid4().hex}"
    for attempt in range(5):
        with pytest.raises(AuthenticationFailed):
            check_password(limits, user, f"10.0.0.{attempt}", right=False)  # from any address
    with pytest.raises(RateLimited) as refused:
        check_password(limits, user.upper(), "10.0.1.1", right=True)
    assert 14 * 60 < refused.value.retry_after <= 15 * 60  # until the first failure leaves the window
    check_password(limits, other, "10.0.0.1", right=True)  # another username is not locked


def test_right_passwords_are_never_counted(storage: Storage) -> None:
    limits = throttle(storage, lockout="2/15 minutes", failures="2/minute")
    user, address = f"u-{uuid.uuid4().hex}", f"addr-{uuid.uuid4().hex}"
    for _ in range(20):
        check_password(limits, user, address, right=True)
    with pytest.raises(AuthenticationFailed):
        check_password(limits, user, address, right=False)
    check_password(limits, user, address, right=True)  # one failure spends nothing it needs


def test_the_right_password_of_an_inactive_account_is_not_a_failure(storage: Storage) -> None:
    limits = throttle(storage, lockout="2/15 minutes")
    user = f"u-{uuid.uuid4().hex}"
    for _ in range(5):
        with pytest.raises(AccountInactive), limits.login_attempt(user, "10.0.3.1"):
            raise AccountInactive("this account is not active")
    check_password(limits, user, "10.0.3.1", right=True)  # once activated, it signs in


def test_failures_from_one_address_are_limited_over_all_usernames(storage: Storage) -> None:
    """Credential stuffing: one address, many usernames, a few guesses each."""
    limits = throttle(storage, failures="4/minute")
    address = f"addr-{uuid.uuid4().hex}"
    for _ in range(4):
        with pytest.raises(AuthenticationFailed):
            check_password(limits, f"u-{uuid.uuid4().hex}", address, right=False)
    with pytest.raises(RateLimited):
        check_password(limits, f"u-{uuid.uuid4().hex}", address, right=True)
    check_password(limits, f"u-{uuid.uuid4().hex}", f"other-{uuid.uuid4().hex}", right=True)


def test_password_checks_under_way_count_until_they_end(storage: Storage) -> None:
    """Parallel guesses: five checks of one username in progress leave no room for a sixth."""
    limits = throttle(storage, lockout="5/15 minutes")
    user = f"u-{uuid.uuid4().hex}"
    with ExitStack() as under_way:
        for attempt in range(5):
            under_way.enter_context(limits.login_attempt(user, f"10.0.2.{attempt}"))
        with pytest.raises(RateLimited) as refused:
            check_password(limits, user, "10.0.2.9", right=True)
        assert refused.value.retry_after == 1  # not locked out: busy
    check_password(limits, user, "10.0.2.9", right=True)  # they ended without failing


def test_in_flight_predictions_are_capped_per_user_and_released(storage: Storage) -> None:
    limits = throttle(storage, in_flight=2)
    user = f"user:{uuid.uuid4().hex}"
    with limits.in_flight(user), limits.in_flight(user):
        with pytest.raises(RateLimited), limits.in_flight(user):
            pass
        with limits.in_flight(f"user:{uuid.uuid4().hex}"):
            pass
    with limits.in_flight(user), limits.in_flight(user):
        pass  # both slots are free again


def test_two_processes_share_limits_through_redis(redis_url: str) -> None:
    first, second = throttle(Storage(redis_url=redis_url)), throttle(Storage(redis_url=redis_url))
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
    limits_ = throttle(Storage(), requests="3/second")
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
