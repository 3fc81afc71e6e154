"""How a worker of `--workers N` routes socket.io requests by the worker their `sid` names
(the whole path, two real workers, is in tests/scale/test_socketio_workers.py)."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import socket
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import socketio
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.api import workers
from server.api.worker_files import (
    RELAYED_HEADER,
    WORKER_ROUTE_ENV,
    WORKERS_DIR_ENV,
    private_app,
    route_sockets,
    serve_privately,
)
from server.channels import socketio_routing
from server.channels.socket_io import SocketIOInput
from server.channels.socketio_routing import (
    PUSH_PATH,
    SessionRouter,
    Workers,
    route_of,
    routed_server,
)
from server.dialogue.messages import UserMessage
from tests.closing_idle_server import QUIET_SECONDS, ClosingIdleServer
from tests.loop_lag import paced

# Passed as loggers: without them python-engineio and python-socketio set the levels of their
# own loggers for the whole process (ERROR), hiding the channel's warnings in later tests.
QUIET = {"logger": logging.getLogger(__name__), "engineio_logger": logging.getLogger(__name__)}


def test_session_ids_name_their_worker() -> None:
    sid = routed_server("0123abcd", async_mode="asgi", **QUIET).eio.generate_id()
    assert sid.startswith("0123abcd.")
    assert route_of(f"EIO=4&transport=polling&sid={sid}".encode()) == "0123abcd"


@pytest.mark.parametrize(
    "query",
    [
        b"EIO=4&transport=polling",  # a new session: served here
        b"EIO=4&transport=polling&sid=Zx9plainEngineIoId",  # no route
        b"EIO=4&sid=..%2F..%2Fetc.x",  # never a path outside the sockets' directory
        b"EIO=4&sid=0123ABCD.x",  # not a route's shape
    ],
)
def test_a_sid_naming_no_worker_is_served_here(query: bytes) -> None:
    assert route_of(query) is None


@pytest.mark.timing
async def test_a_session_of_a_worker_that_died_gets_engineio_s_400_at_once(
    tmp_path: Path,
) -> None:
    """The dead worker's socket file is still there (killed, it could not remove it): the
    client gets the answer for an unknown session, quickly, and opens a new one."""
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(tmp_path / "deadbeef.sock"))
    stale.close()
    sio = routed_server("0123abcd", async_mode="asgi", **QUIET)
    workers = Workers("0123abcd", tmp_path, 45)
    router = SessionRouter(socketio.ASGIApp(sio, socketio_path=None), workers)
    transport = httpx.ASGITransport(app=router)
    async with httpx.AsyncClient(transport=transport, base_url="http://bot") as client:
        started = time.monotonic()
        for sid in ("deadbeef.abc", "feedf00d.abc"):  # a stale socket, and none at all
            for method in ("GET", "POST"):
                answer = await client.request(
                    method, f"/?EIO=4&transport=polling&sid={sid}", content=b"40"
                )
                assert answer.status_code == 400
                assert answer.json() == f"Invalid session {sid}"
    assert time.monotonic() - started < paced(2)


class FakeWorker:
    """Another worker's private socket: answers every HTTP request with a 200 and keeps the
    connection open; `closed` is set when the connection is closed by the client."""

    def __init__(self) -> None:
        self.requests: list[bytes] = []
        self.closed = asyncio.Event()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = re.search(rb"(?i)content-length: *(\d+)", head)
                body = await reader.readexactly(int(length[1]) if length else 0)
                self.requests.append(head + body)
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            self.closed.set()
        finally:
            writer.close()


@pytest.fixture
def this_worker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The process is worker `0123abcd` of a run whose sockets are in the returned directory."""
    monkeypatch.setenv(WORKERS_DIR_ENV, str(tmp_path))
    monkeypatch.setenv(WORKER_ROUTE_ENV, "0123abcd")
    sockets = route_sockets(tmp_path)
    sockets.mkdir()
    return sockets


def mounted_channel() -> tuple[SocketIOInput, ASGIApp]:
    """A socket.io channel mounted as the server mounts it (messages go nowhere)."""
    channel = SocketIOInput()

    async def nothing(message: UserMessage) -> None:
        return None

    mounted = channel.asgi_mount(nothing)
    assert mounted is not None
    return channel, mounted[1]


