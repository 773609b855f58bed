"""Direct dispatch of the prediction routes, past FastAPI's router.

Why: FastAPI walks every included router and matches each of their routes in
turn, matches again inside the router it picked, then runs its dependency
solver and request wrappers. For a trading decision that was about a quarter
of the event loop's time at 2,200 requests/s (py-spy, 2-core machine). The
prediction endpoints take nothing but the ``Request``, so for an exact
``(method, path)`` this middleware calls them itself.

Everything else stays as it was: the routes remain registered with FastAPI (the
OpenAPI schema, other methods on the same path and every other path go through
it), the outer middleware (request id, audit, metrics, body limit) still wraps
each request, errors go through the app's own exception handlers, and the route
is left in the scope for the metrics' route label.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

ExceptionHandler = Callable[[Request, Exception], Any]
RouteKey = tuple[str, str]


def request_only_routes(routes: Iterable[Any], paths: Iterable[RouteKey]) -> dict[RouteKey, APIRoute]:
    """The routes for ``(method, path)`` pairs, each checked to take the request alone.

    A route whose endpoint grows another parameter (a dependency, a path
    parameter), or that has a route class of its own, would skip it here; that
    is refused at start-up, not served wrong.
    """
    wanted = set(paths)
    found: dict[RouteKey, APIRoute] = {}
    for route in routes:
        if not isinstance(route, APIRoute):
            continue
        for method in route.methods or ():
            key = (method, route.path)
            if key in wanted:
                found[key] = route
    missing = wanted - found.keys()
    if missing:
        raise LookupError(f"no route for {sorted(missing)}")
    for (method, path), route in found.items():
        dependant = route.dependant
        extra = (
            dependant.dependencies
            or dependant.path_params
            or dependant.query_params
            or dependant.header_params
            or dependant.cookie_params
            or dependant.body_params
        )
        if extra or dependant.request_param_name is None:
            raise TypeError(f"{method} {path} must take only the Request to be dispatched directly")
        if type(route) is not APIRoute:
            # A route class of its own (a protocol's error shape) wraps the endpoint: calling the
            # endpoint alone would skip that wrapper.
            raise TypeError(f"{method} {path} has its own route class {type(route).__name__}")
    return found


class HotRoutes:
    """Innermost middleware: calls the endpoint of an exact ``(method, path)`` directly."""

    def __init__(
        self,
        app: ASGIApp,
        routes: Mapping[RouteKey, APIRoute],
        exception_handlers: Mapping[Any, ExceptionHandler],
    ) -> None:
        self.app = app
        self.routes = dict(routes)
        # The app's dict itself: handlers registered later are seen too.
        self.exception_handlers = exception_handlers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = None
        if scope["type"] == "http" and not scope.get("root_path"):
            route = self.routes.get((scope["method"], scope["path"]))
        if route is None:
            await self.app(scope, receive, send)
            return
        scope["route"] = route
        scope["endpoint"] = route.endpoint
        request = Request(scope, receive, send)
        try:
            response: Response = await route.endpoint(request)
        except Exception as exc:
            handler = self._handler_for(exc)
            if handler is None:
                raise  # to ServerErrorMiddleware, as FastAPI's router would let it go
            response = await handler(request, exc)
        await response(scope, receive, send)

    def _handler_for(self, exc: Exception) -> ExceptionHandler | None:
        """The app's handler for the nearest class of ``exc``; the catch-all ``Exception`` handler
        is left to the server-error middleware, which also logs."""
        for error_type in type(exc).__mro__:
            if error_type is Exception:
                return None
            handler = self.exception_handlers.get(error_type)
            if handler is not None:
                return handler
        return None
