"""Redis commands of one event loop pass share one pipeline; every caller gets its own reply,
and the lock store built on it keeps its guarantees when a turn is cancelled or Redis lost
its scripts."""

from __future__ import annotations

import asyncio
import cProfile
import pstats
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis import exceptions as redis_errors
from redis.asyncio import Redis

from bench.tcp_proxy import SilentProxy, free_port
from server.errors import StoreUnavailable
from server.trackers.redis_batch import CommandBatch
from server.trackers.redis_lock import RedisLockStore
from tests.loop_lag import paced
from tests.trackers.persistence_fixtures import (
    REDIS,
    delete_redis_keys,
    require_service,
    unique_name,
)


@pytest.fixture
async def client() -> AsyncIterator[Redis]:
    require_service("Redis", REDIS)
    redis = Redis(host=REDIS[0], port=REDIS[1], db=1, decode_responses=True)
    yield redis
    await redis.aclose()


@pytest.fixture
async def batch(client: Redis) -> AsyncIterator[CommandBatch]:
    commands = CommandBatch(client)
    yield commands
    await commands.close()  # its own connection


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    require_service("Redis", REDIS)
    name = unique_name("bsbatch")
    yield name
    await delete_redis_keys(name, db=1)


async def test_commands_of_one_loop_pass_go_in_one_round_trip(
    client: Redis, batch: CommandBatch, prefix: str
) -> None:
    replies = [batch.call("SET", f"{prefix}:k{n}", f"v{n}") for n in range(20)]

    assert await asyncio.gather(*replies) == [True] * 20
    assert (batch.round_trips, batch.commands) == (1, 20)
    assert await client.mget([f"{prefix}:k{n}" for n in range(20)]) == [f"v{n}" for n in range(20)]


async def test_each_caller_gets_its_own_reply_or_error(batch: CommandBatch, prefix: str) -> None:
    key = f"{prefix}:text"
    written = batch.call("SET", key, "not a number")
    refused = batch.call("INCR", key)
    read = batch.call("GET", key)

    assert await written is True
    with pytest.raises(redis_errors.ResponseError, match="not an integer"):
        await refused
    assert await read == "not a number"
    assert batch.round_trips == 1


async def test_commands_queued_while_a_round_trip_is_out_go_in_the_next(
    batch: CommandBatch, prefix: str
) -> None:
    first = batch.call("SET", f"{prefix}:first", "1")
    await asyncio.sleep(0)  # the first is on its way
    later = [batch.call("INCR", f"{prefix}:count") for _ in range(10)]

    assert await first is True
    assert sorted(await asyncio.gather(*later)) == list(range(1, 11))
    assert (batch.round_trips, batch.commands) == (2, 11)


async def test_a_caller_that_stopped_waiting_before_the_send_is_dropped(
    client: Redis, batch: CommandBatch, prefix: str
) -> None:
    dropped = batch.call("SET", f"{prefix}:dropped", "1")
    dropped.cancel()
    kept = batch.call("SET", f"{prefix}:kept", "1")

    assert await kept is True
    assert batch.commands == 1
    assert await client.exists(f"{prefix}:dropped") == 0


async def test_an_unreachable_redis_fails_every_caller() -> None:
    redis = Redis(host="127.0.0.1", port=free_port(), socket_connect_timeout=1)
    batch = CommandBatch(redis)
    try:
        replies = [batch.call("GET", f"k{n}") for n in range(3)]
        outcomes = await asyncio.gather(*replies, return_exceptions=True)
        assert all(isinstance(o, redis_errors.ConnectionError) for o in outcomes), outcomes
    finally:
        await batch.close()
        await redis.aclose()


def lock_config(prefix: str) -> dict[str, Any]:
    return {"type": "redis", "url": REDIS[0], "port": REDIS[1], "db": 1, "key_prefix": prefix}


