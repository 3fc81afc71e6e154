"""The Redis tracker store when a reply is lost: the connection breaks after Redis ran an
append, and redis-py sends the command again on a new connection."""

from __future__ import annotations

from server.trackers.redis_store import RedisTrackerStore
from tests.scale.test_commit_answer_lost import AnswerLosingProxy
from tests.trackers.persistence_fixtures import (
    REDIS,
    delete_redis_keys,
    require_service,
    unique_name,
)


async def test_an_append_whose_reply_was_lost_is_stored_once() -> None:
    """Before, the re-sent append pushed the events a second time: the conversation held
    the user's message and the bot's answers twice."""
    require_service("Redis", REDIS)
    prefix = unique_name("bsr")
    proxy = AnswerLosingProxy(REDIS)
    await proxy.restore()
    config = {"url": REDIS[0], "port": proxy.port, "db": 0, "key_prefix": prefix}
    store, direct = RedisTrackerStore(config), RedisTrackerStore({**config, "port": REDIS[1]})
    try:
        await store.append("alice", [{"event": "bot", "timestamp": 1.0, "text": "first"}])
        lost = "its answer is lost"
        proxy.lose_answer_to = lost.encode()
        await store.append("alice", [{"event": "bot", "timestamp": 2.0, "text": lost}])
        stored = await direct.load_all("alice") or []
        assert [event["text"] for event in stored] == ["first", lost]
    finally:
        await store.close()
        await direct.close()
        await proxy.cut()
        await delete_redis_keys(prefix, db=0)