async def test_the_clients_of_the_other_workers_are_closed_when_the_server_stops(
    this_worker: Path,
) -> None:
    """A request forwarded to another worker leaves a connection open to it, for the next
    ones; when this worker stops, the channel closes it (before, it stayed open until the
    process ended)."""
    other = FakeWorker()
    server = await asyncio.start_unix_server(other.handle, path=str(this_worker / "feedf00d.sock"))
    async with server:
        channel, app = mounted_channel()
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bot") as client:
            answer = await client.get("/?EIO=4&transport=polling&sid=feedf00d.abc")
        assert answer.text == "ok"
        assert not other.closed.is_set()
        await channel.aclose()
        await asyncio.wait_for(other.closed.wait(), 5)


@pytest.mark.timing
async def test_a_push_for_a_session_of_a_worker_that_is_gone_logs_one_warning(
    this_worker: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Its socket removed (the worker stopped) or left behind (killed): one warning line,
    at once, and the next message to that worker's sessions is skipped without another."""
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(this_worker / "deadbeef.sock"))
    stale.close()
    output = SocketIOInput().get_output_channel()
    started = time.monotonic()
    for sid in ("deadbeef.abc", "feedf00d.abc", "deadbeef.abc", "feedf00d.xyz"):
        await output.send_response(sid, {"text": "hi"})
    assert time.monotonic() - started < paced(2)
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(lines) == 2, lines
    assert "did not reach worker deadbeef (it is gone: nothing listens" in lines[0]
    assert "did not reach worker feedf00d (it is gone)" in lines[1]


async def test_a_killed_worker_s_socket_is_removed_at_the_first_push_that_finds_it_dead(
    this_worker: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker SIGKILLed leaves its socket file behind. The first push to a named room
    finds nothing listening there: one warning, and the file is removed. Before, the dead
    worker was only skipped for a while (30 s): each push to a named room after that
    tried it again and warned again, for as long as the server ran."""
    monkeypatch.setattr(socketio_routing, "_SKIP_SECONDS", 0.0)  # the skip long over
    monkeypatch.setattr(socketio_routing, "_LIST_SECONDS", 0.0)  # the directory read again
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(this_worker / "deadbeef.sock"))
    stale.close()
    channel = SocketIOInput()
    output = channel.get_output_channel()
    try:
        for _ in range(3):
            await output.send_response("a-session-id", {"text": "hi"})
    finally:
        await channel.aclose()
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(lines) == 1, lines
    assert "did not reach worker deadbeef (it is gone" in lines[0]
    assert not (this_worker / "deadbeef.sock").exists()


def test_a_starting_worker_s_socket_file_appears_only_once_it_listens(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A push that finds a worker's socket file with nothing listening takes the worker for
    dead and removes the file. So the file must never be there before it listens: before,
    it was there from the bind, and a push in the moment between the bind and the listen (a
    moment longer on a loaded host) removed a live worker's socket, whose socket.io sessions
    the other workers could no longer reach."""
    refused: list[str] = []

    class Watched(socket.socket):
        def listen(self, *args: Any) -> None:
            for path in route_sockets(tmp_path).glob("*.sock"):  # what a push finds now
                probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                try:
                    probe.connect(str(path))
                except ConnectionRefusedError:
                    refused.append(path.name)
                finally:
                    probe.close()
            super().listen(*args)

    monkeypatch.setenv(WORKERS_DIR_ENV, str(tmp_path))
    monkeypatch.delenv(WORKER_ROUTE_ENV, raising=False)  # set by the worker's socket
    monkeypatch.setattr(socket, "socket", Watched)
    made = workers._private_socket(16)
    assert made is not None
    path, sock = made
    try:
        assert not refused
        assert [p.name for p in path.parent.iterdir()] == [path.name]
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.connect(str(path))  # and it listens under its name
    finally:
        sock.close()


@pytest.mark.parametrize("spare", [0, 1, 4])
def test_a_worker_whose_socket_path_is_too_long_says_it_has_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, spare: int
) -> None:
    """A workers' directory so deep that `<route>.sock` passes what a Unix socket's path
    holds (107 bytes), by `spare` bytes or fewer than its name's length: the worker says it
    has no private socket, as it did when it bound that name. Bound under a shorter name and
    renamed, its socket was at a path no other worker can connect to, without a word."""
    name_length = len("0123abcd.sock")
    room = 107 - len(str(route_sockets(tmp_path))) - len("/") - name_length + 1 + spare
    deep = tmp_path / ("d" * (room - 1))  # its path one longer: `/` and `room - 1` letters
    monkeypatch.setenv(WORKERS_DIR_ENV, str(deep))
    monkeypatch.delenv(WORKER_ROUTE_ENV, raising=False)
    deep.mkdir()
    assert len(str(route_sockets(deep) / "0123abcd.sock")) == 108 + spare
    made = workers._private_socket(16)
    if made is not None:
        made[1].close()
    assert made is None
    assert "has no private socket" in caplog.text
    assert list(route_sockets(deep).iterdir()) == []


