"""The Redis tracker store when a reply is lost: the connection breaks after Redis ran an
append, and redis-py sends the command again on a new connection."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

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
    lost = "its answer is lost"
    count = 1 if operation == "turn" else 1_500
    events = [{"event": "bot", "timestamp": 2.0, "text": f"{n}"} for n in range(count)]
    events[-300 if count > 1 else 0]["text"] = lost  # (in a bulk's second slice)
    async with losing_stores() as (proxy, store, direct, _):
        staged = staged_keys(store)
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
        # Pushed once: not found short, or long, and made again. (The proxy breaks only the
        # connection that carried the push, not the one that watches the list.)
        assert len(staged) == (0 if operation == "turn" else 1)


def staged_keys(store: RedisTrackerStore) -> set[str]:
    """The staged keys `store` pushes to, from now on."""
    keys: set[str] = set()
    push = store._push_staged

    async def noting(staged: str, *args: Any) -> int:
        keys.add(staged)
        return await push(staged, *args)

    store._push_staged = noting  # type: ignore[method-assign,assignment]
    return keys


async def test_a_long_replace_whose_last_reply_was_lost_keeps_the_new_events() -> None:
    """The reply to the transaction that makes a long replace's staged key the conversation
    is lost: redis-py sends it again, which found the staged key renamed away already. It
    deleted the conversation, failed on the RENAME (a 500) and left the conversation empty;
    now the second send finds the replace done."""
    events = [{"event": "bot", "timestamp": 2.0, "text": f"{n}"} for n in range(1_500)]
    async with losing_stores() as (proxy, store, direct, prefix):
        await store.append("alice", [{"event": "bot", "timestamp": 1.0, "text": "first"}])
        # The first command naming the conversation itself (RESP puts each argument
        # between CRLFs; the pushes name the staged key only): the last step.
        proxy.lose_answer_to = f"\r\n{prefix}:tracker:alice\r\n".encode()
        await store.replace("alice", events)

        assert proxy.lose_answer_to is None  # (it was lost)
        assert await direct.load_all("alice") == events
        assert await direct.load("alice") == events  # (the session index too)


class OneAnswerLosingProxy(AnswerLosingProxy):
    """Breaks only the connection that carried the request whose answer it loses, as a
    network does: the pool's others (one watching keys for a transaction) stay."""

    async def forward(self, data: bytes, writer: asyncio.StreamWriter, upstream: bool) -> bool:
        if upstream and self.lose_answer_to is not None and self.lose_answer_to in data:
            self.lose_answer_to, self._answered = None, asyncio.Event()
            writer.write(data)
            await writer.drain()
            await asyncio.wait_for(self._answered.wait(), 10)
            writer.transport.abort()
            self._answered = None
            return False
        return await super().forward(data, writer, upstream)


@asynccontextmanager
async def losing_stores() -> AsyncIterator[
    tuple[OneAnswerLosingProxy, RedisTrackerStore, RedisTrackerStore, str]
]:
    """A proxy that loses an answer, a store behind it, one that is not, and their prefix."""
    require_service("Redis", REDIS)
    prefix = unique_name("bsr")
    proxy = OneAnswerLosingProxy(REDIS)
    await proxy.restore()
    config = {"url": REDIS[0], "port": proxy.port, "db": 0, "key_prefix": prefix}
    store, direct = RedisTrackerStore(config), RedisTrackerStore({**config, "port": REDIS[1]})
    try:
        yield proxy, store, direct, prefix
    finally:
        await store.close()
        await direct.close()
        await proxy.cut()
        await delete_redis_keys(prefix, db=0)
