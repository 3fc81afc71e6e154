"""An outbound HTTP answer's body read within a size limit, its Content-Encoding undone as it
arrives (action server, NLG, callback, a remote NLU server, Duckling); the same decoding
for a model server's archive streamed to disk.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from server.errors import InvalidConfig, ResponseTooLarge

if TYPE_CHECKING:  # imported by the client that sent the request; here, for an error only
    import httpx

# The largest answer read, decompressed: an action server's events, a parse result or
# Duckling's matches are far smaller; a bigger (or endless, or gzip-bomb) body would only
# exhaust memory.
DEFAULT_MAX_RESPONSE_BYTES = 10 * 1024 * 1024
# Only what `BoundedBody` reads: httpx asks for br and zstd too once they are installed.
ACCEPT_ENCODING = "gzip, deflate"


def max_response_bytes(config: dict[str, Any]) -> int:
    """An endpoint's `max_response_bytes`, or the default; InvalidConfig unless a positive
    whole number."""
    value = config.get("max_response_bytes", DEFAULT_MAX_RESPONSE_BYTES)
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise InvalidConfig("'max_response_bytes' must be a positive number of bytes")
    return value


async def read_within(response: httpx.Response, limit: int) -> bytes:
    """The body of a streamed `response`, decoded; ResponseTooLarge as soon as it passes
    `limit`, httpx.DecodingError for an encoding that is not read or not what it says."""
    body = BoundedBody(response, limit)
    if not response.is_stream_consumed:
        async for sent in response.aiter_raw():
            body.add(sent)
    return body.read()


def read_within_sync(response: httpx.Response, limit: int, deadline: float | None = None) -> bytes:
    """`read_within` for a response of a synchronous client; httpx.ReadTimeout once its body
    is still arriving at `deadline` (a `time.monotonic()` time). Each wait of a client's
    socket is cut by `http_clients.within`; this also gives up a body whose pieces keep
    arriving in time, once the deadline has passed."""
    body = BoundedBody(response, limit)
    if not response.is_stream_consumed:
        for sent in response.iter_raw():
            if deadline is not None and time.monotonic() > deadline:
                raise _too_slow()
            body.add(sent)
    return body.read()


def _too_slow() -> httpx.ReadTimeout:
    import httpx  # (see `_decoding_error`)

    return httpx.ReadTimeout("its answer was still arriving at the call's time limit")


class BoundedBody:
    """The body of one answer as its bytes arrive: decoded, counted, refused past the limit.
    One gzip or deflate encoding is read (all that is asked for); any other, or several, is
    refused, as Rasa's aiohttp reads no layers either. httpx's own decoding inflated each
    piece read whole, and each encoding in turn, before the size was counted: 2 KB sent as
    `gzip, gzip` made a gigabyte."""

    def __init__(self, response: httpx.Response, limit: int) -> None:
        self._limit = limit
        self._chunks: list[bytes] = []
        self._size = 0
        self._inflater: Inflater | None = None
        self._refused: httpx.DecodingError | None = None  # raised at the first byte sent
        self._streamed = not response.is_stream_consumed
        if not self._streamed:  # a transport's answer made whole, in memory
            self._count(response.content)
            return
        codings = [c.strip().lower() for c in response.headers.get_list("content-encoding", True)]
        codings = [c for c in codings if c not in ("", "identity")]
        if len(codings) > 1 or (codings and codings[0] not in _WINDOW_BITS):
            shown = ", ".join(codings)[:80]
            self._refused = _decoding_error(
                f"its answer is encoded '{shown}': botserver reads one gzip or deflate "
                "encoding, or none"
            )
        elif codings:
            self._inflater = Inflater(codings[0])
        declared = response.headers.get("content-length", "")
        # Encoded, the answer may be longer than decoded (gzip's header, stored blocks).
        if not codings and declared.isdigit() and int(declared) > limit:
            raise ResponseTooLarge(f"its answer is {declared} bytes, more than {limit}")

    def add(self, sent: bytes) -> None:
        """Takes the next bytes sent, decoding never more than the room left under the limit
        (and one byte)."""
        assert self._streamed
        if self._refused is not None and sent:  # (no body holds no encoding to refuse)
            raise self._refused
        if self._inflater is None:
            self._count(sent)
            return
        self._inflater.feed(sent)
        while piece := self._inflater.read(self._limit - self._size + 1):
            self._count(piece)

    def read(self) -> bytes:
        """The whole body."""
        if self._inflater is not None:
            self._count(self._inflater.flush())
        return b"".join(self._chunks)

    def _count(self, chunk: bytes) -> None:
        self._size += len(chunk)
        if self._size > self._limit:
            raise ResponseTooLarge(f"its answer is more than {self._limit} bytes")
        self._chunks.append(chunk)


# zlib's window bits for each Content-Encoding read (x-gzip: gzip, RFC 9110 section 8.4.1.3).
_WINDOW_BITS = {
    "gzip": zlib.MAX_WBITS | 16,
    "x-gzip": zlib.MAX_WBITS | 16,
    "deflate": zlib.MAX_WBITS,
}
# Members one after the other read in one answer (aiohttp 3.9, Rasa 3.6's, reads the first
# only and drops what follows it): each costs a new inflater, and empty ones make nothing
# the size limit would count.
MAX_MEMBERS = 1024


class Inflater:
    """One gzip or deflate Content-Encoding undone as its bytes arrive, in pieces no larger
    than the reader asks for, so that a bomb is counted before it is in memory. Members one
    after the other (RFC 1952 section 2.2) are one encoding, and are read (aiohttp 3.9, Rasa
    3.6's, reads the first only); a deflate body without zlib's wrapper (raw deflate, as IIS
    sends it) is told by its first byte as aiohttp tells it. Errors are httpx.DecodingError,
    their text for a client."""

    def __init__(self, coding: str, max_members: int | None = MAX_MEMBERS) -> None:
        self._coding = coding
        self._bits = _WINDOW_BITS[coding]
        self._max_members = max_members
        self._inflater: Any = zlib.decompressobj(self._bits)
        self._members = 1
        self._started = False
        self._pending = b""  # fed, not yet decoded

    def feed(self, sent: bytes) -> None:
        """Takes the next bytes sent, decoded by the `read`s that follow."""
        if sent and not self._started:
            self._started = True
            if self._coding == "deflate" and sent[0] & 0x0F != 8:
                # zlib's wrapper starts with 8, its method: anything else is raw deflate.
                self._bits = -zlib.MAX_WBITS
                self._inflater = zlib.decompressobj(self._bits)
        self._pending = self._pending + sent if self._pending else sent

    def read(self, most: int) -> bytes:
        """The next decoded bytes, at most `most` (more than none); none once all fed is."""
        while self._pending:
            if self._inflater.eof:  # a member ended: what follows is the next one
                self._next_member()
            piece = self._inflate(self._pending, most)
            inflater = self._inflater
            self._pending = inflater.unused_data if inflater.eof else inflater.unconsumed_tail
            if piece:
                return piece
        return b""

    def pieces(self, sent: bytes, most: int) -> Iterator[bytes]:
        """`sent` decoded, in pieces of at most `most` bytes."""
        self.feed(sent)
        while piece := self.read(most):
            yield piece

    def flush(self) -> bytes:
        """What the last bytes sent still hold (at most a few hundred bytes)."""
        try:
            return bytes(self._inflater.flush())
        except zlib.error as e:
            raise self._not_inflating(e) from None

    def _next_member(self) -> None:
        self._members += 1
        if self._max_members is not None and self._members > self._max_members:
            raise _decoding_error(
                f"its answer is more than {self._max_members} {self._coding} members one "
                "after the other"
            )
        self._inflater = zlib.decompressobj(self._bits)

    def _inflate(self, data: bytes, most: int) -> bytes:
        try:
            piece: bytes = self._inflater.decompress(data, most)
        except zlib.error as e:
            if self._members > 1:
                raise _decoding_error(
                    f"its answer, said to be {self._coding}, goes on after its end with bytes "
                    f"that are not {self._coding} ({e})"
                ) from None
            raise self._not_inflating(e) from None
        return piece

    def _not_inflating(self, error: zlib.error) -> httpx.DecodingError:
        return _decoding_error(f"its answer, said to be {self._coding}, is not ({error})")


def _decoding_error(text: str) -> httpx.DecodingError:
    import httpx  # (a module read for its limits, as Duckling's, imports no HTTP client)

    return httpx.DecodingError(text)
