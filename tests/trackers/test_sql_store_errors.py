"""What the SQL tracker store raises when its database refuses a statement: an outage
(StoreUnavailable, 503), the client's own values (StoreRefusedData, 400), or the server's
problem (StoreFailed, 500); and values it stores instead of refusing."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from server.errors import StoreFailed, StoreRefusedData, StoreUnavailable
from server.trackers import sql_engine, sql_store
from server.trackers.factory import create_tracker_store
from server.trackers.sql_engine import async_url
from server.trackers.sql_schema import migrate
from tests.loop_lag import paced
from tests.small_disk import fill, small_disk
from tests.trackers.test_sql_tracker_store import sql_config
from tests.trackers.test_tracker_stores import bot


async def execute(config: dict[str, Any], statement: str) -> None:
    """A statement on the store's database, as its administrator would run it."""
    engine = create_async_engine(async_url(config, default_db="x"))
    try:
        async with engine.begin() as conn:
            await conn.execute(text(statement))
    finally:
        await engine.dispose()


@pytest.mark.parametrize("kind", ["sqlite", "postgresql", "mariadb"])
async def test_a_column_dropped_underneath_is_the_servers_failure_not_an_outage(
    kind: str, tmp_path: Path
) -> None:
    """Before, MySQL/MariaDB answered every such error 503 "unavailable; retry later" (no
    retry could help) and PostgreSQL and SQLite an unexplained 500."""
    async with sql_config(kind, tmp_path) as config:
        store = create_tracker_store(config)
        try:
            await store.append("alice", [bot("hi", 1.0)])
            await store.close()
            await execute(config, "ALTER TABLE events DROP COLUMN intent_name")
            store = create_tracker_store(config)
            with pytest.raises(StoreFailed, match="intent_name") as raised:
                await store.append("bob", [bot("hello", 2.0)])
            assert not isinstance(raised.value, StoreUnavailable)
        finally:
            await store.close()


@pytest.mark.parametrize("kind", ["sqlite", "postgresql", "mariadb"])
async def test_a_timestamp_beyond_a_double_is_stored_exactly(kind: str, tmp_path: Path) -> None:
    """JSON allows any integer, and the API kept such a timestamp in memory; SQLite
    (beyond 64 bits) and PostgreSQL (beyond a double) refused the append with a 500."""
    events = [
        {"event": "bot", "timestamp": 2**64, "text": "a"},
        {"event": "bot", "timestamp": 10**400, "text": "b"},
    ]
    async with sql_config(kind, tmp_path) as config:
        store = create_tracker_store(config)
        try:
            await store.append("alice", events)
            assert await store.load_all("alice") == events
            assert await store.delete_older_than(1.0) == 0
        finally:
            await store.close()


async def test_an_event_larger_than_mysql_takes_is_refused_not_an_outage(tmp_path: Path) -> None:
    """Before, MariaDB dropped the connection on a statement over its max_allowed_packet
    (16 MiB), which the store answered 503 "retry later" for ever; the store now refuses it
    up front and the conversation goes on."""
    async with sql_config("mariadb", tmp_path) as config:
        store = create_tracker_store(config)
        try:
            await store.append("alice", [bot("hi", 1.0)])
            huge = bot("é" * (9 * 1024 * 1024), 2.0)
            with pytest.raises(StoreRefusedData, match=r"max_allowed_packet"):
                await store.append("alice", [huge])
            with pytest.raises(StoreRefusedData):
                await store.replace("alice", [huge])
            await store.append("alice", [bot("still here", 3.0)])
            assert [e["text"] for e in await store.load_all("alice") or []] == [
                "hi",
                "still here",
            ]
        finally:
            await store.close()


