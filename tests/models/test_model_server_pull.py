"""Pulling from a real local HTTP model server, and swapping models while turns run.

Every failure (304, 204, 404, timeout, corrupt body, server gone) must leave the previous
model answering.
"""

from __future__ import annotations

import asyncio
import gzip
import logging
import os
import tempfile
import threading
import time
import tracemalloc
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import parse_qs, urlparse

import httpx
import pytest

from server.api.app import create_app
from server.api.model import apply_model_request
from server.api.settings import ApiSettings
from server.api.status import status_router
from server.errors import CorruptArchive, InvalidConfig, ModelStorageFull, ModelSuperseded
from server.models import ArchiveLimits, ModelHolder, ModelSource
from server.models.model_server import ModelServerConfig, ModelServerPoller
from server.models.signing import generate_keypair
from tests.fake_http import silent_server
from tests.loop_lag import paced
from tests.models.conftest import GreetingModel, greeting_loader
from tests.small_disk import temp_files_on_a_small_disk
from tests.stop_races import StopRace, wait_for_swallows_a_cancel


@dataclass
class Behaviour:
    """What the model server does next; tests change it between pulls."""

    # serve | no-etag | 204 | 304 | 404 | 500 | slow | drip | corrupt | huge (Content-Length
    # far beyond the body, which then stalls) | truncated (Content-Length beyond the body,
    # then the connection closes) | unsized (no Content-Length) | redirect |
    # ignore-inm (200 whatever If-None-Match says) | endless-members (the body, then small gzip
    # members until the client hangs up) | endless-blocks (the body, an encoding left open,
    # then empty deflate blocks until the client hangs up)
    mode: str = "serve"
    body: bytes = b""
    etag: str = '"v1"'
    content_encoding: str | None = None  # sent as the body's Content-Encoding
    cookie: str | None = None  # sent as Set-Cookie with each answer
    requests: list[dict[str, Any]] = field(default_factory=list)


class ModelServer:
    def __init__(self) -> None:
        self.behaviour = Behaviour()
        behaviour = self.behaviour

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                url = urlparse(self.path)
                behaviour.requests.append(
                    {"path": url.path, "query": parse_qs(url.query), "headers": dict(self.headers)}
                )
                mode = behaviour.mode
                if mode == "slow":
                    time.sleep(2)
                if mode == "redirect":
                    self.send_response(302)
                    self.send_header("Location", "http://cdn.example:8080/m.tar.gz?sig=SIGNED")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if mode in ("204", "304", "401", "403", "404", "500"):
                    self.send_response(int(mode))
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if mode == "serve" and self.headers.get("If-None-Match") == behaviour.etag:
                    self.send_response(304)
                    self.end_headers()
                    return
                body = b"\x1f\x8b garbage, not a model" if mode == "corrupt" else behaviour.body
                self.send_response(200)
                if mode != "no-etag":
                    self.send_header("ETag", behaviour.etag)
                if mode == "gzip-encoded":  # the body given is gzip-compressed already
                    self.send_header("Content-Encoding", "gzip")
                if behaviour.content_encoding is not None:
                    self.send_header("Content-Encoding", behaviour.content_encoding)
                self.send_header("filename", "served-model.tar.gz")
                if behaviour.cookie is not None:
                    self.send_header("Set-Cookie", behaviour.cookie)
                declared = {"huge": 10**12, "truncated": len(body) + 1000}.get(mode, len(body))
                if mode not in ("unsized", "endless-members", "endless-blocks"):
                    self.send_header("Content-Length", str(declared))
                self.end_headers()
                try:
                    if mode == "huge":
                        self.wfile.write(body)
                        self.wfile.flush()
                        time.sleep(3)
                    if mode == "split":  # the first byte read on its own
                        self.wfile.write(body[:1])
                        self.wfile.flush()
                        time.sleep(0.1)
                        body = body[1:]
                    if mode == "drip":  # a byte every 0.1 s: no single read ever times out
                        for index in range(len(body)):
                            self.wfile.write(body[index : index + 1])
                            self.wfile.flush()
                            time.sleep(0.1)
                    self.wfile.write(body)
                    if mode == "endless-members":  # small gzip members for ever after it
                        # (64 bytes each, not padding: they decode to more than half of them)
                        small = b"".join(gzip.compress(os.urandom(64)) for _ in range(1000))
                        while True:
                            self.wfile.write(small)
                    if mode == "endless-blocks":  # empty deflate blocks for ever after it
                        while True:  # (the body ends on a sync flush: a block's boundary)
                            self.wfile.write(b"\x00\x00\x00\xff\xff" * 10_000)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/models/default@latest"
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def model_server() -> Iterator[ModelServer]:
    server = ModelServer()
    yield server
    server.stop()


@pytest.fixture
async def client() -> Any:
    async with httpx.AsyncClient() as shared:
        yield shared


@pytest.fixture
def holder(loader) -> ModelHolder[Any]:
    return ModelHolder(loader)


async def poller_with_model(model_server, holder, client, archive_factory, **cfg):
    model_server.behaviour.body = archive_factory("one").read_bytes()
    config = ModelServerConfig.from_endpoint({"url": model_server.url, **cfg})
    poller = ModelServerPoller(holder, config, client)
    assert await poller.pull_once() is True
    assert holder.current.answer() == "one"
    return poller


@wait_for_swallows_a_cancel
async def test_stopping_as_a_scheduled_pull_ends_still_returns(
    model_server, holder, client, archive_factory
):
    """The server's stop cancels the scheduled pulls. A pull runs under asyncio.wait_for,
    which in Python 3.11 swallows a cancel that lands as the download ends: the schedule
    went on pulling, and stop() waited for ever. Here stop() lands just so."""
    poller = await poller_with_model(
        model_server, holder, client, archive_factory, wait_time_between_pulls=0.05
    )
    race = StopRace(lambda task: task.get_name() == "pull-model-from-server", poller.stop)
    try:
        with race:
            poller.start()
            await race.started("no scheduled pull")
        assert await race.ended(), "stop() waits for ever"
    finally:
        await race.abandon()
        await poller.stop()


async def test_200_with_etag_loads_and_etag_becomes_fingerprint(
    model_server, holder, client, archive_factory
):
    await poller_with_model(model_server, holder, client, archive_factory)
    assert holder.info.fingerprint == '"v1"'
    assert holder.info.model_file == "served-model.tar.gz"
    assert holder.info.source == "server"
    assert "if-none-match" not in {k.lower() for k in model_server.behaviour.requests[0]["headers"]}


async def test_304_keeps_the_model_and_sends_the_etag_verbatim(
    model_server, holder, client, archive_factory
):
    poller = await poller_with_model(model_server, holder, client, archive_factory)
    before = holder.current

    assert await poller.pull_once() is False

    assert model_server.behaviour.requests[-1]["headers"]["If-None-Match"] == '"v1"'
    assert holder.current is before and holder.current.answer() == "one"


