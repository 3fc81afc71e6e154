"""`botserver run` says at start-up whether its tracker store's database server answers."""

from __future__ import annotations

import logging
import time
from typing import Any

import pytest

from bench.tcp_proxy import SilentProxy, TcpProxy
from server.api.server import LOCK_STORE_CHECK_SECONDS
from tests.conftest import checked_once
from tests.loop_lag import paced
from tests.trackers.persistence_fixtures import (
    POSTGRES,
    REDIS,
    postgres_database,
    require_service,
    unique_name,
)
from tests.trackers.start_lines import lines_at_start


async def _start(
    tracker_store: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> list[logging.LogRecord]:
    endpoints = {"tracker_store": tracker_store, "lock_store": {"type": "in_memory"}}
    return await lines_at_start(endpoints, caplog, "tracker store")


async def test_a_postgresql_that_cannot_be_reached_is_a_warning_at_start_up(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """PostgreSQL away as the server starts (its proxy cut: the real server behind it): the
    start goes on, as designed, and one line says what the turns will meet. Before, the
    server started without a word, and the first line came with the first turn's 503."""
    async with postgres_database() as config:
        proxy = TcpProxy(POSTGRES)  # cut: never restored before the start

        try:
            lines = await _start({**config, "port": proxy.port}, caplog)
        finally:
            await proxy.cut()
    (line,) = lines
    said = line.getMessage()
    assert line.levelname == "WARNING", said
    assert said.startswith(f"The tracker store (postgresql at 127.0.0.1:{proxy.port}/"), said
    assert "is unavailable" in said and "turns answer 503" in said, said


async def test_a_redis_tracker_store_that_cannot_be_reached_is_a_warning_at_start_up(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Before, its start-up check (for a Redis Cluster node) passed over an unreachable Redis
    without a word."""
    require_service("Redis", REDIS)
    proxy = TcpProxy(REDIS)  # cut
    config = {"type": "redis", "url": "127.0.0.1", "port": proxy.port, "socket_timeout": 1}
    (line,) = await _start({**config, "key_prefix": unique_name("audit")}, caplog)
    assert line.levelname == "WARNING" and "turns answer 503" in line.getMessage()


async def test_a_tracker_store_that_answers_says_nothing_at_start_up(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with postgres_database() as config:
        lines = await _start(config, caplog)
    # (An INFO line says a schema migration goes on past 3 s, as on a loaded host.)
    assert [r.getMessage() for r in lines if r.levelno >= logging.WARNING] == []


async def test_a_silent_database_is_named_at_start_up_without_its_password(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """PostgreSQL takes the connection and never answers (a dead host behind a load
    balancer): the start gives it 3 s and goes on, and the line names where it is, not the
    password of its URL. Before, "The tracker store gave no answer within 3 s" named no
    host to look at."""
    async with postgres_database() as config:
        proxy = SilentProxy(POSTGRES)
        await proxy.restore()
        proxy.silent = True
        secret = "pw-" + unique_name("secret")
        try:
            lines = await _start({**config, "port": proxy.port, "password": secret}, caplog)
        finally:
            proxy.silent = False
            await proxy.cut()
    (line,) = [r for r in lines if "gave no answer" in r.getMessage()]
    assert line.getMessage().startswith(
        f"The tracker store (postgresql at 127.0.0.1:{proxy.port}/{config['db']}) gave no "
        "answer within 3 s"
    ), line.getMessage()
    assert secret not in caplog.text


@pytest.mark.timing
async def test_a_silent_redis_for_both_stores_delays_the_start_by_one_wait_not_two(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The tracker store and the lock store on one Redis that stopped answering: both are
    asked at once, so the start waits 3 s, not 3 s for each one after the other; each line
    names the Redis."""
    require_service("Redis", REDIS)
    proxy = SilentProxy(REDIS)
    await proxy.restore()
    proxy.silent = True
    redis = {"type": "redis", "url": "127.0.0.1", "port": proxy.port, "socket_timeout": 30}
    endpoints = {
        "tracker_store": {**redis, "key_prefix": unique_name("audit")},
        "lock_store": {**redis, "key_prefix": unique_name("audit")},
    }
    started = time.monotonic()
    try:
        lines = await lines_at_start(endpoints, caplog, "gave no answer")
    finally:
        proxy.silent = False
        await proxy.cut()
    took = time.monotonic() - started
    said = sorted(r.getMessage().partition(";")[0] for r in lines)
    where = f"(redis at 127.0.0.1:{proxy.port}/%d) gave no answer within 3 s"
    with checked_once():  # (Rasa's lock store defaults to db 1, its tracker store to db 0)
        assert said == [f"The lock store {where % 1}", f"The tracker store {where % 0}"], said
    bound = LOCK_STORE_CHECK_SECONDS
    assert took < bound + paced(1.5, below=bound), took


async def test_a_migration_waiting_past_the_check_is_no_warning_that_the_database_is_away(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """PostgreSQL answers, but the schema's migration waits for another process's (its
    lock held) past the start's 3 s: the log says the migration goes on, not that the
    database gave no answer (a healthy first start on a loaded host read as an outage)."""
    import asyncpg

    async with postgres_database() as config:
        other = await asyncpg.connect(
            host=POSTGRES[0], port=POSTGRES[1], user="postgres", database=config["db"]
        )
        try:
            async with other.transaction():
                await other.execute("SELECT pg_advisory_xact_lock(7314206)")  # env.py's
                lines = await _start(config, caplog)
        finally:
            await other.close()
    said = [f"{r.levelname} {r.getMessage()}" for r in lines]
    assert not any("gave no answer" in line for line in said), said
    assert any(
        line.startswith(f"INFO The tracker store (postgresql at 127.0.0.1:5432/{config['db']})")
        and "migration" in line
        for line in said
    ), said
