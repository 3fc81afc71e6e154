"""socket.io rooms shared through Redis: a bot message reaches every tab of a session_id,
whichever server process or worker holds each tab and whichever one sends the message
(two `botserver run` processes as two hosts behind a load balancer, the second of them
`--workers 2`)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from bench.concurrency import ServerProcess
from server.api.workers import SPREADS_CONNECTIONS
from tests.scale.scale_services import sqlite_and_redis_endpoints
from tests.scale.socketio_workers import Tab, tabs, trigger_greet

pytestmark = [pytest.mark.timeout(180)]

GREETING = "Hey! How are you?"


@pytest.fixture(scope="module")
def moodbot(moodbot_copy: Callable[[str], Path]) -> Path:
    return moodbot_copy("moodbot")


@pytest.fixture(scope="module")
def two_hosts(moodbot: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[str]]:
    """Two servers of one deployment with session_persistence, their Redis named by
    endpoints.yml (Redis locks under a key prefix of this run, so their rooms' channel is
    this run's too): host A one process, host B `--workers 2` (the workers' tests run on B:
    a start fewer than a deployment of its own)."""
    with started_hosts(
        moodbot, tmp_path_factory, "endpoints", session_persistence=True, second_workers=2
    ) as urls:
        yield urls


@pytest.fixture(scope="module")
def two_hosts_of_socket_ids(
    moodbot: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[str]]:
    """Two server processes without session_persistence (Rasa's default: a conversation is a
    socket id), their Redis named by the socket.io channel's `rooms_redis` (the locks then in
    each process's memory): the rooms are the same whichever names the Redis, so each way
    is started once."""
    with started_hosts(moodbot, tmp_path_factory, "credentials", session_persistence=False) as urls:
        yield urls


@contextlib.contextmanager
def started_hosts(
    moodbot: Path,
    tmp_path_factory: pytest.TempPathFactory,
    redis_named_by: str,
    session_persistence: bool,
    second_workers: int = 1,
) -> Iterator[list[str]]:
    directory = tmp_path_factory.mktemp("two-hosts")
    endpoints = sqlite_and_redis_endpoints(directory)
    socketio_settings: dict[str, object] = {"session_persistence": session_persistence}
    if redis_named_by == "credentials":
        locks = json.loads(endpoints.read_text())
        redis = locks.pop("lock_store")
        endpoints.write_text(json.dumps(locks))
        socketio_settings["rooms_redis"] = {
            "url": "redis://127.0.0.1:6379/0",
            "key_prefix": redis["key_prefix"],
        }
    credentials = directory / "credentials.yml"
    credentials.write_text(json.dumps({"socketio": socketio_settings}))
    servers = []
    for name, workers in (("a", 1), ("b", second_workers)):
        server = ServerProcess(moodbot, endpoints, directory / f"{name}.log", workers=workers)
        server.args += ["--credentials", str(credentials)]
        servers.append(server)
    try:
        for server in servers:
            server.start()
        for server in servers:
            asyncio.run(server.wait_for("/", 200, timeout=60))
        if second_workers > 1:
            deadline = time.monotonic() + 30
            said = f"with {second_workers} workers"  # said once they all serve
            while said not in servers[1].log.read_text():
                assert time.monotonic() < deadline, servers[1].log.read_text()[-3000:]
                time.sleep(0.1)
        yield [server.url for server in servers]
    except BaseException:
        for server in servers:
            print(server.log.read_text()[-3000:])
        raise
    finally:
        for server in servers:
            asyncio.run(server.stop())


def test_a_push_from_either_host_reaches_the_tabs_on_both(two_hosts: list[str]) -> None:
    """One session_id, a tab on each host; trigger_intent run by host A, then by host B:
    both tabs get both messages. Before, each push reached the tab of its own host only."""

    async def pushes() -> list[list[str]]:
        session_id = f"rooms-{time.time_ns()}"
        async with tabs(2) as (on_a, on_b), httpx.AsyncClient(timeout=30) as api:
            await on_a.open(two_hosts[0], session_id)
            await on_b.open(two_hosts[1], session_id)
            came = []
            for host in two_hosts:
                await trigger_greet(api, host, session_id)
                came.append([await on_a.next_reply(), await on_b.next_reply()])
            return came

    assert asyncio.run(pushes()) == [[GREETING, GREETING], [GREETING, GREETING]]


def test_a_reply_to_one_tab_reaches_the_session_s_tab_on_the_other_host(
    two_hosts: list[str],
) -> None:
    """A visitor's message typed in the tab on host A: its reply shows in the tab on host B
    too, as with one server (and after it, in order, the reply to a second message)."""

    async def converse() -> list[str]:
        session_id = f"rooms-{time.time_ns()}"
        async with tabs(2) as (on_a, on_b):
            await on_a.open(two_hosts[0], session_id)
            await on_b.open(two_hosts[1], session_id)
            await on_a.client.emit("user_uttered", {"message": "hello", "session_id": session_id})
            await on_a.client.emit("user_uttered", {"message": "great", "session_id": session_id})
            return [await on_b.next_reply(), await on_b.next_reply(), await on_a.next_reply()]

    assert asyncio.run(converse()) == [GREETING, "Great, carry on!", GREETING]


def test_a_session_id_naming_a_socket_on_the_other_host_sends_that_socket_nothing(
    two_hosts: list[str],
) -> None:
    """A client on host A names as its session_id the socket id of a visitor's tab on host
    B: its turn's replies come to it, and none to the visitor, whose next message is its own
    session's (a push sent after the turn, through the same Redis channel, so in order).
    Before, host A let the client into the room of that id (no such socket there) and the
    replies, published, were shown in the visitor's widget on host B."""

    async def converse() -> list[str]:
        async with tabs(2) as (visitor, other), httpx.AsyncClient(timeout=30) as api:
            visitor_session = f"rooms-{time.time_ns()}"
            await visitor.open(two_hosts[1], visitor_session)
            taken = visitor.client.get_sid()
            assert taken is not None
            await other.open(two_hosts[0], taken)
            await other.client.emit("user_uttered", {"message": "hello", "session_id": taken})
            heard = await other.next_reply()
            await trigger_greet(api, two_hosts[0], visitor_session, "goodbye")
            return [heard, await visitor.next_reply()]

    assert asyncio.run(converse()) == [GREETING, "Bye"]


