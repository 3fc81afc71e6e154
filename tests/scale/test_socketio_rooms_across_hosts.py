"""socket.io rooms shared through Redis: a bot message reaches every tab of a session_id,
whichever server process or worker holds each tab and whichever one sends the message
(two `botserver run` processes as two hosts behind a load balancer, and `--workers 2`)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import httpx
import pytest
import socketio

from bench.concurrency import ServerProcess
from server.api.workers import SPREADS_CONNECTIONS
from tests.scale.scale_services import sqlite_and_redis_endpoints
from tests.scale.socketio_workers import socketio_workers

pytestmark = [pytest.mark.timeout(180)]

REPLY_SECONDS = 10.0
GREETING = "Hey! How are you?"


@pytest.fixture(scope="module")
def moodbot(moodbot_copy: Callable[[str], Path]) -> Path:
    return moodbot_copy("moodbot")


@pytest.fixture(scope="module", params=["endpoints", "credentials"])
def two_hosts(
    moodbot: Path, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[list[str]]:
    """Two server processes of one deployment, their Redis named by endpoints.yml (Redis locks
    under a key prefix of this run, so their rooms' channel is this run's too), or by the
    socket.io channel's `rooms_redis` (the locks then in each process's memory)."""
    directory = tmp_path_factory.mktemp("two-hosts")
    endpoints = sqlite_and_redis_endpoints(directory)
    socketio_settings: dict[str, object] = {"session_persistence": True}
    if request.param == "credentials":
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
    for name in ("a", "b"):
        server = ServerProcess(moodbot, endpoints, directory / f"{name}.log")
        server.args += ["--credentials", str(credentials)]
        servers.append(server)
    try:
        for server in servers:
            server.start()
        for server in servers:
            asyncio.run(server.wait_for("/", 200, timeout=60))
        yield [server.url for server in servers]
    except BaseException:
        for server in servers:
            print(server.log.read_text()[-3000:])
        raise
    finally:
        for server in servers:
            asyncio.run(server.stop())


class Tab:
    """One browser tab: a socket.io client of a session_id, and the bot messages it got."""

    def __init__(self) -> None:
        self.client = socketio.AsyncClient(reconnection=False)
        self.confirmed: asyncio.Queue[str] = asyncio.Queue()
        self.replies: asyncio.Queue[str] = asyncio.Queue()
        self.client.on("session_confirm", self.confirmed.put_nowait)
        self.client.on("bot_uttered", lambda data: self.replies.put_nowait(data.get("text", "")))

    async def open(self, url: str, session_id: str, transports: list[str] | None = None) -> None:
        await self.client.connect(url, transports=transports, wait_timeout=5)
        await self.client.emit("session_request", {"session_id": session_id})
        assert await asyncio.wait_for(self.confirmed.get(), REPLY_SECONDS) == session_id

    async def next_reply(self) -> str:
        try:
            return await asyncio.wait_for(self.replies.get(), REPLY_SECONDS)
        except TimeoutError:
            return "(nothing came)"

    async def close(self) -> None:
        await self.client.eio.disconnect(abort=True)


@contextlib.asynccontextmanager
async def tabs(count: int) -> AsyncIterator[list[Tab]]:
    opened = [Tab() for _ in range(count)]
    try:
        yield opened
    finally:
        for tab in opened:
            await tab.close()


async def trigger_greet(api: httpx.AsyncClient, base: str, session_id: str) -> None:
    answer = await api.post(
        f"{base}/conversations/{session_id}/trigger_intent",
        params={"output_channel": "socketio"},
        json={"name": "greet"},
    )
    assert answer.status_code == 200, answer.text


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


@pytest.fixture(scope="module")
def two_workers(moodbot: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with socketio_workers(
        moodbot, tmp_path_factory.mktemp("rooms-workers"), {"session_persistence": True}
    ) as url:
        yield url


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


def test_a_push_to_a_socket_id_reaches_it_from_the_other_host(two_hosts: list[str]) -> None:
    """The conversation of a socket id (Rasa's default, without session_persistence), pushed
    by the host that does not hold the socket: it comes (published, as the socket is not
    there); pushed by its own host, it comes too (emitted there, not published)."""

    async def pushes() -> list[str]:
        async with tabs(1) as (tab,), httpx.AsyncClient(timeout=30) as api:
            await tab.open(two_hosts[0], f"rooms-{time.time_ns()}")
            came = []
            for host in reversed(two_hosts):
                await trigger_greet(api, host, tab.client.get_sid())
                came.append(await tab.next_reply())
            return came

    assert asyncio.run(pushes()) == [GREETING, GREETING]
