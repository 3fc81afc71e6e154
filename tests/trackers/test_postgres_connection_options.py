"""PostgreSQL connection options as Rasa's endpoints.yml gives them to psycopg2 (libpq): `url:`
a Unix socket's directory, `query:` libpq's keys (`sslmode`...)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterable
from typing import Any

import asyncpg
import pytest

from server.errors import StoreUnavailable
from server.trackers.factory import create_tracker_store
from tests.brokers.test_sql_broker import senders_written
from tests.trackers.persistence_fixtures import POSTGRES, postgres_database, require_service

EVENT = {"event": "action", "timestamp": 1.0, "name": "action_listen"}


async def socket_directory() -> str:
    """The first directory the local server listens in (skips, or fails on CI, without one)."""
    require_service("PostgreSQL", POSTGRES)
    setting = await server_setting("unix_socket_directories")
    directory = listening_in(d.strip() for d in setting.split(","))
    if directory is None:
        message = f"PostgreSQL has no Unix socket here (unix_socket_directories = {setting!r})"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return directory


async def server_setting(name: str) -> str:
    """`SHOW name` on the local server."""
    conn = await asyncpg.connect(
        host=POSTGRES[0], port=POSTGRES[1], user="postgres", database="test"
    )
    try:
        return str(await conn.fetchval(f"SHOW {name}"))
    finally:
        await conn.close()


def listening_in(directories: Iterable[str]) -> str | None:
    for directory in directories:
        if os.path.exists(os.path.join(directory, f".s.PGSQL.{POSTGRES[1]}")):
            return directory
    return None


@pytest.fixture
async def socket_config() -> AsyncIterator[dict[str, Any]]:
    async with postgres_database() as config:
        yield {**config, "url": await socket_directory()}


async def test_the_tracker_store_reaches_postgresql_by_its_socket_directory(
    socket_config: dict[str, Any],
) -> None:
    store = create_tracker_store(socket_config)
    try:
        await store.append("alice", [EVENT])
        assert await store.load("alice") == [EVENT]
        # Not a TCP connection: the server sees no client address.
        conn = await asyncpg.connect(
            host=socket_config["url"], user="postgres", database=socket_config["db"]
        )
        try:
            addresses = await conn.fetch(
                "SELECT client_addr FROM pg_stat_activity WHERE datname = $1 AND pid <> "
                "pg_backend_pid()",
                socket_config["db"],
            )
        finally:
            await conn.close()
        assert addresses and all(row["client_addr"] is None for row in addresses)
    finally:
        await store.close()


async def test_the_sql_broker_reaches_postgresql_by_its_socket_directory(
    socket_config: dict[str, Any],
) -> None:
    assert await senders_written(socket_config, ("alice", [EVENT])) == ["alice", "bob", "bob"]


async def test_a_missing_socket_directory_is_named_in_the_error() -> None:
    store = create_tracker_store(
        {"type": "sql", "dialect": "postgresql", "url": "/nowhere/at/all", "db": "x"}
    )
    try:
        with pytest.raises(StoreUnavailable, match=r"/nowhere/at/all \(Unix socket\)/x"):
            await store.load("alice")
    finally:
        await store.close()


@pytest.mark.parametrize(
    "query",
    [
        {"sslmode": "disable", "application_name": "botserver-test"},
        {"sslmode": "prefer", "application_name": "botserver-test"},
        # SQLAlchemy's asyncpg URL keys, which the broker took before they went into the DSN
        # ('parameter "ssl" cannot be changed now': its events were lost).
        {"ssl": "disable", "prepared_statement_cache_size": "0"},
    ],
)
async def test_libpq_query_keys_reach_the_store_and_the_broker(query: dict[str, str]) -> None:
    async with postgres_database() as config:
        # login_db: the connection that makes the database if missing reads them too (it
        # refused `sslmode`: "unexpected keyword argument").
        config = {**config, "query": query, "login_db": "test"}
        store = create_tracker_store(config)
        try:
            await store.append("alice", [EVENT])
            assert await store.load("alice") == [EVENT]
        finally:
            await store.close()
        assert await senders_written(config, ("alice", [EVENT])) == ["alice", "bob", "bob"]


async def test_sslmode_require_on_a_server_without_ssl_is_unavailable_and_says_why() -> None:
    async with postgres_database() as config:
        if await server_setting("ssl") == "on":
            pytest.skip("this PostgreSQL server speaks SSL")
        store = create_tracker_store({**config, "query": {"sslmode": "require"}})
        try:
            with pytest.raises(StoreUnavailable, match="SSL"):
                await store.load("alice")
        finally:
            await store.close()
