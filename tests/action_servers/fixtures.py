"""Starts the rasa-sdk action servers of tests/action_servers/<bot>/ on free local ports.

Import `action_servers` (a session fixture) in a test module, or call `start_action_server`.
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from bench.tcp_proxy import free_port
from tests.traced_peak import traced_peak

HERE = Path(__file__).parent
STARTUP_SECONDS = 30.0


@dataclass
class ActionServer:
    """A running rasa-sdk action server."""

    bot: str
    port: int
    process: subprocess.Popen[bytes]
    directory: Path  # its log, and its TMPDIR

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/webhook"

    @property
    def log_path(self) -> Path:
        return self.directory / "server.log"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]

    def stop(self) -> None:
        try:
            self._stop_processes()
        finally:
            # Its log goes too (one file per test session was left in /tmp), and what Sanic's
            # multiprocessing put in its TMPDIR (two `pymp-*` folders, left by the kill).
            shutil.rmtree(self.directory, ignore_errors=True)

    def _stop_processes(self) -> None:
        # Whatever the server started goes too: stop the whole process group.
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait()


def start_action_server(bot: str) -> ActionServer:
    """Runs rasa-sdk's action server on the actions of tests/action_servers/<bot>/, as
    `python -m rasa_sdk --actions actions` does, in one process (`serve.py`)."""
    port = free_port()
    directory = Path(tempfile.mkdtemp(prefix=f"action-server-{bot}-"))
    env = dict(os.environ, SANIC_HOST="127.0.0.1", TMPDIR=str(directory))
    with (directory / "server.log").open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, str(HERE / "serve.py"), "--actions", "actions", "--port", str(port)],
            cwd=HERE / bot,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = ActionServer(bot, port, process, directory)
    deadline = time.monotonic() + STARTUP_SECONDS
    # One client for every poll: `httpx.get` builds an SSL context each time (50 ms of CPU).
    with httpx.Client(timeout=1) as client:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                output = server.log()
                server.stop()
                raise RuntimeError(f"the {bot} action server exited at start:\n{output}")
            try:
                if client.get(f"http://127.0.0.1:{port}/health").status_code == 200:
                    return server
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
    output = server.log()
    server.stop()
    raise RuntimeError(f"the {bot} action server did not answer /health:\n{output}")


class ActionServers:
    """Starts each bot's server once per test session, on first use."""

    def __init__(self) -> None:
        self._running: dict[str, ActionServer] = {}

    def __getitem__(self, bot: str) -> ActionServer:
        if bot not in self._running:
            self._running[bot] = start_action_server(bot)
        return self._running[bot]

    def stop_all(self) -> None:
        for server in self._running.values():
            server.stop()
        self._running.clear()


@pytest.fixture(scope="session")
def action_servers() -> Iterator[ActionServers]:
    """`action_servers["formbot"].url` is the webhook of a running formbot action server."""
    servers = ActionServers()
    yield servers
    servers.stop_all()


# -- action servers that misbehave ----------------------------------------------------------


# Answers of 200, most of them JSON (or text) no conversation can keep: /raw/<name> sends one.
RAW_ANSWERS = {
    "nan": b'{"events": [{"event": "slot", "name": "concerts", "value": NaN}]}',
    "huge-number": b'{"events": [{"event": "slot", "name": "concerts", "value": 1e400}]}',
    "surrogate": b'{"responses": [{"text": "half a pair: \\ud83d"}]}',
    "deep": b'{"events": [{"event": "slot", "name": "concerts", "value": '
    + b"[" * 100_000
    + b"]" * 100_000
    + b"}]}",
    "text-number": b'{"responses": [{"text": 42}]}',
    "response-list": b'{"responses": [{"response": ["utter_greet"]}]}',
    "bot-event-text": b'{"events": [{"event": "bot", "text": "hi", "metadata": {"text": {}}}]}',
    # Template arguments named as our own parameters: a valid answer.
    "template-arguments": b'{"responses": [{"response": "utter_greet", "self": 1, '
    b'"domain": 2, "slots": 3, "channel": 4}]}',
    "many-responses": b'{"responses": [' + b",".join([b'{"text": "hi"}'] * 1001) + b"]}",
    "many-events": b'{"events": ['
    + b",".join([b'{"event": "slot", "name": "concerts", "value": 1}'] * 1001)
    + b'], "responses": [{"text": "hi"}]}',
    "reminder-entities": b'{"events": [{"event": "reminder", "intent": "greet", '
    b'"date_time": "2030-01-01T00:00:00", "entities": "Berlin"}]}',
    "reminder-name-list": b'{"events": [{"event": "reminder", "intent": "greet", '
    b'"date_time": "2030-01-01T00:00:00", "name": ["call"]}]}',
}


@functools.cache
def gzip_bomb() -> bytes:
    """About 30 KB of gzip that inflates to 30 MB of spaces."""
    return gzip.compress(b" " * (30 * 1024 * 1024), compresslevel=9)


