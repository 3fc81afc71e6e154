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
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise ResponseTooLarge(f"its answer is {declared} bytes, more than {limit}")
        self._chunks: list[bytes] = []
        self._size = 0
        self._decoder: _Decoder | None = None
        if response.is_stream_consumed:  # a transport's answer made whole, in memory
            self._count(response.content)
        else:
            self._decoder = _Decoder(response.headers.get_list("content-encoding", True))

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


class _Decoder:
    """Undoes an answer's Content-Encoding, never making more than the room left under the
    size limit (and one byte). httpx's own decoding inflated each piece read whole, and each
    encoding in turn, before the size was counted: 2 KB sent as `gzip, gzip` made a gigabyte.
    One gzip or deflate encoding is read (all that is asked for); any other, or several, is
    refused, as Rasa's aiohttp reads no layers either."""

    def __init__(self, encodings: list[str]) -> None:
        codings = [c.strip().lower() for c in encodings]
        codings = [c for c in codings if c not in ("", "identity")]
        self._inflater: Any = None
        if not codings:
            return
        if len(codings) > 1 or codings[0] not in _WINDOW_BITS:
            shown = ", ".join(codings)[:80]
            raise httpx.DecodingError(
                f"its answer is encoded '{shown}': botserver reads one gzip or deflate "
                "encoding, or none"
            )
        self._coding = codings[0]
        self._inflater = zlib.decompressobj(_WINDOW_BITS[self._coding])
        # A deflate body may come without zlib's wrapper (raw deflate, as IIS sends it).
        self._raw_deflate_possible = self._coding == "deflate"

    def decode(self, sent: bytes, room: int) -> bytes:
        """`sent` decoded, or its first `room` + 1 decoded bytes when it holds more."""
        if self._inflater is None:
            return sent
        pieces: list[bytes] = []
        made = 0
        data = sent
        while data and made <= room:
            piece = self._inflate(data, room + 1 - made)
            pieces.append(piece)
            made += len(piece)
            data = self._inflater.unconsumed_tail
        return b"".join(pieces)

    def _inflate(self, data: bytes, most: int) -> bytes:
        try:
            piece: bytes = self._inflater.decompress(data, most)
        except zlib.error as e:
            if not self._raw_deflate_possible:
                raise self._not_inflating(e) from None
            self._raw_deflate_possible = False
            self._inflater = zlib.decompressobj(-zlib.MAX_WBITS)
            return self._inflate(data, most)
        self._raw_deflate_possible = False
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
