"""The ops stamp: how every worker sees a change to experiments, resilience, breaker controls,
chaos rules or ensembles within a second, without a database read per request.

Each writer bumps ``model_ops_stamp.version`` in the transaction of its change (``bump``). Each
process runs one ``StampFollower``: a thread that reads the stamp every ``interval_s`` (default
0.25 s, so a change is live everywhere well within the 1 s the design promises) and, when it moved,
calls every registered reload callback. A process that made the change calls ``refresh()`` itself
before answering, so its own next request already sees it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from sqlalchemy import select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from prediction_provider.db.modelops_models import OpsStamp
from prediction_provider.db.session import Database

log = logging.getLogger(__name__)

Reload = Callable[[Session], None]


def bump(session: Session) -> None:
    """Mark a change, inside the caller's transaction (committed with it, or not at all)."""
    session.execute(update(OpsStamp).where(OpsStamp.id == 1).values(version=OpsStamp.version + 1))


def read(session: Session) -> int:
    return int(session.scalar(select(OpsStamp.version).where(OpsStamp.id == 1)) or 0)


class StampFollower:
    """Calls the reload callbacks at start, whenever the stamp moves, and on ``refresh()``."""

    def __init__(self, db: Database, interval_s: float = 0.25) -> None:
        self.db = db
        self.interval_s = interval_s
        self.seen: int | None = None
        self._reloads: list[Reload] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def register(self, reload: Reload) -> None:
        """Add a callback; it runs at once (so its cache is filled) and after every change."""
        self._reloads.append(reload)
        with self.db.session() as session:
            reload(session)

    def refresh(self, force: bool = False) -> bool:
        """Reload everything if the stamp moved (or ``force``); True if it did. Blocking."""
        with self._lock:
            with self.db.session() as session:
                version = read(session)
                if not force and version == self.seen:
                    return False
                for reload in self._reloads:
                    reload(session)
                self.seen = version
            return True

    def start(self) -> None:
        if self._thread is None and self.interval_s > 0:
            self._thread = threading.Thread(target=self._run, name="ops-stamp", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.refresh()
            except SQLAlchemyError as exc:  # the database away: keep serving what we know
                log.warning("ops stamp: could not refresh: %s", exc)
            except Exception:  # a reload's bug must not end the thread
                log.exception("ops stamp: a reload failed")

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
