"""Which model names an operator unloaded, the same in every worker process and across restarts.

The model repository API's ``unload`` and ``load`` write one row per model name
(``model_serving_state``); the database is the truth. Each process keeps the
unloaded names as a frozenset that the model cache checks on every prediction,
so that check costs a set lookup, never a database round trip. The set is
re-read from the database every ``refresh_seconds`` by a background thread, at
once after this process's own unload or load, and at once in every process on a
Redis pub/sub message when ``PP_REDIS_URL`` is set.

What a change does in each process, whichever process answered it: an unload
evicts the name's cached versions (that is what frees the memory), a load warms
the name again in the background, as the answering process did before it replied.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from prediction_provider.db.base import utcnow
from prediction_provider.db.models import ModelServingState
from prediction_provider.db.session import Database
from prediction_provider.serving.cache import ModelCache

log = logging.getLogger(__name__)

CHANNEL = "pp:model-serving-state"
UNLOADED = "unloaded"
LOADED = "loaded"

# (names unloaded now, names newly unloaded, names newly loaded)
ChangeListener = Callable[[frozenset[str], frozenset[str], frozenset[str]], None]


class UnloadedModels:
    """The unloaded model names as this process knows them; ``names`` is read lock-free."""

    def __init__(
        self,
        db: Database,
        refresh_seconds: float,
        redis_url: str | None = None,
        on_change: ChangeListener | None = None,
    ) -> None:
        self.db = db
        self.refresh_seconds = refresh_seconds
        self.on_change = on_change
        self.names: frozenset[str] = frozenset()
        # Serialises reads and writes of the state, so a refresh that read the table before this
        # process's own change was committed cannot put the old set back after it.
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._redis: Any = None
        self._redis_url = redis_url
        self.changed = threading.Event()  # set whenever a refresh changed the set (tests wait on it)

    def start(self) -> None:
        """Read the state once (blocking: a restarted server must not warm what was unloaded),
        then follow it from the background."""
        self.refresh()
        self._spawn(self._poll, "model-state-poll")
        if self._redis_url:
            import redis

            self._redis = redis.Redis.from_url(self._redis_url)
            subscribed = threading.Event()
            self._spawn(lambda: self._listen(subscribed), "model-state-listen")
            if not subscribed.wait(timeout=5):
                log.warning(
                    "not subscribed to model state changes yet; polling every %.3fs", self.refresh_seconds
                )

    def close(self) -> None:
        self._stop.set()
        if self._redis is not None:
            try:
                self._redis.close()
            except Exception:
                log.debug("closing the Redis client failed", exc_info=True)
        for thread in self._threads:
            thread.join(timeout=2)

    def refresh(self) -> frozenset[str]:
        """Re-read the unloaded names from the database and apply the difference."""
        with self._lock:
            with self.db.session() as session:
                rows = session.scalars(
                    select(ModelServingState.model_name).where(ModelServingState.state == UNLOADED)
                )
                names = frozenset(rows)
            self._apply(names)
        return names

    def unload(self, name: str, by: str | None) -> None:
        self._record(name, UNLOADED, by)

    def load(self, name: str, by: str | None) -> None:
        self._record(name, LOADED, by)

    def _record(self, name: str, state: str, by: str | None) -> None:
        with self._lock:
            values = {"model_name": name, "state": state, "changed_at": utcnow(), "changed_by": by}
            insert = postgresql_insert if self.db.engine.dialect.name == "postgresql" else sqlite_insert
            statement = insert(ModelServingState).values(**values)
            statement = statement.on_conflict_do_update(
                index_elements=["model_name"],
                set_={key: value for key, value in values.items() if key != "model_name"},
            )
            with self.db.session() as session:
                session.execute(statement)
            self._apply(self.names | {name} if state == UNLOADED else self.names - {name})
        log.info("model %s %s by %s", name, state, by or "anonymous")
        if self._redis is not None:
            try:
                self._redis.publish(CHANNEL, name)
            except Exception:  # noqa: BLE001 - the database holds the change; polling carries it
                log.warning("could not broadcast that %s was %s; others follow by polling", name, state)

    def _apply(self, names: frozenset[str]) -> None:
        previous, self.names = self.names, names
        if names == previous:
            return
        self.changed.set()
        if self.on_change is not None:
            try:
                self.on_change(names, names - previous, previous - names)
            except Exception:
                log.exception("applying a model state change failed")

    def _spawn(self, target: Callable[[], None], name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _poll(self) -> None:
        failing = False
        while not self._stop.wait(self.refresh_seconds):
            try:
                self.refresh()
            except Exception as exc:
                # The traceback once per outage, not every refresh_seconds while it lasts.
                log.warning(
                    "could not read the model serving state; keeping the last one: %s",
                    exc,
                    exc_info=not failing,
                )
                failing = True
            else:
                if failing:
                    log.info("reading the model serving state again")
                failing = False

    def _listen(self, subscribed: threading.Event) -> None:
        while not self._stop.is_set():
            try:
                pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(CHANNEL)
                pubsub.get_message(timeout=5)  # the subscription confirmation
                subscribed.set()
                while not self._stop.is_set():
                    if pubsub.get_message(timeout=1.0) is not None:
                        self.refresh()  # the message says only which name; the database says what
            except Exception:
                if self._stop.is_set():
                    return
                log.warning("model state listener lost Redis; retrying", exc_info=True)
                self._stop.wait(1.0)


def follow_unloaded_models(
    cache: ModelCache, db: Database, refresh_seconds: float, redis_url: str | None
) -> UnloadedModels:
    """The state, read once and then followed, applied to ``cache``: refused names, evictions, warm-ups."""

    def warm(name: str) -> None:
        try:
            cache.warm(name)
            log.info("warmed %s (loaded through the model repository)", name)
        except Exception as exc:  # noqa: BLE001 - the next request reports it to its caller
            log.warning("could not warm %s after its load: %s", name, exc)

    def apply(names: frozenset[str], unloaded: frozenset[str], loaded: frozenset[str]) -> None:
        cache.unloaded_names = names
        for name in unloaded:
            cache.evict_named(name)
        for name in loaded:
            threading.Thread(target=warm, args=(name,), name=f"warm-{name[:20]}", daemon=True).start()

    state = UnloadedModels(db, refresh_seconds, redis_url, apply)
    state.start()
    return state
