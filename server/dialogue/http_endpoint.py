"""An outbound HTTP endpoint from endpoints.yml or credentials.yml (url, token, headers, TLS).

Owns the one pooled `httpx.AsyncClient` per endpoint and the reading of Rasa's
`EndpointConfig` keys; callers only say what to POST.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson

from server.errors import InvalidConfig
from server.http_bodies import (
    ACCEPT_ENCODING,
    DEFAULT_MAX_RESPONSE_BYTES,
    max_response_bytes,
    read_within,
)
from server.http_clients import (
    async_client,
    async_client_off_loop,
    basic_auth_credentials,
    cookie_jar_keeping_none,
    header_values,
    per_conversation_limits,
)
from server.json_values import OFF_LOOP_JSON_BYTES, loads_untrusted
from server.trackers.events import EVENTS_PER_PIECE, OFF_LOOP_EVENTS
from server.trackers.freeing import release_json_off_loop
from server.urls import safe_url, url_as_rasa_reads

DEFAULT_TIMEOUT = 10.0


@dataclass(frozen=True)
class Answer:
    """An endpoint's answer: its status, its body, read whole (within the size limit), and
    where it redirects (its Location header)."""

    status_code: int
    content: bytes
    location: str | None = None

    @property
    def redirect(self) -> str | None:
        """For a 3xx answer, where it leads and that it is not followed, fit for a log line
        (the address as `safe_url` shows it); None for any other."""
        if not 300 <= self.status_code < 400:
            return None
        if not self.location:
            return "a redirect without a Location, which is not followed"
        where = one_line(safe_url(self.location, tolerant=True))
        return f"a redirect to {where}, which is not followed"

    async def failure(self) -> str:
        """An answer that is no success, for a log line: `HTTP 500: <what the server said>`
        (`HTTP 503, with an empty body` when it said nothing), or `HTTP 302, a redirect to
        <where>, which is not followed`."""
        if self.redirect is not None:
            return f"HTTP {self.status_code}, {self.redirect}"
        detail = await self.error_detail()
        if not detail:
            return f"HTTP {self.status_code}, with an empty body"
        return f"HTTP {self.status_code}: {detail}"

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    async def json(self) -> Any:
        """The body as JSON (`loads_untrusted`: NaN, infinities, unpaired surrogates and
        nesting too deep are refused); raises ValueError. A large body is read in a thread."""
        if len(self.content) > OFF_LOOP_JSON_BYTES:
            # Handed over in a list, not as the thread's result: the futures that carry a
            # result held it until the loop ran their callbacks, often after `let_go_of`
            # looked, and the value was then not the caller's alone to free off the loop.
            read: list[Any] = []
            await asyncio.to_thread(_read_into, read, self.content)
            return read.pop()
        return loads_untrusted(self.content)

    def let_go_of(self, value: Any) -> None:
        """For a caller done with `value`, read from this answer by `json()`, that holds it
        nowhere else: from a big body, it is freed in a thread (`release_json_off_loop`), not
        where its last reference goes. Freed at once, the 120,000 events of a 17 MB answer
        held the event loop 40 ms."""
        if len(self.content) > OFF_LOOP_JSON_BYTES:
            release_json_off_loop(value)

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
            detail = one_line(told(body["error"]))
        else:
            detail = one_line(_start_of_json(body))
        self.let_go_of(body)
        return detail


def told(value: Any) -> str:
    """A value of an answer's JSON, for a log line: a text as it is, anything else as the
    start of its JSON (`str()` wrote a big one whole on the event loop: 17 MB held it 0.3 s
    for the 200 characters shown)."""
    return value if isinstance(value, str) else _start_of_json(value)


def _read_into(read: list[Any], raw: bytes) -> None:
    read.append(loads_untrusted(raw))


def _start_of_json(value: Any) -> str:
    """The first 1,000 characters (or a few more) of `json.dumps(value)`, written only so far:
    the whole of a big answer's JSON took the C encoder one call holding the GIL."""
    written: list[str] = []
    length = 0
    # Without the check for cycles (parsed JSON has none): its dict of the lists and
    # objects being written lives in a cycle of the encoder's closures, which held the value
    # until a garbage collection, and so from the thread that frees it a piece at a time.
    for chunk in json.JSONEncoder(check_circular=False).iterencode(value):
        written.append(chunk)
        length += len(chunk)
        if length >= 1000:
            break
    return "".join(written)


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
        # Read as urlsplit reads it (and so Rasa's aiohttp, and our checks and log lines): a
        # tab or line break dropped (`${URL}` from a file ending in one), and what precedes
        # the scheme. httpx refused the one and read the other as a path: every call failed.
        url = url_as_rasa_reads(url)
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
        query = _query_params(params)
        if token:  # as Rasa's `if self.token`: an empty one (or 0, false) is not sent
            query[token_name or "token"] = str(token)
        # Added to the URL's own query (as Rasa's aiohttp does): a client's `params` would
        # replace it, and a key in the URL (`?code=...`) was dropped once a token was set.
        try:
            self._target = httpx.URL(url).copy_merge_params(query) if query else httpx.URL(url)
        except httpx.InvalidURL as e:  # failed every call before
            raise InvalidConfig(f"endpoint url '{self.safe_url}' is not a URL: {e}") from None
        self._headers = header_values(_mapping(headers, "headers"), "headers")
        # A `Content-Type` in `headers` is sent as configured, as Rasa sends it.
        own_type = any(name.lower() == "content-type" for name in self._headers)
        self._content_type = None if own_type else {"Content-Type": "application/json"}
        credentials = basic_auth_credentials(basic_auth)
        self._auth = httpx.BasicAuth(*credentials) if credentials else None
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
        max_bytes = max_response_bytes(config)
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
            # A call cancelled meanwhile (its `wait_for` timed out) drops the client the thread
            # still makes: it has opened no connection, holds no socket, and is freed as any
            # object (closing it would close an injected transport, which the next one shares).
            client = await async_client_off_loop(**self._client_options())
            if self._client is None:
                self._client = client
            else:  # made by another call meanwhile
                await client.aclose()
        return self._client

    def _client_options(self) -> dict[str, Any]:
        headers: dict[str, str | bytes] = {}
        if not any(name.lower() == "accept-encoding" for name in self._headers):
            headers["Accept-Encoding"] = ACCEPT_ENCODING
        return {
            # A conversation makes one call at a time: a cap from the files it may open.
            "limits": per_conversation_limits(),
            "headers": {**headers, **self._headers},
            "auth": self._auth,
            "verify": self._verify,
            "timeout": httpx.Timeout(self.timeout),
            "transport": self._transport,
            "follow_redirects": False,
            "cookies": cookie_jar_keeping_none(),  # none sent back, as Rasa's session per call
        }

    async def post_json(self, body: Any) -> Answer:
        """POSTs `body` as JSON (`json_content`) to the endpoint's URL and reads the answer.
        A caller that tries again writes the body once and `post`s it at each try."""
        return await self.post(await json_content(body))

    async def post(self, content: bytes) -> Answer:
        """POSTs `content`, JSON already written, to the endpoint's URL and reads the answer.

        httpx errors propagate to the caller; an answer over `max_response_bytes`
        (decompressed) raises ResponseTooLarge as soon as it passes the limit.
        """
        async with (await self._pooled()).stream(
            "POST", self._target, content=content, headers=self._content_type
        ) as response:
            answer = await read_within(response, self.max_response_bytes)
            location = response.headers.get("location")
            return Answer(response.status_code, answer, location)

    async def aclose(self) -> None:
        """Closes the pooled client; the endpoint can be used again afterwards."""
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()


