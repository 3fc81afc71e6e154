"""A connection the network dropped without a word while the database still answers (a NAT
gateway or load balancer forgot it, the peer vanished, no RST) is closed by the kernel after
DB_TCP_TIMEOUT (TCP keepalive and TCP_USER_TIMEOUT), and the next statement goes out on a new
one: the turn is answered, rather than waiting for SQL_STATEMENT_TIMEOUT (or Redis's
socket_timeout) and then failing."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from bench.tcp_proxy import TcpProxy
from server.errors import InvalidConfig, StoreUnavailable
from server.trackers import sql_engine
from server.trackers.factory import create_lock_store, create_tracker_store
from server.trackers.redis_store import RedisTrackerStore
from tests.loop_lag import paced
from tests.trackers.persistence_fixtures import (
    REDIS,
    delete_redis_keys,
    postgres_events_locked,
    require_service,
    unique_name,
)
from tests.trackers.test_silent_database import behind_proxy

# The kernel gives a dead connection up after 1 s here; a statement, 8 s (30 by default).
DEAD_AFTER = "1"
STATEMENT_TIMEOUT = 8.0


def user(text: str, timestamp: float) -> dict[str, Any]:
    return {"event": "user", "timestamp": timestamp, "text": text, "parse_data": {}}


@pytest.fixture
def short_timeouts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DB_TCP_TIMEOUT", DEAD_AFTER)
    monkeypatch.setenv("SQL_STATEMENT_TIMEOUT", str(STATEMENT_TIMEOUT))


async def timed(operation: Any) -> tuple[Any, float]:
    started = time.monotonic()
    result = await asyncio.wait_for(operation, 2 * STATEMENT_TIMEOUT)
    return result, time.monotonic() - started


@pytest.mark.timing
@pytest.mark.usefixtures("short_timeouts")
@pytest.mark.parametrize("dialect", ["postgresql", "mysql"])
async def test_turns_go_on_when_the_network_drops_a_connection_in_use(dialect: str) -> None:
    """Before: the statement sent on the forgotten connection got no answer, the silence
    check's new connection was answered (the database is fine), and the turn waited the
    whole SQL_STATEMENT_TIMEOUT for a 503."""
    async with behind_proxy(dialect) as (config, proxy):
        store = create_tracker_store(config)
        try:
            await store.append("nat", [user("hi", 1.0)])
            assert [e["text"] for e in await store.load_all("nat") or []] == ["hi"]
            proxy.forget_open_connections()  # the network drops them; new ones pass
            loaded, took = await timed(store.load("nat"))
            assert [e["text"] for e in loaded or []] == ["hi"]
            assert took < STATEMENT_TIMEOUT / 2, took
            _, took = await timed(store.append("nat", [user("again", 2.0)]))
            assert took < paced(1.0, below=STATEMENT_TIMEOUT / 2), took  # a new connection
            assert [e["text"] for e in await store.load_all("nat") or []] == ["hi", "again"]
        finally:
            await proxy.cut()
            await store.close()


@pytest.mark.timing
async def test_a_mysql_connection_older_than_a_nat_keeps_one_is_not_reused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """NAT gateways and load balancers forget an idle connection (AWS's NAT gateway after
    350 s, Azure's load balancer after 240 s). Before, the pool reused connections up to an
    hour old (`pool_recycle` 3600): its pre-ping got no answer and the turn waited for
    SQL_STATEMENT_TIMEOUT. Now one older than POOL_RECYCLE_SECONDS (180 s) is replaced
    first. (The kernel's timeout is set beyond the statement's: this is the pool's part.)"""
    monkeypatch.setenv("DB_TCP_TIMEOUT", str(4 * STATEMENT_TIMEOUT))
    monkeypatch.setenv("SQL_STATEMENT_TIMEOUT", str(STATEMENT_TIMEOUT))
    monkeypatch.setattr(sql_engine, "POOL_RECYCLE_SECONDS", 0.5)
    async with behind_proxy("mysql") as (config, proxy):
        store = create_tracker_store(config)
        try:
            await store.append("idle", [user("hi", 1.0)])
            proxy.forget_open_connections()
            await asyncio.sleep(1.0)  # older than the pool keeps one
            _, took = await timed(store.append("idle", [user("again", 2.0)]))
            assert took < STATEMENT_TIMEOUT / 2, took
            assert [e["text"] for e in await store.load_all("idle") or []] == ["hi", "again"]
        finally:
            await proxy.cut()
            await store.close()


@pytest.mark.timing
@pytest.mark.usefixtures("short_timeouts")
async def test_redis_turns_go_on_when_the_network_drops_a_connection() -> None:
    """Before: a command on the forgotten connection waited for `socket_timeout` and the
    turn got a 503 (a timeout is not retried: a silent Redis would take twice as long)."""
    require_service("Redis", REDIS)
    proxy = TcpProxy(REDIS)
    await proxy.restore()
    prefix = unique_name("ops5_dead")
    config = {"url": "127.0.0.1", "port": proxy.port, "key_prefix": prefix, "socket_timeout": 4}
    store = RedisTrackerStore(config)
    locks = create_lock_store({**config, "type": "redis"})
    try:
        async with locks.lock("nat", wait_timeout=5):
            await store.append("nat", [user("hi", 1.0)])
        proxy.forget_open_connections()
        started = time.monotonic()
        async with locks.lock("nat", wait_timeout=5):
            await store.append("nat", [user("again", 2.0)])
            loaded = await store.load("nat")
        assert [e["text"] for e in loaded or []] == ["hi", "again"]
        # Two dead connections, given up after 1 s each; not paced: 2 s of slack already,
        # and more would reach the 4 s socket_timeout this rules out.
        assert time.monotonic() - started < 4.0
    finally:
        await proxy.cut()
        await store.close()
        await locks.close()
        await delete_redis_keys(prefix)


@pytest.mark.parametrize("dialect", ["postgresql", "mysql"])
async def test_a_long_dead_connection_timeout_is_taken_as_the_longest_linux_allows(
    dialect: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """DB_TCP_TIMEOUT=100000 (keepalive as good as off): Linux refuses a keepalive idle time
    above 32767 s; unclamped, every connection failed with `[Errno 22] Invalid argument`
    (the readiness probe said 503), and a refusal is now only a warning."""
    monkeypatch.setenv("DB_TCP_TIMEOUT", "100000")
    async with behind_proxy(dialect) as (config, proxy):
        store = create_tracker_store(config)
        try:
            await store.append("long", [user("hi", 1.0)])
            assert [e["text"] for e in await store.load_all("long") or []] == ["hi"]
            assert "TCP keepalive options refused" not in caplog.text
        finally:
            await proxy.cut()
            await store.close()


@pytest.mark.parametrize(
    "config",
    [
        {"type": "sql", "dialect": "postgresql", "url": "127.0.0.1", "db": "unused"},
        {"type": "sql", "dialect": "mysql", "url": "127.0.0.1", "db": "unused"},
        {"type": "redis", "url": "127.0.0.1"},
    ],
    ids=["postgresql", "mysql", "redis"],
)
def test_a_wrong_dead_connection_timeout_is_a_clear_error_at_start(
    config: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Said when the store is made, naming the variable, not at each connection."""
    monkeypatch.setenv("DB_TCP_TIMEOUT", "soon")
    with pytest.raises(InvalidConfig, match="'tracker_store': DB_TCP_TIMEOUT must be a number"):
        create_tracker_store(config)


@pytest.mark.timing
@pytest.mark.usefixtures("short_timeouts")
async def test_a_read_whose_connection_is_dropped_while_the_server_works_on_it_goes_on() -> None:
    """The statement reached the server (its bytes acknowledged), then the network dropped
    the connection: nothing is left in flight for TCP_USER_TIMEOUT to time, and only
    keepalive probes find the peer gone. Without them, the read waited for
    SQL_STATEMENT_TIMEOUT."""
    async with behind_proxy("postgresql") as (config, proxy):
        store = create_tracker_store(config)
        try:
            await store.append("slow", [user("hi", 1.0)])
            async with postgres_events_locked(config["db"], "ACCESS EXCLUSIVE") as release:
                started = time.monotonic()
                load = asyncio.ensure_future(store.load("slow"))
                await asyncio.sleep(0.5)  # the read waits for the lock, on the server
                proxy.forget_open_connections()
                await release()  # its answer goes nowhere now
                loaded = await asyncio.wait_for(load, 2 * STATEMENT_TIMEOUT)
            assert [e["text"] for e in loaded or []] == ["hi"]
            assert time.monotonic() - started < STATEMENT_TIMEOUT / 2
        finally:
            await proxy.cut()
            await store.close()


@pytest.mark.timing
@pytest.mark.usefixtures("short_timeouts")
async def test_after_a_postgres_append_lost_with_its_connection_the_next_one_is_answered() -> None:
    """An append sent on a connection the network dropped may have reached the server, so it
    is not sent again (a 503 after DB_TCP_TIMEOUT). The other connections idle in the pool
    were dropped with it: before, the next append was handed one of them and waited
    DB_TCP_TIMEOUT again for another 503; now the pool is emptied with the first."""
    async with behind_proxy("postgresql") as (config, proxy):
        store = create_tracker_store(config)
        try:
            # Two connections in the pool: two reads at once.
            await store.append("a", [user("hi", 1.0)])
            await asyncio.gather(store.load_all("a"), store.load_all("b"))
            proxy.forget_open_connections()
            with pytest.raises(StoreUnavailable):
                await timed(store.append("a", [user("lost", 2.0)]))
            _, took = await timed(store.append("b", [user("next", 3.0)]))
            assert took < float(DEAD_AFTER), took
            assert [e["text"] for e in await store.load_all("b") or []] == ["next"]
        finally:
            await proxy.cut()
            await store.close()