@functools.cache
def twice_gzipped_bomb() -> bytes:
    """About 500 bytes, gzip of gzip, that inflate to 100 MB of spaces (sent as `gzip, gzip`)."""
    once = zlib.compressobj(9, zlib.DEFLATED, zlib.MAX_WBITS | 16)
    block = b" " * (1024 * 1024)
    inner = b"".join([*(once.compress(block) for _ in range(100)), once.flush()])
    return gzip.compress(inner, compresslevel=9)


def peak_memory_of(work: Callable[[], object]) -> int:
    """The most memory Python held while `work()` ran, beyond what it held before (the
    bombs made first: a server's answers are not the client's memory)."""
    gzip_bomb(), twice_gzipped_bomb()
    return traced_peak(work)


def bomb_refusal(path: str, limit: int) -> str:
    """What a client says of /bomb or /bomb-twice read with a size limit of `limit` bytes."""
    if path == "/bomb-twice":
        return "its answer is encoded 'gzip, gzip': botserver reads one gzip or deflate"
    return f"its answer is more than {limit} bytes"


# Answers, encoded, some badly: /encoded/<name> sends one with its Content-Encoding.
_OK_ANSWER = b'{"events": [], "responses": [{"text": "ok"}]}'
ENCODED_ANSWERS = {
    "gzip": ("gzip", gzip.compress(_OK_ANSWER)),
    "x-gzip": ("x-gzip", gzip.compress(_OK_ANSWER)),
    "GZip": ("GZip", gzip.compress(_OK_ANSWER)),  # a coding's name is case-insensitive
    "deflate": ("deflate", zlib.compress(_OK_ANSWER)),  # zlib-wrapped, as the RFC says
    "raw-deflate": ("deflate", zlib.compress(_OK_ANSWER, wbits=-zlib.MAX_WBITS)),  # as IIS sends
    "identity": ("identity", _OK_ANSWER),
    # gzip members one after the other: one encoding still (RFC 1952 section 2.2).
    "gzip-members": ("gzip", gzip.compress(_OK_ANSWER[:20]) + gzip.compress(_OK_ANSWER[20:])),
    "gzip-trailing-garbage": ("gzip", gzip.compress(_OK_ANSWER) + b"<html>"),
    # 1,100 gzip members, all but one empty: more than anything sends (botserver reads 1,024).
    "gzip-many-members": ("gzip", gzip.compress(b"") * 1100 + gzip.compress(_OK_ANSWER)),
    # No body, and a Content-Encoding all the same (frameworks keep the header).
    "empty-gzip": ("gzip", b""),
    "empty-br": ("br", b""),
    "empty-layers": ("gzip, gzip", b""),
    "not-gzip": ("gzip", _OK_ANSWER),  # said to be gzip, and not
    "not-deflate": ("deflate", b"\xff" * 8),  # neither zlib's deflate nor raw deflate
}