async def test_new_etag_swaps_the_model(model_server, holder, client, archive_factory):
    poller = await poller_with_model(model_server, holder, client, archive_factory)
    model_server.behaviour.body = archive_factory("two").read_bytes()
    model_server.behaviour.etag = '"v2"'

    assert await poller.pull_once() is True
    assert holder.current.answer() == "two"
    assert holder.info.fingerprint == '"v2"'


@pytest.mark.parametrize("mode", ["204", "404", "500", "corrupt"])
async def test_no_change_or_failure_keeps_the_model(
    model_server, holder, client, archive_factory, mode, caplog
):
    poller = await poller_with_model(model_server, holder, client, archive_factory)
    model_server.behaviour.mode = mode
    model_server.behaviour.etag = '"v2"'

    assert await poller.pull_once() is False

    assert holder.current.answer() == "one"
    assert holder.info.fingerprint == '"v1"'
    if mode == "404":
        assert "has no model (404)" in poller.last_error
    if mode == "corrupt":
        assert "corrupt" in holder.last_error
        assert "failed to load" in poller.last_error


@pytest.mark.parametrize("status", ["401", "403"])
async def test_a_refused_credential_says_which_settings_send_one(
    model_server, holder, client, archive_factory, status: str
):
    """A wrong or expired token is the usual 401/403: the failure names the settings that
    send credentials (before: only "answered HTTP 401", pull after pull)."""
    poller = await poller_with_model(model_server, holder, client, archive_factory, token="s3cr3t")
    model_server.behaviour.mode = status
    model_server.behaviour.etag = '"v2"'

    assert await poller.pull_once() is False

    assert holder.current.answer() == "one"
    assert f"answered HTTP {status}" in poller.last_error
    assert "models.token" in poller.last_error and "basic_auth" in poller.last_error
    assert "s3cr3t" not in poller.last_error


async def test_timeout_keeps_the_model(model_server, holder, client, archive_factory):
    poller = await poller_with_model(model_server, holder, client, archive_factory, timeout=0.3)
    model_server.behaviour.mode = "slow"

    assert await poller.pull_once() is False

    assert "timed out" in poller.last_error
    assert holder.current.answer() == "one"


@pytest.mark.timing
async def test_a_body_that_drips_times_out_as_a_whole(
    model_server, holder, client, archive_factory
):
    poller = await poller_with_model(model_server, holder, client, archive_factory, timeout=0.5)
    model_server.behaviour.mode = "drip"
    model_server.behaviour.etag = '"v2"'
    started = time.monotonic()

    assert await poller.pull_once() is False

    assert time.monotonic() - started < 0.5 + paced(2.5)
    assert "timed out after 0.5 s" in poller.last_error
    assert holder.current.answer() == "one"


@pytest.mark.timing
async def test_a_silent_model_server_fails_after_the_read_timeout_not_the_whole_exchange(
    holder, client
):
    """Before: a model server that took the connection and sent nothing held the pull (and
    the start-up, which waits for the first pull) for the whole `timeout`, 300 s."""
    with silent_server() as url:
        config = ModelServerConfig.from_endpoint({"url": url + "/model", "read_timeout": 0.5})
        poller = ModelServerPoller(holder, config, client)
        started = time.monotonic()

        assert await asyncio.wait_for(poller.pull_once(), 0.5 + paced(5, below=20)) is False

        took = time.monotonic() - started
    assert took < 0.5 + paced(5, below=20), took
    assert config.timeout == 300  # the whole exchange keeps Rasa's bound
    assert "sent nothing for 0.5 s (models.read_timeout)" in (poller.last_error or "")
    assert holder.current is None


def test_the_read_timeout_is_30_s_unless_set_and_never_past_the_timeout() -> None:
    url = {"url": "http://models.example/m"}
    assert ModelServerConfig.from_endpoint(url).read_timeout == 30
    assert ModelServerConfig.from_endpoint({**url, "timeout": 5}).read_timeout == 5
    with pytest.raises(InvalidConfig, match="models.read_timeout must be seconds"):
        ModelServerConfig.from_endpoint({**url, "read_timeout": "soon"})


@pytest.mark.parametrize(
    ("basic_auth", "message"),
    [
        ({"username": "bot", "password": None}, "'basic_auth' needs a 'password'"),
        ({"username": None, "password": "s3c"}, "'basic_auth' needs a 'username'"),
        ({"username": "bot", "password": ["s3c"]}, "'basic_auth' 'password' must be text"),
        ({"username": "bot", "password": True}, "'basic_auth' 'password' must be text"),
        ({"username": "a:b", "password": "s3c"}, "'basic_auth' 'username' cannot hold"),
        ("bot:s3c", "'basic_auth' must be a mapping with 'username' and 'password'"),
    ],
)
def test_basic_auth_is_read_as_every_endpoint_reads_it(basic_auth: Any, message: str) -> None:
    """As the action server's and NLG's (and Rasa's aiohttp, which refuses a null and a
    ':' in the user name): before, `password: null` sent the password "None", `True` sent
    "True", and a user name with a ':' logged in as another user."""
    with pytest.raises(InvalidConfig, match=f"models: {message}") as raised:
        ModelServerConfig.from_endpoint({"url": "http://m.example/m", "basic_auth": basic_auth})
    assert "s3c" not in str(raised.value)
    numeric = {"username": "bot", "password": 1234}  # a number to YAML, sent as its text
    config = ModelServerConfig.from_endpoint({"url": "http://m.example/m", "basic_auth": numeric})
    assert config.basic_auth == ("bot", "1234")


@pytest.mark.timing
@pytest.mark.parametrize("mode", ["huge", "unsized"])
async def test_a_body_too_large_is_refused_early_without_the_token(
    model_server, client, loader, archive_factory, mode
):
    """Declared too large: refused before the body is read. Streamed too large: refused at
    the limit. Either way the error (logged, and the answer to PUT /model) holds no token."""
    holder = ModelHolder(loader, limits=ArchiveLimits(max_total_bytes=100))
    model_server.behaviour.mode = mode
    model_server.behaviour.body = archive_factory("one").read_bytes()
    poller = ModelServerPoller(
        holder,
        ModelServerConfig.from_endpoint(
            {"url": model_server.url, "token": "s3cret", "token_name": "key", "timeout": 2}
        ),
        client,
    )
    started = time.monotonic()

    assert await poller.pull_once() is False

    assert time.monotonic() - started < paced(1, below=2)  # within the 2 s timeout
    error = poller.last_error or ""
    assert "larger than 100 bytes" in error
    assert "s3cret" not in error