async def json_content(body: Any) -> bytes:
    """`body` as JSON. A body holding a long list (a tracker's events, within two objects) is
    written in a thread, a piece of the list at a time: orjson holds the GIL for a whole call,
    17 ms for 100,000 events, which held the loop even from a thread. A small one is written
    here, where a thread would cost more than the writing."""
    if _longest_list(body, _LIST_DEPTH) > OFF_LOOP_EVENTS:
        return await asyncio.to_thread(_json_bytes_in_pieces, body)
    return _json_bytes(body)


# How many objects deep a long list is looked for: an action or NLG call's
# `tracker.events`. The domain beside it is not walked through.
_LIST_DEPTH = 2


def _longest_list(value: Any, depth: int) -> int:
    """The length of the longest list in `value`, in at most `depth` objects."""
    if isinstance(value, list):
        return len(value)
    if isinstance(value, dict) and depth > 0:
        return max((_longest_list(item, depth - 1) for item in value.values()), default=0)
    return 0


def _json_bytes_in_pieces(body: Any) -> bytes:
    """`_json_bytes(body)`, a long list's items written EVENTS_PER_PIECE per call: the same
    bytes, but for a piece orjson cannot write (an integer beyond 64 bits), which the stdlib
    writes alone, in ASCII, where the whole would all have been (the same JSON values)."""
    pieces: list[bytes] = []
    _write_in_pieces(body, pieces, _LIST_DEPTH)
    return b"".join(pieces)


def _write_in_pieces(value: Any, pieces: list[bytes], depth: int) -> None:
    if isinstance(value, list) and len(value) > EVENTS_PER_PIECE:
        pieces.append(b"[")
        for start in range(0, len(value), EVENTS_PER_PIECE):
            if start:
                pieces.append(b",")
            pieces.append(_json_bytes(value[start : start + EVENTS_PER_PIECE])[1:-1])
        pieces.append(b"]")
    elif isinstance(value, dict) and _longest_list(value, depth) > EVENTS_PER_PIECE:
        pieces.append(b"{")
        for index, (key, item) in enumerate(value.items()):
            if index:
                pieces.append(b",")
            pieces.append(_json_bytes({key: None})[1:-5])  # `"key":`, as the whole would be
            _write_in_pieces(item, pieces, depth - 1)
        pieces.append(b"}")
    else:
        pieces.append(_json_bytes(value))


def _json_bytes(body: Any) -> bytes:
    """`body` as JSON: orjson, 14 times faster than the stdlib for a long tracker, which
    writes what orjson cannot (integers beyond 64 bits), in ASCII so that nothing fails to
    encode."""
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