class _Broken(BaseHTTPRequestHandler):
    """Answers by path: /slow sleeps (/domain-missing-slow, then asks for the domain),
    /idle-close drops a connection idle for 1.2 s when the next request comes, /hang-up
    closes it without an answer, /garbage sends HTML, /shape sends the wrong JSON, /entity
    an event breaking Rasa's schema, /raw/<name> one of `RAW_ANSWERS`; /bomb a gzip bomb
    (/bomb-twice one gzipped twice), /encoded/<name> one of `ENCODED_ANSWERS`
    (/trickled/<name> a byte at a time), /cookie sets a cookie, /brotli an encoding never
    asked for, /endless a body that never ends, /huge 11 MB of JSON, /redirect a 302
    elsewhere, /crash-rejection a 500 with rasa-sdk's rejection body, /cut-short a body
    whose connection closes 88 bytes short of its Content-Length. A body that is no JSON (a
    form) is kept as text."""

    server: BrokenActionServer
    protocol_version = "HTTP/1.1"  # chunked answers

    def do_POST(self) -> None:  # noqa: N802
        length = int(self.headers.get("Content-Length") or 0)
        sent = self.rfile.read(length)
        try:
            body = json.loads(sent or b"null")
        except ValueError:  # a form (Duckling's request): kept as it came
            body = sent.decode("latin-1")
        self.server.requests.append((self.path, body))
        self.server.headers.append(dict(self.headers.items()))
        if self.path.startswith("/idle-close"):
            # As a server whose keep-alive timeout (here 1.2 s) fires as a request arrives on
            # the connection it is closing: no answer, the connection closed.
            idle = time.monotonic() - getattr(self, "answered_at", time.monotonic())
            if idle > 1.2:
                self.close_connection = True
                return
            self._send(200, b'{"events": [], "responses": []}')
            self.answered_at = time.monotonic()
        elif self.path.startswith("/hang-up"):  # the call read, no answer: the action ran?
            self.close_connection = True
        elif self.path.startswith("/domain-missing-slow"):  # asks for the domain, both in 1.2 s
            time.sleep(1.2)
            if "domain" not in body:
                self._send(449, b'{"error": "domain missing"}')
            else:
                self._send(200, b'{"events": [], "responses": []}')
        elif self.path.startswith("/slow"):
            time.sleep(3)
            self._send(200, b'{"events": [], "responses": []}')
        elif self.path.startswith("/garbage"):
            self._send(200, b"<html>oops</html>", "text/html")
        elif self.path.startswith("/shape"):
            self._send(200, b'{"events": [{"no": "event key"}], "responses": []}')
        elif self.path.startswith("/entity"):  # an entity without its value
            entities = b'[{"entity": "city"}]'
            self._send(200, b'{"events": [{"event": "entities", "entities": ' + entities + b"}]}")
        elif self.path.startswith("/list"):
            self._send(200, b"[1, 2, 3]")
        elif self.path.startswith("/crash-lines"):  # a log line of its own making
            self._send(500, b'{"error": "boom\\nERROR forged line\\r\\n"}')
        elif self.path.startswith("/crash-rejection"):  # rasa-sdk's rejection body, as a 500
            self._send(500, b'{"action_name": "action_x", "error": "not today"}')
        elif self.path.startswith("/crash"):
            self._send(500, b'{"error": "division by zero"}')
        elif self.path.startswith("/cut-short"):  # the connection closed mid-body
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", "100")
            self.end_headers()
            self.wfile.write(b'{"events": [')
            self.close_connection = True
        elif self.path.startswith("/reject-lines"):
            self._send(400, b'{"action_name": "action_x", "error": "no\\nERROR forged line"}')
        elif self.path.startswith("/empty-status/"):  # that status, no body
            self._send(int(self.path[len("/empty-status/") :]), b"")
        elif self.path.startswith("/bare400"):
            self._send(400, b'{"error": "bad"}')
        elif self.path.startswith("/raw/"):
            self._send(200, RAW_ANSWERS[self.path[len("/raw/") :]])
        elif self.path.startswith("/bomb-twice"):
            self._send(200, twice_gzipped_bomb(), headers={"Content-Encoding": "gzip, gzip"})
        elif self.path.startswith("/bomb"):
            self._send(200, gzip_bomb(), headers={"Content-Encoding": "gzip"})
        elif self.path.startswith("/encoded/"):
            # The name, then maybe what a client appends (Duckling's /parse).
            encoding, body = ENCODED_ANSWERS[self.path[len("/encoded/") :].split("/")[0]]
            self._send(200, body, headers={"Content-Encoding": encoding})
        elif self.path.startswith("/redirect"):  # elsewhere, with a token in the address
            where = "http://elsewhere.example:8080/webhook?token=s3cret-token"
            self._send(302, b"", headers={"Location": where})
        elif self.path.startswith("/trickled/"):  # sent a byte at a time
            encoding, body = ENCODED_ANSWERS[self.path[len("/trickled/") :].split("/")[0]]
            self._trickle(body, encoding)
        elif self.path.startswith("/cookie"):  # a cookie, for the conversation it answers
            cookie = "session=conversation-a; Path=/"
            self._send(200, b'{"events": [], "responses": []}', headers={"Set-Cookie": cookie})
        elif self.path.startswith("/brotli"):  # not asked for, and not read
            self._send(200, b"\x1b\x2c\x00\xf8", headers={"Content-Encoding": "br"})
        elif self.path.startswith("/huge"):
            self._send(200, b'{"events": [], "responses": []}' + b" " * (11 * 1024 * 1024))
        elif self.path.startswith("/endless"):
            self._endless()
        else:
            self._send(200, b'{"events": [], "responses": [{"text": "ok"}]}')

    def _send(
        self,
        status: int,
        body: bytes,
        content_type: str = "application/json",
        headers: dict[str, str] | None = None,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        try:
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client stopped reading, as it should

    def _trickle(self, body: bytes, encoding: str) -> None:
        """`body` in chunks of one byte, each written (and read) on its own."""
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Encoding", encoding)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            for byte in body:
                self.wfile.write(b"1\r\n%c\r\n" % byte)
                self.wfile.flush()
                time.sleep(0.002)
            self.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up reading (a bound it keeps), as it may

    def _endless(self) -> None:
        """Spaces, as fast as the client reads them, until it hangs up."""
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        chunk = b" " * 65536
        try:
            while True:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        except (BrokenPipeError, ConnectionResetError):
            pass

    def log_message(self, *args: Any) -> None:
        pass


class BrokenActionServer(ThreadingHTTPServer):
    """Serves `_Broken` on a free local port; `requests` keeps each (path, JSON body) it got,
    `headers` each request's headers (their bytes read as Latin-1)."""

    request_queue_size = 128
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Broken)
        self.requests: list[tuple[str, Any]] = []
        self.headers: list[dict[str, str]] = []


@contextlib.contextmanager
def broken_action_server() -> Iterator[BrokenActionServer]:
    """A local action server that misbehaves by path; `server.requests` keeps what it got."""
    server = BrokenActionServer()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
