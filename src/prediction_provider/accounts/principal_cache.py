"""A short-lived cache of who a credential belongs to, so a prediction does not wait on a
database round trip for every call.

Revocation stays immediate: any change to a user (key regenerated, deactivated,
role changed) drops that user's entries in this process at once, and, when
Redis is configured, in every other process through a pub/sub message. Without
Redis, other worker processes notice within ``ttl_s``.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from prediction_provider.accounts.principal import Principal

log = logging.getLogger(__name__)

CHANNEL = "pp:credentials-changed"


class PrincipalCache:
    def __init__(self, ttl_s: float, redis_url: str | None = None) -> None:
        self.ttl_s = ttl_s
        self._entries: dict[str, tuple[Principal, float]] = {}
        self._lock = threading.Lock()
        self._redis: Any = None
        self._listener: threading.Thread | None = None
        if redis_url and ttl_s > 0:
            import redis

            self._redis = redis.Redis.from_url(redis_url)
            self._subscribed = threading.Event()
            self._listener = threading.Thread(target=self._listen, name="credential-changes", daemon=True)
            self._listener.start()
            # Cache nothing until changes from other processes can be heard.
            if not self._subscribed.wait(timeout=5):
                log.warning("not subscribed to credential changes yet; caching is off until then")

    def get(self, key: str) -> Principal | None:
        entry = self._entries.get(key)
        if entry is None or entry[1] < time.monotonic():
            return None
        return entry[0]

    def put(self, key: str, principal: Principal) -> None:
        if self.ttl_s <= 0 or (self._redis is not None and not self._subscribed.is_set()):
            return
        with self._lock:
            self._entries[key] = (principal, time.monotonic() + self.ttl_s)

    def forget_user(self, user_id: int, broadcast: bool = True) -> None:
        with self._lock:
            for key in [k for k, (p, _) in self._entries.items() if p.user_id == user_id]:
                del self._entries[key]
        if broadcast and self._redis is not None:
            try:
                self._redis.publish(CHANNEL, str(user_id))
            except Exception:
                log.exception("could not broadcast a credential change")

    def _listen(self) -> None:
        while True:
            try:
                pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(CHANNEL)
                pubsub.get_message(timeout=5)  # the subscription confirmation
                self._subscribed.set()
                for message in pubsub.listen():
                    self.forget_user(int(message["data"]), broadcast=False)
            except Exception:
                log.warning("credential-change listener lost Redis; retrying", exc_info=True)
                self._subscribed.clear()
                with self._lock:
                    self._entries.clear()
                time.sleep(1.0)
