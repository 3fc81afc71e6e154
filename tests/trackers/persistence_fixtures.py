"""Real services for the persistence tests: reachability and throw-away databases.

Every test run gets its own database / key prefix / queue names, so engineers running tests
at the same time on this machine do not see each other's data.
"""

from __future__ import annotations

import contextlib
import os
import socket
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

POSTGRES = ("127.0.0.1", 5432)
MARIADB = ("127.0.0.1", 3306)
REDIS = ("127.0.0.1", 6379)
RABBITMQ = ("127.0.0.1", 5672)


def require_service(name: str, address: tuple[str, int]) -> None:
    """Skip (or fail when CI=true) unless something listens at `address`."""
    try:
        with socket.create_connection(address, timeout=1):
            return
    except OSError as exc:
        message = f"{name} is not reachable at {address[0]}:{address[1]} ({exc})"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)


def unique_name(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


@contextlib.asynccontextmanager
async def postgres_database() -> AsyncIterator[dict[str, Any]]:
    """A fresh PostgreSQL database; yields its `tracker_store:`-style config."""
    require_service("PostgreSQL", POSTGRES)
    import asyncpg

    name = unique_name("bs_persist")
    admin = await asyncpg.connect(
        host=POSTGRES[0], port=POSTGRES[1], user="postgres", database="test"
    )
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        yield {
            "type": "sql",
            "dialect": "postgresql",
            "url": POSTGRES[0],
            "port": POSTGRES[1],
            "username": "postgres",
            "db": name,
        }
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


@contextlib.asynccontextmanager
async def mariadb_database() -> AsyncIterator[dict[str, Any]]:
    """A fresh MariaDB database; yields its `tracker_store:`-style config."""
    require_service("MariaDB", MARIADB)
    import aiomysql

    name = unique_name("bs_persist")
    admin = await aiomysql.connect(host=MARIADB[0], port=MARIADB[1], user="root", password="")
    try:
        async with admin.cursor() as cursor:
            await cursor.execute(f"CREATE DATABASE `{name}`")
        yield {
            "type": "sql",
            "dialect": "mysql",
            "url": MARIADB[0],
            "port": MARIADB[1],
            "username": "root",
            "password": "",
            "db": name,
        }
    finally:
        async with admin.cursor() as cursor:
            await cursor.execute(f"DROP DATABASE IF EXISTS `{name}`")
        admin.close()


async def delete_redis_keys(prefix: str, db: int = 0) -> None:
    from redis.asyncio import Redis

    client = Redis(host=REDIS[0], port=REDIS[1], db=db)
    try:
        async for key in client.scan_iter(match=f"{prefix}:*"):
            await client.delete(key)
    finally:
        await client.aclose()


@contextlib.asynccontextmanager
async def tracker_store_config(kind: str, tmp_path: Path) -> AsyncIterator[dict[str, Any]]:
    """A `tracker_store:` config of a fresh store: memory, sqlite, postgres, mariadb, redis."""
    async with contextlib.AsyncExitStack() as stack:
        if kind == "memory":
            yield {"type": "in_memory"}
        elif kind == "sqlite":
            yield {"type": "SQL", "dialect": "sqlite", "db": str(tmp_path / "trackers.db")}
        elif kind == "postgres":
            yield await stack.enter_async_context(postgres_database())
        elif kind == "mariadb":
            yield await stack.enter_async_context(mariadb_database())
        else:
            require_service("Redis", REDIS)
            prefix = unique_name("bstest")
            stack.push_async_callback(delete_redis_keys, prefix)
            yield {"type": "redis", "url": REDIS[0], "port": REDIS[1], "key_prefix": prefix}
