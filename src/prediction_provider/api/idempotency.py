"""ASGI middleware giving every mutating route the Idempotency-Key contract (see ``idempotency``).

A ``POST``/``PUT``/``PATCH``/``DELETE`` that carries ``Idempotency-Key`` from a signed-in caller
is answered once: its body is buffered and fingerprinted, the key claimed, and then

* a key already answered → that first status and body again, with ``Idempotency-Replayed: true``;
* the same key with another method, path or body → 422 ``idempotency_key_reused``;
* a first request still in flight → 409 ``idempotency_in_progress``;
* otherwise the route runs; a 2xx answer is stored before its last byte is sent (so a client
  that saw it can count on the replay), and anything else frees the key.

Requests without the header pass through after one scan of the headers: the prediction hot
paths pay nothing more. Anonymous callers are passed through untouched too: they have no
account to own a key (a client address is no identity), so their retries rely on the route's own
guards (a job's Idempotency-Key, scoped to the address, stays as it was).

It sits inside ``BodySizeLimit`` (the buffered body is bounded) and outside ``HotRoutes`` (the
hot paths are covered). The caller is authenticated here as the routes do it and left in
``scope["state"]["principal"]``, where ``api.auth.authenticate`` finds it: one rate-limit count
per request. The claim is left in ``scope["state"]["idempotency"]`` (a ``Started``) for a route
that stores its answer in its own transaction (``IdempotencyStore.finish_in``).
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from prediction_provider.accounts.principal import Principal
from prediction_provider.api.auth import principal_from_credentials
from prediction_provider.api.errors import PayloadTooLarge, error_response, headers_for, status_for
from prediction_provider.errors import PredictionProviderError, RateLimited
from prediction_provider.idempotency import (
    STALE_AFTER,
    TTL,
    IdempotencyStore,
    Replay,
    Started,
    check_key,
)

log = logging.getLogger(__name__)

METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
HEADER = b"idempotency-key"
REPLAYED = "Idempotency-Replayed"
# The headers of a stored answer that are part of it; the envelope's (request id, security
# headers) are the retry's own, and Content-Length is recomputed.
KEPT_HEADERS = frozenset(
    {b"content-type", b"content-encoding", b"location", b"content-location", b"etag", b"link"}
)


class IdempotencyKeys:
    def __init__(self, app: ASGIApp, ttl: timedelta = TTL, stale_after: timedelta = STALE_AFTER) -> None:
        self.app = app
        self.ttl = ttl
        self.stale_after = stale_after
        self._store: IdempotencyStore | None = None
        self._store_of: object = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in METHODS:
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == HEADER:
                await self._keyed(scope, receive, send, value.decode("latin-1"))
                return
        await self.app(scope, receive, send)

    async def _keyed(self, scope: Scope, receive: Receive, send: Send, key: str) -> None:
        services = getattr(scope["app"].state, "services", None)
        if services is None:  # before the lifespan: nothing to store keys in
            await self.app(scope, receive, send)
            return
        try:
            check_key(key)
            principal = await self._principal(scope, services)
        except PredictionProviderError as exc:
            await _error(exc)(scope, receive, send)
            return
        if principal is None or principal.user_id is None:
            await self.app(scope, receive, send)
            return
        body = await _read_body(receive)
        if body is None:  # the client went away before sending it all: nothing was claimed
            return
        if isinstance(body, Response):
            await body(scope, receive, send)
            return
        store = self._store_for(services)
        path = scope["path"]
        if scope.get("query_string"):
            path = f"{path}?{scope['query_string'].decode('latin-1')}"
        try:
            claim = await run_in_threadpool(store.begin, principal.user_id, key, scope["method"], path, body)
        except PredictionProviderError as exc:
            await _error(exc)(scope, receive, send)
            return
        if isinstance(claim, Replay):
            headers = {**claim.headers, REPLAYED: "true"}
            await Response(claim.body, claim.status, headers=headers)(scope, receive, send)
            return
        scope.setdefault("state", {})["idempotency"] = claim
        await self._answer(scope, _replaying(body, receive), send, store, claim)

    async def _principal(self, scope: Scope, services: Any) -> Principal | None:
        """The caller, as ``api.auth.authenticate`` would find it. Credentials that do not sign in
        are left to the route (a login route needs none, others answer 401 themselves): they fail
        before the rate limit counts them. A caller over its rate limit is answered 429 here, as
        every authenticated route would, rather than counted a second time there."""
        state: dict[str, Any] = scope.setdefault("state", {})
        principal: Principal | None = state.get("principal")
        if principal is not None:
            return principal
        headers = Headers(scope=scope)
        client = scope.get("client")
        try:
            principal = await principal_from_credentials(
                services, headers.get("x-api-key"), headers.get("authorization"),
                client[0] if client else "unknown",
            )  # fmt: skip
        except RateLimited:
            raise
        except PredictionProviderError:
            return None
        state["principal"] = principal
        return principal

    async def _answer(
        self, scope: Scope, receive: Receive, send: Send, store: IdempotencyStore, claim: Started
    ) -> None:
        status = 500
        kept: dict[str, str] = {}
        chunks: list[bytes] = []
        settled = False

        async def capturing_send(message: Message) -> None:
            nonlocal status, settled
            if message["type"] == "http.response.start":
                status = message["status"]
                for name, value in message.get("headers", ()):
                    if name.lower() in KEPT_HEADERS:
                        kept[name.decode("latin-1").lower()] = value.decode("latin-1")
            elif message["type"] == "http.response.body" and not settled:
                chunks.append(message.get("body", b""))
                if not message.get("more_body", False):
                    settled = True  # before the last byte leaves: a seen answer is a stored one
                    await _settle(store, claim, status, b"".join(chunks), kept)
            await send(message)

        try:
            await self.app(scope, receive, capturing_send)
        finally:
            if not settled:  # the route raised, or never finished its answer
                await _settle(store, claim, 500, b"", kept)

    def _store_for(self, services: Any) -> IdempotencyStore:
        if self._store is None or self._store_of is not services:
            self._store = IdempotencyStore(
                services.db, services.clock, ttl=self.ttl, stale_after=self.stale_after
            )
            self._store_of = services
        return self._store


async def _settle(
    store: IdempotencyStore, claim: Started, status: int, body: bytes, headers: dict[str, str]
) -> None:
    """Store a 2xx answer; free the key of anything else. A failure here must not lose the answer
    itself: it is logged, and the claim goes stale (free again) after ``stale_after``."""
    try:
        if 200 <= status < 300:
            await run_in_threadpool(store.finish, claim, status, body, headers)
        else:
            await run_in_threadpool(store.abandon, claim)
    except Exception:
        log.exception("could not settle idempotency key %r of user %s", claim.key, claim.user_id)


async def _read_body(receive: Receive) -> bytes | Response | None:
    """The whole request body (bounded by ``BodySizeLimit`` outside), the answer to send instead
    (413), or ``None`` when the client disconnected."""
    chunks: list[bytes] = []
    while True:
        try:
            message = await receive()
        except PayloadTooLarge as exc:
            return error_response(413, "payload_too_large", str(exc.detail), {"max_body_bytes": exc.limit})
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replaying(body: bytes, receive: Receive) -> Receive:
    """The buffered body as one message, then the real channel (a route waiting for a disconnect)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def _error(exc: PredictionProviderError) -> Response:
    return error_response(status_for(exc), exc.code, exc.message, exc.details, headers_for(exc))
