"""PostgreSQL store: connections the server dropped are replaced without an error to the
caller (no ping per checkout does it instead)."""

from __future__ import annotations

import asyncio
import time

import pytest

from server.trackers import postgres_database as postgres_module
from server.trackers.factory import create_tracker_store
from tests.loop_lag import paced
from tests.trackers.persistence_fixtures import postgres_database, terminate_postgres_backends
from tests.trackers.test_silent_database import behind_proxy

EVENT = {"event": "action", "timestamp": 1.0, "name": "action_listen"}


async def terminate_connections(database: str) -> int:
    killed = await terminate_postgres_backends(database)
    # The backends exit a moment after; a write racing that exit could have reached the
    # server, so it is not retried (503): the case here is a connection dropped while idle.
    await asyncio.sleep(0.3)
    return killed


async def test_reads_and_appends_survive_dropped_connections() -> None:
    async with postgres_database() as config:
        store = create_tracker_store(config)
        try:
            await store.append("alice", [EVENT])
            assert await terminate_connections(config["db"]) >= 1
            assert await store.load("alice") == [EVENT]
            assert await terminate_connections(config["db"]) >= 1
            await store.append("alice", [{**EVENT, "timestamp": 2.0}])
            assert [e["timestamp"] for e in await store.load_all("alice") or []] == [1.0, 2.0]
        finally:
            await store.close()


async def test_append_returns_rows_in_order_and_the_cache_follows() -> None:
    async with postgres_database() as config:
        store = create_tracker_store(config)
        try:
            events = [{**EVENT, "timestamp": float(i)} for i in range(300)]
            await store.append("bob", events[:150])
            await store.append("bob", events[150:])
            assert await store.load("bob") == events
        finally:
            await store.close()


@pytest.mark.timing
async def test_a_connection_left_idle_is_not_used_once_the_network_may_have_dropped_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """NAT gateways and load balancers drop an idle TCP connection without a word (AWS's NAT
    gateway after 350 s, Azure's load balancer after 240 s). Before, the pool kept idle
    connections an hour, and one for ever (its floor): the next statement on it got no answer
    until SQL_STATEMENT_TIMEOUT (30 s), as the silence check's new connection answered. Now
    a connection idle for IDLE_SECONDS (180 s) is closed, none kept as a floor."""
    monkeypatch.setattr(postgres_module, "IDLE_SECONDS", 0.5)
    async with behind_proxy("postgresql") as (config, proxy):
        store = create_tracker_store(config)
        try:
            await store.append("idle", [EVENT])
            proxy.forget_open_connections()  # the network drops them; new ones pass
            await asyncio.sleep(1.5)  # idle long enough
            started = time.monotonic()
            await asyncio.wait_for(store.append("idle", [{**EVENT, "timestamp": 2.0}]), 10)
            assert time.monotonic() - started < paced(5, below=30)  # SQL_STATEMENT_TIMEOUT
            assert [e["timestamp"] for e in await store.load_all("idle") or []] == [1.0, 2.0]
        finally:
            await proxy.cut()  # a dead connection left in the pool would hold its close up
            await store.close()
