"""A transaction that watches keys runs on one connection to its EXEC: one that redis-py
reconnected meanwhile fails it."""

from __future__ import annotations

from typing import Any

import pytest
from redis import exceptions as redis_errors
from redis.asyncio import Redis

from server.trackers.redis_client import create_client, watched
from tests.trackers.persistence_fixtures import (
    REDIS,
    delete_redis_keys,
    require_service,
    unique_name,
)


async def drop(client: Redis, connection: Any, by: Redis) -> None:
    """Redis closes `connection` of `client`'s pool (its `timeout` for idle ones, a failover)
    after it was idle 30 s: redis-py's health check PINGs it before its next command, and
    reconnects."""
    host, port = connection._writer.get_extra_info("sockname")[:2]
    await by.client_kill(f"{host}:{port}")
    pool: Any = client.connection_pool
    for each in (*pool._available_connections, *pool._in_use_connections):
        each.next_health_check = -1


async def test_a_transaction_whose_connection_was_reconnected_while_watching_fails() -> None:
    """Before, the health check's reconnect went without a word and the EXEC ran on a new
    connection, which watched nothing: the write meanwhile was written over."""
    require_service("Redis", REDIS)
    prefix = unique_name("review60")
    key = f"{prefix}:watched"
    client = create_client({"url": REDIS[0], "port": REDIS[1], "key_prefix": prefix}, 0)
    other = Redis(host=REDIS[0], port=REDIS[1], decode_responses=True)
    try:
        async with watched(client, key) as pipe:
            await drop(client, pipe.connection, by=other)
            await other.set(key, "written meanwhile")
            pipe.multi()
            pipe.set(key, "mine")
            with pytest.raises(redis_errors.WatchError):
                await pipe.execute()
        assert await other.get(key) == "written meanwhile"

        # The connection, back in the pool, reconnects for anyone else as before.
        (idle,) = client.connection_pool._available_connections  # type: ignore[attr-defined]
        await drop(client, idle, by=other)
        await client.set(key, "later")
        assert await other.get(key) == "later"
    finally:
        await client.aclose()
        await other.aclose()
        await delete_redis_keys(prefix)
