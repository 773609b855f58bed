"""ASGI middleware refusing bodies over ``max_body_bytes`` before they are buffered."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from prediction_provider.api.errors import PayloadTooLarge, error_response


class BodySizeLimit:
    def __init__(
        self, app: ASGIApp, max_body_bytes: int, upload_limits: dict[str, int] | None = None
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        # Routes that take files (dataset uploads) get their own, larger limit.
        self.upload_limits = upload_limits or {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.upload_limits.get(scope["path"], self.max_body_bytes)
        for name, value in scope["headers"]:
            if name == b"content-length":
                if not value.isdigit():
                    response = error_response(400, "bad_request", "invalid Content-Length header")
                elif int(value) > limit:
                    response = error_response(
                        413,
                        "payload_too_large",
                        f"request body exceeds {limit} bytes",
                        {"max_body_bytes": limit},
                    )
                else:
                    break
                await response(scope, receive, send)
                return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise PayloadTooLarge(limit)
            return message

        await self.app(scope, limited_receive, send)
