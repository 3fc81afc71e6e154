"""A Redis that evicts keys when full (`maxmemory` with a policy other than `noeviction`) may
evict a held lease, which has a lifetime: the conversation's next turn then runs beside the
one still running. The start says so."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
from redis import exceptions as redis_errors
from redis.asyncio import Redis

from server.api.server import ServerOptions, build_app
from server.trackers.redis_lock import RedisLockStore
from tests.trackers.test_redis_refusals import private_redis, start_line


async def test_a_redis_that_evicts_leases_lets_a_second_turn_in_and_is_said_at_start_up(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """`volatile-lru`, a usual choice for a Redis shared with a cache, evicts keys with a
    lifetime first: our leases (Rasa's lock key has none). Before, the start said nothing."""
    policy = ("--maxmemory", "2mb", "--maxmemory-policy", "volatile-lru")
    async with private_redis(tmp_path, *policy) as (client, port):
        config = {"type": "redis", "url": "127.0.0.1", "port": port, "db": 0}
        store, other = RedisLockStore(config), RedisLockStore(config)
        try:
            async with store.lock("ana"):
                # Redis's LRU clock ticks once a second and eviction samples keys: a lease
                # as fresh as the cache's keys was only evicted by chance (CI once kept it).
                # A second later it is the least recently used key wherever it is sampled.
                await asyncio.sleep(1.1)
                for n in range(5000):  # a cache fills the rest of memory
                    try:
                        await client.set(f"cache:{n}", "x" * 10_000, ex=3600)
                    except redis_errors.OutOfMemoryError:
                        break
                    if await client.pttl("lock:ana") == -2:  # (PTTL leaves the key untouched)
                        break
                assert await client.pttl("lock:ana") == -2, "the cache never evicted the lease"
                async with other.lock("ana", wait_timeout=0.5):  # beside the first turn
                    pass
        finally:
            await store.close()
            await other.close()
        line = await start_line(config, caplog)
    assert line.levelname == "WARNING", line
    assert "maxmemory-policy volatile-lru" in line.getMessage(), line
    assert "two turns of a conversation may run at once" in line.getMessage(), line


@pytest.mark.parametrize(
    "options",
    [
        (),
        ("--maxmemory-policy", "allkeys-lru"),
        ("--maxmemory", "2mb", "--maxmemory-policy", "noeviction"),
    ],
    ids=["no maxmemory", "an evicting policy without maxmemory", "noeviction"],
)
async def test_a_redis_that_evicts_no_lease_is_no_risk(
    tmp_path: Path, options: tuple[str, ...]
) -> None:
    async with private_redis(tmp_path, *options) as (_, port):
        store = RedisLockStore({"type": "redis", "url": "127.0.0.1", "port": port, "db": 0})
        try:
            assert await store.eviction_risk() is None
        finally:
            await store.close()


async def test_a_user_not_allowed_info_starts_without_a_word(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A Redis user allowed the locks' commands but not INFO (an ACL, a managed Redis that
    hides it): the start asks, is refused, and says nothing of the lock store, neither a
    warning it cannot back nor an error; the server starts."""
    policy = ("--maxmemory", "2mb", "--maxmemory-policy", "allkeys-lru")
    async with private_redis(tmp_path, *policy) as (client, port):
        await client.execute_command(
            "ACL", "SETUSER", "bot", "on", ">pw", "~*", "&*", "+@all", "-info"
        )
        lock_store = {"type": "redis", "url": "127.0.0.1", "port": port}
        lock_store |= {"username": "bot", "password": "pw"}
        endpoints = {"tracker_store": {"type": "in_memory"}, "lock_store": lock_store}
        app = build_app(ServerOptions(model_path=None, enable_api=True, endpoints=endpoints))
        with caplog.at_level(logging.INFO):
            async with app.router.lifespan_context(app):
                pass
        bot = Redis(port=port, username="bot", password="pw")
        try:
            with pytest.raises(redis_errors.NoPermissionError):  # (refused, not just unsaid)
                await bot.info("memory")
        finally:
            await bot.aclose()
    assert not [r for r in caplog.records if "lock store" in r.getMessage()], caplog.text