async def test_a_push_to_a_named_room_goes_to_every_other_worker(this_worker: Path) -> None:
    """A session_id's room may have sockets on any worker: each other worker gets the message
    (and emits it to the sockets it holds). A message to a socket of this worker, or to a room
    with a socket here (a reply to the visitor's own message), stays here."""
    others = [FakeWorker(), FakeWorker()]
    servers = [
        await asyncio.start_unix_server(worker.handle, path=str(this_worker / f"{route}.sock"))
        for worker, route in zip(others, ("aaaa0000", "bbbb1111"), strict=True)
    ]
    channel = SocketIOInput()
    sid = await channel.sio.manager.connect("0123abcd.engineio", "/")
    await channel.sio.enter_room(sid, "held-here")
    output = channel.get_output_channel()
    try:
        await output.send_response("a-session-id", {"text": "hi"})
        await output.send_response(sid, {"text": "mine"})
        await output.send_response("held-here", {"text": "mine too"})
    finally:
        await channel.aclose()
        for server in servers:
            server.close()
    for worker in others:
        (request,) = worker.requests
        assert request.startswith(f"POST {PUSH_PATH} ".encode())
        assert json.loads(request.partition(b"\r\n\r\n")[2]) == {
            "event": "bot_uttered",
            "data": {"text": "hi"},
            "room": "a-session-id",
            "namespace": None,
        }


async def test_a_client_cannot_reach_another_worker_s_private_paths_through_the_relay(
    this_worker: Path,
) -> None:
    """`/socket.io/../_push/socketio?sid=<another worker>.x`, sent as is (`curl --path-as-is`):
    not relayed (httpx would resolve the `..` and reach the path where workers take each
    other's pushes, letting anyone send bot messages to any visitor); engine.io's 400 here."""
    other = FakeWorker()
    server = await asyncio.start_unix_server(other.handle, path=str(this_worker / "feedf00d.sock"))
    async with server:
        channel, app = mounted_channel()
        push = json.dumps({"event": "bot_uttered", "data": {}, "room": "x", "namespace": None})
        sent: list[Message] = []
        received = [{"type": "http.request", "body": push.encode(), "more_body": False}]

        async def receive() -> Message:
            return received.pop() if received else {"type": "http.disconnect"}

        async def send(message: Message) -> None:
            sent.append(message)

        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": "/../_push/socketio",
            "raw_path": b"/../_push/socketio",
            "root_path": "",
            "query_string": b"EIO=4&transport=polling&sid=feedf00d.x",
            "headers": [(b"host", b"bot"), (b"content-type", b"application/json")],
            "client": ("127.0.0.1", 1234),
            "server": ("127.0.0.1", 5005),
        }
        await app(scope, receive, send)
        await channel.aclose()
    assert other.requests == []
    assert sent[0]["status"] == 400


async def test_a_relayed_request_never_gets_a_private_path() -> None:
    """Defence in depth: what a worker relays for a client carries a mark, and the private
    socket serves such a request the main app, not the workers' own paths."""
    served: list[str] = []

    async def main_app(scope: Scope, receive: Receive, send: Send) -> None:
        served.append("main")

    async def private(scope: Scope, receive: Receive, send: Send) -> None:
        served.append("private")

    serve_privately("/_test/private", private)
    app = private_app(main_app)
    for headers in ([], [(RELAYED_HEADER, b"1")]):
        scope = {"type": "http", "path": "/_test/private", "headers": headers}
        await app(scope, _no_receive, _no_send)
    assert served == ["private", "main"]


