"""Live pages over server-sent events: one broadcaster per process, one stream per page.

A topic (a page's panels for one scope, e.g. "jobs of user 7") is built once per tick however many
browsers watch it, then fanned out: fifty viewers cost one query. A topic's builder runs only while
someone subscribes. Each stream re-checks its session every tick, so a revoked session goes silent
within a tick; it ends after ``LIFETIME`` (the browser reconnects, and that request is authenticated
anew), and a user holds at most ``STREAMS_PER_USER`` streams, because HTTP/1.1 browsers share ~6
connections per origin across tabs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

from fastapi import Request
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.concurrency import run_in_threadpool

from prediction_provider.accounts.web_sessions import WebSessions
from prediction_provider.dashboard.session import Viewer
from prediction_provider.errors import RateLimited

log = logging.getLogger(__name__)

STREAMS_PER_USER = 4
LIFETIME_S = 600.0
PING_S = 15

Snapshot = dict[str, str]  # event name -> the HTML of the panel it replaces
Builder = Callable[[], Awaitable[Snapshot]]


@dataclass(slots=True)
class Topic:
    build: Builder
    subscribers: int = 0
    version: int = 0
    snapshot: Snapshot = field(default_factory=dict)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None


class Broadcaster:
    def __init__(self, sessions: WebSessions, tick_s: float) -> None:
        self.sessions = sessions
        self.tick_s = tick_s
        self.topics: dict[str, Topic] = {}
        self.streams: Counter[int] = Counter()

    async def _run(self, key: str, topic: Topic) -> None:
        while topic.subscribers > 0:
            try:
                snapshot = await topic.build()
            except Exception:
                log.exception("live topic %s failed to build", key)
            else:
                topic.snapshot = snapshot
                topic.version += 1
                woken, topic.changed = topic.changed, asyncio.Event()
                woken.set()
            await asyncio.sleep(self.tick_s)
        if self.topics.get(key) is topic:
            del self.topics[key]

    def _subscribe(self, key: str, build: Builder) -> Topic:
        topic = self.topics.get(key)
        if topic is None or topic.task is None or topic.task.done():
            topic = self.topics[key] = Topic(build)
        topic.subscribers += 1
        if topic.task is None:
            topic.task = asyncio.create_task(self._run(key, topic), name=f"dashboard-live:{key}")
        return topic

    def stream(self, request: Request, viewer: Viewer, key: str, build: Builder) -> EventSourceResponse:
        """The page's one stream of named events; 429 past the user's stream limit."""
        if self.streams[viewer.user_id] >= STREAMS_PER_USER:
            raise RateLimited(
                f"at most {STREAMS_PER_USER} live pages at once; close one", 5, {"limit": STREAMS_PER_USER}
            )
        self.streams[viewer.user_id] += 1
        topic = self._subscribe(key, build)
        return EventSourceResponse(self._events(request, viewer, topic), ping=PING_S)

    async def _events(self, request: Request, viewer: Viewer, topic: Topic) -> AsyncIterator[ServerSentEvent]:
        loop = asyncio.get_running_loop()
        ends = loop.time() + LIFETIME_S
        seen = 0
        try:
            while loop.time() < ends:
                if not await run_in_threadpool(self.sessions.is_live, viewer.session_id):
                    yield ServerSentEvent(data="signed out", event="signed-out")
                    return
                if topic.version != seen:
                    seen = topic.version
                    for name, html in topic.snapshot.items():
                        yield ServerSentEvent(data=html, event=name)
                if await request.is_disconnected():
                    return
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(topic.changed.wait(), self.tick_s)
        finally:
            topic.subscribers -= 1
            self.streams[viewer.user_id] -= 1
            if self.streams[viewer.user_id] <= 0:
                del self.streams[viewer.user_id]

    async def aclose(self) -> None:
        tasks = [topic.task for topic in self.topics.values() if topic.task is not None]
        for topic in self.topics.values():
            topic.subscribers = 0
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.topics.clear()


def broadcaster(request: Request) -> Broadcaster:
    """The process's broadcaster, made on first use (the lifespan closes it)."""
    state = request.app.state
    live: Broadcaster | None = getattr(state, "dashboard_live", None)
    if live is None:
        services = state.services
        assert services.web_sessions is not None
        live = state.dashboard_live = Broadcaster(services.web_sessions, services.settings.dashboard_tick_s)
    return live
