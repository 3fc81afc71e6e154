"""socket.io behind `botserver run --workers 2`: a session's long-polling requests reach any
worker, and the conversation goes on (python-socketio's client here; rasa-webchat in Chromium
in tests/channels/test_webchat_browser.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import socketio

from bench.concurrency import train_moodbot
from server.api.workers import SPREADS_CONNECTIONS
from tests.scale.socketio_workers import socketio_workers

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(not SPREADS_CONNECTIONS, reason="SO_REUSEPORT spreads connections on Linux"),
]

SESSIONS = 4
MESSAGES = 6
REPLY_SECONDS = 10.0


@pytest.fixture(scope="module")
def moodbot(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_moodbot(tmp_path_factory.mktemp("moodbot"))


@pytest.fixture(scope="module")
def url(moodbot: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with socketio_workers(
        moodbot, tmp_path_factory.mktemp("socketio-workers"), {"session_persistence": True}
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
