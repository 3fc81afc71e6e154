"""The HTTP/1.1 protocol uvicorn serves with: its httptools protocol, with bounds on the head.

uvicorn's httptools protocol keeps every header line of a request until the head ends, with no
limit (h11 stops at 16 KiB), and waits for a head for ever: one client sending endless header
lines made the process hold hundreds of megabytes per connection, and connections sending
nothing (or a byte now and then) stayed open. Here a head still unfinished after
`MAX_HEAD_BYTES` more bytes is a 431, one slower than `HEAD_TIMEOUT_SECONDS` a 408.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

# Counted from the second read of a head on: a head may be this plus one read (up to 256 KiB).
MAX_HEAD_BYTES = 64 * 1024
# How long the rest of a refused request is read and dropped before the connection closes.
LINGER_SECONDS = 2.0
# How long a connection may take to send a request head (from the connection, or from the
# first read of a head that does not arrive in one read).
HEAD_TIMEOUT_SECONDS = 30.0

_TIMEOUT = (
    b"HTTP/1.1 408 Request Timeout\r\n"
    b"content-type: text/plain; charset=utf-8\r\n"
    b"content-length: 30\r\n"
    b"connection: close\r\n\r\n"
    b"The request head took too long"
)
_TOO_LARGE = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
    b"content-type: text/plain; charset=utf-8\r\n"
    b"content-length: 35\r\n"
    b"connection: close\r\n\r\n"
    b"Request header fields are too large"
)


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, refusing a head larger than `MAX_HEAD_BYTES` or slower
    than `head_timeout` (a request arriving in one read costs no timer)."""

    head_timeout = HEAD_TIMEOUT_SECONDS

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_pending = False
        self._head_bytes = 0
        self._refused = False
        self._head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._head_timer = self.loop.call_later(self.head_timeout, self._head_timed_out)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        super().connection_lost(exc)

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if not self.transport.is_closing() and not self._refused:
            self.logger.warning("A request head took longer than %g s", self.head_timeout)
            self.transport.write(_TIMEOUT)
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # read and dropped until the connection closes
        pending = self._head_pending
        super().data_received(data)
        if self._head_pending and not self.transport.is_closing():
            if pending:
                self._head_bytes += len(data)
                if self._head_bytes > MAX_HEAD_BYTES:
                    self._refuse()
            elif self._head_timer is None:
                self._head_timer = self.loop.call_later(self.head_timeout, self._head_timed_out)

    def _refuse(self) -> None:
        self.logger.warning("A request head over %d bytes was refused", MAX_HEAD_BYTES)
        self._refused = True
        self.transport.write(_TOO_LARGE)
        # Closing with unread bytes would reset the connection and the client would lose
        # the answer: end our side, drop what still comes for a moment, then close.
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(LINGER_SECONDS, self.transport.close)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_pending = True
        self._head_bytes = 0

    def on_headers_complete(self) -> None:
        self._head_pending = False
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        super().on_headers_complete()