async def test_turns_of_many_conversations_lock_in_few_round_trips(prefix: str) -> None:
    store = RedisLockStore(lock_config(prefix))

    async def turn(number: int) -> None:
        async with store.lock(f"conv{number}"):
            await asyncio.sleep(0)

    try:
        await asyncio.gather(*(turn(n) for n in range(30)))
        # 30 acquires and 30 releases: one round trip for each kind, not one per command.
        assert store._batch.commands == 60
        assert store._batch.round_trips <= 4
    finally:
        await store.close()


async def test_a_turn_cancelled_while_acquiring_gives_the_lease_back(
    client: Redis, prefix: str
) -> None:
    store = RedisLockStore({**lock_config(prefix), "lock_lifetime": 60})
    other = RedisLockStore({**lock_config(prefix), "lock_lifetime": 60})

    async def turn() -> None:
        async with store.lock("conv"):
            await asyncio.sleep(10)

    try:
        cancelled = asyncio.ensure_future(turn())
        await asyncio.sleep(0)  # its SET NX is queued: it will take the lease
        cancelled.cancel()
        with pytest.raises(asyncio.CancelledError):
            await cancelled
        # Without the give-back, the next turn would wait out the 60 s lease.
        async with other.lock("conv", wait_timeout=2):
            pass
        await other.wait_for_releases()
        assert await client.exists(f"{prefix}:lock:conv") == 0
    finally:
        await store.close()
        await other.close()


async def test_release_works_after_redis_flushed_its_scripts(client: Redis, prefix: str) -> None:
    store = RedisLockStore(lock_config(prefix))
    key = f"{prefix}:lock:conv"
    try:
        async with store.lock("conv"):
            assert await client.exists(key) == 1
            await client.script_flush()  # as after a Redis restart
        await store.wait_for_releases()  # (a turn's end does not wait for its release)
        assert await client.exists(key) == 0
    finally:
        await store.close()


async def test_a_turn_costs_the_lock_few_python_calls(prefix: str) -> None:
    """50 conversations locking at once (the batches of a busy worker): Python calls per
    lock and release. Through redis-py's pipeline (packing every argument, per-command
    parse layers), a shield and a timer per turn it was ~520 calls, more than a whole
    turn of the in-memory lock store's server (~580); now ~120."""
    store = RedisLockStore(lock_config(prefix))

    async def turns(conversation: int, rounds: int) -> None:
        for _ in range(rounds):
            async with store.lock(f"conv{conversation}"):
                await asyncio.sleep(0)

    try:
        await asyncio.gather(*(turns(n, 2) for n in range(50)))  # connected, scripts loaded
        profile = cProfile.Profile()
        profile.enable()
        await asyncio.gather(*(turns(n, 10) for n in range(50)))
        profile.disable()
        calls_per_lock = pstats.Stats(profile).total_calls / 500  # type: ignore[attr-defined]
        assert calls_per_lock < 200, calls_per_lock
    finally:
        await store.close()


@pytest.mark.timing
async def test_a_silent_redis_fails_a_batch_after_one_socket_timeout(prefix: str) -> None:
    """The batch's connection has no per-reply timeout: the client's socket timeout bounds
    the whole batch, and the next batch reconnects once Redis answers again."""
    proxy = SilentProxy(REDIS)
    await proxy.restore()
    store = RedisLockStore({**lock_config(prefix), "port": proxy.port, "socket_timeout": 1})
    try:
        async with store.lock("conv"):
            pass
        proxy.silent = True
        started = time.monotonic()
        async with asyncio.timeout(5):  # without a bound on the batch, it would hang
            with pytest.raises(StoreUnavailable):
                async with store.lock("conv", wait_timeout=5):
                    pass
        assert time.monotonic() - started < 1 + paced(1.5, below=3.5)  # one timeout of 1 s
        proxy.silent = False
        await proxy.cut()
        await proxy.restore()
        async with store.lock("other", wait_timeout=5):
            pass
    finally:
        await store.close()
        await proxy.cut()
