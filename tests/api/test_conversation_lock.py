"""One conversation's messages, one at a time, through the real HTTP server."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from server.api.server import ServerOptions, build_app
from server.trackers.factory import create_lock_store
from tests.serving import serving
from tests.trackers.persistence_fixtures import (
    REDIS,
    delete_redis_keys,
    require_service,
    unique_name,
)

WEBHOOK = "/webhooks/rest/webhook"


@pytest.mark.parametrize("stream", ["", "?stream=true"])
async def test_a_message_whose_client_left_while_it_waited_is_not_handled(
    moodbot_model: Path, tmp_path: Path, stream: str
) -> None:
    """Before, it was handled when its turn came, after the client had given up (and had
    perhaps sent it again): a turn nobody saw, and the conversation's next message waited
    for it."""
    app = build_app(
        ServerOptions(
            model_path=moodbot_model,
            enable_api=True,
            endpoints={"tracker_store": {"type": "in_memory"}},
            models_dir=tmp_path,
        )
    )
    async with serving(app) as url, httpx.AsyncClient(base_url=url) as client:
        async with app.state.lock_store.lock("u1"):  # an earlier turn of u1, still running
            with pytest.raises(httpx.ReadTimeout):
                await client.post(
                    WEBHOOK + stream, json={"sender": "u1", "message": "hello"}, timeout=0.3
                )
            await asyncio.sleep(0.05)  # the server sees the connection close

        answer = await client.post(WEBHOOK, json={"sender": "u1", "message": "bye"}, timeout=5)

        assert answer.status_code == 200
        assert answer.json() == [{"recipient_id": "u1", "text": "Bye"}]
        events = (await client.get("/conversations/u1/tracker")).json()["events"]
        assert [e["text"] for e in events if e["event"] == "user"] == ["bye"]


async def test_a_client_gone_while_another_process_held_the_redis_lock_is_not_handled(
    moodbot_model: Path, tmp_path: Path
) -> None:
    """The wait on another process's Redis lease (no local waiter here) watches the client
    too; a message that takes its lock at once starts no watch."""
    require_service("Redis", REDIS)
    prefix = unique_name("lead_gone")
    lock_config = {"type": "redis", "url": REDIS[0], "port": REDIS[1], "key_prefix": prefix}
    app = build_app(
        ServerOptions(
            model_path=moodbot_model,
            enable_api=True,
            endpoints={"tracker_store": {"type": "in_memory"}, "lock_store": lock_config},
            models_dir=tmp_path,
        )
    )
    other_process = create_lock_store(lock_config)
    try:
        async with serving(app) as url, httpx.AsyncClient(base_url=url) as client:
            async with other_process.lock("u1"):
                with pytest.raises(httpx.ReadTimeout):
                    await client.post(
                        WEBHOOK, json={"sender": "u1", "message": "hello"}, timeout=0.3
                    )
                await asyncio.sleep(0.05)  # the server sees the connection close

            answer = await client.post(WEBHOOK, json={"sender": "u1", "message": "bye"}, timeout=5)
            assert answer.json() == [{"recipient_id": "u1", "text": "Bye"}]
            events = (await client.get("/conversations/u1/tracker")).json()["events"]
            assert [e["text"] for e in events if e["event"] == "user"] == ["bye"]
    finally:
        await other_process.close()
        await delete_redis_keys(prefix)
