"""Outgoing HTTP clients take no proxy from the environment, and only this module builds them."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from server.api.model import _post_callback
from server.channels.rocketchat_api import RocketChatAPI, RocketChatError
from server.channels.socketio_routing import Workers
from server.dialogue.http_endpoint import HttpEndpoint
from server.http_clients import (
    _trusted,
    async_client,
    retrying_connect_failures,
    sync_client,
)
from server.models.holder import ModelHolder
from server.models.source import ModelSource
from tests.api.test_tls_options import PASSWORD
from tests.loop_lag import loop_hold
from tests.serving import failing_handshakes, serving, serving_from_the_first_retry
from tests.tls_certificates import self_signed

SERVER = Path(__file__).resolve().parent.parent / "server"


async def _answer(request: Request) -> JSONResponse:
    return JSONResponse({"token": request.query_params.get("token")})


@pytest.fixture
async def proxy(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[list[bytes]]:
    """A "proxy" set in the environment that records what reaches it and answers 502."""
    reached: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        reached.append(await reader.read(1000))
        writer.write(b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "all_proxy"):
        monkeypatch.setenv(name, url)
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    async with server:
        yield reached


async def test_an_action_server_call_does_not_go_through_an_environment_proxy(
    proxy: list[bytes],
) -> None:
    async with serving(Starlette(routes=[Route("/", _answer, methods=["POST"])])) as url:
        endpoint = HttpEndpoint(url + "/", token="s3cret")
        answer = await endpoint.post_json({"next_action": "x"})
        await endpoint.client().aclose()
    # Before: the proxy got the request, the token in its URL included, and answered 502.
    assert proxy == []
    assert (answer.status_code, await answer.json()) == (200, {"token": "s3cret"})


async def test_async_and_sync_clients_do_not_go_through_an_environment_proxy(
    proxy: list[bytes],
) -> None:
    async with serving(Starlette(routes=[Route("/", _answer)])) as url:
        async with async_client() as client:
            first = await client.get(url + "/?token=a")

        def get() -> int:
            with sync_client() as client:
                return client.get(url + "/?token=b").status_code

        second = await asyncio.to_thread(get)
    assert proxy == []
    assert (first.status_code, second) == (200, 200)


async def test_the_ca_bundle_named_by_ssl_cert_file_is_still_trusted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cert_file, key_file = self_signed(tmp_path, PASSWORD)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert_file))
    app = Starlette(routes=[Route("/", _answer)])
    tls = {"ssl_certfile": str(cert_file), "ssl_keyfile": str(key_file)}
    async with serving(app, ssl_keyfile_password=PASSWORD, **tls) as url:
        async with async_client() as client:
            answer = await client.get(url + "/")
    assert answer.status_code == 200


def test_every_outgoing_client_is_built_by_http_clients() -> None:
    built_elsewhere = [
        str(path.relative_to(SERVER))
        for path in SERVER.rglob("*.py")
        if path.name != "http_clients.py"
        and re.search(r"httpx\.(Async)?Client\(", path.read_text(encoding="utf-8"))
    ]
    assert built_elsewhere == []


# Nothing listens there: a connection is refused at once.
REFUSED = "http://127.0.0.1:1"

# A fresh process's first call to an action server; prints the modules imported on the
# event loop's thread meanwhile (tests.api.cold_start_probe's watch).
_FIRST_ACTION_CALL = """
import asyncio, json, sys, threading
from server.dialogue.action_client import ActionServerClient
from tests.api.cold_start_probe import _LoopImports
from tests.fake_http import serve_json

async def first_call(url):
    client = ActionServerClient({"url": url})
    watch = _LoopImports(threading.get_ident())
    sys.meta_path.insert(0, watch)
    try:
        await client.run("action_hello", "alice", {"sender_id": "alice", "events": []}, None)
    finally:
        sys.meta_path.remove(watch)
        await client.aclose()
    return watch.names

with serve_json(lambda path, body: (200, {"events": [], "responses": []})) as url:
    print(json.dumps(asyncio.run(first_call(url + "/webhook"))))
