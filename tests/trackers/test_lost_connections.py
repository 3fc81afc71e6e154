"""A connection the database server drops in the middle of a statement (a DBA's `KILL`,
`pg_terminate_backend`, a failover) costs the turn nothing when that is safe: a read is made
again on a new connection, and so is a write whose transaction never reached its COMMIT (the
server rolled it back). A write whose COMMIT went out and whose answer was lost is a 503,
never written twice."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from bench.tcp_proxy import TcpProxy
from server.errors import StoreUnavailable
from server.trackers.factory import create_tracker_store
from tests.loop_lag import paced
from tests.trackers.persistence_fixtures import (
    MARIADB,
    mariadb_database,
    postgres_database,
    postgres_events_locked,
    terminate_postgres_backends,
)


def action(timestamp: float) -> dict[str, Any]:
    return {"event": "action", "timestamp": timestamp, "name": "action_listen"}


@contextlib.asynccontextmanager
async def mariadb_events_locked(database: str) -> AsyncIterator[Callable[[], Awaitable[None]]]:
    """Another session holds `LOCK TABLES events WRITE` until `release()` is awaited."""
    import aiomysql

    locker = await aiomysql.connect(
        host=MARIADB[0], port=MARIADB[1], user="root", password="", db=database
    )
    try:
        async with locker.cursor() as cursor:
            await cursor.execute("LOCK TABLES events WRITE")

        async def release() -> None:
            async with locker.cursor() as cursor:
                await cursor.execute("UNLOCK TABLES")

        yield release
    finally:
        locker.close()


async def kill_mariadb_waiters(database: str) -> int:
    """KILLs this test's own connections that wait for the table lock."""
    import aiomysql

    admin = await aiomysql.connect(host=MARIADB[0], port=MARIADB[1], user="root", password="")
    try:
        async with admin.cursor() as cursor:
            await cursor.execute(
                "SELECT ID FROM information_schema.PROCESSLIST"
                " WHERE DB = %s AND STATE LIKE 'Waiting for table%%'",
                (database,),
            )
            ids = [row[0] for row in await cursor.fetchall()]
            for connection_id in ids:
                await cursor.execute(f"KILL {int(connection_id)}")
        return len(ids)
    finally:
        admin.close()


@contextlib.asynccontextmanager
async def postgres_locked(database: str) -> AsyncIterator[Callable[[], Awaitable[None]]]:
    async with postgres_events_locked(database, "ACCESS EXCLUSIVE") as release:
        yield release


async def kill_postgres_waiters(database: str) -> int:
    """pg_terminate_backend on this test's own connections that wait for the table lock."""
    return await terminate_postgres_backends(database, "wait_event_type = 'Lock'")


SERVERS = {
    "mysql": (mariadb_database, mariadb_events_locked, kill_mariadb_waiters),
    "postgresql": (postgres_database, postgres_locked, kill_postgres_waiters),
}


async def killed_mid_statement(dialect: str, operation: str) -> tuple[Any, list[float]]:
    """Runs `operation` ("read" or "append") on a conversation of one event while another
    session locks the table, KILLs the operation's connection as it waits, releases the lock;
    returns the operation's result and the timestamps stored after."""
    database, locked, kill = SERVERS[dialect]
    async with database() as config:
        store = create_tracker_store(config)
        try:
            await store.append("c", [action(1.0)])
            async with locked(config["db"]) as release:
                pending: asyncio.Future[Any]
                if operation == "read":
                    pending = asyncio.ensure_future(store.load_all("c"))
                else:
                    pending = asyncio.ensure_future(store.append("c", [action(2.0)]))
                for _ in range(50):  # until the statement waits for the lock
                    await asyncio.sleep(0.1)
                    if await kill(config["db"]):
                        break
                else:
                    pytest.fail("the statement never waited for the lock")
                await release()
            result = await asyncio.wait_for(pending, 10)
            stored = [e["timestamp"] for e in await store.load_all("c") or []]
            return result, stored
        finally:
            await store.close()


@pytest.mark.parametrize("dialect", ["mysql", "postgresql"])
async def test_a_read_whose_connection_is_killed_mid_statement_is_read_again(
    dialect: str,
) -> None:
    """Before (MySQL/MariaDB): a 503, `Lost connection to MySQL server during query`."""
    loaded, stored = await killed_mid_statement(dialect, "read")
    assert [e["timestamp"] for e in loaded] == [1.0]
    assert stored == [1.0]


async def test_an_append_whose_connection_is_killed_before_its_commit_is_written_once() -> None:
    """MySQL/MariaDB: the server rolled the killed transaction back, so it is sent again:
    stored once. Before, a 503 for an append that could safely have gone again. (PostgreSQL's
    append is one statement with its commit: killed mid-statement, it may have committed,
    so it stays a 503.)"""
    _, stored = await killed_mid_statement("mysql", "append")
    assert stored == [1.0, 2.0]


class LosesTheCommitsAnswer(TcpProxy):
    """Passes everything on, but once armed: lets the next COMMIT reach the server and
    drops the client's connection as the server answers it (the client never learns it
    committed)."""

    armed = False
    committing = False

    async def forward(self, data: bytes, writer: Any, upstream: bool) -> bool:
        if upstream and self.armed and b"COMMIT" in data.upper():
            self.armed, self.committing = False, True
        elif not upstream and self.committing:
            self.committing = False
            writer.transport.abort()  # towards the client: the answer goes nowhere
            return False
        return await super().forward(data, writer, upstream)


@pytest.mark.timing
async def test_an_append_whose_commit_answer_is_lost_is_a_503_and_not_written_twice() -> None:
    """MySQL/MariaDB: the commit may have happened (here it did), so it is not sent again."""
    async with mariadb_database() as config:
        proxy = LosesTheCommitsAnswer(MARIADB)
        await proxy.restore()
        store = create_tracker_store({**config, "url": "127.0.0.1", "port": proxy.port})
        try:
            await store.append("c", [action(1.0)])
            proxy.armed = True
            started = time.monotonic()
            with pytest.raises(StoreUnavailable, match="Lost connection"):
                await store.append("c", [action(2.0)])
            assert time.monotonic() - started < paced(2.0)
            assert [e["timestamp"] for e in await store.load_all("c") or []] == [1.0, 2.0]
        finally:
            await proxy.cut()
            await store.close()
