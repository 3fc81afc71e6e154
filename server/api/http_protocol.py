"""The HTTP/1.1 protocol uvicorn serves with: its httptools protocol with a bound on the head.

uvicorn's httptools protocol keeps every header line of a request until the head ends, with no
limit (h11 stops at 16 KiB): one client sending endless header lines made the process hold
hundreds of megabytes per connection. Here a head still unfinished after `MAX_HEAD_BYTES`
more bytes is answered 431 and the connection closed (after a short lingering read).
"""

from __future__ import annotations

from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

# Counted from the second read of a head on: a head may be this plus one read (up to 256 KiB).
MAX_HEAD_BYTES = 64 * 1024
# How long the rest of a refused request is read and dropped before the connection closes.
LINGER_SECONDS = 2.0

_TOO_LARGE = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
    b"content-type: text/plain; charset=utf-8\r\n"
    b"content-length: 35\r\n"
    b"connection: close\r\n\r\n"
    b"Request header fields are too large"
)


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, refusing a head larger than `MAX_HEAD_BYTES`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_pending = False
        self._head_bytes = 0
        self._refused = False

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # read and dropped until the connection closes
        pending = self._head_pending
        super().data_received(data)
        if pending and self._head_pending and not self.transport.is_closing():
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEAD_BYTES:
                self._refuse()

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
        super().on_headers_complete()
