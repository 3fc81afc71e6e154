"""The SQL broker writes events to its own table, beside a tracker store if need be."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import sqlite3
import sys
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, closing
from pathlib import Path
from typing import Any, TypeVar

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, Text, insert, select, text
from sqlalchemy.ext.asyncio import create_async_engine

from bench.tcp_proxy import SilentProxy, TcpProxy, free_port
from server.brokers import sql as sql_broker
from server.brokers.factory import create_event_broker
from server.brokers.sql import SqlEventBroker
from server.errors import InvalidConfig
from server.trackers.factory import create_tracker_store
from server.trackers.sql_engine import async_url
from tests.loop_lag import paced
from tests.small_disk import fill, small_disk
from tests.sqlite_reader import open_descriptors, reading_in_a_rollback_journal
from tests.trackers.persistence_fixtures import (
    MARIADB,
    POSTGRES,
    mariadb_database,
    postgres_database,
)

P = TypeVar("P", bound=TcpProxy)


def events(count: int) -> list[dict[str, Any]]:
    return [{"event": "bot", "timestamp": float(i), "text": str(i)} for i in range(count)]


async def stored_rows(broker: SqlEventBroker) -> list[dict[str, Any]]:
    engine = broker._engine
    async with engine.connect() as conn:
        result = await conn.execute(select(broker.table.c.data).order_by(broker.table.c.id))
        return [json.loads(row[0]) for row in result]


async def test_sql_broker_shares_a_database_with_the_tracker_store(tmp_path: Path) -> None:
    config = {"type": "sql", "dialect": "sqlite", "db": str(tmp_path / "one.db")}
    trackers = create_tracker_store(config)
    broker = create_event_broker(config)
    assert isinstance(broker, SqlEventBroker)
    try:
        await trackers.append("alice", events(3))
        await broker.publish("alice", events(3))
        await broker.publish("bob", events(1))
        await broker.close()

        assert broker.table.name == "broker_events"
        assert await stored_rows(broker) == [
            *({"sender_id": "alice", **e} for e in events(3)),
            {"sender_id": "bob", **events(1)[0]},
        ]
        assert await trackers.load("alice") == events(3)
    finally:
        await trackers.close()


async def test_a_publish_returns_once_the_events_are_committed(tmp_path: Path) -> None:
    """What a turn's answer waits for with `wait_for_delivery: true`, while the database
    answers: without it, the events are still in memory when `publish` returns, lost to a
    process killed then."""
    db = str(tmp_path / "e.db")
    broker = create_event_broker(
        {"type": "sql", "dialect": "sqlite", "db": db, "wait_for_delivery": True}
    )
    assert isinstance(broker, SqlEventBroker)
    try:
        await broker.publish("alice", events(3))
        assert broker.pending == 0
        assert await stored_rows(broker) == [{"sender_id": "alice", **e} for e in events(3)]
    finally:
        await broker.close()


def wal_frames_and_copied(db: Path) -> tuple[int, int]:
    """The WAL's frames (mxFrame) and those copied into the database file (nBackfill), from
    the WAL index in the -shm file (https://www.sqlite.org/walformat.html)."""
    header = Path(f"{db}-shm").read_bytes()[:136]
    return (
        int.from_bytes(header[16:20], sys.byteorder),
        int.from_bytes(header[96:100], sys.byteorder),
    )


def wal_file_exists(db: Path) -> bool:
    return Path(f"{db}-wal").exists()


async def test_sqlite_broker_commits_leave_no_wal_restart_to_another_writer(
    tmp_path: Path,
) -> None:
    """The broker's commits never checkpoint (SQLite's automatic checkpoint copies the whole
    WAL inside the commit crossing 1,000 pages, and the next writer's commit, a tracker
    store's on the event loop when they share the file, restarts the WAL and fsyncs its
    header). The broker checkpoints between its batches and restarts the WAL itself; the
    WAL stays bounded, and nothing is lost at shutdown."""
    db = tmp_path / "events.db"
    broker = SqlEventBroker({"dialect": "sqlite", "db": str(db)})
    text = "x" * 8_000  # two to three pages an event
    largest = 0
    try:
        for batch in range(60):  # about 7,800 WAL pages in all
            await broker.publish(f"c{batch % 7}", [{**event, "text": text} for event in events(50)])
            assert await broker.flush(10)
            frames, copied = wal_frames_and_copied(db)
            assert not 0 < frames == copied, f"the WAL was left wholly copied after {batch}"
            largest = max(largest, frames)
    finally:
        await broker.close()
    # Pages: about 2,600 between two of the broker's checkpoints (every 1,000 events).
    assert sql_broker.SQLITE_CHECKPOINT_EVENTS == 1_000
    assert largest < 4_000
    assert not wal_file_exists(db)  # checkpointed and removed at shutdown
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM events").fetchone() == (3_000,)


async def test_without_table_name_a_new_database_gets_rasas_events_table(tmp_path: Path) -> None:
    # A consumer of Rasa's SQL broker reads `events` (id, sender_id, data). Before, an
    # unchanged endpoints.yml made botserver write to `broker_events`, and the consumer saw
    # nothing new.
    db = tmp_path / "broker.db"
    broker = create_event_broker({"type": "sql", "dialect": "sqlite", "db": str(db)})
    assert broker is not None
    await broker.publish("alice", events(2))
    await broker.close()
    with sqlite3.connect(db) as conn:
        columns = [row[1] for row in conn.execute("PRAGMA table_info(events)")]
        rows = conn.execute("SELECT sender_id, data FROM events ORDER BY id").fetchall()
    assert columns == ["id", "sender_id", "data", "event_key"]
    assert [(sender, json.loads(data)) for sender, data in rows] == [
        ("alice", {"sender_id": "alice", **e}) for e in events(2)
    ]


@pytest.mark.parametrize("database", [postgres_database, mariadb_database])
async def test_without_table_name_events_go_on_where_a_rasa_broker_wrote_them(
    database: Any,
) -> None:
    async with database() as config:
        # Rasa's SQLEventBroker table, as its model declares it, with a row it wrote.
        metadata = MetaData()
        rasas = Table(
            "events",
            metadata,
            Column("id", Integer, primary_key=True),
            Column("sender_id", String(255)),
            Column("data", Text),
        )
        engine = create_async_engine(async_url(config, default_db="x"))
        async with engine.begin() as conn:
            await conn.run_sync(metadata.create_all)
            old = {"sender_id": "old", "data": json.dumps({"sender_id": "old"})}
            await conn.execute(insert(rasas), [old])
        await engine.dispose()
        written = await senders_written(config, ("alice", events(1)))
        assert written == ["old", "alice", "bob", "bob"]


# SQLAlchemy's part of a table's set-up: looking at what is there, and the DDL.
SET_UP_CODE = ("/sqlalchemy/engine/reflection.py", "/sqlalchemy/sql/ddl.py")


class SetUpCalls:
    """Counts the calls into SET_UP_CODE made on this thread (a profile hook) while active."""

    def __init__(self) -> None:
        self.count = 0

    def __enter__(self) -> SetUpCalls:
        sys.setprofile(self._called)
        return self

    def __exit__(self, *exc: object) -> None:
        sys.setprofile(None)

    def _called(self, frame: Any, event: str, arg: Any) -> None:
        if event == "call" and frame.f_code.co_filename.endswith(SET_UP_CODE):
            self.count += 1


@asynccontextmanager
async def database_of(dialect: str, tmp_path: Path) -> AsyncIterator[dict[str, Any]]:
    if dialect == "sqlite":
        yield {"dialect": "sqlite", "db": str(tmp_path / "events.db")}
        return
    async with postgres_database() as config:
        yield config


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
async def test_the_first_publish_makes_the_table_off_the_event_loop(
    dialect: str, tmp_path: Path
) -> None:
    """Before, SQLAlchemy's reflection and DDL ran on the loop's thread (`run_sync`), 2-3 ms
    of CPU the loop served nothing else, at the first publish; counted here in calls."""
    async with database_of(dialect, tmp_path) as config:
        broker = SqlEventBroker(config)
        try:
            with SetUpCalls() as on_the_loop:
                await broker.publish("alice", events(2))
                assert await broker.flush(timeout=10)
            assert [row["sender_id"] for row in await stored_rows(broker)] == ["alice"] * 2
        finally:
            await broker.close()
    assert on_the_loop.count == 0


@pytest.mark.timing
async def test_sql_broker_retries_until_the_database_is_back() -> None:
    async with postgres_database() as config:
        proxy = TcpProxy(POSTGRES)
        broker = SqlEventBroker(
            {**config, "port": proxy.port, "table_name": "my_events", "retry_delay_in_seconds": 0.1}
        )
        try:
            started = time.monotonic()
            await broker.publish("alice", events(5))
            assert time.monotonic() - started < paced(0.1)
            await asyncio.sleep(0.2)
            assert broker.pending == 5

            await proxy.restore()
            assert await broker.flush(timeout=10)
            assert await stored_rows(broker) == [{"sender_id": "alice", **e} for e in events(5)]
        finally:
            await broker.close()
            await proxy.cut()


class LostCommitReply(TcpProxy):
    """Once armed: passes the next COMMIT on to the database, swallows its reply and drops
    the client's connection, as a network failure right after the commit does."""

    armed = False

    async def forward(self, data: bytes, writer: asyncio.StreamWriter, upstream: bool) -> bool:
        if upstream and self.armed and b"COMMIT" in data.upper():
            self.armed = False
            self.committing = True
        elif not upstream and getattr(self, "committing", False):
            self.committing = False  # the database answered: it committed
            writer.transport.abort()
            return False
        return await super().forward(data, writer, upstream)


@pytest.mark.parametrize(
    ("database", "address"), [(postgres_database, POSTGRES), (mariadb_database, MARIADB)]
)
async def test_a_lost_reply_to_commit_does_not_publish_the_events_twice(
    database: Any, address: tuple[str, int]
) -> None:
    """The connection dropped after the database committed the broker's insert: before, the
    broker retried it and a consumer of the table read every event of the batch twice."""
    async with database() as config:
        proxy = LostCommitReply(address)
        await proxy.restore()
        broker = SqlEventBroker({**config, "port": proxy.port, "retry_delay_in_seconds": 0.05})
        try:
            await broker.publish("alice", events(1))
            assert await broker.flush(timeout=10)
            proxy.armed = True
            await broker.publish("bob", events(3))
            assert await broker.flush(timeout=10)
            assert not proxy.armed
            rows = await stored_rows(broker)
        finally:
            await broker.close()
            await proxy.cut()
        assert [row["sender_id"] for row in rows] == ["alice", "bob", "bob", "bob"]
        assert [row["text"] for row in rows] == ["0", "0", "1", "2"]


async def test_byte_identical_events_one_after_the_other_are_all_written(
    tmp_path: Path,
) -> None:
    """Posted through the events API with one timestamp: none is taken for a retry."""
    broker = SqlEventBroker({"dialect": "sqlite", "db": str(tmp_path / "b.db")})
    same = {"event": "bot", "timestamp": 1.0, "text": "again"}
    await broker.publish("alice", [same, same])
    await broker.publish("alice", [same], previous_event=same)
    await broker.close()
    assert await stored_rows(broker) == [{"sender_id": "alice", **same}] * 3
    await broker._engine.dispose()


async def test_a_latin1_broker_table_on_mariadb_takes_any_sender_id() -> None:
    """A table of an earlier version in a latin1 database (an older MySQL's default): before,
    one event whose sender id held an emoji failed its insert for ever, and every later event
    waited behind it."""
    async with mariadb_database() as config:
        engine = create_async_engine(async_url(config, default_db="x"))
        async with engine.begin() as conn:
            await conn.execute(text("ALTER DATABASE CHARACTER SET latin1"))
            await conn.execute(
                text(
                    "CREATE TABLE broker_events (id INTEGER NOT NULL AUTO_INCREMENT PRIMARY KEY,"
                    " sender_id VARCHAR(255) NOT NULL, data LONGTEXT)"
                )
            )
        await engine.dispose()
        broker = SqlEventBroker({**config, "retry_delay_in_seconds": 0.1})
        await broker.publish("émoji 😀", events(1))
        await broker.publish("bob", events(1))
        await asyncio.wait_for(broker.close(), 10)
        rows = await stored_rows(broker)
        await broker._engine.dispose()  # stored_rows connected again
        assert [row["sender_id"] for row in rows] == ["émoji 😀", "bob"]


@pytest.mark.parametrize("database", [postgres_database, mariadb_database])
async def test_an_event_the_database_refuses_is_dropped_not_retried_ahead_of_the_rest(
    database: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """A sender id longer than the column (the API refuses such ids; a custom channel or an
    older version may not): before, its insert failed for ever and every later event waited."""
    async with database() as config:
        written = await senders_written(config, ("alice", events(1)), ("x" * 300, events(1)))
        assert written == ["alice", "bob", "bob"]
        assert "dropped a 'bot' event" in caplog.text


async def senders_written(config: dict[str, Any], *published: tuple[str, Any]) -> list[str]:
    """The sender ids of the rows a broker wrote for these publishes, then two of 'bob'."""
    broker = SqlEventBroker({**config, "retry_delay_in_seconds": 0.1})
    for sender_id, sent in (*published, ("bob", events(2))):
        await broker.publish(sender_id, sent)
    await asyncio.wait_for(broker.close(), 10)
    rows = await stored_rows(broker)
    await broker._engine.dispose()  # stored_rows connected again
    return [row["sender_id"] for row in rows]


async def test_an_event_larger_than_mysql_takes_is_dropped_not_retried_for_ever(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """MariaDB drops the connection on a statement over its max_allowed_packet (16 MiB):
    before, the broker read that as an outage and retried the event for ever, and no later
    event of any conversation was written."""
    async with mariadb_database() as config:
        huge = {"event": "bot", "timestamp": 1.0, "text": "a" * (17 * 1024 * 1024)}
        written = await senders_written(config, ("alice", events(1)), ("alice", [huge]))
        assert written == ["alice", "bob", "bob"]
        assert "dropped a 'bot' event of conversation 'alice'" in caplog.text
        assert "max_allowed_packet" in caplog.text


async def test_a_retry_delay_of_zero_does_not_spin_while_the_database_is_down(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """`retry_delay_in_seconds: 0`: before, the broker retried thousands of times a second,
    a log line each, at full CPU, for as long as the database was down."""
    broker = SqlEventBroker(
        {
            "dialect": "postgresql",
            "url": "127.0.0.1",
            "port": free_port(),
            "retry_delay_in_seconds": 0,
        }
    )
    try:
        await broker.publish("alice", events(1))
        await asyncio.sleep(1.0)
    finally:
        await broker.close()
    attempts = [r for r in caplog.records if "delivery failed" in r.getMessage()]
    assert 1 <= len(attempts) <= 10


@pytest.mark.parametrize("first", [False, True], ids=["after-the-first-event", "first-event"])
@pytest.mark.parametrize(
    ("database", "address"), [(postgres_database, POSTGRES), (mariadb_database, MARIADB)]
)
async def test_a_silent_database_is_told_in_the_log_and_gets_the_events_once_it_answers(
    database: Any,
    address: tuple[str, int],
    first: bool,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A database that takes connections but stops answering (hung, a dead host behind a
    load balancer). Before, the delivery waited on its statement with nothing in the log
    (until the kernel gave the connection up, about 15 minutes), and a stop meanwhile lost
    the events. Now the tracker store's silence check gives it up after
    SQL_SILENCE_CHECK_AFTER + SQL_SILENCE_CHECK_TIMEOUT (0.5 s + 0.5 s here; 2 + 3 s by
    default), the log says why, and the delivery retries until the database answers.
    `first`: silent from the first event on, while the table is set up (off the loop)."""
    monkeypatch.setenv("SQL_SILENCE_CHECK_AFTER", "0.5")
    monkeypatch.setenv("SQL_SILENCE_CHECK_TIMEOUT", "0.5")
    async with (
        database() as config,
        broker_behind(SilentProxy(address), config, first_event=not first) as (
            proxy,
            broker,
        ),
    ):
        try:
            proxy.silent = True
            await broker.publish("bob", events(2))
            for _ in range(50):  # 5 s at most
                if "stopped answering" in caplog.text:
                    break
                await asyncio.sleep(0.1)
            assert "SQL event broker: delivery failed (attempt 1, 2 events queued)" in caplog.text
            assert "it stopped answering (no answer to a statement in 0.5 s" in caplog.text
            proxy.silent = False
            assert await broker.flush(timeout=10)
            rows = await stored_rows(broker)
        finally:
            proxy.silent = False
    assert [row["sender_id"] for row in rows] == ["alice"] * (not first) + ["bob", "bob"]
    # Before: "(1 attempts)".
    assert re.search(
        r"SQL event broker: reachable again after [\d.]+ s \(1 attempt failed\)", caplog.text
    ), caplog.text


@pytest.mark.parametrize(
    ("database", "address"), [(postgres_database, POSTGRES), (mariadb_database, MARIADB)]
)
async def test_events_go_out_when_the_network_drops_the_brokers_connection(
    database: Any, address: tuple[str, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The broker's pooled connection forgotten by a NAT gateway, the database still fine
    (the silence check's new connection answers). Before, its insert waited with nothing in
    the log until the kernel gave the connection up (about 15 minutes); now the kernel gives
    it up after DB_TCP_TIMEOUT (1 s here, 5 by default) and the retry goes out on a new one."""
    monkeypatch.setenv("DB_TCP_TIMEOUT", "1")
    async with (
        database() as config,
        broker_behind(TcpProxy(address), config) as (
            proxy,
            broker,
        ),
    ):
        proxy.forget_open_connections()
        await broker.publish("bob", events(2))
        assert await broker.flush(timeout=6)
        rows = await stored_rows(broker)
    assert [row["sender_id"] for row in rows] == ["alice", "bob", "bob"]


@asynccontextmanager
async def broker_behind(
    proxy: P, config: dict[str, Any], first_event: bool = True
) -> AsyncIterator[tuple[P, SqlEventBroker]]:
    """A broker on the database behind `proxy`, its first event ("alice") delivered (unless
    not `first_event`); closed, and the proxy cut, at the end."""
    await proxy.restore()
    broker = SqlEventBroker(
        {**config, "url": "127.0.0.1", "port": proxy.port, "retry_delay_in_seconds": 0.1}
    )
    try:
        if first_event:
            await broker.publish("alice", events(1))
            assert await broker.flush(timeout=10)
        yield proxy, broker
    finally:
        await broker.close()
        await proxy.cut()


@pytest.mark.timing
async def test_closing_with_the_database_down_says_why_it_waits_and_what_is_lost(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """`botserver run` stopped while the broker's database is down: before, the stop paused
    5 s without a word, then said only "closing with 3 events not delivered"."""
    port = free_port()  # nothing listens there: every attempt is refused
    broker = SqlEventBroker(
        {"dialect": "postgresql", "url": "127.0.0.1", "port": port, "db": "x", "username": "u"}
    )
    await broker.publish("alice", events(3))
    for _ in range(100):  # the first attempt fails
        if "delivery failed" in caplog.text:
            break
        await asyncio.sleep(0.05)
    caplog.clear()
    began = time.monotonic()
    await asyncio.wait_for(broker.close(), 10)
    assert time.monotonic() - began < 5 + paced(2, below=5)  # its 5 s; before, 10
    said = [r.getMessage() for r in caplog.records]
    assert any("3 events still queued, retrying for up to 5 s" in m for m in said), said
    (lost,) = [m for m in said if "they are lost" in m]
    assert "3 events not delivered" in lost
    assert "Errno 111" in lost  # ECONNREFUSED: why they are lost


@pytest.mark.parametrize("database", [postgres_database, mariadb_database])
async def test_brokers_starting_together_on_a_new_database_all_deliver_at_once(
    database: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="server.brokers.delivery")
    async with database() as config:
        # Three workers' brokers, the first event of each at the same time: one creates the
        # table, the others wait for it (before, their CREATE failed and they retried 1 s on).
        brokers = [SqlEventBroker({**config, "table_name": "my_events"}) for _ in range(3)]
        try:
            for b, broker in enumerate(brokers):
                await broker.publish(f"sender{b}", events(1))
            for broker in brokers:
                assert await broker.flush(timeout=5)
            rows = await stored_rows(brokers[0])
        finally:
            for broker in brokers:
                await broker.close()
    assert sorted(row["sender_id"] for row in rows) == ["sender0", "sender1", "sender2"]
    assert not [r.getMessage() for r in caplog.records if "delivery failed" in r.getMessage()]


async def test_a_postgres_broker_on_a_direct_connection_keeps_its_prepared_statements(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    async with postgres_database() as config:
        broker = SqlEventBroker({**config, "table_name": "my_events"})
        try:
            for _ in range(3):
                await broker.publish("alice", events(1))
                assert await broker.flush(timeout=5)
            async with broker._engine.connect() as conn:
                # The insert, prepared once by name on the connection and run from then on.
                prepared = await conn.scalar(
                    text(
                        "SELECT count(*) FROM pg_prepared_statements WHERE statement LIKE 'INSERT%'"
                    )
                )
        finally:
            await broker.close()
    assert prepared == 1
    assert not [r for r in caplog.records if "pooler" in r.getMessage()]


@pytest.mark.timing
async def test_a_postgres_broker_whose_statement_is_gone_from_the_backend_moves_to_unprepared(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Behind a pooler in transaction mode, the broker's insert, prepared by name on one
    server backend, is sent to another, where PostgreSQL knows no statement of that name
    (26000). Staged on a direct connection: the statements gone (DEALLOCATE ALL, as on
    another backend). The events go out at once, unprepared, the log saying so once; before
    the pooler's answer was handled, they waited for the delivery's retry (30 s here)."""
    caplog.set_level(logging.WARNING)
    async with postgres_database() as config:
        broker = SqlEventBroker({**config, "table_name": "my_events", "retry_delay_in_seconds": 30})
        try:
            await broker.publish("alice", events(1))
            assert await broker.flush(timeout=5)
            async with broker._engine.connect() as conn:
                assert await conn.scalar(
                    text(
                        "SELECT count(*) FROM pg_prepared_statements WHERE statement LIKE 'INSERT%'"
                    )
                )
                await conn.execute(text("DEALLOCATE ALL"))
            await broker.publish("bob", events(2))
            assert await broker.flush(timeout=paced(5, below=20))
            assert [row["sender_id"] for row in await stored_rows(broker)] == [
                "alice",
                "bob",
                "bob",
            ]
        finally:
            await broker.close()
    assert not [r.getMessage() for r in caplog.records if "delivery failed" in r.getMessage()]
    said = [r.getMessage() for r in caplog.records if "through a pooler" in r.getMessage()]
    assert len(said) == 1, said
    assert "HINT" not in said[0] and "sqlalche.me" not in said[0]


async def test_a_postgres_brokers_connections_keep_their_lock_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SQL_LOCK_TIMEOUT", "7")
    async with postgres_database() as config:
        broker = SqlEventBroker({**config, "table_name": "my_events"})
        try:
            # A connection's first transaction rolled back (a failed insert, a pre-ping) must
            # not take its lock timeout with it.
            async with broker._engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
                await conn.rollback()
            async with broker._engine.connect() as conn:
                assert await conn.scalar(text("SHOW lock_timeout")) == "7s"
        finally:
            await broker.close()


def test_a_sqlite_file_in_a_folder_that_is_not_there_stops_the_start_naming_it(
    tmp_path: Path,
) -> None:
    """As Rasa's broker stops (it creates its table at start), with the path named. Before,
    the server started, and every event waited, retried for ever, behind a warning that
    named no file: "(sqlite3.OperationalError) unable to open database file"."""
    missing = tmp_path / "not-there" / "events.db"
    with pytest.raises(InvalidConfig, match=f"'{missing}'.*folder '{missing.parent}'"):
        create_event_broker({"type": "sql", "dialect": "sqlite", "db": str(missing)})


async def test_a_postgres_broker_writes_where_rasas_did_whatever_postgresql_schema_says(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Rasa's SQL broker does not read POSTGRESQL_SCHEMA (its tracker store does): a consumer
    reads the broker database's default schema. Before, the broker took it, and in a
    database without that schema delivered nothing ("no schema has been selected to create
    in"); with it, it wrote to a table there that the consumer never read."""
    import asyncpg

    async with postgres_database() as config:
        monkeypatch.setenv("POSTGRESQL_SCHEMA", "bots_only_in_the_tracker_database")
        broker = create_event_broker(config)
        assert broker is not None
        await broker.publish("alice", events(2))
        await broker.close()
        conn = await asyncpg.connect(
            host=POSTGRES[0], port=POSTGRES[1], user="postgres", database=config["db"]
        )
        try:
            rows = await conn.fetch("SELECT data FROM public.events ORDER BY id")
        finally:
            await conn.close()
    assert [json.loads(row["data"]) for row in rows] == [
        {"sender_id": "alice", **event} for event in events(2)
    ]


@pytest.mark.timing
async def test_brokers_that_wait_in_vain_for_the_table_lock_all_deliver_once(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another session holds the table set-up lock (a broker stuck mid-way, a session left
    behind): after TABLE_LOCK_SECONDS (1 s here) each broker makes the table without it,
    three at once on a new database. They race on CREATE TABLE, ADD COLUMN and CREATE INDEX;
    every event is stored once."""
    import aiomysql

    monkeypatch.setattr(sql_broker, "TABLE_LOCK_SECONDS", 1)
    caplog.set_level(logging.INFO, logger="server.brokers")
    async with mariadb_database() as config:
        holder = await aiomysql.connect(
            host=MARIADB[0], port=MARIADB[1], user="root", password="", db=config["db"]
        )
        brokers = [
            SqlEventBroker({**config, "table_name": "my_events", "retry_delay_in_seconds": 0.1})
            for _ in range(3)
        ]
        try:
            async with holder.cursor() as cursor:
                await cursor.execute(f"SELECT GET_LOCK({sql_broker._TABLE_LOCK}, 0)")
                assert (await cursor.fetchone())[0] == 1
            for b, broker in enumerate(brokers):
                await broker.publish(f"sender{b}", events(2))
            for broker in brokers:
                assert await broker.flush(timeout=paced(15, below=60))
            rows = await stored_rows(brokers[0])
        finally:
            for broker in brokers:
                await broker.close()
            holder.close()
    assert sorted(row["sender_id"] for row in rows) == [
        f"sender{b}" for b in range(3) for _ in "12"
    ]
    # Before, the race was told as a database that could not be reached: "delivery failed
    # ... Table 'my_events' already exists ... events wait in memory", then "reachable again".
    said = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert not [line for line in said if "delivery failed" in line or "reachable" in line]
    assert len([line for line in said if "setting the table up without it" in line]) == 3


@pytest.mark.timing
async def test_a_table_lock_wait_ended_by_an_error_is_not_told_as_a_lock_held(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """GET_LOCK answers NULL for an error (here the wait's statement killed): before, the
    warning said another session had held the lock for 10 s. The table is set up without
    it, and the events are stored."""
    import aiomysql

    from tests.trackers.persistence_fixtures import kill_waiting

    caplog.set_level(logging.INFO, logger="server.brokers")
    async with mariadb_database() as config:
        holder = await aiomysql.connect(
            host=MARIADB[0], port=MARIADB[1], user="root", password="", db=config["db"]
        )
        broker = SqlEventBroker({**config, "table_name": "my_events"})
        try:
            async with holder.cursor() as cursor:
                await cursor.execute(f"SELECT GET_LOCK({sql_broker._TABLE_LOCK}, 0)")
                assert (await cursor.fetchone())[0] == 1
            await broker.publish("alice", events(2))
            killed = await kill_waiting(
                "SELECT GET_LOCK(CONCAT('botserver_broker_table:'", config["db"]
            )
            assert killed == 1
            assert await broker.flush(timeout=paced(15, below=60))
            rows = await stored_rows(broker)
        finally:
            await broker.close()
            holder.close()
    assert [row["sender_id"] for row in rows] == ["alice", "alice"]
    said = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert not [line for line in said if "held" in line], said
    assert [line for line in said if "table set-up lock" in line] == [
        f"SQL event broker: waiting for the table set-up lock of database '{config['db']}' "
        "ended in an error (GET_LOCK answered NULL: the statement was killed, or the server "
        "found a deadlock or ran out of memory); setting the table up without it"
    ]


async def test_a_table_name_naming_another_programs_table_is_said_and_left_alone(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """`table_name` naming a table that holds no events (another program's, a typo of one):
    before, the broker added its `event_key` column and unique index to it, then every
    delivery failed on "no such column: sender_id", logged as a database that could not be
    reached. Now the table is left as it was, and the delivery's warning says what is wrong
    with it (the events wait: a table renamed meanwhile is written to)."""
    db = tmp_path / "events.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE my_events (id INTEGER PRIMARY KEY, foo TEXT)")
    broker = SqlEventBroker(
        {
            "dialect": "sqlite",
            "db": str(db),
            "table_name": "my_events",
            "retry_delay_in_seconds": 0.1,
        }
    )
    try:
        with caplog.at_level(logging.WARNING, logger="server.brokers"):
            await broker.publish("alice", events(1))
            assert not await broker.flush(timeout=1)  # (never delivered)
    finally:
        await broker.close()
    with sqlite3.connect(db) as conn:
        columns = [row[1] for row in conn.execute("PRAGMA table_info(my_events)")]
        indexes = conn.execute("PRAGMA index_list(my_events)").fetchall()
    assert (columns, indexes) == (["id", "foo"], [])
    said = "\n".join(r.getMessage() for r in caplog.records)
    assert (
        "table 'my_events' is not an event table (its columns: id, foo; an event table has "
        "id, sender_id, data): set the SQL event broker's table_name to another" in said
    ), said


async def test_the_table_a_broker_chose_is_said_once_however_many_tries_its_set_up_took(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A broker beside a tracker store's `events` writes to `broker_events` and says so:
    once, when its table is set up. Before, every failed try of the set-up (a database user
    not yet allowed to create the table, here) said it again, and a broker retried for a
    minute said it dozens of times."""
    import asyncpg

    from tests.trackers.persistence_fixtures import unique_name

    async with postgres_database() as config:
        role = unique_name("bs_broker_nocreate")
        own = await asyncpg.connect(
            host=POSTGRES[0], port=POSTGRES[1], user="postgres", database=config["db"]
        )
        broker = SqlEventBroker({**config, "username": role, "retry_delay_in_seconds": 0.05})
        try:
            await own.execute("CREATE TABLE events (id serial PRIMARY KEY, other text)")
            await own.execute(f'CREATE ROLE "{role}" LOGIN')
            await own.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
            with caplog.at_level(logging.INFO, logger="server.brokers"):
                await broker.publish("alice", events(1))
                for _ in range(400):
                    if "delivery failed" in caplog.text:
                        break
                    await asyncio.sleep(0.05)
                assert "permission denied for schema public" in caplog.text
                await asyncio.sleep(0.5)  # more tries, 0.05 s apart and doubling
                await own.execute(f'GRANT USAGE, CREATE ON SCHEMA public TO "{role}"')
                assert await broker.flush(timeout=20)
            said = [r.getMessage() for r in caplog.records if "writing to table" in r.getMessage()]
            assert len(said) == 1, said
            assert said[0].startswith("SQL event broker: writing to table 'broker_events'")
        finally:
            await broker.close()
            await own.execute(f'DROP OWNED BY "{role}"')
            await own.execute(f'DROP ROLE IF EXISTS "{role}"')
            await own.close()


async def test_events_dropped_for_room_while_being_committed_take_no_later_event_with_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The queue is full (`max_pending`) while its oldest events are being committed: they
    are the ones dropped for room. Before, the end of their commit then popped as many later
    events from the queue, never stored, with no word of them."""
    broker = create_event_broker({"type": "sql", "dialect": "sqlite", "db": str(tmp_path / "e.db")})
    assert isinstance(broker, SqlEventBroker)
    broker._delivery._max_pending = 10
    committing, go_on = asyncio.Event(), asyncio.Event()
    insert = broker._insert

    async def slow_insert(rows: list[dict[str, Any]]) -> None:
        committing.set()
        await go_on.wait()
        await insert(rows)

    monkeypatch.setattr(broker, "_insert", slow_insert)
    said = events(15)
    try:
        await broker.publish("alice", said[:5])
        await asyncio.wait_for(committing.wait(), 10)
        await broker.publish("alice", said[5:])  # the 5 being committed dropped for room
        go_on.set()
        assert await broker.flush(timeout=10)
        stored = [row["timestamp"] for row in await stored_rows(broker)]
    finally:
        go_on.set()
        await broker.close()
    assert stored[-10:] == [float(i) for i in range(5, 15)], stored


def sqlite_broker(db: Path, **settings: Any) -> SqlEventBroker:
    broker = create_event_broker({"type": "sql", "dialect": "sqlite", "db": str(db), **settings})
    assert isinstance(broker, SqlEventBroker)
    return broker


def turn(sender_id: str, number: int) -> list[dict[str, Any]]:
    """A turn's events, their texts naming the conversation and the turn."""
    return [
        {"event": "user", "timestamp": float(number), "text": f"{sender_id} {number}"},
        {"event": "bot", "timestamp": float(number), "text": f"{sender_id} {number} reply"},
    ]


def table_rows(db: Path) -> list[tuple[int, str, dict[str, Any], str | None]]:
    """What a consumer reads from the broker's table: id, sender_id, data, event_key."""
    with closing(sqlite3.connect(db)) as conn:
        rows = conn.execute("SELECT id, sender_id, data, event_key FROM events ORDER BY id")
        return [(id_, sender, json.loads(data), key) for id_, sender, data, key in rows]


def thread_hops(monkeypatch: pytest.MonkeyPatch) -> list[None]:
    """One entry per result a thread hands back to the running event loop: per hop to a
    thread and back (`run_in_executor`'s and aiosqlite's both come back this way)."""
    loop = asyncio.get_running_loop()
    hops: list[None] = []
    hand_back = loop.call_soon_threadsafe

    def counted(*args: Any, **kwargs: Any) -> Any:
        hops.append(None)
        return hand_back(*args, **kwargs)

    monkeypatch.setattr(loop, "call_soon_threadsafe", counted)
    return hops


async def test_a_turn_waiting_for_a_sqlite_broker_costs_one_hop_to_its_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With `wait_for_delivery` each turn's events are a transaction of their own: their
    insert and commit now go to the broker's thread in one call. Through SQLAlchemy's
    asyncio layer and aiosqlite that was five hops (cursor, insert, close, commit, the
    pool's reset), and three times the CPU (docs/benchmarks.md)."""
    db = tmp_path / "events.db"
    broker = sqlite_broker(db, wait_for_delivery=True)
    try:
        await broker.publish("alice", turn("alice", 0))  # the table made, the file opened
        hops = thread_hops(monkeypatch)
        for number in range(1, 21):
            await broker.publish("alice", turn("alice", number))
        assert broker.pending == 0
        assert len(hops) == 20
        # Named in a thread dump (py-spy, faulthandler) for what it does: not the tracker
        # store's thread, whose name it had.
        names = [thread.name for thread in threading.enumerate()]
        assert any(name.startswith("sql-event-broker") for name in names), names
    finally:
        monkeypatch.undo()
        await broker.close()
    assert len(table_rows(db)) == 42


async def test_the_events_of_concurrent_turns_are_rows_in_the_order_they_were_published(
    tmp_path: Path,
) -> None:
    """Turns of 20 conversations at once, each waiting for its events to be committed: a
    consumer reading the table by id reads every event once, in the order of the publishes
    (so each conversation's in its own order), each row with its sender id, its JSON and a
    key of its own."""
    db = tmp_path / "events.db"
    broker = sqlite_broker(db, wait_for_delivery=True)
    published: list[tuple[str, str]] = []

    async def conversation(sender_id: str) -> None:
        for number in range(10):
            said = turn(sender_id, number)
            published.extend((sender_id, event["text"]) for event in said)
            await broker.publish(sender_id, said)

    try:
        await asyncio.gather(*(conversation(f"c{n}") for n in range(20)))
    finally:
        await broker.close()
    rows = table_rows(db)
    assert [(sender, data["text"]) for _, sender, data, _ in rows] == published
    assert [id_ for id_, *_ in rows] == list(range(1, 401))
    assert all(data["sender_id"] == sender for _, sender, data, _ in rows)
    keys = {key for *_, key in rows}
    assert len(keys) == 400 and None not in keys


async def test_a_locked_sqlite_file_is_told_and_its_events_go_out_once_it_is_free(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Another program holds the file's write lock past the busy timeout: the delivery's
    warning says so in SQLite's words, the turn is answered without waiting further, and
    its events wait in order for the lock to be released."""
    from server.trackers import sql_engine

    for module in (sql_engine, sql_broker):  # 10 s by default
        monkeypatch.setattr(module, "SQLITE_BUSY_TIMEOUT_MS", 100)
    db = tmp_path / "events.db"
    broker = sqlite_broker(db, wait_for_delivery=True, retry_delay_in_seconds=0.1)
    try:
        await broker.publish("alice", turn("alice", 0))
        with closing(sqlite3.connect(db, isolation_level=None)) as holder:
            holder.execute("BEGIN IMMEDIATE")
            await broker.publish("alice", turn("alice", 1))
            assert broker.pending == 2
            assert (
                "SQL event broker: delivery failed (attempt 1, 2 events queued), retrying in "
                "0.1 s: (sqlite3.OperationalError) database is locked"
            ) in caplog.text
            holder.execute("ROLLBACK")
        assert await broker.flush(timeout=10)
        assert "SQL event broker: reachable again" in caplog.text
    finally:
        await broker.close()
    texts = [data["text"] for _, _, data, _ in table_rows(db)]
    assert texts == ["alice 0", "alice 0 reply", "alice 1", "alice 1 reply"]


@pytest.mark.parametrize(
    ("disk_size", "events", "text_size"),
    [
        # Within SQLite's page cache (2 MB): the commit fails.
        ("1m", 2, 50_000),
        # Larger: its pages go to the WAL file while it is inserted, and the insert fails;
        # SQLite rolls the whole transaction back (the warning said "cannot rollback - no
        # transaction is active", the rollback that followed).
        ("16m", 120, 30_000),
    ],
)
async def test_a_full_disk_is_told_and_the_events_go_out_once_there_is_room(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, disk_size: str, events: int, text_size: int
) -> None:
    """The broker's SQLite file on a disk that fills up: the warning says "database or disk
    is full" in SQLite's words, and the events wait, in order, until there is room again;
    each is written once."""
    with small_disk(tmp_path, disk_size) as disk:
        db = disk / "events.db"
        broker = sqlite_broker(db, wait_for_delivery=True, retry_delay_in_seconds=0.1)
        try:
            await broker.publish("alice", turn("alice", 0))
            filler = fill(disk)
            large = [
                {"event": "bot", "timestamp": 1.0, "text": f"{number} " + "x" * text_size}
                for number in range(events)
            ]
            await broker.publish("alice", large)
            assert broker.pending == events
            assert "retrying in 0.1 s: (sqlite3.OperationalError) database or disk is full" in (
                caplog.text
            )
            assert "cannot rollback" not in caplog.text
            filler.unlink()
            assert await broker.flush(timeout=10)
        finally:
            await broker.close()
        texts = [data["text"].split(" ")[0] for _, _, data, _ in table_rows(db)]
    assert texts == ["alice", "alice"] + [str(number) for number in range(events)]


async def test_a_sqlite_file_locked_at_the_set_up_leaves_no_file_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Another program reads the file in a rollback journal: the broker cannot switch it to
    WAL, said as "database is locked", and tries again. Once the events are in and the
    broker closed, none of its attempts has the file open still (before: one descriptor
    each, until the process ended)."""
    from server.trackers import sql_engine

    for module in (sql_engine, sql_broker):  # 10 s by default
        monkeypatch.setattr(module, "SQLITE_BUSY_TIMEOUT_MS", 100)
    db = tmp_path / "events.db"
    broker = sqlite_broker(db, wait_for_delivery=True, retry_delay_in_seconds=0.05)
    try:
        with reading_in_a_rollback_journal(db):
            await broker.publish("alice", turn("alice", 0))
            assert broker.pending == 2
            assert "(sqlite3.OperationalError) database is locked" in caplog.text
            await asyncio.sleep(1)  # attempts after 0.05, 0.1, 0.2, 0.4 s
        assert await broker.flush(timeout=10)
    finally:
        await broker.close()
    assert open_descriptors(tmp_path) == []
    texts = [data["text"] for _, _, data, _ in table_rows(db)]
    assert texts == ["alice 0", "alice 0 reply"]
