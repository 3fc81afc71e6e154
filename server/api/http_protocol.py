"""The HTTP/1.1 protocol uvicorn serves with: its httptools protocol, with bounds on the head
and on how slowly a body may arrive.

uvicorn's httptools protocol keeps every header line of a request until the head ends, with no
limit (h11 stops at 16 KiB), and waits for a head for ever: one client sending endless header
lines made the process hold hundreds of megabytes per connection, and connections sending
nothing (or a byte now and then) stayed open. Here a head still unfinished after
`MAX_HEAD_BYTES` more bytes is a 431, one slower than `HEAD_TIMEOUT_SECONDS` a 408. A body
trickling in (a byte a second) held its request, and the route waiting for it, until the
response timeout (an hour by default): here a body slower than `BODY_TIMEOUT_SECONDS` plus
one second per `BODY_MIN_RATE` bytes received is a 408 too.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from server.api.errors import error_body
from server.errors import how_many

# Counted from the second read of a head on: a head may be this plus one read (up to 256 KiB).
MAX_HEAD_BYTES = 64 * 1024
# How long the rest of a refused request is read and dropped before the connection closes.
LINGER_SECONDS = 2.0
# How long a connection may take to send a request head (from the connection, or from the
# first read of a head that does not arrive in one read).
HEAD_TIMEOUT_SECONDS = 30.0
# How long a request body may take from the end of its head, extended by one second for every
# `BODY_MIN_RATE` bytes received (so a 10 MiB upload may take up to three hours at that pace).
BODY_TIMEOUT_SECONDS = 30.0
BODY_MIN_RATE = 1000


def _raw_error(status: int, phrase: bytes, reason: str, message: str) -> bytes:
    """A whole HTTP answer with Rasa's error body, written before (or instead of) the app."""
    body = json.dumps(error_body(status, reason, message)).encode()
    return (
        b"HTTP/1.1 %d %s\r\n"
        b"content-type: application/json\r\n"
        b"content-length: %d\r\n"
        b"connection: close\r\n\r\n%s" % (status, phrase, len(body), body)
    )


_TIMEOUT = _raw_error(408, b"Request Timeout", "RequestTimeout", "The request head took too long.")
_TOO_LARGE = _raw_error(
    431,
    b"Request Header Fields Too Large",
    "RequestHeaderFieldsTooLarge",
    "The request line and headers are too large.",
)
_BODY_TIMEOUT = _raw_error(
    408, b"Request Timeout", "RequestTimeout", "The request body arrived too slowly."
)