async def _no_receive() -> Message:
    return {"type": "http.disconnect"}


async def _no_send(message: Message) -> None:
    return None


async def test_looking_for_another_worker_s_socket_does_not_hold_the_event_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The socket file is looked for in a thread: on a slow file system (the run's directory
    on a network disk, a disk under load) the other sessions of this worker go on meanwhile.
    Here the look-up waits until a task on the loop lets it go; on the loop, it could not."""
    gate = threading.Event()
    released: list[bool] = []
    exists = Path.exists

    def slow_exists(path: Path) -> bool:
        if path.suffix == ".sock":
            released.append(gate.wait(3))
        return exists(path)

    async def release() -> None:
        await asyncio.sleep(0.05)
        gate.set()

    monkeypatch.setattr(Path, "exists", slow_exists)
    workers = Workers("0123abcd", tmp_path, 45)
    opened = asyncio.ensure_future(release())
    assert await workers.client("feedf00d") is None  # no such worker
    await opened
    # Before: the look-up ran on the loop, the task could not run, and it waited its 3 s out.
    assert released == [True]


async def test_a_push_after_a_quiet_moment_reaches_the_other_worker(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Before, a worker kept its idle connection to another 5 s, as long as that worker's
    uvicorn (5 s keep-alive) keeps it: a bot message pushed as uvicorn closed the connection
    got no answer, was lost, and the other worker's sockets were skipped for 30 s. Now kept
    1 s, as every outgoing client's."""
    other = ClosingIdleServer(b"{}")
    listening = await asyncio.start_unix_server(other.handle, str(tmp_path / "feedf00d.sock"))
    sio = routed_server("0123abcd", async_mode="asgi", **QUIET)
    workers = Workers("0123abcd", tmp_path, 45)
    try:
        with caplog.at_level(logging.WARNING):
            await workers.emit(sio, "bot_uttered", {"text": "one"}, "feedf00d.abc", "/")
            await asyncio.sleep(QUIET_SECONDS)  # the quiet moment itself
            await workers.emit(sio, "bot_uttered", {"text": "two"}, "feedf00d.abc", "/")
    finally:
        await workers.aclose()
        listening.close()
    assert [json.loads(body)["data"]["text"] for body in other.served] == ["one", "two"]
    assert not caplog.records


class HoldingWorker:
    """Another worker's private socket holding each request (a long-poll) until `release`."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.held = 0
        self.all_held = asyncio.Event()  # once `expected` are held at once
        self.release = asyncio.Event()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            self.held += 1
            if self.held == self.expected:
                self.all_held.set()
            await self.release.wait()
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


async def test_more_than_a_hundred_long_polls_are_relayed_to_another_worker_at_once(
    this_worker: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """One connection per long-poll in flight, as many as there are clients. Before, the
    limits were given to the client, which does not pass them to a transport of its own:
    httpx's 100 connections held, the 101st long-poll waited 2 s for one, was taken for a
    worker that does not answer, and the client was closed, cutting the 100 others."""
    polls = 101
    other = HoldingWorker(polls)
    server = await asyncio.start_unix_server(other.handle, path=str(this_worker / "feedf00d.sock"))
    channel, app = mounted_channel()
    transport = httpx.ASGITransport(app=app)
    try:
        async with server, httpx.AsyncClient(transport=transport, base_url="http://bot") as client:
            answers: asyncio.Future[list[httpx.Response]] = asyncio.gather(
                *(
                    client.get(f"/?EIO=4&transport=polling&sid=feedf00d.s{n}", timeout=30)
                    for n in range(polls)
                )
            )
            held = asyncio.ensure_future(other.all_held.wait())
            either: list[asyncio.Future[Any]] = [held, answers]
            # Until every long-poll is held there (before: until the 101st was answered here).
            await asyncio.wait(either, timeout=10, return_when=asyncio.FIRST_COMPLETED)
            held.cancel()
            other.release.set()
            texts = [answer.text for answer in await answers]
    finally:
        await channel.aclose()
    assert texts == ["ok"] * polls
    assert not [r for r in caplog.records if "did not answer" in r.getMessage()]
