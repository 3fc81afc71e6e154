"""An outbound HTTP endpoint from endpoints.yml or credentials.yml (url, token, headers, TLS).

Owns the one pooled `httpx.AsyncClient` per endpoint and the reading of Rasa's
`EndpointConfig` keys; callers only say what to POST.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import zlib
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson

from server.errors import InvalidConfig, ResponseTooLarge
from server.http_clients import async_client, async_client_off_loop, header_values, safe_url
from server.json_values import OFF_LOOP_JSON_BYTES, loads_untrusted

DEFAULT_TIMEOUT = 10.0
# How long an idle connection is kept for the next call: less than common servers' own
# keep-alive timeout (gunicorn 2 s; uvicorn, Node, Apache 5 s). httpx's 5 s met theirs, and
# a call as the server closed the connection failed (1 in 40 a second apart, against 1 s).
KEEPALIVE_SECONDS = 1.0
# The largest answer read, decompressed: an action server's events and messages are far
# smaller; a bigger (or endless, or gzip-bomb) body would only exhaust memory.
DEFAULT_MAX_RESPONSE_BYTES = 10 * 1024 * 1024


@dataclass(frozen=True)
class Answer:
    """An endpoint's answer: its status and its body, read whole (within the size limit)."""

    status_code: int
    content: bytes

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    async def json(self) -> Any:
        """The body as JSON (`loads_untrusted`: NaN, infinities, unpaired surrogates and
        nesting too deep are refused); raises ValueError. A large body is read in a thread."""
        if len(self.content) > OFF_LOOP_JSON_BYTES:
            return await asyncio.to_thread(loads_untrusted, self.content)
        return loads_untrusted(self.content)

    async def json_or_none(self) -> Any:
        """`json()`, or None for a body that is no JSON."""
        try:
            return await self.json()
        except ValueError:
            return None

    async def error_detail(self) -> str:
        """The server's error text (its JSON's `error`, else the body), on one line (it goes
        into a log line) and at most 200 long."""
        body = await self.json_or_none()
        if body is None:
            return one_line(self.text)
        if isinstance(body, dict) and body.get("error"):
            return one_line(str(body["error"]))
        return one_line(json.dumps(body))


def one_line(text: str) -> str:
    """`text` on one line, at most 200 long: what a server said, fit for a log line."""
    return " ".join(text[:1000].split())[:200]


