"""One pure ASGI middleware around every HTTP request: a body size limit (413), the response
timeout (503) and the last safety net (any unhandled exception becomes Rasa's 500 body).

One layer instead of three: each layer wraps `send` and adds a coroutine frame per message,
which a REST turn pays on every request. The same layer sends requests for a direct route
(an ASGI endpoint with `direct_route = True`, such as the REST webhook) straight to it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import Any

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.api.errors import error_response, response_for
from server.tasks import left_running

logger = logging.getLogger(__name__)

DEFAULT_MAX_BODY_BYTES = 10 * 1024 * 1024
DEFAULT_RESPONSE_TIMEOUT_SECONDS = 3600.0
# An ASGI endpoint with this attribute set to True opts in to direct dispatch.
DIRECT_ROUTE_ATTRIBUTE = "direct_route"


class BodyTooLarge(HTTPException):
    """Raised from `receive` when the streamed body passes the limit (answered with 413)."""

    def __init__(self, limit: int):
        super().__init__(413, _too_large_message(limit))


def _too_large_message(limit: int) -> str:
    return f"The request body is larger than the limit of {limit} bytes."


class _Deadlines:
    """The response deadlines of one event loop's requests in flight, checked by one timer.

    `asyncio.timeout` pushes a timer on the loop's heap and cancels it for every request
    (about 7 µs); here a request adds and removes a dict entry (its task → its deadline in
    loop time, None once the timer cancelled it), and one timer, running while requests are
    in flight, cancels a request at most `tick` seconds after its deadline.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, tick: float) -> None:
        self.loop = loop
        self.tick = tick
        self.due: dict[asyncio.Task[Any], float | None] = {}
        self._timer: asyncio.TimerHandle | None = None

    def start(self, timeout: float) -> asyncio.Task[Any]:
        """Starts the current task's deadline; returns the task."""
        task = asyncio.current_task(self.loop)
        assert task is not None
        self.due[task] = self.loop.time() + timeout
        if self._timer is None:
            self._timer = self.loop.call_later(self.tick, self._check)
        return task

    def expired(self, task: asyncio.Task[Any]) -> bool:
        """Whether the timer cancelled `task` for its deadline."""
        return task in self.due and self.due[task] is None

    def _check(self) -> None:
        now = self.loop.time()
        due = self.due
        for task, at in due.items():
            if at is not None and at <= now:
                due[task] = None  # a value changed, no key added: the iteration goes on
                task.cancel()
        self._timer = self.loop.call_later(self.tick, self._check) if due else None


def _declared_length(scope: Scope) -> int | None:
    """The Content-Length the body is framed by, or None when the bytes must be counted.

    With Transfer-Encoding as well, h11 (uvicorn's `--http h11`, and its fallback without
    httptools) frames the body by the chunks and ignores the length, so it is not trusted.
    """
    length = None
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                length = int(value)
            except ValueError:
                return None
        elif name == b"transfer-encoding":
            return None
    return length


