"""MySQL/MariaDB `query:` keys that Rasa's PyMySQL takes and botserver's aiomysql does not:
each is honoured as PyMySQL honours it, against the shared MariaDB, or refused by name."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine

from server.errors import InvalidConfig
from server.trackers.factory import create_tracker_store
from server.trackers.sql_engine import async_url, create_engine
from tests.trackers.persistence_fixtures import mariadb_database


@pytest.fixture
async def mariadb() -> AsyncIterator[dict[str, Any]]:
    async with mariadb_database() as config:
        yield config


async def _engine(config: dict[str, Any], query: dict[str, Any]) -> AsyncEngine:
    return create_engine(async_url({**config, "query": query}, default_db="rasa"))


async def _one(engine: AsyncEngine, sql: str) -> Any:
    async with engine.connect() as connection:
        return (await connection.exec_driver_sql(sql)).scalar()


async def test_collation_is_the_connections_as_pymysql_sets_it(mariadb: dict[str, Any]) -> None:
    """PyMySQL sends `SET NAMES <charset> COLLATE <collation>` on connecting. Before, the
    start stopped: "'collation' is not a key botserver's MySQL driver (aiomysql) takes"."""
    engine = await _engine(mariadb, {"charset": "utf8mb4", "collation": "utf8mb4_bin"})
    try:
        assert await _one(engine, "SELECT @@collation_connection") == "utf8mb4_bin"
    finally:
        await engine.dispose()


async def test_a_collation_not_of_the_charset_fails_naming_both(mariadb: dict[str, Any]) -> None:
    """PyMySQL sends `SET NAMES latin1 COLLATE utf8mb4_bin`, which the server refuses, naming
    both. Before, the connection was made half as asked: utf8mb4 for its statements' text,
    latin1 for what it sent and read, without a word."""
    engine = await _engine(mariadb, {"charset": "latin1", "collation": "utf8mb4_bin"})
    try:
        with pytest.raises(OperationalError, match="'utf8mb4_bin' is not valid for .* 'latin1'"):
            await _one(engine, "SELECT @@character_set_connection")
    finally:
        await engine.dispose()


def test_a_collation_that_is_no_name_stops_the_start() -> None:
    with pytest.raises(InvalidConfig, match="collation"):
        create_tracker_store(
            {"type": "sql", "dialect": "mysql", "url": "127.0.0.1", "query": {"collation": "a;b"}}
        )


async def test_read_timeout_ends_a_statement_the_server_does_not_answer_in_time(
    mariadb: dict[str, Any],
) -> None:
    """PyMySQL's `read_timeout`: a read waiting longer fails the statement ("Lost
    connection ... timed out"), as with Rasa. A statement answered in time is unaffected."""
    engine = await _engine(mariadb, {"read_timeout": 1})
    try:
        assert await _one(engine, "SELECT SLEEP(0.1)") == 0
        with pytest.raises(OperationalError, match="timed out"):
            await _one(engine, "SELECT SLEEP(5)")
        assert await _one(engine, "SELECT 1") == 1  # a new connection replaces the lost one
    finally:
        await engine.dispose()


async def _trickle(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, chunk: int, pause: float
) -> None:
    try:
        while data := await reader.read(chunk):
            writer.write(data)
            await writer.drain()
            await asyncio.sleep(pause)
    finally:
        writer.close()


async def test_read_timeout_bounds_each_wait_for_data_not_a_whole_row_as_pymysqls(
    mariadb: dict[str, Any],
) -> None:
    """PyMySQL's `read_timeout` bounds each wait for data (its socket's timeout): a row
    bigger than what arrives in that time is read while it keeps arriving. Before, a row
    (one MySQL packet) had to arrive whole within `read_timeout`: over a slow link a big
    event failed each load of its conversation ("timed out"), where Rasa's was read."""

    async def relay(client: asyncio.StreamReader, to_client: asyncio.StreamWriter) -> None:
        server, to_server = await asyncio.open_connection(mariadb["url"], mariadb["port"])
        # From the server 64 KB each 0.1 s: a 1 MB row takes 1.6 s, each wait 0.1 s.
        await asyncio.gather(
            _trickle(client, to_server, 65536, 0), _trickle(server, to_client, 65536, 0.1)
        )

    relay_server = await asyncio.start_server(relay, "127.0.0.1", 0)
    port = relay_server.sockets[0].getsockname()[1]
    engine = await _engine({**mariadb, "port": port}, {"read_timeout": 1})
    try:
        assert await _one(engine, "SELECT LENGTH(REPEAT('x', 1048576))") == 1048576
        assert len(await _one(engine, "SELECT REPEAT('x', 1048576)")) == 1048576
    finally:
        await engine.dispose()
        relay_server.close()


async def test_write_timeout_bounds_how_long_sent_data_may_go_unacknowledged(
    mariadb: dict[str, Any],
) -> None:
    """PyMySQL's `write_timeout`: a send the server does not take fails after that long.
    aiomysql never waits on a send: the kernel's TCP_USER_TIMEOUT bounds it instead."""
    if not hasattr(socket, "TCP_USER_TIMEOUT"):
        pytest.skip("no TCP_USER_TIMEOUT on this platform")
    engine = await _engine(mariadb, {"write_timeout": 3})
    try:
        async with engine.connect() as connection:
            raw = await connection.get_raw_connection()
            driver = raw.driver_connection
            assert driver is not None
            sock = driver._writer.transport.get_extra_info("socket")
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == 3000
    finally:
        await engine.dispose()


async def test_keys_without_effect_on_the_store_are_taken(mariadb: dict[str, Any]) -> None:
    """`max_allowed_packet` (PyMySQL sizes LOAD DATA LOCAL chunks by it, which the store never
    sends) and `binary_prefix` (aiomysql always marks bytes `_binary`): the store starts and
    keeps conversations, as Rasa's does. Before, the start stopped naming them."""
    query = {"max_allowed_packet": 1048576, "binary_prefix": True}
    store = create_tracker_store({**mariadb, "query": query})
    try:
        await store.append("keys", [{"event": "action", "name": "action_listen", "timestamp": 1.0}])
        assert [event["event"] for event in await store.load("keys") or []] == ["action"]
    finally:
        await store.close()


def test_bind_address_is_refused_naming_it() -> None:
    """aiomysql opens its socket itself and cannot bind it to a local address: refused with
    the reason, rather than connecting from another address than the one asked for."""
    with pytest.raises(InvalidConfig, match="bind_address"):
        create_tracker_store(
            {"type": "sql", "dialect": "mysql", "url": "127.0.0.1", "query": {"bind_address": "a"}}
        )
