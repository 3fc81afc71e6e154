"""`botserver run` says at start-up whether its tracker store's database server answers."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from bench.tcp_proxy import TcpProxy
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
        assert await _start(config, caplog) == []
