"""`botserver run --workers 2` with the socketio channel, and browser tabs as python-socketio
clients, for the tests of sessions across workers and hosts (rasa-webchat in Chromium too)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import socketio

from bench.concurrency import ServerProcess
from tests.scale.scale_services import sqlite_and_redis_endpoints

REPLY_SECONDS = 10.0


@contextlib.contextmanager
def socketio_workers(model: Path, tmp_path: Path, socketio: dict[str, Any]) -> Iterator[str]:
    """Two workers serving `model` with these socketio settings and `--cors "*"`, on SQLite
    with Redis locks, until the block ends; yields the base URL."""
    endpoints = sqlite_and_redis_endpoints(tmp_path)
    credentials = tmp_path / "credentials.yml"
    credentials.write_text(json.dumps({"socketio": socketio}))
    server = ServerProcess(model, endpoints, tmp_path / "server.log", workers=2)
    server.args += ["--credentials", str(credentials), "--cors", "*"]
    server.start()
    try:
        asyncio.run(server.wait_for("/", 200, timeout=60))
        deadline = time.monotonic() + 30
        while "with 2 workers" not in server.log.read_text():  # said once both serve
            assert time.monotonic() < deadline, server.log.read_text()[-3000:]
            time.sleep(0.1)
        yield server.url
    except BaseException:
        print(server.log.read_text()[-3000:])
        raise
    finally:
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
        await self.open_connected(session_id)

    async def open_connected(self, session_id: str) -> None:
        """Request `session_id` on the connected socket, and check it is confirmed."""
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


async def trigger_greet(
    api: httpx.AsyncClient, base: str, session_id: str, intent: str = "greet"
) -> None:
    answer = await api.post(
        f"{base}/conversations/{session_id}/trigger_intent",
        params={"output_channel": "socketio"},
        json={"name": intent},
    )
    assert answer.status_code == 200, answer.text
