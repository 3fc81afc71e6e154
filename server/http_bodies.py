"""An outbound HTTP answer's body read within a size limit, its Content-Encoding undone as it
arrives (action server, NLG, callback, a remote NLU server, Duckling).
"""

from __future__ import annotations

import zlib
from typing import Any

import httpx

from server.errors import InvalidConfig, ResponseTooLarge

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


def read_within_sync(response: httpx.Response, limit: int) -> bytes:
    """`read_within` for a response of a synchronous client."""
    body = BoundedBody(response, limit)
    if not response.is_stream_consumed:
        for sent in response.iter_raw():
            body.add(sent)
    return body.read()


class BoundedBody:
    """The body of one answer as its bytes arrive: decoded, counted, refused past the limit."""

    def __init__(self, response: httpx.Response, limit: int) -> None:
        self._limit = limit
        self._chunks: list[bytes] = []
        self._size = 0
        self._decoder: _Decoder | None = None
        if response.is_stream_consumed:  # a transport's answer made whole, in memory
            self._count(response.content)
            return
        self._decoder = _Decoder(response.headers.get_list("content-encoding", True))
        declared = response.headers.get("content-length", "")
        # Encoded, the answer may be longer than decoded (gzip's header, stored blocks).
        if not self._decoder.decodes and declared.isdigit() and int(declared) > limit:
            raise ResponseTooLarge(f"its answer is {declared} bytes, more than {limit}")

    def add(self, sent: bytes) -> None:
        """Takes the next bytes sent."""
        assert self._decoder is not None
        self._count(self._decoder.decode(sent, self._limit - self._size))

    def read(self) -> bytes:
        """The whole body."""
        if self._decoder is not None:
            self._count(self._decoder.flush())
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
# Members one after the other read in one answer, as aiohttp (Rasa's) reads them: each costs
# a new inflater, and empty ones make nothing the size limit would count.
MAX_MEMBERS = 1024


class _Decoder:
    """Undoes an answer's Content-Encoding, never making more than the room left under the
    size limit (and one byte). httpx's own decoding inflated each piece read whole, and each
    encoding in turn, before the size was counted: 2 KB sent as `gzip, gzip` made a gigabyte.
    One gzip or deflate encoding is read (all that is asked for); any other, or several, is
    refused, as Rasa's aiohttp reads no layers either. Members one after the other (RFC 1952
    section 2.2) are one encoding, and are read."""

    def __init__(self, encodings: list[str]) -> None:
        codings = [c.strip().lower() for c in encodings]
        codings = [c for c in codings if c not in ("", "identity")]
        self._inflater: Any = None
        self._refused: httpx.DecodingError | None = None  # raised at the first byte sent
        if not codings:
            return
        if len(codings) > 1 or codings[0] not in _WINDOW_BITS:
            shown = ", ".join(codings)[:80]
            self._refused = httpx.DecodingError(
                f"its answer is encoded '{shown}': botserver reads one gzip or deflate "
                "encoding, or none"
            )
            return
        self._coding = codings[0]
        self._bits = _WINDOW_BITS[self._coding]
        self._inflater = zlib.decompressobj(self._bits)
        self._started = False
        self._members = 1

    @property
    def decodes(self) -> bool:
        """Whether the answer is encoded (and its bytes sent are not the answer's)."""
        return self._inflater is not None or self._refused is not None

    def decode(self, sent: bytes, room: int) -> bytes:
        """`sent` decoded, or its first `room` + 1 decoded bytes when it holds more."""
        if self._refused is not None and sent:  # (no body holds no encoding to refuse)
            raise self._refused
        if self._inflater is None:
            return sent
        if sent and not self._started:
            self._started = True
            if self._coding == "deflate" and sent[0] & 0x0F != 8:
                # Raw deflate, without zlib's wrapper (as IIS sends it), told by its first
                # byte as aiohttp tells it: zlib's wrapper starts with 8, its method.
                self._bits = -zlib.MAX_WBITS
                self._inflater = zlib.decompressobj(self._bits)
        pieces: list[bytes] = []
        made = 0
        data = sent
        while data and made <= room:
            if self._inflater.eof:  # a member ended: what follows is the next one
                self._next_member()
            piece = self._inflate(data, room + 1 - made)
            pieces.append(piece)
            made += len(piece)
            data = self._inflater.unused_data if self._inflater.eof else b""
            data = data or self._inflater.unconsumed_tail
        return b"".join(pieces)

    def _next_member(self) -> None:
        self._members += 1
        if self._members > MAX_MEMBERS:
            raise httpx.DecodingError(
                f"its answer is more than {MAX_MEMBERS} {self._coding} members one after the other"
            )
        self._inflater = zlib.decompressobj(self._bits)

    def _inflate(self, data: bytes, most: int) -> bytes:
        try:
            piece: bytes = self._inflater.decompress(data, most)
        except zlib.error as e:
            if self._members > 1:
                raise httpx.DecodingError(
                    f"its answer, said to be {self._coding}, goes on after its end with bytes "
                    f"that are not {self._coding} ({e})"
                ) from None
            raise self._not_inflating(e) from None
        return piece

    def flush(self) -> bytes:
        """What the last bytes sent still hold (at most a few hundred bytes)."""
        if self._inflater is None:
            return b""
        try:
            return bytes(self._inflater.flush())
        except zlib.error as e:
            raise self._not_inflating(e) from None

    def _not_inflating(self, error: zlib.error) -> httpx.DecodingError:
        return httpx.DecodingError(f"its answer, said to be {self._coding}, is not ({error})")
