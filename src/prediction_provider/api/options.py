"""``OPTIONS`` on every route: 204 with an ``Allow`` header naming the path's methods.

Without it the router answered an ``OPTIONS`` with 405 on every path, which is
what a client probing a route (or a browser's preflight when no CORS origin is
configured) gets wrong. The methods come from the routes that match the path,
so they are the methods the router would serve, and a path no route matches is
left to the router (404, in the one error body). A route that declares
``OPTIONS`` itself is left to answer it.

A CORS preflight (``Origin`` and ``Access-Control-Request-Method``) never
reaches this when ``PP_CORS_ORIGINS`` is set: ``CORSMiddleware`` sits outside and
answers it. Without configured origins the preflight gets this 204 with no
``Access-Control-Allow-Origin``, which a browser reads as "not allowed".
"""

from __future__ import annotations

from starlette.routing import BaseRoute, Match, Mount
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

# Asked of each route in turn; OPTIONS itself is the answer's own.
PROBED_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")
STATIC_METHODS = frozenset({"GET", "HEAD"})


def allowed_methods(routes: list[BaseRoute], scope: Scope) -> frozenset[str] | None:
    """The methods the routes serve on ``scope``'s path; None when none matches the path, or when
    one serves ``OPTIONS`` itself (both are the router's to answer).

    Each method is asked of every route through ``BaseRoute.matches`` (a full match serves it),
    which also looks into included routers, whatever shape the framework gives them.
    """
    methods: set[str] = set()
    for route in routes:
        if isinstance(route, Mount) and isinstance(route.app, StaticFiles):
            if route.matches(scope)[0] is not Match.NONE:
                methods |= STATIC_METHODS  # a mount matches every method; its files serve these
            continue
        if route.matches(scope)[0] is Match.FULL:
            return None
        methods.update(m for m in PROBED_METHODS if route.matches(dict(scope, method=m))[0] is Match.FULL)
    return frozenset(methods) if methods else None


class AnswerOptions:
    """Answers ``OPTIONS`` for the app's routes; every other request passes untouched."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "OPTIONS":
            await self.app(scope, receive, send)
            return
        methods = allowed_methods(scope["app"].router.routes, scope)
        if methods is None:
            await self.app(scope, receive, send)
            return
        allow = ", ".join(sorted(methods | {"OPTIONS"}))
        await send({"type": "http.response.start", "status": 204, "headers": [(b"allow", allow.encode())]})
        await send({"type": "http.response.body", "body": b""})