async def test_a_content_encoding_that_expands_the_body_is_refused_at_once(
    model_server, holder, client, archive_factory
):
    """A model archive is compressed already: a gzip `Content-Encoding` can only shrink it by
    a little. Before, 20 KB of gzip-encoded zeros were written to disk as 20 MB (4 GiB from
    4 MB, at every pull) and then refused as a corrupt archive."""
    model_server.behaviour.mode = "gzip-encoded"
    # Decoded, it opens as gzip would: only its size gives it away.
    model_server.behaviour.body = gzip.compress(b"\x1f\x8b" + b"\0" * 20_000_000)
    poller = ModelServerPoller(holder, ModelServerConfig.from_endpoint({"url": model_server.url}))
    poller._client = client

    assert await poller.pull_once() is False

    assert "Content-Encoding expands the body" in (poller.last_error or "")
    assert holder.info is None
    # The same archive gzip-encoded once more in transit (a compressing proxy) still loads.
    model_server.behaviour.body = gzip.compress(archive_factory("one").read_bytes())
    assert await poller.pull_once() is True
    assert holder.info is not None


async def _failed_pull_peak(poller: ModelServerPoller) -> int:
    """The most memory a pull that fails held at once (traced)."""
    tracemalloc.start()
    try:
        assert await poller.pull_once() is False
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def _twice_gzipped(zeros: int) -> bytes:
    once = zlib.compressobj(9, zlib.DEFLATED, zlib.MAX_WBITS | 16)
    block = b"\0" * (1024 * 1024)
    inner = b"".join([*(once.compress(block) for _ in range(zeros // len(block))), once.flush()])
    return gzip.compress(inner, compresslevel=9)


@pytest.mark.parametrize(
    ("encoding", "message"),
    [
        ("gzip, gzip", "is encoded 'gzip, gzip': a model archive is served as it is"),
        ("deflate, gzip", "is encoded 'deflate, gzip': a model archive is served as it is"),
    ],
)
async def test_a_body_encoded_in_layers_is_refused_unread(
    model_server, holder, client, encoding, message
):
    """Before, httpx undid `gzip, gzip` whole, piece by piece: 600 bytes became 100 MB in
    memory at once (300 MB from 658 bytes), before the expansion check saw a byte."""
    model_server.behaviour.content_encoding = encoding
    model_server.behaviour.body = _twice_gzipped(100 * 1024 * 1024)
    poller = ModelServerPoller(
        holder, ModelServerConfig.from_endpoint({"url": model_server.url}), client
    )
    assert await _failed_pull_peak(poller) < 6_000_000
    assert message in (poller.last_error or "")
    assert holder.info is None


@pytest.mark.parametrize("wrapped", [True, False])
@pytest.mark.parametrize("mode", ["serve", "split"])
async def test_an_archive_served_deflate_encoded_loads(
    model_server, holder, client, archive_factory, wrapped, mode
):
    """Deflate with zlib's wrapper or without (raw, as IIS sends it), told apart by the first
    byte: before, by the first bytes read, and raw deflate whose first byte came alone was
    taken for zlib's, then refused."""
    model_server.behaviour.content_encoding = "deflate"
    model_server.behaviour.mode = mode
    archive = archive_factory("one").read_bytes()
    model_server.behaviour.body = zlib.compress(archive, wbits=15 if wrapped else -15)
    poller = ModelServerPoller(
        holder, ModelServerConfig.from_endpoint({"url": model_server.url}), client
    )
    assert await poller.pull_once() is True, poller.last_error


@pytest.mark.parametrize(
    ("mode", "encoding", "message"),
    [
        ("serve", "deflate", "its answer, said to be deflate, is not (Error -3"),
        ("gzip-encoded", None, "goes on after its end with bytes that are not gzip"),
    ],
)
async def test_a_body_that_is_not_what_its_encoding_says_is_refused_naming_it(
    model_server, holder, client, archive_factory, mode, encoding, message
):
    """The pull's error names the encoding, and bytes after a gzip member that start no new
    one, as an action server's answer does: before, "its body does not decode as its
    Content-Encoding says" for both."""
    model_server.behaviour.mode = mode
    model_server.behaviour.content_encoding = encoding
    archive = archive_factory("one").read_bytes()
    body = archive if encoding else gzip.compress(archive) + b"not gzip"
    model_server.behaviour.body = body
    poller = ModelServerPoller(
        holder, ModelServerConfig.from_endpoint({"url": model_server.url}), client
    )
    assert await poller.pull_once() is False
    assert message in (poller.last_error or ""), poller.last_error
    assert holder.info is None


async def test_a_header_is_sent_without_the_spaces_around_its_value(
    model_server, holder, client, archive_factory
):
    """As the action server's: before, ' s3cret ' failed every pull, and its log line quoted
    the value (`Illegal header value b' s3cret '`)."""
    model_server.behaviour.body = archive_factory("one").read_bytes()
    config = {"url": model_server.url, "headers": {"X-Api-Key": " s3cret\t"}}
    poller = ModelServerPoller(holder, ModelServerConfig.from_endpoint(config), client)
    assert await poller.pull_once() is True, poller.last_error
    assert model_server.behaviour.requests[-1]["headers"]["X-Api-Key"] == "s3cret"


async def test_only_the_encodings_read_are_asked_for(
    model_server, holder, archive_factory, monkeypatch
):
    """httpx asks for br and zstd too once `brotli` or `zstandard` is installed, which a
    CDN may then send; a pull reads the body as sent unless gzip or deflate (before, httpx
    undid br itself), and a br-encoded archive was refused as no archive."""
    monkeypatch.setattr("httpx._client.ACCEPT_ENCODING", "gzip, deflate, br, zstd")
    model_server.behaviour.body = archive_factory("one").read_bytes()
    async with httpx.AsyncClient() as own:
        poller = ModelServerPoller(
            holder, ModelServerConfig.from_endpoint({"url": model_server.url}), own
        )
        assert await poller.pull_once() is True, poller.last_error
    assert model_server.behaviour.requests[-1]["headers"]["Accept-Encoding"] == "gzip, deflate"
    # One the user sets is sent as set.
    config = {"url": model_server.url, "headers": {"accept-encoding": "identity"}}
    async with httpx.AsyncClient() as own:
        await ModelServerPoller(holder, ModelServerConfig.from_endpoint(config), own).pull_once()
    sent = {k.lower(): v for k, v in model_server.behaviour.requests[-1]["headers"].items()}
    assert sent["accept-encoding"] == "identity"


async def test_an_archive_served_with_its_gzip_as_content_encoding_loads(
    model_server, holder, client, archive_factory
):
    """A .tar.gz served with `Content-Encoding: gzip` as its own encoding (Apache's
    `AddEncoding x-gzip .gz`): httpx decoded it to a bare tar, refused as "not a model
    archive ... check models.url" (Rasa fails on it too)."""
    model_server.behaviour.mode = "gzip-encoded"
    model_server.behaviour.body = archive_factory("one").read_bytes()  # sent as it is
    poller = ModelServerPoller(
        holder, ModelServerConfig.from_endpoint({"url": model_server.url}), client
    )
    assert await poller.pull_once() is True, poller.last_error


async def test_endless_small_gzip_members_are_refused_long_before_the_time_limit(
    model_server, holder, client, archive_factory
):
    """Endless members, a new inflater for each: before, a body of them went on until the
    pull's time limit (300 s by default). Now, past 65,536 members (one per 64 KB of a 4 GB
    archive), the pull fails naming them. (Empty ones, which decode to nothing, are padding,
    refused sooner: test_endless_empty_deflate_blocks...)"""
    archive = archive_factory("one").read_bytes()
    model_server.behaviour.mode = "endless-members"
    model_server.behaviour.content_encoding = "gzip"
    model_server.behaviour.body = gzip.compress(archive)
    config = {"url": model_server.url, "timeout": 30}
    poller = ModelServerPoller(holder, ModelServerConfig.from_endpoint(config), client)
    assert await poller.pull_once() is False
    said = poller.last_error or ""
    assert said.startswith(f"model server {model_server.url}: its answer"), said
    assert "more than 65536 gzip members one after the other" in said
    assert holder.info is None


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
async def test_endless_empty_deflate_blocks_in_one_member_are_refused_at_once(
    model_server, holder, client, archive_factory, encoding
):
    """One member, never ended, of empty deflate blocks (5 bytes each, decoding to nothing):
    the member limit never sees them. Before, the pull read them until its time limit (here
    10 s; 300 s by default). A model archive is compressed: its encoding cannot shrink it,
    and a body that decodes to less than half of what was sent is refused."""
    archive = archive_factory("one").read_bytes()
    wbits = {"gzip": 31, "deflate": 15}[encoding]
    encoder = zlib.compressobj(wbits=wbits)
    model_server.behaviour.mode = "endless-blocks"
    model_server.behaviour.content_encoding = encoding
    model_server.behaviour.body = encoder.compress(archive) + encoder.flush(zlib.Z_SYNC_FLUSH)
    config = {"url": model_server.url, "timeout": 10}
    poller = ModelServerPoller(holder, ModelServerConfig.from_endpoint(config), client)
    assert await poller.pull_once() is False
    said = poller.last_error or ""
    assert "decodes to less than half of what was sent" in said, said
    assert holder.info is None


async def test_an_archive_gzip_encoded_in_members_one_after_the_other_loads(
    model_server, holder, client, archive_factory
):
    """One gzip encoding may hold members one after the other (RFC 1952 section 2.2):
    before, the first only was read, and the archive was refused as cut short."""
    archive = archive_factory("one").read_bytes()
    half = len(archive) // 2
    model_server.behaviour.mode = "gzip-encoded"
    model_server.behaviour.body = gzip.compress(archive[:half]) + gzip.compress(archive[half:])
    poller = ModelServerPoller(
        holder, ModelServerConfig.from_endpoint({"url": model_server.url}), client
    )
    assert await poller.pull_once() is True, poller.last_error


@pytest.mark.parametrize(
    ("body", "start"),
    [
        (b"<!doctype html><p>Sign in</p>" + b"x" * 3_000_000, "starting <!doctype html><;"),
        (b"PK\x03\x04" + b"\0" * 100, "starting PK\\x03\\x04"),
        (b"", "the body is empty"),
    ],
    ids=["html", "zip", "empty"],
)
async def test_a_body_that_is_not_an_archive_is_refused_at_its_first_bytes(
    body, start, model_server, holder, client, archive_factory, caplog
):
    """A login page or a proxy's error page answered with 200, a zip: before, it was
    downloaded whole (up to 4 GiB), then refused as 'corrupt or not a gzip-compressed tar
    file ... retrain with botserver train', which sent the operator the wrong way."""
    poller = await poller_with_model(model_server, holder, client, archive_factory)
    model_server.behaviour.mode = "ignore-inm"
    model_server.behaviour.etag = '"login-page"'
    model_server.behaviour.body = body
    caplog.clear()

    for _ in range(3):
        assert await poller.pull_once() is False

    assert holder.current.answer() == "one"
    error = poller.last_error or ""
    assert error.startswith(f"model server {model_server.url} answered 200 with a body that")
    assert "not a model archive" in error and start in error and "check models.url" in error
    assert [level for level, _ in model_log_lines(caplog)] == ["WARNING"]


async def test_a_body_cut_short_is_reported_as_such(model_server, holder, client, archive_factory):
    # Before: "cannot reach model server", of a server that answered and sent the body.
    poller = await poller_with_model(model_server, holder, client, archive_factory)
    model_server.behaviour.mode, model_server.behaviour.etag = "truncated", '"v2"'
    model_server.behaviour.body = archive_factory("two").read_bytes()

    assert await poller.pull_once() is False

    assert holder.current.answer() == "one"
    error = poller.last_error or ""
    assert error.startswith(f"model server {model_server.url} broke off the exchange: ")
    assert "without sending complete message body" in error


async def test_a_redirect_is_reported_as_such_and_not_followed(
    model_server, holder, client, archive_factory
):
    poller = await poller_with_model(model_server, holder, client, archive_factory)
    model_server.behaviour.mode = "redirect"

    assert await poller.pull_once() is False

    error = poller.last_error or ""
    assert "HTTP 302, a redirect to cdn.example" in error and "not followed" in error
    assert "SIGNED" not in error
    assert holder.current.answer() == "one"


async def test_304_without_a_model_is_reported(model_server, holder, client, caplog):
    model_server.behaviour.mode = "304"
    poller = ModelServerPoller(holder, ModelServerConfig(url=model_server.url), client)

    assert await poller.pull_once() is False

    assert holder.current is None
    error = poller.last_error or ""
    assert "304" in error and "no model is loaded" in error
    assert [r.levelname for r in caplog.records if "304" in r.getMessage()] == ["WARNING"]


async def test_server_gone_keeps_the_model(model_server, holder, client, archive_factory):
    poller = await poller_with_model(model_server, holder, client, archive_factory)
    model_server.stop()

    assert await poller.pull_once() is False

    assert "cannot reach model server" in poller.last_error
    assert holder.current.answer() == "one"


async def test_200_without_etag_loads_with_content_hash_once(
    model_server, holder, client, archive_factory
):
    model_server.behaviour.mode = "no-etag"
    model_server.behaviour.body = archive_factory("one").read_bytes()
    poller = ModelServerPoller(holder, ModelServerConfig(url=model_server.url), client)

    assert await poller.pull_once() is True
    fingerprint = holder.info.fingerprint
    assert len(fingerprint) == 64
    # The same bytes again: recognised by their hash, not reloaded.
    assert await poller.pull_once() is False
    assert holder.info.fingerprint == fingerprint


async def test_an_empty_etag_counts_as_none_and_a_new_model_still_loads(
    model_server, holder, client, archive_factory
):
    # Before, the empty ETag became the fingerprint ("" in /status) and, as the loaded
    # model's ETag, made every later 200 look like "no change": the model never updated.
    model_server.behaviour.mode = "ignore-inm"
    model_server.behaviour.etag = ""
    model_server.behaviour.body = archive_factory("one").read_bytes()
    poller = ModelServerPoller(holder, ModelServerConfig(url=model_server.url), client)
    assert await poller.pull_once() is True
    assert len(holder.info.fingerprint) == 64  # the body's sha256, as without an ETag

    model_server.behaviour.body = archive_factory("two").read_bytes()
    assert await poller.pull_once() is True

    assert holder.current.answer() == "two"


async def test_200_with_the_loaded_models_etag_is_not_loaded_again(
    model_server, holder, client, archive_factory, caplog
):
    poller = await poller_with_model(model_server, holder, client, archive_factory)
    model_server.behaviour.mode = "ignore-inm"
    before = holder.current
    caplog.clear()  # the first model's load

    assert await poller.pull_once() is False
    assert await poller.pull_once() is False

    assert holder.current is before
    assert model_server.behaviour.requests[-1]["headers"]["If-None-Match"] == '"v1"'
    assert [r for r in caplog.records if r.getMessage().startswith("Loaded model")] == []


async def test_a_non_ascii_etag_goes_back_as_it_came(model_server, holder, client, archive_factory):
    # The bytes of '"vü"' in UTF-8; http.server writes header text as Latin-1.
    model_server.behaviour.etag = '"v\xc3\xbc"'
    poller = await poller_with_model(model_server, holder, client, archive_factory)

    assert await poller.pull_once() is False  # 304: the server saw its own ETag

    assert poller.last_error is None
    assert model_server.behaviour.requests[-1]["headers"]["If-None-Match"] == '"v\xc3\xbc"'
    assert holder.current.answer() == "one"


async def test_token_params_headers_and_basic_auth_are_sent(
    model_server, holder, client, archive_factory
):
    await poller_with_model(
        model_server,
        holder,
        client,
        archive_factory,
        token="s3cret",
        token_name="auth",
        params={"tag": "prod"},
        headers={"X-Team": "bots"},
        basic_auth={"username": "u", "password": "p"},
    )
    request = model_server.behaviour.requests[0]
    assert request["path"] == "/models/default@latest"
    assert request["query"] == {"auth": ["s3cret"], "tag": ["prod"]}
    assert request["headers"]["X-Team"] == "bots"
    assert request["headers"]["Authorization"] == "Basic dTpw"


async def test_a_query_in_the_url_is_sent_beside_the_token(
    model_server, holder, client, archive_factory
):
    """A presigned URL's signature or an `?apikey=` in `models.url` reaches the model server,
    with the token and params added (as aiohttp does for Rasa). Before, httpx replaced the
    URL's query with the params: the signature was never sent, the store answered 403, and
    the failure sent the operator to check models.token, basic_auth and headers."""
    model_server.behaviour.body = archive_factory("one").read_bytes()
    config = ModelServerConfig.from_endpoint(
        {"url": model_server.url + "?X-Amz-Signature=ab%2Fc&v=1", "token": "t0k"}
    )
    assert await ModelServerPoller(holder, config, client).pull_once() is True

    request = model_server.behaviour.requests[0]
    assert request["query"] == {"X-Amz-Signature": ["ab/c"], "v": ["1"], "token": ["t0k"]}
    # Without token or params too.
    config = ModelServerConfig.from_endpoint({"url": model_server.url + "?sig=s1"})
    await ModelServerPoller(holder, config, client).pull_once()
    assert model_server.behaviour.requests[-1]["query"] == {"sig": ["s1"]}


async def test_a_cookie_the_model_server_sets_is_not_sent_back(
    model_server, holder, archive_factory
):
    """Rasa opens a session per pull, so it never sends a cookie back. Before, the poller's
    client kept one an answer set (a load balancer's, a login page's) and sent it with every
    later pull."""
    model_server.behaviour.body = archive_factory("one").read_bytes()
    model_server.behaviour.cookie = "session=pull-1; Path=/"
    poller = ModelServerPoller(holder, ModelServerConfig.from_endpoint({"url": model_server.url}))
    try:
        assert await poller.pull_once() is True
        assert await poller.pull_once() is False  # (a 304)
    finally:
        await poller.stop()
    assert len(model_server.behaviour.requests) == 2
    assert "Cookie" not in model_server.behaviour.requests[-1]["headers"]


@pytest.mark.parametrize("written", ["{url}\n", "{url}\r\n", "  {url}", "\t{url}"])
async def test_a_url_with_a_line_break_or_a_space_before_it_is_read_as_rasa_reads_it(
    model_server, holder, client, archive_factory, written
):
    """A URL from an environment variable or a file often ends with a line break: Rasa
    (yarl, as urlsplit) drops a tab or line break and what precedes the scheme, and pulls.
    Before, the start was refused ("models.url must be an http(s) URL")."""
    model_server.behaviour.body = archive_factory("one").read_bytes()
    config = ModelServerConfig.from_endpoint({"url": written.format(url=model_server.url)})
    assert config.url == model_server.url
    assert await ModelServerPoller(holder, config, client).pull_once() is True
    assert model_server.behaviour.requests[0]["path"] == "/models/default@latest"


async def test_a_url_whose_scheme_is_in_capitals_is_pulled(
    model_server, holder, client, archive_factory
):
    """A scheme is read whatever its case, by Rasa's yarl too. Before, `HTTP://...` stopped
    the start ("models.url must be an http(s) URL")."""
    model_server.behaviour.body = archive_factory("one").read_bytes()
    config = ModelServerConfig.from_endpoint({"url": "HTTP" + model_server.url[4:]})
    assert await ModelServerPoller(holder, config, client).pull_once() is True


async def test_scheduled_pulls_pick_up_a_new_model(model_server, holder, client, archive_factory):
    poller = await poller_with_model(
        model_server, holder, client, archive_factory, wait_time_between_pulls=0.05
    )
    poller.start()
    try:
        model_server.behaviour.body = archive_factory("two").read_bytes()
        model_server.behaviour.etag = '"v2"'
        for _ in range(100):
            if holder.current.answer() == "two":
                break
            await asyncio.sleep(0.05)
        assert holder.current.answer() == "two"
    finally:
        await poller.stop()


@pytest.mark.parametrize("wait", [0, None, "0"])
def test_zero_or_null_wait_means_pull_once(wait):
    config = ModelServerConfig.from_endpoint({"url": "http://x", "wait_time_between_pulls": wait})
    assert config.wait_time_between_pulls is None
    assert ModelServerConfig.from_endpoint({"url": "http://x"}).wait_time_between_pulls == 100


async def test_swap_while_turns_run(model_server, holder, client, archive_factory):
    """Many concurrent turns read the holder while models swap; none sees a gap."""
    poller = await poller_with_model(model_server, holder, client, archive_factory)
    bodies = {name: archive_factory(name).read_bytes() for name in ("two", "three", "four")}
    answers: list[str] = []
    stop = asyncio.Event()
    finished_on = {name: asyncio.Event() for name in bodies}  # a turn ended on that model

    async def turn_loop() -> None:
        while not stop.is_set():
            model = holder.current  # a turn grabs the model once...
            assert model is not None
            # ...awaits I/O while a swap may happen (a real wait: with sleep(0) the 50 loops
            # keep the loop thread busy and the pull's threads wait for the GIL, 1-2 minutes)...
            await asyncio.sleep(0.001)
            answers.append(model.answer())  # ...and finishes on the model it grabbed.
            if answers[-1] in finished_on:
                finished_on[answers[-1]].set()

    turns = [asyncio.create_task(turn_loop()) for _ in range(50)]
    for index, (name, body) in enumerate(bodies.items()):
        model_server.behaviour.body = body
        model_server.behaviour.etag = f'"v{index + 2}"'
        assert await poller.pull_once() is True
        assert holder.current.answer() == name
        await asyncio.wait_for(finished_on[name].wait(), 30)  # turns go on, on the new model
    stop.set()
    await asyncio.gather(*turns)

    assert set(answers) <= {"one", "two", "three", "four"}
    assert len(answers) > 100


async def test_in_flight_turn_keeps_the_old_model(holder, archive_factory):
    await holder.load_archive(archive_factory("one"))
    in_flight = holder.current

    await holder.load_archive(archive_factory("two"))

    assert in_flight.answer() == "one"
    assert holder.current.answer() == "two"


async def test_failed_load_keeps_model_and_records_error(holder, archive_factory, tmp_path: Path):
    await holder.load_archive(archive_factory("one"))
    broken = tmp_path / "broken.tar.gz"
    broken.write_bytes(b"nope")

    with pytest.raises(Exception, match="corrupt"):
        await holder.load_archive(broken)

    assert holder.current.answer() == "one"
    assert "broken.tar.gz" in holder.last_error


async def test_a_failed_load_of_a_name_that_is_not_utf8_can_be_shown(holder, tmp_path: Path):
    # `-m` bytes that are not UTF-8 arrive as lone surrogates; kept as they were, they made
    # GET /status fail with a 500 (UnicodeEncodeError rendering last_load_error).
    broken = tmp_path / "\udcff.tar.gz"
    broken.write_bytes(b"not a model")

    with pytest.raises(CorruptArchive):
        await holder.load_archive(broken)

    assert (holder.last_error or "").startswith("\\udcff.tar.gz: ")
    (holder.last_error or "").encode("utf-8")


async def test_loader_failure_keeps_model(archive_factory):
    calls = 0

    def flaky_loader(directory: Path, metadata: dict[str, Any]) -> str:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise RuntimeError("component state is inconsistent")
        return f"model {calls}"

    holder: ModelHolder[str] = ModelHolder(flaky_loader)
    await holder.load_archive(archive_factory("one"))
    with pytest.raises(Exception, match="inconsistent"):
        await holder.load_archive(archive_factory("two"))
    assert holder.current == "model 1"


async def test_unload_and_status(holder, archive_factory):
    info = await holder.load_archive(archive_factory("one"))
    with holder.training_job():
        status = holder.status()
    assert status == {
        "model_id": info.model_id,
        "model_file": info.model_file,
        "fingerprint": info.fingerprint,
        "num_active_training_jobs": 1,
    }
    await holder.unload()
    assert holder.current is None and holder.info is None
    assert holder.status()["num_active_training_jobs"] == 0


async def test_startup_priority_model_server_first(
    model_server, holder, client, archive_factory, tmp_path: Path
):
    model_server.behaviour.body = archive_factory("from-server").read_bytes()
    local = archive_factory("local")
    source = ModelSource(holder, client)

    info = await source.load_initial(local, {"url": model_server.url, "wait_time_between_pulls": 0})

    assert info is not None and info.source == "server"
    assert holder.current.answer() == "from-server"
    assert source.poller is not None and source.poller._task is None
    await source.stop()


async def test_startup_with_a_model_server_says_remote_storage_is_not_read(
    model_server, holder, client, archive_factory, caplog
):
    """As in Rasa, a models: section wins over --remote-storage; the log says the storage is
    not read (before: nothing did, and the operator looked for the storage's model)."""
    model_server.behaviour.body = archive_factory("from-server").read_bytes()
    source = ModelSource(holder, client)

    with caplog.at_level(logging.WARNING):
        info = await source.load_initial(
            "prod", {"url": model_server.url, "wait_time_between_pulls": 0}, "aws"
        )

    assert info is not None and info.source == "server"
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("--remote-storage aws is not read" in m for m in warned), warned
    await source.stop()


async def test_startup_local_path_and_missing_model(holder, archive_factory, tmp_path: Path):
    source = ModelSource(holder)
    assert await source.load_initial(tmp_path / "nothing-here") is None
    archive = archive_factory("local")
    info = await source.load_initial(archive.parent)
    assert info is not None and holder.current.answer() == "local"


def model_log_lines(caplog: pytest.LogCaptureFixture) -> list[tuple[str, str]]:
    return [
        (r.levelname, r.getMessage())
        for r in caplog.records
        if r.name.startswith("server.models") and r.levelno >= logging.INFO
    ]


async def test_a_model_server_serving_a_broken_model_is_reported_once(
    model_server, holder, client, caplog
):
    model_server.behaviour.mode = "corrupt"
    poller = ModelServerPoller(holder, ModelServerConfig(url=model_server.url), client)

    for _ in range(3):
        assert await poller.pull_once() is False

    lines = model_log_lines(caplog)
    assert [level for level, _ in lines] == ["WARNING"]
    assert "failed to load" in lines[0][1] and "corrupt" in lines[0][1]
    assert "keeping no model" in lines[0][1]


@pytest.mark.parametrize("mode", ["corrupt", "no-etag"])
async def test_a_refused_model_served_again_is_not_unpacked_again(
    mode, model_server, holder, client, archive_factory, caplog
):
    """Before, every pull downloaded and unpacked the refused model once more (a Rasa model
    of a gigabyte every 100 s, or a 1 MB archive unpacking to 1 GiB), though the same bytes
    meet the same refusal. Now an ETag seen refused is not downloaded, and a body without
    one is recognised by its sha256 before it is unpacked."""
    poller = await poller_with_model(model_server, holder, client, archive_factory)
    model_server.behaviour.mode = mode
    model_server.behaviour.etag = '"broken"'
    model_server.behaviour.body = b"\x1f\x8b garbage, not a model"
    caplog.clear()
    assert await poller.pull_once() is False
    refused_at = holder.last_error_at

    for _ in range(3):
        assert await poller.pull_once() is False

    assert holder.last_error_at == refused_at  # no second attempt to unpack it
    assert holder.current.answer() == "one"
    assert "corrupt" in (poller.last_error or "")
    assert [level for level, _ in model_log_lines(caplog)] == ["WARNING"]
    # A new model loads as ever.
    model_server.behaviour.mode, model_server.behaviour.etag = "serve", '"v2"'
    model_server.behaviour.body = archive_factory("two").read_bytes()
    assert await poller.pull_once() is True
    assert holder.current.answer() == "two" and poller.last_error is None


@pytest.mark.parametrize("mode", ["serve", "no-etag"])
async def test_a_model_refused_by_a_wrong_verify_key_loads_once_the_key_file_is_fixed(
    mode, model_server, loader, client, archive_factory, tmp_path: Path
):
    """The verify key file is read at each load, so fixing it needs no restart; the model
    it refused must then load from the same bytes (and ETag) at the next pull."""
    signing, right = generate_keypair()
    _, wrong = generate_keypair()
    key_file = tmp_path / "verify.pub"
    key_file.write_bytes(wrong)  # the operator's mistake: another key pair's public half
    holder = ModelHolder(loader, verify_key=key_file)
    model_server.behaviour.mode = mode
    model_server.behaviour.body = archive_factory("signed", signing_key=signing).read_bytes()
    poller = ModelServerPoller(
        holder, ModelServerConfig.from_endpoint({"url": model_server.url}), client
    )
    assert await poller.pull_once() is False
    assert holder.current is None
    refused_at = holder.last_error_at
    assert await poller.pull_once() is False  # the same key: the memo holds
    assert holder.last_error_at == refused_at

    key_file.write_bytes(right)
    # Before: the memo of the refused model answered for it ('the same bytes, the same
    # refusal') at every pull, until the model server served another model.
    assert await poller.pull_once() is True
    assert holder.current is not None and holder.current.answer() == "signed"
    assert poller.last_error is None


@pytest.mark.parametrize("first_key", ["right", "wrong"])
async def test_a_pull_with_no_new_model_does_not_read_the_verify_key_file(
    first_key, model_server, loader, client, archive_factory, tmp_path: Path, monkeypatch
):
    """The key file matters to a pull only when a model is loaded, or one refused with it is
    served again: the pulls answered 304 between two models read it no more (before, each
    read it, in a thread of its own). So after a model refused by a wrong key file loads,
    the file once fixed: that refusal is no longer on record (before, every later pull read
    the file, for as long as the server ran)."""
    signing, right = generate_keypair()
    _, wrong = generate_keypair()
    key_file = tmp_path / "verify.pub"
    key_file.write_bytes(right if first_key == "right" else wrong)
    holder = ModelHolder(loader, verify_key=key_file)
    model_server.behaviour.body = archive_factory("signed", signing_key=signing).read_bytes()
    poller = ModelServerPoller(
        holder, ModelServerConfig.from_endpoint({"url": model_server.url}), client
    )
    if first_key == "wrong":
        assert await poller.pull_once() is False
        key_file.write_bytes(right)
    assert await poller.pull_once() is True
    pulls_so_far = len(model_server.behaviour.requests)
    reads: list[Path] = []
    read_bytes = Path.read_bytes

    def counted(path: Path) -> bytes:
        reads.append(path)
        return read_bytes(path)

    monkeypatch.setattr(Path, "read_bytes", counted)
    for _ in range(5):
        assert await poller.pull_once() is False
    assert len(model_server.behaviour.requests) == pulls_so_far + 5
    assert poller.last_error is None
    assert reads.count(key_file) == 0


async def test_a_broken_startup_model_is_reported_once(holder, tmp_path: Path, caplog):
    broken = tmp_path / "broken.tar.gz"
    broken.write_bytes(b"not a model")

    assert await ModelSource(holder).load_initial(broken) is None

    lines = model_log_lines(caplog)
    assert [level for level, _ in lines] == ["ERROR"]
    assert "Could not load a model at startup" in lines[0][1] and "corrupt" in lines[0][1]


async def wait_for_requests(model_server: ModelServer, count: int) -> None:
    for _ in range(200):
        if len(model_server.behaviour.requests) >= count:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"the model server got {len(model_server.behaviour.requests)} requests")


async def test_a_pull_finishing_after_a_put_does_not_replace_the_put_model(
    model_server, holder, client, archive_factory
):
    source = ModelSource(holder, client)
    model_server.behaviour.body = archive_factory("one").read_bytes()
    await source.load_from_model_server({"url": model_server.url, "wait_time_between_pulls": 0})
    model_server.behaviour.body = archive_factory("two").read_bytes()
    model_server.behaviour.etag = '"v2"'
    model_server.behaviour.mode = "slow"  # this pull is still downloading...
    poller = source.poller
    assert poller is not None
    pull = asyncio.create_task(poller.pull_once())
    await wait_for_requests(model_server, 2)

    await source.load_local(archive_factory("put"))  # ...when PUT /model loads another model

    assert await pull is False
    assert holder.current.answer() == "put"
    assert poller.superseded
    await source.stop()


async def test_an_unloaded_model_is_not_pulled_back(model_server, holder, client, archive_factory):
    poller = await poller_with_model(
        model_server, holder, client, archive_factory, wait_time_between_pulls=0.05
    )
    poller.start()
    try:
        await holder.unload()  # DELETE /model
        await asyncio.sleep(0.5)
        assert holder.current is None
        assert len(model_server.behaviour.requests) <= 2
    finally:
        await poller.stop()


async def test_of_two_overlapping_loads_the_later_request_wins(holder, archive_factory):
    slow_archive, fast_archive = archive_factory("earlier"), archive_factory("later")
    earlier = holder.ticket()  # e.g. a remote-storage download starts...
    later = await holder.load_archive(fast_archive)  # ...and a PUT started after it is served

    with pytest.raises(ModelSuperseded):
        await holder.load_archive(slow_archive, ticket=earlier)

    assert holder.current.answer() == "later" and holder.info == later
    assert holder.last_error is None


async def test_status_shows_why_pulls_fail_until_one_works(
    model_server, holder, client, archive_factory
):
    source = ModelSource(holder, client)
    app = create_app(ApiSettings(), [status_router(holder, source)])
    model_server.behaviour.mode = "404"
    await source.load_initial(None, {"url": model_server.url, "wait_time_between_pulls": 0})
    poller = source.poller
    assert poller is not None
    api = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")
    async with api:
        nothing = await api.get("/status")
        model_server.behaviour.mode = "serve"
        model_server.behaviour.body = archive_factory("one").read_bytes()
        await poller.pull_once()
        model_server.behaviour.mode = "500"
        await poller.pull_once()
        first = (await api.get("/status")).json()
        model_server.behaviour.mode = "slow"
        poller.config = ModelServerConfig(url=model_server.url, timeout=0.2)
        await poller.pull_once()
        second = (await api.get("/status")).json()
        model_server.behaviour.mode = "serve"
        recovered = (await poller.pull_once(), (await api.get("/status")).json())

    assert nothing.status_code == 409
    assert "has no model (404)" in nothing.json()["details"]["last_pull_error"]["message"]
    assert first["model_file"] == "served-model.tar.gz"
    assert first["last_pull_error"]["message"].endswith("answered HTTP 500")
    assert "timed out" in second["last_pull_error"]["message"]
    assert second["last_pull_error"]["failing_since"] == first["last_pull_error"]["at"]
    assert second["last_pull_error"]["at"] > first["last_pull_error"]["at"]
    assert recovered[0] is False and "last_pull_error" not in recovered[1]  # a 304: pulls work
    assert "last_load_error" not in recovered[1]
    await source.stop()


async def test_a_pull_on_a_full_disk_is_the_servers_problem_and_keeps_the_model(
    model_server, holder, client, archive_factory, tmp_path: Path, monkeypatch, caplog
):
    source = ModelSource(holder, client)
    await source.load_local(archive_factory("one"))
    model_server.behaviour.body = archive_factory("two").read_bytes() + bytes(128 * 1024)
    services = SimpleNamespace(source=source, holder=holder, models_endpoint=None)
    request = {"model_server": {"url": model_server.url, "wait_time_between_pulls": 0}}

    with temp_files_on_a_small_disk(tmp_path, monkeypatch) as disk:
        with pytest.raises(ModelStorageFull, match="no space left on the server's disk"):
            await apply_model_request(services, request)  # type: ignore[arg-type]  # PUT: 507
        leftovers = await asyncio.to_thread(os.listdir, disk)

    assert holder.current.answer() == "one" and leftovers == []
    assert [level for level, _ in model_log_lines(caplog)].count("WARNING") == 1
    await source.stop()


async def test_a_refusal_after_a_full_disk_is_not_taken_for_a_full_disk(
    model_server, holder, client, archive_factory, tmp_path: Path, monkeypatch
):
    """Before, a pull that met the model refused earlier kept the full-disk flag of the pull
    before it: the poller said the disk was full while its error said the model was corrupt."""
    poller = await poller_with_model(model_server, holder, client, archive_factory)
    model_server.behaviour.mode, model_server.behaviour.etag = "corrupt", '"broken"'
    assert await poller.pull_once() is False  # refused for its bytes
    model_server.behaviour.mode, model_server.behaviour.etag = "serve", '"v2"'
    model_server.behaviour.body = archive_factory("two").read_bytes() + bytes(128 * 1024)
    with temp_files_on_a_small_disk(tmp_path, monkeypatch):
        assert await poller.pull_once() is False
    assert poller.disk_full and "no space left" in (poller.last_error or "")

    model_server.behaviour.mode, model_server.behaviour.etag = "corrupt", '"broken"'
    assert await poller.pull_once() is False  # the same refusal, without the work

    assert "corrupt" in (poller.last_error or "")
    assert poller.disk_full is False
    assert holder.current.answer() == "one"


async def test_a_load_cancelled_while_it_builds_leaves_no_extracted_model(
    archive_factory, monkeypatch, tmp_path: Path
):
    """A load is cancelled mid-build when a new PUT /model stops the poller that was pulling,
    when a request times out or the server stops; its thread cannot be stopped. Before, the
    model it extracted stayed in the temporary directory for good, once per such load."""
    archive = archive_factory("one")
    temp = tmp_path / "temp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    building, released = threading.Event(), threading.Event()

    def held_loader(directory: Path, metadata: dict[str, Any]) -> GreetingModel:
        building.set()
        released.wait(60)  # until the load is cancelled
        return greeting_loader(directory, metadata)

    holder: ModelHolder[GreetingModel] = ModelHolder(held_loader)
    load = asyncio.create_task(holder.load_archive(archive))
    assert await asyncio.to_thread(building.wait, 30)
    load.cancel()
    with pytest.raises(asyncio.CancelledError):
        await load
    released.set()
    assert holder.current is None
    for _ in range(300):  # the build ends in its thread, then its directory goes
        if not list(temp.glob("botserver-model-*")):
            break
        await asyncio.sleep(0.02)
    assert list(temp.glob("botserver-model-*")) == []


async def test_a_gzip_encoded_body_whose_header_never_ends_is_not_held_in_memory(
    model_server, holder, client
):
    """A gzip-encoded body whose gzip header holds an endless file name decodes to nothing:
    it is not read into memory to find out what it holds, but saved as sent (within the
    size limit) and refused as the archive it is not."""
    model_server.behaviour.mode = "gzip-encoded"
    # FLG.FNAME set, and a name without its closing NUL: 3 MB of header.
    model_server.behaviour.body = b"\x1f\x8b\x08\x08\0\0\0\0\0\xff" + b"a" * 3_000_000
    poller = ModelServerPoller(
        holder, ModelServerConfig.from_endpoint({"url": model_server.url}), client
    )
    peak = await _failed_pull_peak(poller)
    assert holder.info is None
    assert poller.last_error
    assert peak < 6_000_000, peak  # held and decoded again chunk by chunk: 15 MB


async def test_two_puts_naming_model_servers_at_once_leave_one_poller_pulling(holder):
    """PUT /model builds its poller in a thread: a second PUT meanwhile took `source.poller`
    while the first went on pulling on schedule, unseen by GET /status and never stopped (at
    shutdown either); the older request is answered as superseded, as for a local model."""
    source = ModelSource(holder)
    cfg = {"url": "http://127.0.0.1:1/model.tar.gz", "wait_time_between_pulls": 100}
    services = SimpleNamespace(source=source, holder=holder, models_endpoint=None)
    older, newer = await asyncio.gather(
        apply_model_request(services, {"model_server": cfg}),  # type: ignore[arg-type]
        source.load_from_model_server(cfg),
        return_exceptions=True,
    )
    await source.stop()
    pulling = [
        task
        for task in asyncio.all_tasks()
        if task.get_name() == "pull-model-from-server" and not task.done()
    ]
    assert pulling == []
    assert older is None and newer is None  # the newer one failed to pull: kept no model