class _HeadTooLarge(Exception):
    """Raised from a parser callback to stop parsing a head over `MAX_HEAD_BYTES`."""


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, refusing a head larger than `MAX_HEAD_BYTES` or slower
    than `head_timeout`, and a body slower than `body_timeout` plus a second per
    `body_min_rate` bytes (a request arriving in one read costs no timer)."""

    head_timeout = HEAD_TIMEOUT_SECONDS
    body_timeout = BODY_TIMEOUT_SECONDS
    body_min_rate = BODY_MIN_RATE

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_pending = False
        self._head_bytes = 0
        self._head_parsed = 0
        self._refused = False
        self._head_timer: asyncio.TimerHandle | None = None
        self._body_pending = False
        self._body_bytes = 0
        self._body_started = 0.0
        self._body_waited = False
        self._body_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._head_timer = self.loop.call_later(self.head_timeout, self._head_timed_out)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        self._stop_body_timer()
        super().connection_lost(exc)

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if not self.transport.is_closing() and not self._refused:
            self.logger.warning("A request head took longer than %g s", self.head_timeout)
            self.transport.write(_TIMEOUT)
            self.transport.close()

    # The parser's callbacks below run for every request: they call the base class by name
    # (no `super()` object) and keep their work inline (a Python call costs about as much as
    # the rest of such a callback). A request arriving in one read ends with neither a head
    # nor a body pending: two attribute tests after the parser.
    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # read and dropped until the connection closes
        pending = self._head_pending
        HttpToolsProtocol.data_received(self, data)
        if self._head_pending:
            if self._refused or self.transport.is_closing():
                return  # (refused by the parser's count of this read's header lines)
            if pending:
                self._head_bytes += len(data)
                if self._head_bytes > MAX_HEAD_BYTES:
                    self._refuse()
            elif self._head_timer is None:
                self._head_timer = self.loop.call_later(self.head_timeout, self._head_timed_out)
        elif self._body_pending and self._body_timer is None:
            if self._refused or self.transport.is_closing():
                return
            # The head ended in this read (the timer is stopped when a message completes).
            self._body_started = self.loop.time()
            self._body_timer = self.loop.call_later(self.body_timeout, self._body_check)

    def _refuse(self) -> None:
        self.logger.warning("A request head over %d bytes was refused", MAX_HEAD_BYTES)
        self._refused = True
        self.transport.write(_TOO_LARGE)
        # Closing with unread bytes would reset the connection and the client would lose
        # the answer: end our side, drop what still comes for a moment, then close.
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(LINGER_SECONDS, self.transport.close)

    def send_400_response(self, msg: str) -> None:
        if self._refused:
            return  # the 431 is written
        # uvicorn's answer to a request its parser refuses (a URL over 64 KiB, a malformed
        # request line) is text/plain; every other error of the API is Rasa's JSON body.
        self.transport.write(_raw_error(400, b"Bad Request", "BadRequest", msg))
        self.transport.close()

    def on_message_begin(self) -> None:
        HttpToolsProtocol.on_message_begin(self)
        self._head_pending = True
        self._head_bytes = 0
        self._head_parsed = 0
        self._body_bytes = 0
        self._body_waited = False

    # The parser's count of the header lines: data_received counts reads after the first,
    # and a head that arrives in one read (a 100 KB header in one packet) is only seen here.
    # (A URL over 64 KiB is the parser's own 400.)
    def on_header(self, name: bytes, value: bytes) -> None:
        parsed = self._head_parsed = self._head_parsed + len(name) + len(value) + 4
        if parsed > MAX_HEAD_BYTES and not self._refused:
            self._refuse()
            # Stops the parser: uvicorn answers a parser error with send_400_response.
            raise _HeadTooLarge
        HttpToolsProtocol.on_header(self, name, value)

    def on_headers_complete(self) -> None:
        self._head_pending = False
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        self._body_pending = True  # until the message completes (an upgrade's does at once)
        HttpToolsProtocol.on_headers_complete(self)

    def on_body(self, body: bytes) -> None:
        self._body_bytes += len(body)
        HttpToolsProtocol.on_body(self, body)

    def on_message_complete(self) -> None:
        self._body_pending = False
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None
        HttpToolsProtocol.on_message_complete(self)

    def _stop_body_timer(self) -> None:
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None

    def _body_check(self) -> None:
        self._body_timer = None
        if not self._body_pending or self.transport.is_closing() or self._refused:
            return
        if self.flow.read_paused or self.pipeline:
            # We are not reading (the app has not asked for more yet, or the request waits
            # behind a pipelined one): the slowness is ours. A full window once we read again.
            self._body_waited = True
            self._body_timer = self.loop.call_later(self.body_timeout, self._body_check)
            return
        if self._body_waited:
            self._body_waited = False
            self._body_started = self.loop.time()
            self._body_timer = self.loop.call_later(self.body_timeout, self._body_check)
            return
        allowed = self._body_started + self.body_timeout + self._body_bytes / self.body_min_rate
        left = allowed - self.loop.time()
        if left > 0:
            self._body_timer = self.loop.call_later(left, self._body_check)
            return
        self.logger.warning(
            "A request body arrived too slowly (%s in %.0f s)",
            how_many(self._body_bytes, "byte"),
            self.loop.time() - self._body_started,
        )
        cycle = self.cycle
        if cycle is not None and not cycle.response_started:
            self.transport.write(_BODY_TIMEOUT)
        if cycle is not None:
            # The route waiting for the body gets a disconnect now, and its answer goes nowhere.
            cycle.disconnected = True
            cycle.message_event.set()
        self._refused = True
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(LINGER_SECONDS, self.transport.close)
