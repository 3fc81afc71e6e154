"""Real services for the persistence tests: reachability and throw-away databases.

Every test run gets its own database / key prefix / queue names, so engineers running tests
at the same time on this machine do not see each other's data.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
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


def postgres_config(database: str) -> dict[str, Any]:
    """The `tracker_store:`-style config of a PostgreSQL database of the local server."""
    return {
        "type": "sql",
        "dialect": "postgresql",
        "url": POSTGRES[0],
        "port": POSTGRES[1],
        "username": "postgres",
        "db": database,
    }


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
        yield postgres_config(name)
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


@contextlib.asynccontextmanager
async def postgres_events_locked(
    database: str, mode: str
) -> AsyncIterator[Callable[[], Awaitable[None]]]:
    """Another session holds `LOCK TABLE events IN <mode> MODE` on `database` until the
    yielded `release()` is awaited, or the block ends."""
    import asyncpg

    admin = await asyncpg.connect(
        host=POSTGRES[0], port=POSTGRES[1], user="postgres", database=database
    )
    try:
        holding = admin.transaction()
        await holding.start()
        await admin.execute(f"LOCK TABLE events IN {mode} MODE")
        yield holding.rollback
    finally:
        await admin.close()


async def terminate_postgres_backends(database: str, condition: str = "true") -> int:
    """pg_terminate_backend on the connections to `database` (this test's own, as it made
    the database) that meet `condition` (SQL on pg_stat_activity); how many."""
    import asyncpg

    admin = await asyncpg.connect(
        host=POSTGRES[0], port=POSTGRES[1], user="postgres", database="test"
    )
    try:
        killed = await admin.fetch(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            f" WHERE datname = $1 AND pid <> pg_backend_pid() AND ({condition})",
            database,
        )
        return len(killed)
    finally:
        await admin.close()


async def kill_waiting(statement_start: str, database: str) -> int:
    """KILL QUERY of the MariaDB sessions of `database` running a statement that starts
    with `statement_start`, once one is (a GET_LOCK waiting then answers NULL, an error);
    their count (0 if none ran within about 30 s). Only `database`'s: a test running at the
    same time on the server may wait on the same statement in its own database."""
    import aiomysql

    killer = await aiomysql.connect(host=MARIADB[0], port=MARIADB[1], user="root", password="")
    try:
        async with killer.cursor() as cursor:
            for _ in range(600):  # until the statement has begun
                await cursor.execute(
                    "SELECT ID FROM information_schema.PROCESSLIST"
                    " WHERE DB = %s AND INFO LIKE %s AND ID != CONNECTION_ID()",
                    (database, statement_start.replace("%", "\\%").replace("_", "\\_") + "%"),
                )
                sessions = [row[0] for row in await cursor.fetchall()]
                for session in sessions:
                    await cursor.execute(f"KILL QUERY {int(session)}")
                if sessions:
                    return len(sessions)
                await asyncio.sleep(0.05)
            return 0
    finally:
        killer.close()


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


async def delete_redis_keys(prefix: str, db: int | None = None) -> None:
    """Deletes the keys under `prefix` in `db`; by default in db 0 (trackers) and db 1 (the
    lock store's default): before, a test whose Redis lock store wrote db 1 cleaned db 0."""
    from redis.asyncio import Redis

    for number in (0, 1) if db is None else (db,):
        client = Redis(host=REDIS[0], port=REDIS[1], db=number)
        try:
            async for key in client.scan_iter(match=f"{prefix}:*"):
                await client.delete(key)
        finally:
            await client.aclose()


_moto: dict[str, str] = {}

# What boto3 reads in the tests: moto takes any credentials; nothing of the machine's own.
MOTO_ENVIRONMENT = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
}


def moto_endpoint() -> str:
    """The URL of moto's server (real DynamoDB wire protocol), started once per process on a
    free port; it stops with the process."""
    if "url" not in _moto:
        moto_server = pytest.importorskip("moto.server")
        from bench.tcp_proxy import free_port

        port = free_port()
        server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        server.start()
        # Its request lines (INFO) went to the stderr of a command run in this process once
        # the command set up logging, ahead of the line a test reads first.
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        _moto["url"] = f"http://127.0.0.1:{port}"
    return _moto["url"]


@contextlib.contextmanager
def moto_credentials() -> Any:
    """MOTO_ENVIRONMENT in os.environ for the block (boto3 reads it on each new client)."""
    saved = {name: os.environ.get(name) for name in MOTO_ENVIRONMENT}
    os.environ.update(MOTO_ENVIRONMENT)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def botocore_files_read(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The botocore data files (service models, endpoint rules) read from now on."""
    from botocore.loaders import JSONFileLoader

    read: list[str] = []
    load_file = JSONFileLoader.load_file

    def counted(loader: Any, path: str, *args: Any) -> Any:
        read.append(path)
        return load_file(loader, path, *args)

    monkeypatch.setattr(JSONFileLoader, "load_file", counted)
    return read


def delete_dynamo_table(endpoint: str, table: str) -> None:
    import boto3

    with moto_credentials():
        client = boto3.client("dynamodb", region_name="us-east-1", endpoint_url=endpoint)
        with contextlib.suppress(client.exceptions.ResourceNotFoundException):
            client.delete_table(TableName=table)


@contextlib.asynccontextmanager
async def tracker_store_config(kind: str, tmp_path: Path) -> AsyncIterator[dict[str, Any]]:
    """A `tracker_store:` config of a fresh store: memory, sqlite, postgres, mariadb, redis,
    dynamo (a new table on moto's server)."""
    async with contextlib.AsyncExitStack() as stack:
        if kind == "memory":
            yield {"type": "in_memory"}
        elif kind == "sqlite":
            yield {"type": "SQL", "dialect": "sqlite", "db": str(tmp_path / "trackers.db")}
        elif kind == "postgres":
            yield await stack.enter_async_context(postgres_database())
        elif kind == "mariadb":
            yield await stack.enter_async_context(mariadb_database())
        elif kind == "dynamo":
            pytest.importorskip("boto3")
            endpoint, table = moto_endpoint(), unique_name("bstest")
            stack.enter_context(moto_credentials())
            stack.callback(delete_dynamo_table, endpoint, table)
            yield {"type": "dynamo", "table_name": table, "endpoint_url": endpoint}
        else:
            require_service("Redis", REDIS)
            prefix = unique_name("bstest")
            stack.push_async_callback(delete_redis_keys, prefix)
            yield {"type": "redis", "url": REDIS[0], "port": REDIS[1], "key_prefix": prefix}
