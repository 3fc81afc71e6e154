"""`--response-timeout` as pure ASGI middleware: a request still running at the deadline is
cancelled and answered 503 with Rasa's error body (Sanic answered 503 "Response Timeout").
"""

from __future__ import annotations

import asyncio
import logging

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.api.errors import error_response

logger = logging.getLogger(__name__)

DEFAULT_RESPONSE_TIMEOUT_SECONDS = 3600.0


class ResponseTimeoutMiddleware:
    def __init__(self, app: ASGIApp, timeout: float | None = DEFAULT_RESPONSE_TIMEOUT_SECONDS):
        self.app = app
        self.timeout = timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.timeout or self.timeout <= 0:
            await self.app(scope, receive, send)
            return
        response_started = False

        async def tracking_send(message: Message) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        deadline = asyncio.timeout(self.timeout)
        try:
            async with deadline:
                await self.app(scope, receive, tracking_send)
        except TimeoutError:
            if not deadline.expired():
                raise  # the app's own TimeoutError, not ours
            logger.warning(
                "%s %s took longer than the response timeout of %s s and was cancelled",
                scope.get("method"),
                scope.get("path"),
                self.timeout,
            )
            if response_started:
                # Part of the response is out; the server closes the connection.
                return
            response = error_response(
                503,
                "ResponseTimeout",
                f"The request took longer than the response timeout of {self.timeout:g} s.",
            )
            await response(scope, receive, send)