class HttpEndpoint:
    """Where and how to reach one external HTTP service; holds one pooled client."""

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        token_name: str = "token",
        params: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        basic_auth: dict[str, str] | None = None,
        cafile: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if not url or not isinstance(url, str):
            raise InvalidConfig("an endpoint needs a 'url'")
        try:
            self.safe_url = safe_url(url)
            parts = urlsplit(url)
        except ValueError as e:  # a port out of range, a bad IPv6 address
            shown = safe_url(url, tolerant=True)
            raise InvalidConfig(f"endpoint url '{shown}' is not a URL: {e}") from e
        if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
            # `localhost:5055/webhook` read as scheme `localhost`: every call would fail.
            raise InvalidConfig(
                f"endpoint url '{self.safe_url}' must start with http:// or https:// and name "
                "a host (e.g. http://localhost:5055/webhook)"
            )
        self.url = url
        self.timeout = float(timeout)
        self.max_response_bytes = max_response_bytes
        self._params = _query_params(params)
        if token is not None:
            self._params[token_name or "token"] = str(token)
        self._headers = header_values(_mapping(headers, "headers"), "headers")
        self._auth: httpx.BasicAuth | None = None
        if basic_auth:
            try:
                self._auth = httpx.BasicAuth(basic_auth["username"], basic_auth["password"])
            except (KeyError, TypeError) as e:
                raise InvalidConfig("basic_auth needs 'username' and 'password'") from e
        # Read now: a CA file that is missing or holds no certificate fails at startup, not
        # on every call (where it used to escape as an OSError and lose the user's message).
        self._verify = _verification(cafile)
        self._transport = transport
        self._client: httpx.AsyncClient | None = None

    # The keys `from_config` reads.
    SETTINGS_KEYS = frozenset(
        (
            "url",
            "token",
            "token_name",
            "params",
            "headers",
            "basic_auth",
            "cafile",
            "timeout",
            "max_response_bytes",
        )
    )

    @classmethod
    def from_config(
        cls,
        config: dict[str, Any],
        *,
        timeout: float = DEFAULT_TIMEOUT,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> HttpEndpoint:
        """Builds an endpoint from Rasa's keys: url, token, token_name, params, headers..."""
        try:
            timeout = float(config.get("timeout", timeout))
        except (TypeError, ValueError) as e:
            raise InvalidConfig(f"'timeout' must be a number of seconds: {e}") from e
        if not timeout > 0:  # NaN too
            raise InvalidConfig("'timeout' must be a positive number of seconds")
        max_bytes = config.get("max_response_bytes", DEFAULT_MAX_RESPONSE_BYTES)
        if not isinstance(max_bytes, int) or isinstance(max_bytes, bool) or max_bytes <= 0:
            raise InvalidConfig("'max_response_bytes' must be a positive number of bytes")
        return cls(
            config.get("url") or "",
            token=config.get("token"),
            token_name=config.get("token_name") or "token",
            params=config.get("params"),
            headers=config.get("headers"),
            basic_auth=config.get("basic_auth"),
            cafile=config.get("cafile"),
            timeout=timeout,
            max_response_bytes=max_bytes,
            transport=transport,
        )

    def client(self) -> httpx.AsyncClient:
        """The endpoint's pooled client, created on first use."""
        if self._client is None:
            self._client = async_client(**self._client_options())
        return self._client

    async def _pooled(self) -> httpx.AsyncClient:
        """`client()`, first built in a thread: a client loads the CA bundle (27-42 ms of
        CPU), which held every conversation at a process's first action or NLG call."""
        if self._client is None:
            client = await async_client_off_loop(**self._client_options())
            if self._client is None:
                self._client = client
            else:  # made by another call meanwhile
                await client.aclose()
        return self._client

    def _client_options(self) -> dict[str, Any]:
        headers: dict[str, str | bytes] = {}
        if not any(name.lower() == "accept-encoding" for name in self._headers):
            # Only what `_Decoder` reads: httpx asks for br and zstd too once installed.
            headers["Accept-Encoding"] = "gzip, deflate"
        return {
            "params": self._params,
            "headers": {**headers, **self._headers},
            "auth": self._auth,
            "verify": self._verify,
            "timeout": httpx.Timeout(self.timeout),
            # httpx's own limits of connections, with a shorter life for an idle one.
            "limits": httpx.Limits(
                max_connections=100,
                max_keepalive_connections=20,
                keepalive_expiry=KEEPALIVE_SECONDS,
            ),
            "transport": self._transport,
            "follow_redirects": False,
        }

    async def post_json(self, body: Any) -> Answer:
        """POSTs `body` as JSON to the endpoint's URL and reads the answer.

        httpx errors propagate to the caller; an answer over `max_response_bytes`
        (decompressed) raises ResponseTooLarge as soon as it passes the limit.
        """
        limit = self.max_response_bytes
        content = _json_bytes(body)
        headers = {"Content-Type": "application/json"}
        async with (await self._pooled()).stream(
            "POST", self.url, content=content, headers=headers
        ) as response:
            if response.is_stream_consumed:  # a transport's answer made whole, in memory
                if len(response.content) > limit:
                    raise ResponseTooLarge(f"its answer is more than {limit} bytes")
                return Answer(response.status_code, response.content)
            decoder = _Decoder(response.headers.get_list("content-encoding", split_commas=True))
            declared = response.headers.get("content-length", "")
            # Encoded, the answer may be longer than decoded (gzip's header, stored blocks).
            if not decoder.decodes and declared.isdigit() and int(declared) > limit:
                raise ResponseTooLarge(f"its answer is {declared} bytes, more than {limit}")
            chunks: list[bytes] = []
            size = 0
            async for sent in response.aiter_raw():
                chunk = decoder.decode(sent, limit - size)
                size += len(chunk)
                if size > limit:
                    raise ResponseTooLarge(f"its answer is more than {limit} bytes")
                chunks.append(chunk)
            chunk = decoder.flush()
            if size + len(chunk) > limit:
                raise ResponseTooLarge(f"its answer is more than {limit} bytes")
            chunks.append(chunk)
            return Answer(response.status_code, b"".join(chunks))

    async def aclose(self) -> None:
        """Closes the pooled client; the endpoint can be used again afterwards."""
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()


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


def _json_bytes(body: Any) -> bytes:
    """`body` as JSON: orjson, 14 times faster than the stdlib for a long tracker (0.36 s for
    100,000 events, on the event loop), which writes what orjson cannot (integers beyond 64
    bits), in ASCII so that nothing fails to encode."""
    try:
        return orjson.dumps(body)
    except TypeError:
        return json.dumps(body, separators=(",", ":")).encode()


def _mapping(value: Any, key: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidConfig(f"'{key}' must be a mapping of names to values")
    return value


def _query_params(params: Any) -> dict[str, str]:
    values = {}
    for name, value in _mapping(params, "params").items():
        if value is None:  # it was sent as the text "None"
            raise InvalidConfig(f"'params': parameter '{name}' has no value")
        values[str(name)] = str(value)
    return values


def _verification(cafile: str | None) -> ssl.SSLContext | bool:
    if not cafile:
        return True
    try:
        return ssl.create_default_context(cafile=cafile)
    except (OSError, ssl.SSLError) as e:  # FileNotFoundError, no certificate in the file
        raise InvalidConfig(f"'cafile' {cafile!r} cannot be read as a CA bundle: {e}") from None
