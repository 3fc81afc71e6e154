"""socket.io behind `botserver run --workers 2`: a session's long-polling requests reach any
worker, and the conversation goes on (python-socketio's client here; rasa-webchat in Chromium
in tests/channels/test_webchat_browser.py)."""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import httpx
import pytest
import socketio

from server.api.model_sync import FOLLOW_SECONDS
from server.api.workers import SPREADS_CONNECTIONS
from server.channels.socketio_routing import PUSH_PATH
from tests.scale.socketio_workers import socketio_workers, tabs, trigger_greet

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(not SPREADS_CONNECTIONS, reason="SO_REUSEPORT spreads connections on Linux"),
]

SESSIONS = 4
MESSAGES = 6
REPLY_SECONDS = 10.0


@pytest.fixture(scope="module")
def moodbot(moodbot_copy: Callable[[str], Path]) -> Path:
    return moodbot_copy("moodbot")


@pytest.fixture(scope="module")
def url(moodbot: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with socketio_workers(
        moodbot,
        tmp_path_factory.mktemp("socketio-workers"),
        # The relay between workers, without Redis rooms (test_socketio_rooms_across_hosts.py).
        {"session_persistence": True, "rooms_redis": False},
    ) as url:
        yield url


@pytest.fixture(scope="module")
def url_of_socket_ids(moodbot: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Two workers without session_persistence (Rasa's default: a conversation is the socket
    id), relaying as `url`'s do."""
    with socketio_workers(
        moodbot, tmp_path_factory.mktemp("socketio-workers-sids"), {"rooms_redis": False}
    ) as url:
        yield url


async def converse(url: str, transports: list[str] | None) -> tuple[str, list[str]]:
    """One session: session_request, then MESSAGES greetings, each awaited; the session id
    and the replies that came."""
    client = socketio.AsyncClient(reconnection=False)
    confirmed: asyncio.Queue[str] = asyncio.Queue()
    replies: asyncio.Queue[str] = asyncio.Queue()
    client.on("session_confirm", confirmed.put_nowait)
    client.on("bot_uttered", lambda data: replies.put_nowait(data.get("text", "")))
    came: list[str] = []
    await client.connect(url, transports=transports, wait_timeout=5)
    try:
        await client.emit("session_request", {"session_id": None})
        session_id = await asyncio.wait_for(confirmed.get(), REPLY_SECONDS)
        for _ in range(MESSAGES):
            await client.emit("user_uttered", {"message": "hello", "session_id": session_id})
            try:
                came.append(await asyncio.wait_for(replies.get(), REPLY_SECONDS))
            except TimeoutError:
                break
    finally:
        # Not waiting for the long-poll in flight to end (python-engineio's client waits up
        # to the 25 s ping interval, with one worker too).
        await client.eio.disconnect(abort=True)
    return session_id, came


def held_conversations(url: str, transports: list[str] | None) -> None:
    """SESSIONS sessions in a row each get every reply, and the tracker holds every message."""

    async def sessions() -> list[tuple[str, list[str]]]:
        return [await converse(url, transports) for _ in range(SESSIONS)]

    results = asyncio.run(sessions())
    for session_id, replies in results:
        # Before: sessions whose requests reached the other worker got engine.io's 400
        # "Invalid session" and their replies never came.
        assert replies == ["Hey! How are you?"] * MESSAGES
        tracker = httpx.get(f"{url}/conversations/{session_id}/tracker").json()
        said = [e["text"] for e in tracker["events"] if e["event"] == "user"]
        assert said == ["hello"] * MESSAGES


def test_a_long_polling_session_holds_across_the_workers(url: str) -> None:
    held_conversations(url, ["polling"])


def test_a_session_upgrading_to_websocket_holds_across_the_workers(
    url: str,
) -> None:
    held_conversations(url, None)


def test_a_request_for_an_unknown_worker_gets_engineio_s_answer_for_an_unknown_session(
    url: str,
) -> None:
    """A session of a worker that is gone: a quick 400, as for any unknown session, which
    makes a client start a new one (not a hang, not a 5xx)."""
    unknown = f"{url}/socket.io/?EIO=4&transport=polling&sid=0badc0de.abc"
    for _ in range(4):  # whichever worker the connection reaches
        answer = httpx.get(unknown, timeout=5)
        assert answer.status_code == 400
        assert "Invalid session" in answer.text


def worker_sockets(session: str) -> tuple[Path, Path]:
    """The private sockets of the worker that holds engine.io session `session`, and of the
    other worker (`<route>.sock` in the run's directory, the route heading the session id)."""
    route = session.partition(".")[0]
    (held,) = Path(tempfile.gettempdir()).glob(f"botserver-workers-*/routes/{route}.sock")
    (other,) = (path for path in held.parent.glob("*.sock") if path != held)
    return held, other


@pytest.mark.parametrize("to", ["session_id", "sid"])
def test_a_push_from_either_worker_reaches_the_visitor(
    to: str, request: pytest.FixtureRequest
) -> None:
    """trigger_intent with output_channel=socketio, handled by the worker that holds the
    visitor's socket and by the other one: the bot's message reaches the visitor both times,
    for the conversation of its session_id (a room, with session_persistence) and of its
    socket id (without)."""
    url = request.getfixturevalue("url" if to == "session_id" else "url_of_socket_ids")

    async def pushes() -> list[str]:
        async with visitor(url) as (client, session_id, replies):
            conversation = session_id if to == "session_id" else client.get_sid()
            assert client.eio.sid is not None
            return [
                await pushed_greet(worker, conversation, replies)
                for worker in worker_sockets(client.eio.sid)
            ]

    # Before: the other worker emitted to sockets it did not hold, and nothing came.
    assert asyncio.run(pushes()) == ["Hey! How are you?"] * 2


def test_a_session_id_naming_a_socket_of_the_other_worker_sends_that_socket_nothing(
    url: str,
) -> None:
    """A client held by one worker names as its session_id the socket id of a visitor held by
    the other: its turn's replies come to it, none to the visitor, whose next message is its
    own session's push. Before, the reply went to the worker the id names, which emitted it
    to the visitor's socket (and the client got none)."""

    async def converse() -> list[str]:
        async with tabs(12) as opened:
            visitor, others = opened[0], opened[1:]
            visitor_session = f"visitor-{time.time_ns()}"
            await visitor.open(url, visitor_session, transports=["websocket"])
            taken = visitor.client.get_sid()
            assert taken is not None and visitor.client.eio.sid is not None
            for other in others:  # the kernel spreads connections over the workers
                await other.client.connect(url, transports=["websocket"], wait_timeout=5)
                assert other.client.eio.sid is not None
                if other.client.eio.sid.partition(".")[0] != taken.partition(".")[0]:
                    break
            else:
                pytest.fail("every socket reached the visitor's worker")
            await other.open_connected(taken)
            await other.client.emit("user_uttered", {"message": "hello", "session_id": taken})
            heard = await other.next_reply()
            held, _ = worker_sockets(visitor.client.eio.sid)
            async with httpx.AsyncClient(
                transport=httpx.AsyncHTTPTransport(uds=str(held)), timeout=10
            ) as api:
                await trigger_greet(api, "http://worker", visitor_session, "goodbye")
            return [heard, await visitor.next_reply()]

    assert asyncio.run(converse()) == ["Hey! How are you?", "Bye"]


def test_the_workers_push_path_is_not_served_over_the_network(url: str) -> None:
    """Only the workers' private sockets take pushes: on the server's port the path is
    unknown, and nothing is emitted."""
    push = {"event": "bot_uttered", "data": {"text": "spoofed"}, "room": "x", "namespace": None}
    assert httpx.post(f"{url}{PUSH_PATH}", json=push).status_code == 404


def test_a_push_from_either_worker_reaches_the_visitor_across_model_reloads(
    url: str, moodbot: Path
) -> None:
    """PUT /model (the same archive again) on one worker, then on the other; after each,
    trigger_intent with output_channel=socketio through each worker, at once (while the other
    worker follows the reload) and a little later: the visitor gets every push. (A review
    suspected pushes were lost after a reload without Redis rooms; this did not show it.)"""

    async def pushes() -> list[str]:
        came = []
        async with visitor(url) as (client, session_id, replies):
            assert client.eio.sid is not None
            workers = worker_sockets(client.eio.sid)
            for reloading in workers:
                async with on_worker(reloading, 60) as api:
                    answer = await api.put("http://worker/model", json={"model_file": str(moodbot)})
                assert answer.status_code == 204, answer.text
                for _ in range(2):
                    for worker in workers:
                        came.append(await pushed_greet(worker, session_id, replies))
                    await asyncio.sleep(FOLLOW_SECONDS)
        return came

    assert asyncio.run(pushes()) == ["Hey! How are you?"] * 8


@contextlib.asynccontextmanager
async def visitor(url: str) -> AsyncIterator[tuple[socketio.AsyncClient, str, asyncio.Queue[str]]]:
    """A socket.io visitor given a new session: its client, session id and the texts it gets."""
    client = socketio.AsyncClient(reconnection=False)
    confirmed: asyncio.Queue[str] = asyncio.Queue()
    replies: asyncio.Queue[str] = asyncio.Queue()
    client.on("session_confirm", confirmed.put_nowait)
    client.on("bot_uttered", lambda data: replies.put_nowait(data.get("text", "")))
    await client.connect(url, wait_timeout=5)
    try:
        await client.emit("session_request", {"session_id": None})
        yield client, await asyncio.wait_for(confirmed.get(), REPLY_SECONDS), replies
    finally:
        await client.eio.disconnect(abort=True)


def on_worker(socket: Path, timeout: float) -> httpx.AsyncClient:
    """A client of the worker's private socket: that worker, and no other, runs its requests."""
    return httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(uds=str(socket)), timeout=timeout)


async def pushed_greet(worker: Path, conversation: str, replies: asyncio.Queue[str]) -> str:
    """trigger_intent greet with output_channel=socketio through `worker`; the text that came."""
    async with on_worker(worker, 10) as api:
        answer = await api.post(
            f"http://worker/conversations/{conversation}/trigger_intent",
            params={"output_channel": "socketio"},
            json={"name": "greet"},
        )
    assert answer.status_code == 200, answer.text
    try:
        return await asyncio.wait_for(replies.get(), REPLY_SECONDS)
    except TimeoutError:
        return "(nothing came)"
