"""A transaction that watches keys runs on one connection to its EXEC: one that redis-py
reconnected meanwhile fails it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
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


# What a server on Redis alone imports for its stores: the runner, both stores built and
# connected, and a turn's append.
REDIS_ALONE = """
import asyncio, sys
import server.api.runner
from server.trackers.factory import create_lock_store, create_tracker_store
config = {"type": "redis", "url": "127.0.0.1", "port": 6379, "key_prefix": sys.argv[1]}
async def main():
    store, locks = create_tracker_store(dict(config)), create_lock_store(dict(config))
    await store.ping()
    async with locks.lock("someone"):
        await store.append("someone", [{"event": "user", "text": "hi", "timestamp": 1.0}])
    await store.delete("someone")
    await store.close()
    await locks.close()
asyncio.run(main())
print(sorted({name.split(".")[0] for name in sys.modules}))
"""


def test_a_server_on_redis_alone_imports_no_sqlalchemy() -> None:
    """The Redis client's dead-connection timeout came from the SQL engines' module: a server
    whose stores were all Redis imported SQLAlchemy (130 modules, 0.2-0.3 CPU-s of its
    start) for one environment variable."""
    require_service("Redis", REDIS)
    result = subprocess.run(
        [sys.executable, "-c", REDIS_ALONE, unique_name("alone")],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert result.returncode == 0, result.stderr
    imported = result.stdout.split("[", 1)[1]
    assert "'redis'" in imported  # (the list is the process's)
    assert "'sqlalchemy'" not in imported
