"""Direct dispatch of the prediction routes, past FastAPI's router.

Why: FastAPI walks every included router and matches each of their routes in
turn, matches again inside the router it picked, then runs its dependency
solver and request wrappers. For a trading decision that was about a quarter
of the event loop's time at 2,200 requests/s (py-spy, 2-core machine). The
prediction endpoints take nothing but the ``Request`` and their path
parameters, so for those routes this middleware calls them itself.

Everything else stays as it was: the routes remain registered with FastAPI (the
OpenAPI schema, other methods on the same path and every other path go through
it), the outer middleware (request id, audit, metrics, body limit) still wraps
each request, errors are answered by the route class's own translator (a
protocol's error shape) or else the app's exception handlers, and the route is
left in the scope for the metrics' route label.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

ExceptionHandler = Callable[[Request, Exception], Any]
ErrorTranslator = Callable[[Exception], Response | None]
RouteKey = tuple[str, str]


def direct_routes(routes: Iterable[Any], paths: Iterable[RouteKey]) -> dict[RouteKey, APIRoute]:
    """The routes for ``(method, path template)`` pairs, each checked to be safe to call directly.

    A route whose endpoint takes more than the request and its path parameters
    (a dependency, a query parameter, a body model), or whose route class wraps
    the endpoint in a way this middleware does not repeat, would be served
    differently here; that is refused at start-up, not served wrong.
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
            or dependant.query_params
            or dependant.header_params
            or dependant.cookie_params
            or dependant.body_params
        )
        if extra or dependant.request_param_name is None:
            raise TypeError(f"{method} {path} must take only the Request and path parameters")
        if any(param.field_info.annotation not in (str, str | None) for param in dependant.path_params):
            raise TypeError(f"{method} {path}: only str path parameters are passed through unconverted")
        if type(route) is not APIRoute and not hasattr(route, "error_translator"):
            raise TypeError(f"{method} {path} has its own route class {type(route).__name__}")
    return found


class HotRoutes:
    """Innermost middleware: calls the endpoints of the given routes directly."""

    def __init__(
        self,
        app: ASGIApp,
        routes: Mapping[RouteKey, APIRoute],
        exception_handlers: Mapping[Any, ExceptionHandler],
    ) -> None:
        self.app = app
        self.exact = {key: route for key, route in routes.items() if not route.dependant.path_params}
        self.templated = [(key[0], route) for key, route in routes.items() if route.dependant.path_params]
        # The app's dict itself: handlers registered later are seen too.
        self.exception_handlers = exception_handlers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        match = self._match(scope) if scope["type"] == "http" and not scope.get("root_path") else None
        if match is None:
            await self.app(scope, receive, send)
            return
        route, params = match
        scope["route"] = route
        scope["endpoint"] = route.endpoint
        scope["path_params"] = params
        request = Request(scope, receive, send)
        try:
            response: Response = await route.endpoint(
                **params, **{route.dependant.request_param_name or "request": request}
            )
        except Exception as exc:  # noqa: BLE001 - re-raised when nothing answers it
            response = await self._answer(route, request, exc)
        await response(scope, receive, send)

    def _match(self, scope: Scope) -> tuple[APIRoute, dict[str, str]] | None:
        method, path = scope["method"], scope["path"]
        route = self.exact.get((method, path))
        if route is not None:
            return route, {}
        for route_method, templated in self.templated:
            if route_method == method:
                found = templated.path_regex.match(path)
                if found is not None:
                    return templated, found.groupdict()
        return None

    async def _answer(self, route: APIRoute, request: Request, exc: Exception) -> Response:
        translator: ErrorTranslator | None = getattr(route, "error_translator", None)
        response = translator(exc) if translator is not None else None
        if response is not None:
            return response
        handler = self._handler_for(exc)
        if handler is None:
            raise exc  # to ServerErrorMiddleware, as FastAPI's router would let it go
        result: Response = await handler(request, exc)
        return result

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
