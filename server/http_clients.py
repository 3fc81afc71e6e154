"""The outgoing HTTP clients (action server, NLG, callback, Rocket.Chat, model server, NLU server,
Duckling, socket.io workers).

Built here so that each ignores the proxy settings of the environment (`HTTP_PROXY`,
`HTTPS_PROXY`, `ALL_PROXY`), as Rasa's aiohttp clients do: an endpoint's token travels in its
URL, and a proxy set for other programs is not one the operator chose for botserver.
`SSL_CERT_FILE` and `SSL_CERT_DIR` are still honoured, as OpenSSL honours them for Rasa.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import importlib
import logging
import os
import re
import ssl
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from http.cookiejar import CookieJar, DefaultCookiePolicy
from typing import Any, TypeVar

import httpcore
import httpx

from server.errors import InvalidConfig, first_line

logger = logging.getLogger(__name__)
T = TypeVar("T")

# How long an idle connection is kept for the next call: less than common servers' own
# keep-alive timeout (gunicorn 2 s; uvicorn, Node, Sanic, Apache 5 s). httpx's 5 s met
# theirs, and a call as the server closed the connection got no answer (1 in 40 a second
# apart, against 1 s): a post lost, a message left without an intent, a worker's push lost.
KEEPALIVE_SECONDS = 1.0
# httpx's own limits of connections, with that shorter life for an idle one: every outgoing
# client's, unless it gives its own.
DEFAULT_LIMITS = httpx.Limits(
    max_connections=100, max_keepalive_connections=20, keepalive_expiry=KEEPALIVE_SECONDS
)


def per_conversation_limits() -> httpx.Limits:
    """The connection limits of a client that each conversation calls one call at a time
    (action server, NLG server, callback URL, Rocket.Chat): a cap of a quarter of the files
    this process may open (its soft RLIMIT_NOFILE, read now), at least httpx's 100. Under
    httpx's 100 (one host), a server hanging for 100 conversations (a custom action whose
    backend is stuck, a callback receiver stuck for some users) held every other
    conversation's calls, each waiting for a connection, its wait counted against its own
    timeout. Without a cap, calls made at once (reminders of many conversations due at the
    same minute) to a server that hangs took every file the process may open, and the
    server could accept no call nor reach its stores."""
    cap: int | None = DEFAULT_LIMITS.max_connections
    try:
        import resource  # not on Windows: httpx's 100 there
    except ImportError:
        pass
    else:
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        cap = None if soft == resource.RLIM_INFINITY else max(cap or 0, soft // 4)
    return httpx.Limits(
        max_connections=cap,
        max_keepalive_connections=DEFAULT_LIMITS.max_keepalive_connections,
        keepalive_expiry=DEFAULT_LIMITS.keepalive_expiry,
    )


def _verify(verify: Any) -> Any:
    """`verify=True` as httpx reads it with `trust_env`: the CA bundle the environment names
    (loaded again for each client: a sync client is used from threads, see `_trusted`)."""
    if verify is not True:
        return verify
    cafile, capath = _environment_bundle()
    if cafile is None and capath is None:
        return True
    return ssl.create_default_context(cafile=cafile, capath=capath)


def _verify_on_loop(verify: Any) -> Any:
    """`_verify`, but the bundle loaded once a process (see `_trusted`)."""
    return _trusted(*_environment_bundle()) if verify is True else verify


def _environment_bundle() -> tuple[str | None, str | None]:
    return os.environ.get("SSL_CERT_FILE") or None, os.environ.get("SSL_CERT_DIR") or None


@functools.lru_cache(maxsize=4)
def _trusted(cafile: str | None, capath: str | None) -> ssl.SSLContext:
    """The SSL context trusting a CA bundle, shared by the async clients: httpx loads the
    bundle again for each client (27-42 ms of CPU), which every training callback paid.
    Only theirs: httpcore sets the context's ALPN at each connection, which is safe on the
    one thread that runs the event loop, not beside another thread's handshake (OpenSSL's
    SSL_new reads it without the GIL)."""
    if cafile is None and capath is None:
        import certifi  # httpx's own default bundle

        cafile = certifi.where()
    return ssl.create_default_context(cafile=cafile, capath=capath)


def check_environment_bundle() -> None:
    """At start: raises InvalidConfig when `SSL_CERT_FILE` names a file that cannot be read as
    a CA bundle (as an endpoint's `cafile`), rather than every outgoing client failing, plain
    HTTP ones too, with an error naming neither. Loads the async clients' shared context."""
    cafile, capath = _environment_bundle()
    if cafile is None:
        return  # SSL_CERT_DIR's certificates are read when needed: a missing one fails no start
    try:
        _trusted(cafile, capath)
    except (OSError, ssl.SSLError) as e:  # FileNotFoundError, no certificate in the file
        raise InvalidConfig(
            f"SSL_CERT_FILE {cafile}: cannot be read as a CA bundle ({e}); unset it to trust "
            "certifi's"
        ) from None


async def async_client_off_loop(*, verify: Any = True, **options: Any) -> httpx.AsyncClient:
    """`async_client`, built in a thread: the first client of a process loads the CA bundle,
    27-42 ms of CPU that would hold every conversation if a client made while serving (a
    callback, the first call to an action server or Rocket.Chat) were built on the loop."""
    return await asyncio.to_thread(_async_client_and_backend, verify=verify, **options)


def _async_client_and_backend(**options: Any) -> httpx.AsyncClient:
    """`async_client`, and the network backend httpcore imports at a process's first
    connection (anyio's asyncio backend, its sockets and TLS streams: 13 modules, which the
    first call to an action server imported on the loop, 5,300 calls there)."""
    for module in _BACKEND_MODULES:
        # Private names, imported early only to spare the loop: a release that renames one
        # costs that saving, never the call (its library imports what it needs, as before).
        with contextlib.suppress(ImportError):
            importlib.import_module(module)
    return async_client(**options)


_BACKEND_MODULES = (
    "anyio._backends._asyncio",
    "anyio._core._sockets",
    "anyio.streams.tls",
    "httpcore._backends.anyio",
)


def async_client(*, verify: Any = True, **options: Any) -> httpx.AsyncClient:
    """An `httpx.AsyncClient` that takes no proxy from the environment (to be used on the
    event loop's thread only: its SSL context is shared), keeping an idle connection
    `KEEPALIVE_SECONDS` unless `limits` say otherwise."""
    options.setdefault("limits", DEFAULT_LIMITS)
    return httpx.AsyncClient(trust_env=False, verify=_verify_on_loop(verify), **options)


def sync_client(*, verify: Any = True, **options: Any) -> httpx.Client:
    """An `httpx.Client` that takes no proxy from the environment, keeping an idle connection
    `KEEPALIVE_SECONDS` unless `limits` say otherwise, whose calls made `within` a time end
    by then (each connect, read and write waits at most what is left of it)."""
    if "transport" not in options:
        transport = httpx.HTTPTransport(
            verify=_verify(verify), limits=options.pop("limits", DEFAULT_LIMITS), trust_env=False
        )
        # httpx and httpcore internals (0.27-0.28): read with care, so that another version
        # without them still makes a client, whose calls each read's timeout alone bounds.
        pool = getattr(transport, "_pool", None)
        backend = getattr(pool, "_network_backend", None)
        if isinstance(pool, httpcore.ConnectionPool) and backend is not None:  # (no proxy)
            pool._network_backend = _WithinBackend(backend)
        options["transport"] = transport
    return httpx.Client(trust_env=False, **options)


_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar("deadline", default=None)


@contextlib.contextmanager
def within(seconds: float) -> Iterator[float]:
    """A `sync_client`'s calls made inside end within `seconds` from now: httpx's timeout
    bounds each read only, and a server sending its headers or body a byte every few seconds
    held the call (a worker thread, a conversation) as long as it sent. No thread is started:
    each wait of the socket is cut to what is left. Yields the deadline (`time.monotonic()`)."""
    deadline = time.monotonic() + seconds
    token = _deadline.set(deadline)
    try:
        yield deadline
    finally:
        _deadline.reset(token)


def _left(timeout: float | None, late: type[httpcore.TimeoutException]) -> float | None:
    """`timeout`, cut to what is left before the deadline of the call `within` which this is."""
    deadline = _deadline.get()
    if deadline is None:
        return timeout
    left = deadline - time.monotonic()
    if left <= 0:
        raise late("the call's time limit has passed")
    return left if timeout is None else min(timeout, left)


class _WithinBackend(httpcore.NetworkBackend):
    def __init__(self, inner: httpcore.NetworkBackend) -> None:
        self._inner = inner

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Any = None,
    ) -> httpcore.NetworkStream:
        wait = _left(timeout, httpcore.ConnectTimeout)
        return _WithinStream(
            self._inner.connect_tcp(host, port, wait, local_address, socket_options)
        )

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Any = None
    ) -> httpcore.NetworkStream:
        wait = _left(timeout, httpcore.ConnectTimeout)
        return _WithinStream(self._inner.connect_unix_socket(path, wait, socket_options))

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