class RequestGuardMiddleware:
    """Body limit, response timeout and catch-all, in that order from the outside.

    The body limit trusts no header: a declared Content-Length over the limit is refused at
    once; without one (chunked uploads), or beside a Transfer-Encoding, the streamed bytes are
    counted. A lone declared length is enforced by the HTTP server's framing, so its bytes
    need no counting.

    Direct routes: once the router has answered a method and path with an endpoint that
    opts in (`direct_route = True`: an exact path, no dependencies, its errors answered by
    `response_for` as the exception handlers would), later requests for that method and
    path go to the endpoint without the router (which walks every API route first) and
    the exception middleware. The router still decides what a path means.
    """

    def __init__(
        self,
        app: ASGIApp,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        timeout: float | None = DEFAULT_RESPONSE_TIMEOUT_SECONDS,
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.timeout = timeout if timeout and timeout > 0 else None
        # How late a timeout may fire: a twentieth of it, between 10 ms and 1 s.
        self._tick = min(1.0, max(0.01, (self.timeout or 0.0) / 20))
        self._deadlines: _Deadlines | None = None  # of the loop that served the last request
        # (method, path) → endpoint, for the routes learned as direct so far.
        self.direct_routes: dict[tuple[str, str], ASGIApp] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["method"] == "HEAD":
            await self._head(scope, receive, send)
            return
        limit = self.max_body_bytes
        if limit > 0:
            declared = _declared_length(scope)
            if declared is not None and declared > limit:
                response = error_response(
                    413,
                    "PayloadTooLarge",
                    _too_large_message(limit),
                    headers={"Connection": "close"},
                )
                await response(scope, receive, send)
                return
            if declared is None:
                receive = _counting_receive(receive, limit)
        key = (scope["method"], scope["path"])
        app = self.direct_routes.get(key)
        if app is None:
            app = self.app
        started = False
        allow_header = False

        def tracking_send(message: Message) -> Awaitable[None]:
            # Not a coroutine of its own: the server's send is awaited directly.
            nonlocal started, allow_header
            if message["type"] == "http.response.start":
                started = True
                if app is self.app:  # the router's answer, not a direct one
                    allow_header = any(name == b"allow" for name, _ in message.get("headers", ()))
            return send(message)

        # The deadline, started inline (a frame less per request than a method).
        deadlines: _Deadlines | None = None
        if self.timeout is not None:
            deadlines = self._deadlines
            if deadlines is None or deadlines.loop is not asyncio.get_running_loop():
                deadlines = self._new_deadlines()
            task = deadlines.start(self.timeout)
            cancelling = task.cancelling()
        try:
            await app(scope, receive, tracking_send)
        except asyncio.CancelledError:
            # Ours when our deadline cancelled the task and nobody else did (as in
            # `asyncio.timeout`); anyone else's cancellation goes on.
            if deadlines is None or not deadlines.expired(task):
                raise
            if task.uncancel() > cancelling:
                raise
            logger.warning(
                "%s %s took longer than the response timeout of %s s and %s",
                scope.get("method"),
                scope.get("path"),
                self.timeout,
                # A conversation's turn is not cancelled: the client gets 503 all the same.
                "was answered 503; its turn runs on to its end and is stored"
                if left_running(task)
                else "was cancelled",
            )
            if started:
                return  # part of the response is out; the server closes the connection
            response = error_response(
                503,
                "ResponseTimeout",
                f"The request took longer than the response timeout of {self.timeout:g} s.",
            )
            await response(scope, receive, send)
        except Exception as exc:
            if deadlines is not None:  # the request ended: its deadline does not cut the answer
                deadlines.due.pop(task, None)
            await self._answer_error(exc, started, scope, receive, send)
        else:
            if app is self.app:
                # The router names the endpoint of a route that matched the path but not the
                # method too; it answers that (405, or OPTIONS) with `Allow`: such a method
                # must keep going through the router, never to the endpoint.
                self._learn(key, scope, answered_by_endpoint=not allow_header)
        finally:
            if deadlines is not None:
                deadlines.due.pop(task, None)

    async def _head(self, scope: Scope, receive: Receive, send: Send) -> None:
        """HEAD is answered as GET without the body (RFC 9110: every resource that answers
        GET answers HEAD), so `curl -I` and HEAD health checks get 200, not 405."""

        async def headers_only(message: Message) -> None:
            if message["type"] == "http.response.body":
                if message.get("more_body", False):
                    return
                message = {"type": "http.response.body", "body": b""}
            await send(message)

        await self(dict(scope, method="GET"), receive, headers_only)

    def _new_deadlines(self) -> _Deadlines:
        # Another loop (tests run one per client): the old one keeps its own timer.
        deadlines = self._deadlines = _Deadlines(asyncio.get_running_loop(), self._tick)
        return deadlines

    def _learn(self, key: tuple[str, str], scope: Scope, answered_by_endpoint: bool) -> None:
        endpoint = scope.get("endpoint")
        if endpoint is None or getattr(endpoint, DIRECT_ROUTE_ATTRIBUTE, False) is not True:
            return
        if not answered_by_endpoint:
            return
        self.direct_routes[key] = endpoint

    @staticmethod
    async def _answer_error(
        exc: Exception, started: bool, scope: Scope, receive: Receive, send: Send
    ) -> None:
        if started:
            raise exc
        if isinstance(exc, BodyTooLarge):
            response = error_response(
                413, "PayloadTooLarge", str(exc.detail), headers={"Connection": "close"}
            )
        else:
            response = response_for(exc, scope)
        await response(scope, receive, send)


def _counting_receive(receive: Receive, limit: int) -> Receive:
    received = 0

    async def counting_receive() -> Message:
        nonlocal received
        message = await receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > limit:
                raise BodyTooLarge(limit)
        return message

    return counting_receive
