"""Counted slots: at most ``cap`` holders of one key at a time (in-flight predictions,
password checks under way). In process memory, in Redis, or for the workers of one
machine in :mod:`prediction_provider.accounts.machine_limits`."""

from __future__ import annotations

import itertools
import os
import threading
import time
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class Slot:
    """A held slot: the token that releases it, and how many slots of its key were held with it."""

    token: bytes
    held: int


class InFlightSlots(Protocol):
    def acquire(self, key: str, cap: int) -> Slot | None:
        """A slot of ``key``, or None when ``cap`` are held already."""

    def release(self, key: str, token: bytes) -> None:
        """Give back the slot ``token`` came with; a slot already reaped is ignored."""


class MemoryInFlight:
    """One process: a counter per key under a lock (a crash takes the counts with it)."""

    def __init__(self) -> None:
        self._counts: dict[str, int] = {}
        self._lock = threading.Lock()

    def acquire(self, key: str, cap: int) -> Slot | None:
        with self._lock:
            held = self._counts.get(key, 0)
            if held >= cap:
                return None
            self._counts[key] = held + 1
        return Slot(b"", held + 1)

    def release(self, key: str, token: bytes) -> None:
        with self._lock:
            remaining = self._counts.get(key, 1) - 1
            if remaining > 0:
                self._counts[key] = remaining
            else:
                self._counts.pop(key, None)


class RedisInFlight:
    """Many machines: a sorted set per key, one member per slot scored by when it was taken.

    A process that dies holding a slot cannot release it, and Redis cannot tell whether a
    process on another machine is alive; members older than ``ttl_seconds`` are dropped on
    every acquire, so a lost slot costs its user one slot for that long, never for good.
    One round trip to take a slot, one to give it back.
    """

    def __init__(self, redis: Any, ttl_seconds: float) -> None:
        self._redis = redis
        self.ttl_seconds = ttl_seconds
        self._prefix = f"{os.getpid()}:{os.urandom(4).hex()}:".encode()
        self._serial = itertools.count()

    def acquire(self, key: str, cap: int) -> Slot | None:
        name, now = f"pp:in-flight:{key}", time.time()
        token = self._prefix + str(next(self._serial)).encode()
        pipe = self._redis.pipeline(transaction=True)
        pipe.zremrangebyscore(name, "-inf", now - self.ttl_seconds)
        pipe.zadd(name, {token: now})
        pipe.zcard(name)
        pipe.expire(name, int(self.ttl_seconds) + 1)
        held = int(pipe.execute()[2])
        if held > cap:  # two racing for the last slot may both be refused, never both admitted
            self._redis.zrem(name, token)
            return None
        return Slot(token, held)

    def release(self, key: str, token: bytes) -> None:
        self._redis.zrem(f"pp:in-flight:{key}", token)