class _WithinStream(httpcore.NetworkStream):
    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, _left(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, _left(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        wait = _left(timeout, httpcore.ConnectTimeout)
        return _WithinStream(self._inner.start_tls(ssl_context, server_hostname, wait))

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


def cookie_jar_keeping_none() -> CookieJar:
    """A client's cookie jar that keeps no cookie. Rasa opens a session per call to an
    action server, NLG server, callback, model server or Duckling (its Rocket.Chat client
    uses none), so a cookie an answer sets is never sent back; a pooled client would send
    it with every later call, whatever the conversation. (Rasa's NLU server client keeps
    one session, cookies and all: not followed, see docs/differences-from-rasa.md.)"""
    return CookieJar(DefaultCookiePolicy(allowed_domains=[]))


# The waits before each new try of a connection that could not be made (refused, reset
# during the handshake, a host name that did not resolve): a server restarting, a load
# balancer swapping it. Short: the caller may hold a conversation's lock meanwhile.
CONNECT_RETRY_DELAYS = (0.25, 1.0)
_pause = asyncio.sleep


async def retrying_connect_failures(
    call: Callable[[], Awaitable[T]],
    *,
    timeout: float,
    what: str,
    delays: Sequence[float] = CONNECT_RETRY_DELAYS,
) -> T:
    """`call()`, bounded as a whole by `timeout`, tried again after each of `delays` while it
    fails to connect and the pause leaves time. httpx raises ConnectError before any byte of
    the request was sent, so a retry cannot make a POST that is not idempotent (a chat
    message, a callback, a custom action) twice; a failure once the request went out (a
    timeout, a connection closed without an answer) is raised at once, and so is a failure
    no retry mends (`connect_failure_is_permanent`). `what`: the log lines' prefix. Raises
    TimeoutError past `timeout`: its tries and pauses together, never `timeout` a try (a
    connection failing slowly, a name the resolver gives up on, cost three). A retry is made
    only if, after its pause, it has at least the time the failed try took: else (the pause
    foreseen too long, or overslept by a busy event loop) the ConnectError is raised, where
    that retry would end as a TimeoutError, told as a server that did not answer."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    for delay in delays:
        began = loop.time()
        try:
            return await asyncio.wait_for(call(), deadline - began)
        except httpx.ConnectError as e:
            failed = loop.time()
            took = failed - began
            if connect_failure_is_permanent(e) or failed + delay + took >= deadline:
                raise
            logger.info(
                "%s: cannot connect (%s); trying again in %g s",
                what,
                first_line(e, limit=200),
                delay,
            )
            await _pause(delay)
            if loop.time() + took >= deadline:
                raise  # the pause ended later than planned: no time left for the retry
    return await asyncio.wait_for(call(), deadline - loop.time())


def connect_failure_is_permanent(error: BaseException) -> bool:
    """Whether a connection could not be made for a reason no retry mends: a TLS handshake
    that failed (a certificate not trusted, https to a port that speaks plain HTTP). A
    connection refused or reset, a TLS handshake cut short (a TLS proxy whose backend is
    down) and a host name that did not resolve may be mended by a server restarting, and are
    not: a name the DNS says does not exist (EAI_NONAME) is also a stopped container's under
    Docker Compose, whose DNS drops the name until the container is started again."""
    seen: BaseException | None = error
    for _ in range(10):  # httpx's error, httpcore's, anyio's, the ssl module's
        if seen is None:
            break
        if isinstance(seen, ssl.SSLError) and not isinstance(seen, _TLS_CUT_SHORT):
            return True
        seen = seen.__cause__ or seen.__context__
    return "CERTIFICATE_VERIFY_FAILED" in str(error)


# The peer closed the connection, or the socket failed, during the handshake: no TLS error.
_TLS_CUT_SHORT = (ssl.SSLEOFError, ssl.SSLZeroReturnError, ssl.SSLSyscallError)


# A header's name: a token (RFC 9110 section 5.6.2).
_HEADER_NAME = re.compile(r"[-!#$%&'*+.^_`|~0-9A-Za-z]+")
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def header_values(headers: dict[str, Any], key: str) -> dict[str, bytes]:
    """An endpoint's `headers:` (`key` in its config) as they are sent: without the spaces and
    tabs around a value (no part of it, RFC 9110 section 5.5), in UTF-8 as Rasa's aiohttp
    sends them. A header no request can carry is an InvalidConfig, named, its value never
    shown (often a secret): before, every call failed, and the log line quoted the value."""
    values = {}
    for field, value in headers.items():
        name = str(field)
        if not _HEADER_NAME.fullmatch(name):
            raise InvalidConfig(
                f"'{key}': {name[:80]!r} is no header name (letters, digits and -!#$%&'*+.^_`|~)"
            )
        if value is None:  # it was sent as the text "None"
            raise InvalidConfig(f"'{key}': header '{name}' has no value")
        text = str(value).strip(" \t")
        if "\n" in text or "\r" in text:
            raise InvalidConfig(
                f"'{key}': header '{name}' holds a line break (a secret read from a file, "
                "with the file's last line break?)"
            )
        if _CONTROL.search(text):
            raise InvalidConfig(f"'{key}': header '{name}' holds a control character")
        try:
            values[name] = text.encode()
        except UnicodeEncodeError:  # half a surrogate pair, from a YAML escape
            raise InvalidConfig(f"'{key}': header '{name}' is no UTF-8 text") from None
    return values


def basic_auth_credentials(basic_auth: Any) -> tuple[str, str] | None:
    """An endpoint's `basic_auth:` (user name, password), read for every endpoint as Rasa's
    aiohttp reads it: a number is sent as its text (YAML reads `password: 1234` as one);
    what no request can carry stops the start (the value unsaid)."""
    if not basic_auth:
        return None
    if not isinstance(basic_auth, dict):
        raise InvalidConfig("'basic_auth' must be a mapping with 'username' and 'password'")
    credentials = []
    for key in ("username", "password"):
        value = basic_auth.get(key)
        if value is None:
            raise InvalidConfig(f"'basic_auth' needs a '{key}'")
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise InvalidConfig(f"'basic_auth' '{key}' must be text (quote it in YAML)")
        credentials.append(str(value))
    if ":" in credentials[0]:
        # The server splits `username:password` at the first ':': the login would be wrong.
        raise InvalidConfig("'basic_auth' 'username' cannot hold a ':'")
    return credentials[0], credentials[1]
