"""A request body size limit as pure ASGI middleware: 413 before reading a too-large body.

It trusts no header: a declared Content-Length over the limit is refused at once, and the
streamed bytes are counted too (chunked uploads, lying clients).
"""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.api.errors import error_response

DEFAULT_MAX_BODY_BYTES = 10 * 1024 * 1024


class BodyTooLarge(HTTPException):
    """Raised from `receive` when the streamed body passes the limit (answered with 413)."""

    def __init__(self, limit: int):
        super().__init__(413, f"The request body is larger than the limit of {limit} bytes.")


def _too_large_response(limit: int) -> JSONResponse:
    return error_response(
        413,
        "PayloadTooLarge",
        f"The request body is larger than the limit of {limit} bytes.",
        headers={"Connection": "close"},
    )


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES):
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.max_body_bytes <= 0:
            await self.app(scope, receive, send)
            return
        limit = self.max_body_bytes
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = 0
                if declared > limit:
                    await _too_large_response(limit)(scope, receive, send)
                    return

        received = 0
        response_started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge:
            # Reached only when no exception handler turned it into a response already.
            if response_started:
                raise
            await _too_large_response(limit)(scope, receive, send)