"""


def test_a_process_first_call_to_an_action_server_imports_nothing_on_the_event_loop() -> None:
    """Before, httpcore imported anyio's asyncio backend, sockets and TLS streams (13
    modules) at the first connection, on the loop: every conversation waited (5,300 of the
    8,100 calls of a process's first turn that called an action)."""
    done = _in_a_fresh_process(_FIRST_ACTION_CALL)
    assert json.loads(done.stdout.splitlines()[-1]) == []


def _in_a_fresh_process(script: str) -> subprocess.CompletedProcess[str]:
    """`script` run by a new interpreter importing this tree; it must exit 0."""
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=SERVER.parent,
        env={**os.environ, "PYTHONPATH": str(SERVER.parent)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done


# A fresh process where the name of httpcore's backend module that server.http_clients
# imports ahead of use, in the thread that builds the first client, is not found there (as
# after a release that renamed it); httpcore's own import of it, on the loop, still is.
_RENAMED_BACKEND = """
import asyncio, sys, threading
from server.dialogue.action_client import ActionServerClient
from tests.fake_http import serve_json

class Renamed:
    def find_spec(self, name, path=None, target=None):
        ahead = threading.current_thread() is not threading.main_thread()
        if name == "httpcore._backends.anyio" and ahead:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)

async def first_call(url):
    client = ActionServerClient({"url": url})
    try:
        return await client.run("action_hello", "alice", {"sender_id": "alice", "events": []}, None)
    finally:
        await client.aclose()

sys.meta_path.insert(0, Renamed())
with serve_json(lambda path, body: (200, {"events": [], "responses": [{"text": "hi"}]})) as url:
    print(asyncio.run(first_call(url + "/webhook")))
"""


def test_an_action_server_is_called_whatever_httpcore_names_its_backend_modules() -> None:
    """The first client's thread imports httpcore's and anyio's private backend modules by
    name ahead of their use, only to spare the loop: an upgrade that renames one must cost
    that saving, never the call. Before, every call to an action server (and every other
    outgoing client's) failed with the ModuleNotFoundError."""
    done = _in_a_fresh_process(_RENAMED_BACKEND)
    assert "'text': 'hi'" in done.stdout, done.stdout


@pytest.mark.timing
async def test_outgoing_clients_made_while_serving_do_not_hold_the_event_loop(
    tmp_path: Path,
) -> None:
    """Before, each client loaded the CA bundle on the event loop (27-42 ms of CPU on this
    host): each training callback, and the first call to an action server, an NLG server,
    Rocket.Chat or another worker's socket.io sessions, held every conversation that long."""
    holds = []
    _trusted.cache_clear()  # each part as the first client of a process
    for _ in range(2):  # each callback makes its own client
        async with loop_hold() as hold:
            await _post_callback(REFUSED + "/done", b"{}", "application/json")
        holds.append(hold)
    endpoint = HttpEndpoint(REFUSED + "/webhook")
    _trusted.cache_clear()
    async with loop_hold() as hold:
        with pytest.raises(httpx.ConnectError):
            await endpoint.post_json({"next_action": "x"})
    holds.append(hold)
    await endpoint.aclose()
    rocket = RocketChatAPI(REFUSED, "bot", "secret")
    _trusted.cache_clear()
    async with loop_hold() as hold:
        with pytest.raises(RocketChatError, match="cannot reach"):
            await rocket.login()
    holds.append(hold)
    await rocket.aclose()
    (tmp_path / "w2.sock").touch()
    workers = Workers("w1", tmp_path, 20.0)
    _trusted.cache_clear()
    async with loop_hold() as hold:
        assert await workers.client("w2") is not None
    holds.append(hold)
    await workers.aclose()
    source = ModelSource(ModelHolder(lambda directory, metadata: None))
    _trusted.cache_clear()
    async with loop_hold() as hold:  # as at PUT /model naming a model server
        await source.load_from_model_server({"url": REFUSED + "/model.tar.gz"})
    holds.append(hold)
    assert source.last_pull_error is not None
    await source.stop()
    for hold in holds:
        assert hold.loop_busiest < 0.012 * hold.slowness, hold


@pytest.mark.parametrize("content", [None, "no certificate here\n"])
def test_a_ca_bundle_ssl_cert_file_names_that_cannot_be_read_stops_the_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, content: str | None
) -> None:
    """As an endpoint's `cafile`. Before, the server started, and every outgoing call (plain
    HTTP ones too: an action server, the socket.io workers' own sockets) failed with an
    error naming neither the variable nor the file ("[Errno 2] No such file or directory"),
    a custom action's as an error of the server."""
    from server.api.server import ServerOptions, build_app
    from server.errors import InvalidConfig

    bundle = tmp_path / "corporate-ca.pem"
    if content is not None:
        bundle.write_text(content, encoding="utf-8")
    monkeypatch.setenv("SSL_CERT_FILE", str(bundle))
    options = ServerOptions(endpoints={"tracker_store": {"type": "in_memory"}})
    with pytest.raises(InvalidConfig, match=f"^SSL_CERT_FILE {re.escape(str(bundle))}: "):
        build_app(options)


@pytest.mark.parametrize(
    ("soft", "cap"), [(1024, 256), (200, 100), (1_048_576, 262_144), (-1, None)]
)
def test_clients_called_once_a_conversation_are_capped_by_the_files_a_process_may_open(
    monkeypatch: pytest.MonkeyPatch, soft: int, cap: int | None
) -> None:
    """A quarter of the soft `ulimit -n` (at least httpx's 100; none when unlimited): calls
    to a server that hangs cannot take every file the process may open."""
    import resource

    from server.http_clients import per_conversation_limits

    soft = resource.RLIM_INFINITY if soft == -1 else soft
    monkeypatch.setattr(resource, "getrlimit", lambda _: (soft, resource.RLIM_INFINITY))
    assert per_conversation_limits().max_connections == cap


@pytest.fixture
def pauses(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The back-offs of connect retries (`server.http_clients`), recorded, not waited."""
    from server import http_clients

    waited: list[float] = []

    async def pause(delay: float) -> None:
        waited.append(delay)

    monkeypatch.setattr(http_clients, "_pause", pause)
    return waited


async def _get_retrying(url: str) -> None:
    """A GET of `url`, tried again as the outgoing clients try a POST that could not connect."""
    async with async_client() as client:
        await retrying_connect_failures(lambda: client.get(url), timeout=10, what="test")


@contextlib.asynccontextmanager
async def _https_to_a_plain_port() -> AsyncIterator[str]:
    """An https URL whose port serves plain HTTP (a wrong scheme in endpoints.yml)."""
    async with serving(Starlette(routes=[Route("/", _answer)])) as url:
        yield url.replace("http://", "https://") + "/"


async def test_a_connection_no_retry_can_make_is_not_tried_again(pauses: list[float]) -> None:
    """Before, it was tried again after 0.25 s and 1 s: every turn (a custom action, a
    callback's reply, a Rocket.Chat post) lost 1.25 s, to fail the same way."""
    async with _https_to_a_plain_port() as url:
        with pytest.raises(httpx.ConnectError):
            await _get_retrying(url)
    assert pauses == []


@contextlib.asynccontextmanager
async def _refused() -> AsyncIterator[str]:
    """A port nothing listens on (a server restarting)."""
    from bench.tcp_proxy import free_port

    yield f"http://127.0.0.1:{free_port()}/"


@contextlib.asynccontextmanager
async def _handshake_cut_short() -> AsyncIterator[str]:
    """A TLS proxy that closes each connection before the handshake: its backend is down."""
    async with failing_handshakes(after=0) as (url, _):
        yield url + "/"


@contextlib.asynccontextmanager
async def _resolver_not_answering() -> AsyncIterator[str]:
    """A host name whose lookup fails with EAI_AGAIN, "Temporary failure in name resolution"
    (the DNS server did not answer: glibc's error for a resolver restarting)."""
    real = socket.getaddrinfo

    def lookup(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host in ("dns-down.invalid", b"dns-down.invalid"):  # anyio passes it encoded
            raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
        return real(host, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(socket, "getaddrinfo", lookup)
        yield "http://dns-down.invalid/"


@contextlib.asynccontextmanager
async def _unknown_host() -> AsyncIterator[str]:
    """A host name the DNS says does not exist (RFC 2606 keeps `.invalid` so; EAI_NONAME):
    under Docker Compose, the name of a container stopped, restarting or being replaced."""
    yield "http://no-such-action-server.invalid/"


@pytest.mark.parametrize(
    "where", [_refused, _handshake_cut_short, _resolver_not_answering, _unknown_host]
)
async def test_a_connection_a_restart_may_mend_is_tried_twice_more(
    pauses: list[float], where: Callable[[], contextlib.AbstractAsyncContextManager[str]]
) -> None:
    async with where() as url:
        with pytest.raises(httpx.ConnectError):
            await _get_retrying(url)
    assert pauses == [0.25, 1.0]


async def test_a_result_whose_callback_url_is_restarting_is_posted_once_it_listens(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A training's model POSTed to a `callback_url` whose receiver refuses connections for
    a moment (a deploy): nothing was sent, so it is tried again. Before, the result of a
    training perhaps hours long went only to the server's log."""
    received: list[bytes] = []

    async def done(request: Request) -> JSONResponse:
        received.append(await request.body())
        return JSONResponse({})

    app = Starlette(routes=[Route("/done", done, methods=["POST"])])
    async with serving_from_the_first_retry(app, monkeypatch) as (url, pauses):
        await _post_callback(url + "/done", b"model bytes", "application/octet-stream")
    assert (received, pauses) == ([b"model bytes"], [0.25])
