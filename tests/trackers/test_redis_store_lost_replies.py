"""The Redis tracker store when a reply is lost: the connection breaks after Redis ran an
append, and redis-py sends the command again on a new connection."""

from __future__ import annotations

import pytest

from server.trackers.redis_store import RedisTrackerStore
from tests.scale.test_commit_answer_lost import AnswerLosingProxy
from tests.trackers.persistence_fixtures import (
    REDIS,
    delete_redis_keys,
    require_service,
    unique_name,
)


@pytest.mark.parametrize("operation", ["turn", "bulk-append", "long-replace"])
async def test_a_write_whose_reply_was_lost_is_stored_once(operation: str) -> None:
    """A turn's append: before, the re-sent append pushed the events a second time, and the
    conversation held the user's message and the bot's answers twice. A bulk append or a
    long replace pushes its items 1,000 at a time into a staged key: when the reply to one
    such push was lost, redis-py sent it again and the staged key held those 1,000 items
    twice, then took the conversation's place, which held them twice too."""
    require_service("Redis", REDIS)
    prefix = unique_name("bsr")
    proxy = AnswerLosingProxy(REDIS)
    await proxy.restore()
    config = {"url": REDIS[0], "port": proxy.port, "db": 0, "key_prefix": prefix}
    store, direct = RedisTrackerStore(config), RedisTrackerStore({**config, "port": REDIS[1]})
    lost = "its answer is lost"
    count = 1 if operation == "turn" else 1_500
    events = [{"event": "bot", "timestamp": 2.0, "text": f"{n}"} for n in range(count)]
    events[-300 if count > 1 else 0]["text"] = lost  # (in a bulk's second slice)
    try:
        await store.append("alice", [{"event": "bot", "timestamp": 1.0, "text": "first"}])
        proxy.lose_answer_to = lost.encode()
        if operation == "long-replace":
            await store.replace("alice", events)
        else:
            await store.append("alice", events)
        stored = await direct.load_all("alice") or []
        expected = [e["text"] for e in events]
        if operation != "long-replace":
            expected.insert(0, "first")
        assert [event["text"] for event in stored] == expected
    finally:
        await store.close()
        await direct.close()
        await proxy.cut()
        await delete_redis_keys(prefix, db=0)
