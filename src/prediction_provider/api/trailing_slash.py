"""Every route answers with and without a trailing slash, without a redirect.

Starlette's router answers ``POST /api/v1/predictions/`` with a 307 to the path
without the slash, and a client that does not re-send the body on a 307 (many
do not, some turn it into a GET) fails. Instead this outermost step drops
trailing slashes from the path before anything reads it, so the hot routes,
the router, the audit trail and the metrics' route label all see one path;
the app is built with ``redirect_slashes=False`` so no redirect is left.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send


class StripTrailingSlash:
    """Outermost middleware: ``/predict/`` is served as ``/predict``; ``/`` stays ``/``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if len(path) > 1 and path[-1] == "/" and scope["type"] in ("http", "websocket"):
            scope = dict(scope)
            scope["path"] = path.rstrip("/") or "/"
            raw_path = scope.get("raw_path")
            if raw_path:
                scope["raw_path"] = raw_path.rstrip(b"/") or b"/"
        await self.app(scope, receive, send)
