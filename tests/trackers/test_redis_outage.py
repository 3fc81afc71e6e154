"""A Redis that cannot be reached fails at once: the turn gets its 503, and the readiness
probe its answer, without waiting on redis-py's back-off."""

from __future__ import annotations

import time

import pytest

from bench.tcp_proxy import SilentProxy, free_port
from server.errors import StoreUnavailable
from server.trackers.factory import create_lock_store
from server.trackers.redis_store import RedisTrackerStore
from tests.loop_lag import paced
from tests.trackers.persistence_fixtures import (
    REDIS,
    delete_redis_keys,
    require_service,
    unique_name,
)


@pytest.mark.timing
async def test_a_refused_redis_connection_fails_at_once() -> None:
    """Before, the store and the lock store each took ~3.5 s (redis-py's default retries
    backing off 1 to 4 s) to say that Redis was down."""
    port = free_port()
    store = RedisTrackerStore({"url": "127.0.0.1", "port": port, "key_prefix": "observe2"})
    locks = create_lock_store({"type": "redis", "url": "127.0.0.1", "port": port})
    try:
        for attempt in (store.ping, lambda: store.append("a", [{"event": "restart"}])):
            started = time.monotonic()
            with pytest.raises(StoreUnavailable):
                await attempt()
            assert time.monotonic() - started < paced(0.5, below=3.5)
        started = time.monotonic()
        with pytest.raises(StoreUnavailable):
            async with locks.lock("a", wait_timeout=5):
                pass
        assert time.monotonic() - started < paced(0.5, below=3.5)
    finally:
        await store.close()
        await locks.close()


@pytest.mark.timing
async def test_a_silent_redis_is_unavailable_after_one_socket_timeout() -> None:
    """A Redis that takes connections but stops answering: 503 after `socket_timeout`.
    Before, the command was sent again after the timeout, and the 503 came after twice it."""
    require_service("Redis", REDIS)
    proxy = SilentProxy(REDIS)
    await proxy.restore()
    prefix = unique_name("silent")
    config = {"url": "127.0.0.1", "port": proxy.port, "key_prefix": prefix}
    store = RedisTrackerStore({**config, "socket_timeout": 2})
    try:
        await store.append("a", [{"event": "restart", "timestamp": 1.0}])
        proxy.silent = True
        for attempt in (
            lambda: store.append("a", [{"event": "restart", "timestamp": 2.0}]),
            lambda: store.load("a"),
            store.ping,
        ):
            started = time.monotonic()
            with pytest.raises(StoreUnavailable):
                await attempt()
            # One timeout of 2 s; before, 4 s.
            assert time.monotonic() - started < 2 + paced(1.5, below=1.9)
        proxy.silent = False
        await proxy.cut()
        await proxy.restore()
        assert await store.load("a") is not None  # and back once it answers
    finally:
        await store.close()
        await proxy.cut()
        await delete_redis_keys(prefix)