@pytest.mark.timing
async def test_every_pooled_connection_in_use_is_a_503_within_seconds(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The pool's one connection held by an append waiting on a table lock: before, the
    next request waited 30 s for a connection, then got an unexplained 500."""
    import aiomysql

    monkeypatch.setenv("SQL_POOL_SIZE", "1")
    monkeypatch.setenv("SQL_MAX_OVERFLOW", "0")
    monkeypatch.setenv("SQL_LOCK_TIMEOUT", "60")  # the held append waits out the test
    async with sql_config("mariadb", tmp_path) as config:
        store = create_tracker_store(config)
        await store.append("alice", [bot("hi", 1.0)])
        admin = await aiomysql.connect(host=config["url"], user="root", db=config["db"])
        try:
            async with admin.cursor() as cursor:
                await cursor.execute("LOCK TABLES events WRITE")
            held = asyncio.ensure_future(store.append("alice", [bot("waits", 2.0)]))
            await asyncio.sleep(0.2)
            started = time.monotonic()
            with pytest.raises(StoreUnavailable):
                await store.load("bob")
            assert time.monotonic() - started < paced(10, below=30)  # before, 30 s
            async with admin.cursor() as cursor:
                await cursor.execute("UNLOCK TABLES")
            await held
        finally:
            admin.close()
            await store.close()


@pytest.mark.timing
@pytest.mark.parametrize("kind", ["postgresql", "mariadb"])
async def test_a_table_locked_by_another_session_is_a_503_not_a_hang(
    kind: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A DBA's ALTER TABLE or LOCK TABLE holds the table: before, every turn hung for as long
    as the lock was held (MySQL waits a year for a metadata lock)."""
    monkeypatch.setenv("SQL_LOCK_TIMEOUT", "1")
    async with sql_config(kind, tmp_path) as config:
        store = create_tracker_store(config)
        await store.append("alice", [bot("hi", 1.0)])
        async with table_locked(config):
            started = time.monotonic()
            with pytest.raises(StoreUnavailable):
                await asyncio.wait_for(store.append("alice", [bot("waits", 2.0)]), 20)
            assert time.monotonic() - started < 1 + paced(4, below=19)  # SQL_LOCK_TIMEOUT 1 s
        try:
            await store.append("alice", [bot("after", 3.0)])
            assert [e["text"] for e in await store.load_all("alice") or []] == ["hi", "after"]
        finally:
            await store.close()


@contextlib.asynccontextmanager
async def table_locked(config: dict[str, Any]) -> AsyncIterator[None]:
    """The events table locked by an administrator's session."""
    engine = create_async_engine(async_url(config, default_db="x"))
    try:
        async with engine.connect() as conn:
            if engine.dialect.name == "postgresql":
                async with conn.begin():
                    await conn.execute(text("LOCK TABLE events IN ACCESS EXCLUSIVE MODE"))
                    yield
            else:
                await conn.execute(text("LOCK TABLES events WRITE"))
                try:
                    yield
                finally:
                    await conn.execute(text("UNLOCK TABLES"))
    finally:
        await engine.dispose()


async def test_probes_given_up_during_a_hung_migration_queue_no_more_attempts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A database host that takes the connection and never answers (dead behind a load
    balancer): each readiness probe gives the store's set-up up after its timeout, but the
    migration runs in a thread that does not stop with it. Before, each probe given up left
    one such attempt queued behind the others (one migration at a time per process): 5
    probes, then a turn's own attempt waited for 5 connect timeouts, one after another (and
    held 5 threads of the loop's pool meanwhile). Now a caller joins the attempt under way."""
    # Long beside the probes' 5 x 10 ms, even on a slow host: they all meet one attempt.
    monkeypatch.setattr(sql_engine, "CONNECT_TIMEOUT_SECONDS", 1.0)
    connections: list[asyncio.StreamWriter] = []

    async def hold(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(writer)

    silent = await asyncio.start_server(hold, "127.0.0.1", 0)
    port = silent.sockets[0].getsockname()[1]
    store = create_tracker_store(
        {"type": "sql", "dialect": "postgresql", "host": "127.0.0.1", "port": port}
        | {"db": "x", "username": "u", "password": "p"}
    )
    try:
        for _ in range(5):
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(store.ping(), 0.01)
        with pytest.raises(StoreUnavailable, match="tracker store"):
            await store.load("alice")
        assert len(connections) == 1
    finally:
        await store.close()
        silent.close()
        for writer in connections:
            writer.close()


async def test_a_migration_its_caller_gave_up_on_is_not_run_again_once_it_succeeded(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A readiness probe gives the store's set-up up (its 2 s) while the migration goes on
    in its thread and succeeds. Before, the next request ran Alembic over again (its imports,
    its revision scripts, a connection), as if that migration had failed; now it is done."""
    attempts: list[None] = []
    go_on, migrated = asyncio.Event(), asyncio.Event()

    async def slow_migration(make_engine: Any) -> None:
        attempts.append(None)
        await go_on.wait()
        await migrate(make_engine)
        migrated.set()

    monkeypatch.setattr(sql_store, "migrate", slow_migration)
    store = create_tracker_store({"type": "sql", "dialect": "sqlite", "db": str(tmp_path / "t.db")})
    try:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(store.ping(), 0.01)  # the probe gives up
        go_on.set()
        await migrated.wait()
        await store.ping()
        assert len(attempts) == 1
    finally:
        await store.close()


async def test_a_full_disk_met_by_a_large_sqlite_append_is_a_503_saying_so(tmp_path: Path) -> None:
    """A bulk append larger than SQLite's page cache (2 MB) goes to the WAL file while it is
    inserted: the disk filling up fails the insert itself, and SQLite rolls the whole
    transaction back. The store is unavailable, "database or disk is full" (before: the
    server's failure, a 500, "cannot rollback - no transaction is active"); nothing of the
    append is stored, and the same append goes in once there is room."""
    with small_disk(tmp_path, "16m") as disk:
        store = create_tracker_store({"type": "sql", "dialect": "sqlite", "db": str(disk / "t.db")})
        try:
            await store.append("alice", [bot("hello", 0.0)])
            filler = fill(disk)
            large = [bot(f"{number} " + "x" * 2_000, 1.0) for number in range(1_500)]
            with pytest.raises(StoreUnavailable, match="database or disk is full"):
                await store.append("alice", large)
            assert await store.load("alice") == [bot("hello", 0.0)]
            filler.unlink()
            await store.append("alice", large)
            assert await store.load("alice") == [bot("hello", 0.0), *large]
        finally:
            await store.close()


def open_descriptors(under: Path) -> list[str]:
    """The files under `under` this process holds open."""
    held = []
    for descriptor in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # the listing's own, closed meanwhile
            target = os.readlink(f"/proc/self/fd/{descriptor}")
            if target.startswith(str(under)):
                held.append(target)
    return held


@pytest.mark.parametrize("append", ["large (the store's thread)", "small (inline)"])
async def test_a_store_closed_after_a_full_disk_leaves_no_file_open(
    append: str, tmp_path: Path
) -> None:
    """The append that met the full disk failed; its error held the connection's cursor in a
    reference cycle, and SQLite keeps a connection with a live statement open through its
    close: before, the database, its WAL and -shm stayed open (four or five descriptors) until
    the garbage collector happened to run, and for good while the error was held, on a disk
    the user wanted to unmount or free."""
    with small_disk(tmp_path, "16m") as disk:
        gc.disable()  # what the collector would free, left to the store
        try:
            store = create_tracker_store(
                {"type": "sql", "dialect": "sqlite", "db": str(disk / "t.db")}
            )
            try:
                await store.append("alice", [bot("hello", 0.0)])
                filler = fill(disk)
                if append.startswith("large"):
                    events = [bot(f"{number} " + "x" * 2_000, 1.0) for number in range(1_500)]
                    with pytest.raises(StoreUnavailable, match="database or disk is full") as met:
                        await store.append("alice", events)
                else:
                    with pytest.raises(StoreUnavailable, match="database or disk is full") as met:
                        for number in range(100):  # until the WAL's last page is taken
                            await store.append("alice", [bot(f"{number} " + "y" * 3_000, 1.0)])
                filler.unlink()
            finally:
                await store.close()
            left_open = open_descriptors(disk)
        finally:
            gc.enable()
    assert left_open == []
    assert met.value is not None  # held past the close, as a log handler or error tracker may


async def test_a_store_closed_after_a_read_met_a_damaged_file_leaves_no_file_open(
    tmp_path: Path,
) -> None:
    """A read of a damaged database fails (StoreFailed, saying so); the store's read-only connection
    kept its cursor, whose failed statement SQLite holds on to: before, closing the store
    left that connection's database, WAL and -shm open (six descriptors) for good, on the
    file the user wanted to restore from a backup."""
    path = tmp_path / "t.db"
    gc.disable()  # what the collector would free, left to the store
    try:
        store = create_tracker_store({"type": "sql", "dialect": "sqlite", "db": str(path)})
        try:
            for number in range(5):
                await store.append(f"s{number}", [bot("x" * 500, 0.0) for _ in range(200)])
            assert len(await store.load("s0") or ()) == 200  # the read-only connection opened
            with contextlib.closing(sqlite3.connect(path)) as other:
                other.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            with path.open("r+b") as damaged:  # every page but the first two, in part
                for page in range(2, path.stat().st_size // 4096):
                    damaged.seek(page * 4096 + 8)
                    damaged.write(b"\xff" * 64)
            with pytest.raises(StoreFailed, match="malformed") as met:
                await store.load("s3")
        finally:
            await store.close()
        left_open = open_descriptors(tmp_path)
    finally:
        gc.enable()
    assert left_open == []
    assert met.value is not None  # held past the close, as a log handler or error tracker may