def test_a_session_id_that_was_a_socket_id_goes_on_while_that_socket_is_open(
    two_hosts: list[str],
) -> None:
    """A widget that took its first socket's id as its session id (as a popular tutorial
    does), opened on the other host too, then reloaded while that first socket is still open
    (a long-polling session lingers up to its ping timeout) on the first host: each tab is
    confirmed the stored session and gets every reply. Before, the host holding the first
    socket replaced the session id with a new one: the conversation was lost.

    The tab on the other host is opened before the first message, and every reply is awaited
    in every tab before the next message: a reply reaches the other host through Redis a
    little after its own host's tabs, so a tab opened there just after a reply came here
    could still get it (as it would had it opened a moment earlier)."""

    async def converse() -> list[str]:
        async with tabs(3) as (first, reloaded, elsewhere):
            await first.client.connect(two_hosts[0], wait_timeout=5)
            stored = first.client.get_sid()
            assert stored is not None
            await first.open_connected(stored)
            await elsewhere.open(two_hosts[1], stored)
            await first.client.emit("user_uttered", {"message": "hello", "session_id": stored})
            heard = [await first.next_reply(), await elsewhere.next_reply()]
            await reloaded.open(two_hosts[0], stored)
            await reloaded.client.emit("user_uttered", {"message": "great", "session_id": stored})
            heard += [await tab.next_reply() for tab in (reloaded, first, elsewhere)]
            await elsewhere.client.emit("user_uttered", {"message": "hi", "session_id": stored})
            heard += [await tab.next_reply() for tab in (elsewhere, first, reloaded)]
            return heard

    happy = "Great, carry on!"
    assert asyncio.run(converse()) == [GREETING] * 2 + [happy] * 3 + [GREETING] * 3


@pytest.fixture(scope="module")
def two_workers(two_hosts: list[str]) -> str:
    """Host B: `--workers 2` with Redis locks, so Redis rooms."""
    return two_hosts[1]


def worker_socket(session: str) -> Path:
    """The private socket of the worker that holds engine.io session `session`."""
    route = session.partition(".")[0]
    (held,) = Path(tempfile.gettempdir()).glob(f"botserver-workers-*/routes/{route}.sock")
    return held


@pytest.mark.skipif(not SPREADS_CONNECTIONS, reason="SO_REUSEPORT spreads connections on Linux")
def test_a_push_reaches_the_session_s_tabs_on_every_worker(two_workers: str) -> None:
    """`--workers 2` with Redis locks: tabs of one session_id held by different workers (as
    rasa-webchat's tabs with `storage: "local"`); trigger_intent run by each worker reaches
    every tab. Before, the worker that held one of them emitted to its own tabs only."""

    async def pushes() -> list[list[str]]:
        session_id = f"rooms-{time.time_ns()}"
        async with tabs(12) as opened:
            held: dict[str, Tab] = {}
            for tab in opened:  # the kernel spreads connections over the workers
                await tab.open(two_workers, session_id, transports=["websocket"])
                assert tab.client.eio.sid is not None
                held.setdefault(tab.client.eio.sid.partition(".")[0], tab)
                if len(held) == 2:
                    break
            assert len(held) == 2, "every tab reached the same worker"
            came = []
            for tab in held.values():
                assert tab.client.eio.sid is not None
                transport = httpx.AsyncHTTPTransport(uds=str(worker_socket(tab.client.eio.sid)))
                async with httpx.AsyncClient(transport=transport, timeout=30) as api:
                    await trigger_greet(api, "http://worker", session_id)
                # Every open tab is in the session: each gets the message once.
                came.append(
                    [await other.next_reply() for other in opened if other.client.connected]
                )
            return came

    for replies in asyncio.run(pushes()):
        assert replies == [GREETING] * len(replies)


def test_a_push_to_a_socket_id_reaches_it_from_the_other_host(
    two_hosts_of_socket_ids: list[str],
) -> None:
    """The conversation of a socket id (Rasa's default, without session_persistence), pushed
    by the host that does not hold the socket: it comes (published, as the socket is not
    there); pushed by its own host, it comes too (emitted there, not published)."""

    async def pushes() -> list[str]:
        hosts = two_hosts_of_socket_ids
        async with tabs(1) as (tab,), httpx.AsyncClient(timeout=30) as api:
            await tab.client.connect(hosts[0], wait_timeout=5)
            came = []
            for host in reversed(hosts):
                await trigger_greet(api, host, tab.client.get_sid())
                came.append(await tab.next_reply())
            return came

    assert asyncio.run(pushes()) == [GREETING, GREETING]
