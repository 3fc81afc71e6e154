"""The PostgreSQL store behind PgBouncer in transaction mode (Debian's pgbouncer, a real one):
each transaction may run on another server backend, so named prepared statements and the
connection's temporary row type are not where the next statement goes. Rasa (psycopg2, no
server-side prepared statements) works there; so must we."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from server.trackers.factory import create_tracker_store
from server.trackers.store import TrackerStore
from tests.trackers.persistence_fixtures import POSTGRES, postgres_database, require_service

ROUNDS = 12
CONVERSATIONS = 24


def event(n: int) -> dict[str, Any]:
    return {"event": "action", "timestamp": float(n), "name": f"action_{n}"}


@pytest.fixture
def pgbouncer(tmp_path: Path) -> Iterator[int]:
    """A PgBouncer in transaction mode with two server connections per database, in front of
    the local PostgreSQL; yields its port."""
    with running_pgbouncer(tmp_path, server_connections=2) as port:
        yield port


@pytest.fixture
def pgbouncer_one_backend(tmp_path: Path) -> Iterator[int]:
    """As `pgbouncer`, with one server connection: every client's transaction runs on it."""
    with running_pgbouncer(tmp_path, server_connections=1) as port:
        yield port


@contextlib.contextmanager
def running_pgbouncer(tmp_path: Path, server_connections: int) -> Iterator[int]:
    """PgBouncer (Debian's) in transaction mode, `server_connections` per database."""
    require_service("PostgreSQL", POSTGRES)
    binary = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
    if not os.path.exists(binary):
        message = "pgbouncer is not installed (Debian: apt-get install pgbouncer)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    (tmp_path / "users.txt").write_text('"postgres" ""\n')
    config = tmp_path / "pgbouncer.ini"
    config.write_text(
        f"[databases]\n* = host={POSTGRES[0]} port={POSTGRES[1]}\n"
        f"[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\nauth_type = trust\n"
        f"auth_file = {tmp_path / 'users.txt'}\npool_mode = transaction\n"
        f"default_pool_size = {server_connections}\nunix_socket_dir =\n"
    )
    # PgBouncer refuses to run as root: it reads its files, then becomes `postgres`.
    as_user = ["-u", "postgres"] if os.geteuid() == 0 else []
    process = subprocess.Popen(
        [binary, *as_user, str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    stderr = process.stderr.read().decode() if process.stderr else ""
                    pytest.fail(f"pgbouncer did not start: {stderr}")
                time.sleep(0.05)
        yield port
    finally:
        process.terminate()
        process.wait(10)


async def test_turns_through_pgbouncer_in_transaction_mode_all_land(
    pgbouncer: int, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="server.trackers.postgres_database")
    async with postgres_database() as config:
        # Three stores stand for three workers, their connections interleaved by the pooler
        # over its two server connections.
        stores = [create_tracker_store({**config, "port": pgbouncer}) for _ in range(3)]
        try:
            for n in range(ROUNDS):
                outcomes = await asyncio.gather(
                    *(stores[c % 3].append(f"user{c}", [event(n)]) for c in range(CONVERSATIONS)),
                    return_exceptions=True,
                )
                failed = [repr(o) for o in outcomes if isinstance(o, BaseException)]
                assert not failed, f"round {n}: {failed[:3]}"
            for c in range(CONVERSATIONS):
                assert await stores[c % 3].load(f"user{c}") == [event(n) for n in range(ROUNDS)]
        finally:
            for store in stores:
                await store.close()
    said = pooler_said(caplog)
    # Once a store, and said plainly (the first line of PostgreSQL's error, not asyncpg's hint).
    assert 1 <= len(said) <= 3
    assert all("HINT" not in message for message in said)


@pytest.fixture
async def direct_store(caplog: pytest.LogCaptureFixture) -> AsyncIterator[TrackerStore]:
    """A PostgreSQL store on a direct connection (no pooler), its warnings captured."""
    caplog.set_level(logging.WARNING, logger="server.trackers.postgres_database")
    async with postgres_database() as config:
        store = create_tracker_store(config)
        try:
            yield store
        finally:
            await store.close()


async def test_a_direct_connection_keeps_its_prepared_statements(
    direct_store: TrackerStore, caplog: pytest.LogCaptureFixture
) -> None:
    await asyncio.gather(*(direct_store.append(f"user{c}", [event(0)]) for c in range(10)))
    assert await direct_store.load("user3") == [event(0)]
    assert not [r for r in caplog.records if "pooler" in r.getMessage()]


BROKER_EVENTS = 40


async def test_three_sql_brokers_through_pgbouncer_deliver_every_event_at_once(
    pgbouncer: int, caplog: pytest.LogCaptureFixture
) -> None:
    import asyncpg

    from server.brokers.sql import SqlEventBroker

    caplog.set_level(logging.WARNING)
    async with postgres_database() as config:
        # Three brokers stand for three workers sharing the pooler's two server connections.
        brokers = [
            SqlEventBroker({**config, "port": pgbouncer, "table_name": "broker_events"})
            for _ in range(3)
        ]
        try:
            for n in range(BROKER_EVENTS):
                for b, broker in enumerate(brokers):
                    await broker.publish(f"sender{b}", [event(n)])
                await asyncio.sleep(0.005)  # a few events a batch, a transaction each
            # Delivered without waiting for a retry (its back-off: 1 s, then 2 s, 4 s...).
            for broker in brokers:
                assert await broker.flush(timeout=5), broker.pending
        finally:
            for broker in brokers:
                await broker.close()
        conn = await asyncpg.connect(
            host=config["url"], port=config["port"], user="postgres", database=config["db"]
        )
        try:
            rows = await conn.fetch("SELECT data FROM broker_events ORDER BY id")
        finally:
            await conn.close()
    written = [json.loads(row["data"]) for row in rows]
    for b in range(3):
        assert [row for row in written if row["sender_id"] == f"sender{b}"] == [
            {"sender_id": f"sender{b}", **event(n)} for n in range(BROKER_EVENTS)
        ]
    assert not [r.getMessage() for r in caplog.records if "delivery failed" in r.getMessage()]
    said = [r.getMessage() for r in caplog.records if "through a pooler" in r.getMessage()]
    # Once a broker at most, and plainly. Not always at all: the table is set up on an
    # engine of its own now, and the brokers' few inserts may each find their statement on
    # the server connection that prepared it. The move to unprepared statements, forced:
    # tests/brokers/test_sql_broker.py (..._statement_is_gone_from_the_backend_...).
    assert len(said) <= 3
    assert all("HINT" not in message and "sqlalche.me" not in message for message in said)


async def test_a_worker_sets_up_the_schema_where_another_worker_left_its_statements(
    pgbouncer_one_backend: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two workers start one after the other through a pooler in transaction mode, each set-up
    # on the server connection the other one's ran on. Each worker is a process of its own,
    # and asyncpg numbers its statements per process from the same start: the second one's
    # count is set back to where the first one's began. Before, the second worker's schema
    # set-up prepared its statements under the first one's names there and failed
    # ('prepared statement "__asyncpg_stmt_3__" already exists'), its every attempt.
    first_number = asyncpg.connection._uid  # type: ignore[attr-defined]
    async with postgres_database() as config:
        for w in range(2):
            monkeypatch.setattr(asyncpg.connection, "_uid", first_number)
            store = create_tracker_store({**config, "port": pgbouncer_one_backend})
            try:
                await store.append(f"user{w}", [event(w)])
            finally:
                await store.close()
        store = create_tracker_store(config)
        try:
            assert [await store.load(f"user{w}") for w in range(2)] == [[event(0)], [event(1)]]
        finally:
            await store.close()


async def test_another_clients_statement_under_our_name_on_a_write_moves_to_unprepared(
    direct_store: TrackerStore, caplog: pytest.LogCaptureFixture
) -> None:
    # Behind a pooler in transaction mode, the backend a statement lands on may hold another
    # client's prepared statement under this connection's name, with another number of
    # parameters: PostgreSQL refuses the Bind ("bind message supplies 2 parameters, but
    # prepared statement ... requires 3", a protocol violation, SQLSTATE 08P01) before
    # anything runs. Staged here on a direct connection. Before, the append failed as if
    # the connection were lost (503).
    await direct_store.append("alice", [event(0)])
    pool = await direct_store._db._get_pool()  # type: ignore[attr-defined]
    async with pool.acquire() as conn:
        name = await conn.fetchval(
            "SELECT name FROM pg_prepared_statements WHERE statement LIKE 'WITH previous%'"
        )
        assert name is not None
        await conn.execute(
            f'DEALLOCATE "{name}"; PREPARE "{name}"(int, int, int) AS SELECT $1 + $2 + $3'
        )
    await direct_store.append("alice", [event(1)])
    assert await direct_store.load("alice") == [event(0), event(1)]
    assert pooler_said(caplog)


def pooler_said(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The store's warnings that it moved to unprepared statements."""
    return [
        r.getMessage() for r in caplog.records if "answers as through a pooler" in r.getMessage()
    ]


async def test_a_retry_after_another_call_moved_to_unprepared_uses_the_new_pool(
    direct_store: TrackerStore,
) -> None:
    # A call whose connection was lost while another call met the pooler (and moved the
    # store to a new pool, the old one closing) retries on the new pool. Before, it asked
    # the closing pool for a connection: "pool is closing", a 503.
    await direct_store.load("alice")  # the schema, and the first pool
    db = direct_store._db  # type: ignore[attr-defined]
    calls = 0

    async def lost_meanwhile(conn: asyncpg.Connection) -> int:
        nonlocal calls
        calls += 1
        if calls == 1:
            db._stop_preparing(asyncpg.exceptions.DuplicatePreparedStatementError("another"))
            raise asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed")
        return int(await conn.fetchval("SELECT 1"))

    assert await db._run(lost_meanwhile) == 1
    assert calls == 2


async def test_another_clients_statements_never_run_under_our_names(
    direct_store: TrackerStore,
) -> None:
    # Behind a pooler in transaction mode a statement this connection prepared may be sent to
    # another backend, where another asyncpg client (another worker: each process numbers its
    # statements from 1) prepared one of its own under the same name and parameter types:
    # PostgreSQL runs that one. Staged on a direct connection: our statements gone (DEALLOCATE
    # ALL, as on another backend) and a replace's DELETE under each name another client uses.
    # Before, reading the conversation deleted it.
    await direct_store.append("alice", [event(0)])
    assert await direct_store.load_all("alice") == [event(0)]
    pool = await direct_store._db._get_pool()  # type: ignore[attr-defined]
    names = range(1, asyncpg.connection._uid + 100)  # type: ignore[attr-defined]
    async with pool.acquire() as conn:
        await conn.execute(
            "DEALLOCATE ALL; "
            + "".join(
                f'PREPARE "__asyncpg_stmt_{n:x}__"(varchar) AS '
                "DELETE FROM events WHERE sender_id = $1; "
                for n in names
            )
        )
    assert await direct_store.load_all("alice") == [event(0)]
    assert await direct_store.load_all("alice") == [event(0)]


async def test_an_export_reads_its_batches_through_pgbouncer_in_transaction_mode(
    pgbouncer: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The export reads a batch through a cursor, in a read-only transaction, a fetch at a
    time within its byte budget (here about two conversations): a pooler in transaction
    mode keeps the cursor's fetches on one server connection."""
    from server.brokers import export

    monkeypatch.setattr(export, "EXPORT_BATCH_BYTES", 2 * len(json.dumps(event(0))) * ROUNDS)
    async with postgres_database() as config:
        store = create_tracker_store({**config, "port": pgbouncer})
        for c in range(10):
            await store.append(f"user{c}", [event(n) for n in range(ROUNDS)])
        await store.close()
        store = create_tracker_store({**config, "port": pgbouncer}, read_only=True)
        try:
            selection = await export.select_events(store)
        finally:
            await store.close()
    assert selection.conversations == [f"user{c}" for c in range(10)]
    assert len(selection.selected) == 10 * ROUNDS
