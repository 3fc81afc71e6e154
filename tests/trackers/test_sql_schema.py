"""The events table's indexes on every dialect: what a new table gets, what an older
botserver or Rasa database is brought to, and that the session lookups seek them."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import sqlite3
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import inspect, text
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine

from server.dialogue.messages import MAX_TEXT_CHARS
from server.trackers.factory import create_tracker_store
from server.trackers.sql_engine import async_url
from server.trackers.sql_schema import (
    MYSQL_SHARED_MIGRATION_LOCK,
    SESSION_ACTION_WHERE,
    SESSION_START_WHERE,
    SESSION_STARTED_WHERE,
    mysql_migration_lock,
)
from server.trackers.sql_store import SqlTrackerStore
from server.trackers.sqlite_database import SqliteDatabase
from tests.trackers.test_sql_tracker_store import SESSION_SHAPES, sql_config
from tests.trackers.test_tracker_stores import session_start, user

PARTIAL = {"ix_events_session_start_action", "ix_events_session_started"}
FULL = "ix_events_session_start"

# The tables as botserver made them before revision 0002 (rows of each dialect's id type).
_OLD_ID = {
    "sqlite": "id INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT",
    "postgresql": "id SERIAL PRIMARY KEY",
    "mysql": "id INTEGER NOT NULL AUTO_INCREMENT PRIMARY KEY",
}
_OLD_TYPES = {
    "sqlite": ("FLOAT", "TEXT"),
    "postgresql": ("FLOAT", "TEXT"),
    "mysql": ("DOUBLE", "LONGTEXT"),
}
# Rasa's: a plain integer key, FLOAT timestamps, TEXT data.
_RASA_ID = {
    "sqlite": "id INTEGER NOT NULL PRIMARY KEY",
    "postgresql": "id SERIAL PRIMARY KEY",
    "mysql": "id INTEGER NOT NULL AUTO_INCREMENT PRIMARY KEY",
}


@contextlib.asynccontextmanager
async def connect(config: dict[str, Any]) -> AsyncIterator[AsyncConnection]:
    engine = create_async_engine(async_url(config, default_db="rasa.db"))
    try:
        async with engine.begin() as conn:
            yield conn
    finally:
        await engine.dispose()


async def indexes(config: dict[str, Any]) -> set[str | None]:
    """The names of the events table's indexes (None for an unnamed one)."""
    async with connect(config) as conn:
        found = await conn.run_sync(lambda sync: inspect(sync).get_indexes("events"))
    return {index["name"] for index in found}


async def create_old_table(config: dict[str, Any], made_by: str) -> None:
    """The events table of an earlier botserver (revision 0001) or of Rasa, with every
    shape's rows, as the store then wrote them."""
    async with connect(config) as conn:
        dialect = conn.dialect.name
        timestamp, data = _OLD_TYPES[dialect] if made_by == "botserver" else ("FLOAT", "TEXT")
        key = (_OLD_ID if made_by == "botserver" else _RASA_ID)[dialect]
        statements = [
            f"CREATE TABLE events ({key}, sender_id VARCHAR(255) NOT NULL,"
            f" type_name VARCHAR(255) NOT NULL, timestamp {timestamp},"
            f" intent_name VARCHAR(255), action_name VARCHAR(255), data {data})",
            "CREATE INDEX ix_events_sender_id ON events (sender_id)",
        ]
        if made_by == "botserver":
            statements += [
                "CREATE INDEX ix_events_sender_id_id ON events (sender_id, id)",
                f"CREATE INDEX {FULL} ON events (sender_id, type_name, action_name, id)",
                "CREATE TABLE botserver_alembic_version (version_num VARCHAR(32) NOT NULL"
                " PRIMARY KEY)",
                "INSERT INTO botserver_alembic_version VALUES ('0001')",
            ]
        for statement in statements:
            await conn.execute(text(statement))
        for sender_id, (events, _) in SESSION_SHAPES.items():
            for event in events:
                await conn.execute(
                    text(
                        "INSERT INTO events (sender_id, type_name, timestamp, intent_name,"
                        " action_name, data) VALUES (:s, :t, :ts, NULL, :a, :d)"
                    ),
                    {
                        "s": sender_id,
                        "t": event["event"],
                        "ts": event["timestamp"],
                        "a": event.get("name"),
                        "d": json.dumps(event),
                    },
                )


async def create_schema(config: dict[str, Any]) -> None:
    store = create_tracker_store(config)
    try:
        await store.ping()  # migrates
    finally:
        await store.close()


async def load_every_shape(config: dict[str, Any]) -> None:
    store = create_tracker_store(config)
    try:
        for name, (events, start) in SESSION_SHAPES.items():
            assert await store.load(name) == events[start:], name
    finally:
        await store.close()


@pytest.mark.parametrize("kind", ["sqlite", "postgres", "mariadb"])
async def test_a_new_table_indexes_each_row_once_and_session_starts_apart(
    kind: str, tmp_path: Path
) -> None:
    async with sql_config(kind, tmp_path) as config:
        await create_schema(config)
        found = await indexes(config)

    # No ix_events_sender_id: ix_events_sender_id_id begins with its column.
    if kind == "mariadb":  # no partial indexes: every row is in the session index
        assert found == {"ix_events_sender_id_id", FULL}
    elif kind == "sqlite":
        assert found == {"ix_events_sender_id_id"}
    else:
        assert found == {"ix_events_sender_id_id", *PARTIAL}


@pytest.mark.parametrize("kind", ["sqlite", "postgres", "mariadb"])
async def test_an_earlier_botserver_table_is_migrated_and_keeps_its_sessions(
    kind: str, tmp_path: Path
) -> None:
    async with sql_config(kind, tmp_path) as config:
        await create_old_table(config, made_by="botserver")

        await load_every_shape(config)
        found = await indexes(config)

    if kind == "sqlite":
        assert found == {"ix_events_sender_id_id"}
    elif kind == "postgres":  # its columns are Rasa's: the Rasa-named index stays
        assert found == {"ix_events_sender_id", "ix_events_sender_id_id", *PARTIAL}
    else:
        assert found == {"ix_events_sender_id_id", FULL}


async def every_row(config: dict[str, Any]) -> list[Any]:
    async with connect(config) as conn:
        return list((await conn.execute(text("SELECT * FROM events ORDER BY id"))).fetchall())


async def append_later(config: dict[str, Any]) -> None:
    """A new conversation's append, and its load."""
    store = create_tracker_store(config)
    try:
        await store.append("later", [user("new", 10.0)])
        assert await store.load("later") == [user("new", 10.0)]
    finally:
        await store.close()


@pytest.mark.parametrize("made_by", ["botserver", "rasa"])
async def test_an_sqlite_table_loses_its_session_start_indexes_and_keeps_every_row(
    made_by: str, tmp_path: Path
) -> None:
    """A file an earlier botserver served (revision 0004: two partial session-start indexes,
    AUTOINCREMENT) or Rasa 3.6 made: no index of session starts is left, nor two indexes of
    the same rows, nor AUTOINCREMENT, and every row stays as it was, id included; sessions
    load as before, and new rows come after."""
    config = {"type": "sql", "dialect": "sqlite", "db": str(tmp_path / "earlier.db")}
    await create_old_table(config, made_by=made_by)
    if made_by == "botserver":
        # As that botserver left it: revision 0004, with the two indexes 0005 drops.
        await create_schema(config)
        async with connect(config) as conn:
            for name, where in (
                ("ix_events_session_start_action", SESSION_ACTION_WHERE),
                ("ix_events_session_started", SESSION_STARTED_WHERE),
            ):
                await conn.execute(
                    text(
                        f"CREATE INDEX IF NOT EXISTS {name} ON events (sender_id, id) WHERE {where}"
                    )
                )
            await conn.execute(text("UPDATE botserver_alembic_version SET version_num = '0004'"))
    before = await every_row(config)

    await load_every_shape(config)

    # One index of a conversation's rows: ours, or Rasa's where the table has it.
    assert await indexes(config) == {
        "ix_events_sender_id" if made_by == "rasa" else "ix_events_sender_id_id"
    }
    assert await every_row(config) == before
    async with connect(config) as conn:
        table = await conn.execute(text("SELECT sql FROM sqlite_master WHERE name = 'events'"))
        autoincrement = "AUTOINCREMENT" in str(table.scalar()).upper()
    assert not autoincrement  # revision 0006, in place (the rows above are as they were)
    await append_later(config)
    new_id = (await every_row(config))[-1][0]
    assert new_id > max(row[0] for row in before)


async def test_an_earlier_botserver_sqlite_table_loses_autoincrement_without_a_rebuild(
    tmp_path: Path,
) -> None:
    """Revision 0006: a table an earlier botserver made stops writing its sequence row at
    every append (9.3k instructions each), in place: no row is copied, whatever the file's
    size; every row and id stays, the file stays sound, and a process that read the old
    definition (a server not yet restarted) appends under the new one."""
    db = tmp_path / "earlier.db"
    config = {"type": "sql", "dialect": "sqlite", "db": str(db)}
    await create_old_table(config, made_by="botserver")
    async with connect(config) as conn:  # a file of some size: a rebuild would double it
        for n in range(2000):
            await conn.execute(
                text("INSERT INTO events (sender_id, type_name, data) VALUES (:s, 'bot', :d)"),
                {"s": f"bulk{n % 50}", "d": json.dumps({"event": "bot", "text": "x" * 200})},
            )
    before = await every_row(config)
    with contextlib.closing(sqlite3.connect(db, isolation_level=None)) as other:
        other.execute("SELECT count(*) FROM events").fetchone()  # its schema read now
        (pages,) = other.execute("PRAGMA page_count").fetchone()
        assert other.execute("SELECT name FROM sqlite_sequence").fetchall() == [("events",)]

        await append_later(config)
        other.execute(
            "INSERT INTO events (sender_id, type_name, data) VALUES ('other', 'bot', '{}')"
        )

        (sql,) = other.execute("SELECT sql FROM sqlite_master WHERE name = 'events'").fetchone()
        assert "AUTOINCREMENT" not in sql.upper()
        assert "PRIMARY KEY" in sql.upper()
        # Nobody writes the sequence row any more: not the store, not the other process.
        assert other.execute("SELECT name FROM sqlite_sequence").fetchall() == []
        assert other.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        (pages_after,) = other.execute("PRAGMA page_count").fetchone()
        assert pages_after < pages + 10  # the rows were not copied
    after = await every_row(config)
    assert after[: len(before)] == before
    assert [row[1] for row in after[len(before) :]] == ["later", "other"]
    assert [row[0] for row in after[len(before) :]] == [before[-1][0] + 1, before[-1][0] + 2]
    await load_every_shape(config)


@pytest.mark.parametrize("kind", ["sqlite", "postgres", "mariadb"])
async def test_a_rasa_table_keeps_rasas_index_and_gets_ours(kind: str, tmp_path: Path) -> None:
    async with sql_config(kind, tmp_path) as config:
        await create_old_table(config, made_by="rasa")

        await load_every_shape(config)
        found = await indexes(config)

    if kind == "sqlite":  # Rasa's serves as ours: SQLite ends every entry with the row id
        assert found == {"ix_events_sender_id"}
    else:
        ours = {FULL} if kind == "mariadb" else PARTIAL
        assert found == {"ix_events_sender_id", "ix_events_sender_id_id", *ours}


@pytest.mark.parametrize(
    ("kind", "where", "index"),
    [
        ("postgres", SESSION_ACTION_WHERE, "ix_events_session_start_action"),
        ("postgres", SESSION_STARTED_WHERE, "ix_events_session_started"),
    ],
)
async def test_the_last_session_start_is_found_in_its_partial_index(
    kind: str, where: str, index: str, tmp_path: Path
) -> None:
    async with sql_config(kind, tmp_path) as config:
        await create_schema(config)
        async with connect(config) as conn:
            query = f"SELECT max(id) FROM events WHERE sender_id = 'alice' AND {where}"
            if kind == "sqlite":
                plan = (await conn.execute(text(f"EXPLAIN QUERY PLAN {query}"))).fetchall()
            else:  # an empty table: make the planner show whether it could use the index
                await conn.execute(text("SET LOCAL enable_seqscan = off"))
                plan = (await conn.execute(text(f"EXPLAIN {query}"))).fetchall()
    assert index in " ".join(str(row) for row in plan)


@pytest.mark.parametrize("made_by", ["botserver", "rasa"])
async def test_sqlite_finds_the_last_session_start_walking_back_the_conversations_rows(
    made_by: str, tmp_path: Path
) -> None:
    """No index of session starts on SQLite: the query walks the conversation's rows back
    from the last (ix_events_sender_id_id, or Rasa's ix_events_sender_id), with no sort."""
    config = {"type": "sql", "dialect": "sqlite", "db": str(tmp_path / "plan.db")}
    if made_by == "rasa":
        await create_old_table(config, made_by="rasa")
    await create_schema(config)
    query = (
        f"SELECT id, type_name FROM events WHERE sender_id = 'alice' AND {SESSION_START_WHERE}"
        " ORDER BY id DESC LIMIT 1"
    )
    async with connect(config) as conn:
        plan = " ".join(
            str(row) for row in (await conn.execute(text(f"EXPLAIN QUERY PLAN {query}")))
        )
    assert "USING INDEX ix_events_sender_id" in plan
    assert "(sender_id=?)" in plan
    assert "TEMP B-TREE" not in plan


async def test_an_sqlite_cold_load_walks_back_no_further_than_its_session(
    tmp_path: Path,
) -> None:
    """A conversation's earlier sessions cost a load that is not cached nothing: the walk back
    to the last session start stops there. Counted in SQLite's virtual machine steps (a
    progress handler on the store's connection): 4,000 earlier events as 10."""
    store = create_tracker_store({"type": "sql", "dialect": "sqlite", "db": str(tmp_path / "l.db")})
    assert isinstance(store, SqlTrackerStore) and isinstance(store._db, SqliteDatabase)
    database = store._db
    current = [*session_start(10_000.0), user("now", 10_001.0)]
    steps: dict[str, int] = {}
    try:
        for sender, earlier in (("short", 10), ("long", 4000)):
            history = session_start(0.0) + [user(f"m{i}", 1.0 + i) for i in range(earlier)]
            await store.append(sender, history)
            await store.append(sender, current)
        for sender in ("short", "long"):
            counted = [0]

            def count(counted: list[int] = counted) -> int:
                counted[0] += 1
                return 0

            await database.run(lambda conn: conn.set_progress_handler(count, 1))
            rows = await database.session_rows(sender)
            await database.run(lambda conn: conn.set_progress_handler(None, 1))
            assert [json.loads(data) for _, data in rows] == current
            steps[sender] = counted[0]
    finally:
        await store.close()
    assert steps["long"] < 2 * steps["short"], steps


async def test_a_rasa_table_in_latin1_on_mariadb_holds_any_text_and_exact_ids(
    tmp_path: Path,
) -> None:
    """Rasa creates its table in the database's character set, latin1 on an older MySQL.
    Before, an emoji failed the append, and "Alice" and "alice" shared one conversation."""
    async with sql_config("mariadb", tmp_path) as config:
        async with connect(config) as conn:
            await conn.execute(text("ALTER DATABASE CHARACTER SET latin1"))
        await create_old_table(config, made_by="rasa")
        await load_every_shape(config)  # the rows Rasa wrote are still there
        store = create_tracker_store(config)
        try:
            emoji = [{"event": "user", "timestamp": 1.0, "text": "hi 😀", "parse_data": {}}]
            await store.append("Alice", emoji)
            assert await store.load("Alice") == emoji
            assert await store.load("alice") is None
            assert await store.load("Alice ") is None
        finally:
            await store.close()


async def test_a_rasa_table_on_mariadb_holds_the_longest_message_the_server_takes(
    tmp_path: Path,
) -> None:
    """Rasa's `data TEXT` holds 65,535 bytes: a message of 33,000 characters (stored twice,
    as `text` and `parse_data.text`) or 8,200 emoji was refused with a 400."""
    async with sql_config("mariadb", tmp_path) as config:
        await create_old_table(config, made_by="rasa")
        store, reader = create_tracker_store(config), create_tracker_store(config)
        try:
            for sender_id, text_ in (("ascii", "a" * MAX_TEXT_CHARS), ("emoji", "😀" * 99_990)):
                event = {
                    "event": "user",
                    "timestamp": 1.0,
                    "text": text_,
                    "parse_data": {"text": text_, "intent": {"name": "greet"}},
                }
                await store.append(sender_id, [event])
                assert await reader.load_all(sender_id) == [event]
        finally:
            await store.close()
            await reader.close()
        await load_every_shape(config)


@pytest.fixture
def shared_mysql_lock_name_alone() -> Iterator[None]:
    """The test holds MySQL's server-wide migration lock name (`botserver_migrations`), or
    needs it free within a 1 s wait: one such test at a time across xdist's workers. Before,
    one holding it failed another's wait (`another session held the schema migration lock
    ('botserver_migrations') for 1 s`) when both ran at once."""
    path = Path(tempfile.gettempdir()) / "botserver-tests-mysql-shared-migration-lock"
    with path.open("a") as file:
        fcntl.flock(file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(file, fcntl.LOCK_UN)


@pytest.mark.usefixtures("shared_mysql_lock_name_alone")
async def test_a_mysql_migration_that_cannot_get_the_lock_fails_instead_of_running(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import aiomysql

    from server.errors import StoreUnavailable
    from server.trackers import sql_schema
    from tests.trackers.persistence_fixtures import MARIADB

    monkeypatch.setattr(sql_schema, "MYSQL_MIGRATION_LOCK_SECONDS", 1)
    async with sql_config("mariadb", tmp_path) as config:
        holder = await aiomysql.connect(host=MARIADB[0], port=MARIADB[1], user="root")
        store = create_tracker_store(config)
        try:
            async with holder.cursor() as cursor:
                # An earlier version migrating: its one lock name, still taken for a new
                # database.
                await cursor.execute("SELECT GET_LOCK('botserver_migrations', 30)")
                assert (await cursor.fetchone()) == (1,)
                # Before: after the wait, the migration ran without the lock.
                held = (
                    r"another session held the schema migration lock "
                    r"\('botserver_migrations'\) for 1 s"
                )
                with pytest.raises(StoreUnavailable, match=held):
                    await store.ping()
                await cursor.execute("SELECT RELEASE_LOCK('botserver_migrations')")
            await store.ping()  # the next request migrates
            await store.append("s", [{"event": "user", "timestamp": 1.0, "text": "hi"}])
            assert [e["text"] for e in await store.load("s") or []] == ["hi"]
        finally:
            holder.close()
            await store.close()


async def test_a_mysql_migration_lock_wait_ended_by_an_error_says_so() -> None:
    """GET_LOCK answers NULL for an error (the statement killed, a deadlock found): before,
    that was told as "another process held the schema migration lock for 60 s", sending
    whoever read it after a migration that was not there."""
    import aiomysql

    from server.errors import StoreUnavailable
    from tests.trackers.persistence_fixtures import MARIADB, kill_waiting, mariadb_database

    async with mariadb_database() as config:
        own = mysql_migration_lock(config["db"])
        holder = await aiomysql.connect(host=MARIADB[0], port=MARIADB[1], user="root")
        store = create_tracker_store(config)
        try:
            async with holder.cursor() as cursor:
                await cursor.execute("SELECT GET_LOCK(%s, 0)", (own,))
                assert (await cursor.fetchone()) == (1,)
                ping = asyncio.ensure_future(store.ping())
                killed = await kill_waiting(f"SELECT GET_LOCK('{own}'", config["db"])
                with pytest.raises(StoreUnavailable) as raised:
                    await ping
                assert killed == 1
                message = str(raised.value)
                assert "held" not in message, message
                assert f"waiting for the schema migration lock ('{own}')" in message, message
                assert "ended in an error" in message, message
                await cursor.execute("SELECT RELEASE_LOCK(%s)", (own,))
            await store.ping()  # the next request migrates
        finally:
            holder.close()
            await store.close()


@pytest.mark.usefixtures("shared_mysql_lock_name_alone")
async def test_a_mysql_migration_held_in_one_database_holds_up_no_other_on_the_server(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """MySQL's named locks are the server's. Before, every database on it shared one
    migration lock: a migration left mid-way in database A (its client gone silent, until
    the server ends its session) made every start in database B wait 60 s, then answer 503.
    Now each database has its own; the same database is still one migration at a time."""
    import aiomysql

    from server.errors import StoreUnavailable
    from server.trackers import sql_schema
    from tests.trackers.persistence_fixtures import MARIADB, mariadb_database

    monkeypatch.setattr(sql_schema, "MYSQL_MIGRATION_LOCK_SECONDS", 1)
    async with mariadb_database() as other, mariadb_database() as config:
        first = create_tracker_store(config)  # B: an existing deployment, at the latest revision
        await first.ping()
        await first.close()
        holder = await aiomysql.connect(host=MARIADB[0], port=MARIADB[1], user="root")
        try:
            async with holder.cursor() as cursor:
                # What a migration of the new database A holds while under way.
                for name in (mysql_migration_lock(other["db"]), MYSQL_SHARED_MIGRATION_LOCK):
                    await cursor.execute("SELECT GET_LOCK(%s, 30)", (name,))
                    assert (await cursor.fetchone()) == (1,)
                await a_new_start_serves(config)  # B's next start: was a 503 after the wait
                async with mariadb_database() as fresh:  # a new database still waits for it
                    waits = create_tracker_store(fresh)
                    try:
                        with pytest.raises(StoreUnavailable, match="'botserver_migrations'"):
                            await waits.ping()
                    finally:
                        await waits.close()
                await cursor.execute("SELECT RELEASE_LOCK(%s)", (MYSQL_SHARED_MIGRATION_LOCK,))
                async with mariadb_database() as fresh:  # A's own lock alone: none
                    await a_new_start_serves(fresh)
                # B's own lock, held by another migration of B: B's start waits, then 503.
                own = mysql_migration_lock(config["db"])
                await cursor.execute("SELECT GET_LOCK(%s, 30)", (own,))
                assert (await cursor.fetchone()) == (1,)
                store = create_tracker_store(config)
                try:
                    with pytest.raises(StoreUnavailable, match=f"'{own}'"):
                        await store.ping()
                    await cursor.execute("SELECT RELEASE_LOCK(%s)", (own,))
                    await store.ping()  # the next request migrates
                finally:
                    await store.close()
        finally:
            holder.close()


# An earlier version's process: one lock name, the server's, for every database. It takes
# it, says so, and migrates once told to (on the same session: MySQL's named locks nest).
_EARLIER_VERSION = """
import asyncio, json, sys
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from server.trackers import sql_schema
from server.trackers.sql_engine import async_url

sql_schema.mysql_migration_lock = lambda database: sql_schema.MYSQL_SHARED_MIGRATION_LOCK

async def main() -> None:
    engine = create_async_engine(async_url(json.loads(sys.argv[1]), default_db="rasa.db"))
    try:
        async with engine.begin() as conn:
            await conn.execute(text("SELECT GET_LOCK('botserver_migrations', 30)"))
            print("migrating", flush=True)
            sys.stdin.readline()
            await conn.run_sync(sql_schema._upgrade)
    finally:
        await engine.dispose()

asyncio.run(main())
"""


@pytest.mark.usefixtures("shared_mysql_lock_name_alone")
async def test_a_mysql_migration_behind_an_earlier_versions_goes_on_from_where_it_ended() -> None:
    """A rolling deploy on a database below the earlier version's latest revision: the
    earlier version migrates, this one reads the old revision under its own lock, waits for
    the shared one, then must see the revision the earlier one left. Before, it read it from
    the snapshot of its first read (InnoDB's repeatable read) and ran the earlier one's
    revisions again: "Online migration expected to match one row", an error for the start."""
    import aiomysql
    from alembic import command
    from alembic.config import Config

    from server.trackers.sql_schema import MIGRATIONS_DIR
    from tests.trackers.persistence_fixtures import MARIADB, mariadb_database

    def upgrade_to_0003(sync_connection: Any) -> None:
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS_DIR))
        config.attributes["connection"] = sync_connection
        command.upgrade(config, "0003")

    async with mariadb_database() as config:
        engine = create_async_engine(async_url(config, default_db="rasa.db"))
        try:
            async with engine.begin() as conn:
                await conn.run_sync(upgrade_to_0003)
        finally:
            await engine.dispose()
        earlier = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            _EARLIER_VERSION,
            json.dumps(config),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        admin = await aiomysql.connect(host=MARIADB[0], port=MARIADB[1], user="root")
        store = create_tracker_store(config)
        try:
            assert earlier.stdout is not None and earlier.stdin is not None
            assert await asyncio.wait_for(earlier.stdout.readline(), 60) == b"migrating\n"
            first_use = asyncio.create_task(store.ping())
            # Until this version's migration waits for the shared name (its own taken, the
            # revision read).
            own = mysql_migration_lock(config["db"])
            deadline = time.monotonic() + 30
            while True:
                async with admin.cursor() as cursor:
                    await cursor.execute(
                        "SELECT COUNT(*) FROM information_schema.PROCESSLIST"
                        " WHERE ID = IS_USED_LOCK(%s) AND STATE = 'User lock'",
                        (own,),
                    )
                    (waiting,) = await cursor.fetchone()
                if waiting or first_use.done() or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.05)
            assert waiting, "this version's migration never waited for the shared lock"
            earlier.stdin.write(b"\n")
            _, err = await earlier.communicate()
            assert earlier.returncode == 0, err.decode()[-800:]
            await first_use  # before: alembic's CommandError
            await store.append("s", [user("hi", 1.0)])
            assert [e["text"] for e in await store.load("s") or []] == ["hi"]
        finally:
            if earlier.returncode is None:
                earlier.kill()
                await earlier.wait()
            admin.close()
            await store.close()


def test_each_database_has_a_mysql_migration_lock_within_64_characters() -> None:
    longest = "d" * 64
    names = {mysql_migration_lock(db) for db in ("bots", "bots2", longest, longest[:-1] + "e")}
    assert len(names) == 4  # alike in their first 30 characters: still two locks
    assert max(len(name) for name in names) <= 64  # MySQL refuses a longer name
    assert mysql_migration_lock("Bots") == mysql_migration_lock("bots")
    assert mysql_migration_lock("bots").startswith("botserver_migrations:bots:")


async def test_a_postgres_migration_that_cannot_get_the_lock_says_which_lock(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Another session holds the migration lock past SQL_LOCK_TIMEOUT (a migration left
    mid-way, until PostgreSQL ends it). Before, the request answered `canceling statement
    due to lock timeout`, after three attempts (30 s by default)."""
    import asyncpg

    from server.errors import StoreUnavailable
    from tests.trackers.persistence_fixtures import POSTGRES, postgres_database

    monkeypatch.setenv("SQL_LOCK_TIMEOUT", "1")
    async with postgres_database() as config:
        holder = await asyncpg.connect(
            host=POSTGRES[0], port=POSTGRES[1], user="postgres", database=config["db"]
        )
        store = create_tracker_store(config)
        try:
            async with holder.transaction():
                await holder.execute("SELECT pg_advisory_xact_lock(7314206)")
                with pytest.raises(StoreUnavailable) as refused:
                    await store.ping()
            assert refused.value.reason.startswith(
                "another session held the schema migration lock (pg_advisory_xact_lock"
                "(7314206)) for 1 s (SQL_LOCK_TIMEOUT)"
            ), refused.value
            assert str(refused.value).startswith("The tracker store (postgresql at ")
            await store.ping()  # the next request migrates
        finally:
            await holder.close()
            await store.close()


# A serving process: opens the store at the agreed moment, then lists its conversations.
# With a pause, it waits that long after alembic has read the schema's revision (the
# moment another process's migration can slip in).
_OPEN_AT = """
import asyncio, json, sys, time
from alembic.runtime.migration import MigrationContext
from server.trackers.factory import create_tracker_store

pause = float(sys.argv[3])
read_heads = MigrationContext.get_current_heads

def slow_heads(self):
    heads = read_heads(self)
    time.sleep(pause)
    return heads

MigrationContext.get_current_heads = slow_heads

async def main() -> None:
    store = create_tracker_store(json.loads(sys.argv[1]))
    time.sleep(max(0.0, float(sys.argv[2]) - time.time()))
    try:
        print(len(await store.keys()))
    finally:
        await store.close()

asyncio.run(main())
"""


async def test_processes_starting_together_on_an_earlier_sqlite_table_all_serve(
    tmp_path: Path,
) -> None:
    """`botserver run --workers 2` after an upgrade: the second worker's migration starts
    after the first has read the old revision and before it has written the new one."""
    async with sql_config("sqlite", tmp_path) as config:
        await create_old_table(config, made_by="botserver")
        start_at = time.time() + 1.5  # after every process's imports
        processes = [
            await asyncio.create_subprocess_exec(
                sys.executable,
                "-c",
                _OPEN_AT,
                json.dumps(config),
                str(at),
                str(pause),
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )  # fmt: skip
            for at, pause in ((start_at, 1.0), (start_at + 0.3, 0.0))
        ]
        outputs = [await process.communicate() for process in processes]

        for process, (out, err) in zip(processes, outputs, strict=True):
            assert process.returncode == 0, err.decode()[-800:]
            assert int(out) == len(SESSION_SHAPES)
        await load_every_shape(config)


@pytest.mark.timing
async def test_a_postgres_migration_cut_short_by_a_silent_network_is_undone_by_the_server(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The database fell silent in the middle of the first-use migration, and the process
    gave it up (its stop). Before, PostgreSQL kept the half-done migration's session, idle in
    its transaction, for as long as the connection stayed open (hours through a silent
    network): its lock held every later start's migration. Now the server ends it after
    MIGRATION_IDLE_SECONDS (1 s here), undoing it, and the next start migrates."""
    import asyncpg

    from bench.tcp_proxy import SilentFrom
    from server.trackers import sql_schema
    from tests.loop_lag import paced
    from tests.trackers.persistence_fixtures import POSTGRES, postgres_database

    monkeypatch.setattr(sql_schema, "MIGRATION_IDLE_SECONDS", 1)
    async with postgres_database() as config:
        proxy = SilentFrom(POSTGRES, b"ix_events_session_start_action")  # in revision 0002
        await proxy.restore()
        cut_short = create_tracker_store({**config, "url": "127.0.0.1", "port": proxy.port})
        admin = await asyncpg.connect(host=POSTGRES[0], port=POSTGRES[1], user="postgres")
        try:
            first_use = asyncio.create_task(cut_short.ping())
            await asyncio.wait_for(proxy.triggered.wait(), 30)
            await cut_short.close()
            in_transaction = (
                "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND state LIKE "
                "'idle in transaction%'"
            )
            deadline = time.monotonic() + 1 + paced(5, below=30)
            while await admin.fetchval(in_transaction, config["db"]):
                assert time.monotonic() < deadline, "the half-done migration's session stayed"
                await asyncio.sleep(0.1)
            await a_new_start_serves(config)
            async with connect(config) as conn:
                names = await conn.run_sync(lambda c: inspect(c).get_indexes("events"))
            assert PARTIAL <= {index["name"] for index in names}
        finally:
            proxy.silent = False
            await proxy.cut()
            await admin.close()
            with contextlib.suppress(BaseException):
                await first_use


@pytest.mark.timing
@pytest.mark.parametrize("dialect", ["postgresql", "mysql"])
async def test_a_migration_on_a_database_that_falls_silent_gives_up_and_says_why(
    dialect: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The database stops answering in the middle of the first-use migration. Before, the
    request that set it up waited for as long as the network kept the connection (about 15
    minutes), and every turn behind it: only the client's timeout ended the wait. Now the
    store's silence check gives it up after SQL_SILENCE_CHECK_AFTER + SQL_SILENCE_CHECK_TIMEOUT
    (0.5 s + 0.5 s here), a 503 that says why, and the next request migrates."""
    from bench.tcp_proxy import SilentFrom
    from server.errors import StoreUnavailable
    from tests.loop_lag import paced
    from tests.trackers.persistence_fixtures import (
        MARIADB,
        POSTGRES,
        mariadb_database,
        postgres_database,
    )

    monkeypatch.setenv("SQL_SILENCE_CHECK_AFTER", "0.5")
    monkeypatch.setenv("SQL_SILENCE_CHECK_TIMEOUT", "0.5")
    # Each a statement of revision 0002.
    database, address, mid_migration = {
        "postgresql": (postgres_database, POSTGRES, b"ix_events_session_start_action"),
        "mysql": (mariadb_database, MARIADB, b"CREATE INDEX ix_events_session_start "),
    }[dialect]
    async with database() as config:
        proxy = SilentFrom(address, mid_migration)
        await proxy.restore()
        store = create_tracker_store({**config, "url": "127.0.0.1", "port": proxy.port})
        try:
            began = time.monotonic()
            with pytest.raises(StoreUnavailable) as refused:
                await asyncio.wait_for(store.ping(), 1 + paced(10, below=60))
            assert time.monotonic() - began < 1 + paced(5, below=30)
            assert "it stopped answering" in str(refused.value), refused.value
            proxy.silent = False
            proxy.trigger = b"(no longer)"
            await store.append("s", [user("hi", 1.0)])
            assert [e["text"] for e in await store.load("s") or []] == ["hi"]
        finally:
            proxy.silent = False
            await store.close()
            await proxy.cut()


@pytest.mark.timing
async def test_a_mysql_migration_cut_short_by_a_silent_network_frees_its_lock(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """MySQL's twin of the PostgreSQL test above: the migration's session lock
    ('botserver_migrations') stayed with the half-done migration's session, which the server
    keeps for wait_timeout (8 hours by default) through a silent network: every later
    start's migration waited 60 s for it, then answered 503. Now the server ends the
    session after MIGRATION_IDLE_SECONDS (1 s here), and the next start migrates."""
    import aiomysql

    from bench.tcp_proxy import SilentFrom
    from server.trackers import sql_schema
    from tests.loop_lag import paced
    from tests.trackers.persistence_fixtures import MARIADB, mariadb_database

    monkeypatch.setattr(sql_schema, "MIGRATION_IDLE_SECONDS", 1)
    async with mariadb_database() as config:
        proxy = SilentFrom(MARIADB, b"CREATE INDEX ix_events_session_start ")  # revision 0002
        await proxy.restore()
        cut_short = create_tracker_store({**config, "url": "127.0.0.1", "port": proxy.port})
        admin = await aiomysql.connect(host=MARIADB[0], port=MARIADB[1], user="root", password="")
        try:
            first_use = asyncio.create_task(cut_short.ping())
            await asyncio.wait_for(proxy.triggered.wait(), 30)
            own = mysql_migration_lock(config["db"])
            async with admin.cursor() as cursor:
                # A new database's: the shared name too, which an earlier version waits for.
                await cursor.execute(
                    "SELECT IS_USED_LOCK(%s), IS_USED_LOCK(%s)", (own, MYSQL_SHARED_MIGRATION_LOCK)
                )
                (holder, shared_holder) = await cursor.fetchone()
            assert holder is not None and holder == shared_holder
            await cut_short.close()
            deadline = time.monotonic() + 1 + paced(5, below=30)
            while True:
                async with admin.cursor() as cursor:
                    await cursor.execute("SELECT IS_USED_LOCK(%s)", (own,))
                    (holder,) = await cursor.fetchone()
                if holder is None:
                    break
                assert time.monotonic() < deadline, "the half-done migration kept its lock"
                await asyncio.sleep(0.1)
            await a_new_start_serves(config)
        finally:
            proxy.silent = False
            await proxy.cut()
            admin.close()
            with contextlib.suppress(BaseException):
                await first_use


async def test_a_mysql_migration_that_fails_before_its_revisions_frees_its_lock() -> None:
    """A start whose user may not CREATE (the version table of a `binary` database, made
    before the revision is read) failed with both migration locks still taken: every other
    process's migration of the database waited for them until that session closed."""
    import aiomysql

    from server.errors import StoreFailed
    from server.trackers.sql_schema import migrate_in_place
    from tests.trackers.persistence_fixtures import MARIADB, mariadb_database, unique_name

    async with mariadb_database() as config:
        user_name = unique_name("bs_nocreate")
        admin = await aiomysql.connect(host=MARIADB[0], port=MARIADB[1], user="root", password="")
        engine = create_async_engine(
            async_url({**config, "username": user_name, "password": "pw"}, default_db="rasa.db")
        )
        try:
            async with admin.cursor() as cursor:
                await cursor.execute(f"ALTER DATABASE `{config['db']}` CHARACTER SET binary")
                await cursor.execute(f"CREATE USER '{user_name}'@'%' IDENTIFIED BY 'pw'")
                await cursor.execute(
                    "GRANT SELECT, INSERT, UPDATE, DELETE"
                    f" ON `{config['db']}`.* TO '{user_name}'@'%'"
                )
            with pytest.raises(StoreFailed, match="CREATE command denied"):
                await migrate_in_place(engine)  # (its session kept: the pool holds it)
            async with admin.cursor() as cursor:
                # The shared name is the server's: another test's new database may hold it;
                # none of this start's sessions (its user's) may.
                await cursor.execute(
                    "SELECT IS_FREE_LOCK(%s), COALESCE(IS_USED_LOCK(%s), 0) IN (SELECT ID FROM"
                    " information_schema.PROCESSLIST WHERE USER = %s)",
                    (mysql_migration_lock(config["db"]), MYSQL_SHARED_MIGRATION_LOCK, user_name),
                )
                free, shared_held_here = await cursor.fetchone()
                assert (free, shared_held_here) == (1, 0)
        finally:
            await engine.dispose()
            async with admin.cursor() as cursor:
                await cursor.execute(f"DROP USER IF EXISTS '{user_name}'@'%'")
            admin.close()


async def a_new_start_serves(config: dict[str, Any]) -> None:
    """A new store on `config` (the next start) migrates, stores and loads."""
    restarted = create_tracker_store(config)
    try:
        await restarted.append("s", [user("hi", 1.0)])
        assert [e["text"] for e in await restarted.load("s") or []] == ["hi"]
    finally:
        await restarted.close()


async def test_an_in_memory_sqlite_store_keeps_its_conversations() -> None:
    """`db: ":memory:"`, which Rasa's SQL store takes (one database for the process's life):
    before, the schema was migrated on an engine of its own, whose in-memory database is
    another one, and every turn failed with 'no such table: events'."""
    store = create_tracker_store({"type": "sql", "dialect": "sqlite", "db": ":memory:"})
    try:
        await store.append("alice", [{"event": "action", "name": "action_listen"}])
        loaded = await store.load("alice")
        assert [event["event"] for event in loaded or []] == ["action"]
        assert await store.keys() == ["alice"]
    finally:
        await store.close()


async def test_a_stop_with_no_time_left_gives_a_migration_under_way_up_at_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The turns used the whole graceful period. Before: "Waiting up to 0 s for the schema
    migration of ...", a wait that was none."""
    path = tmp_path / "trackers.db"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # the migration waits for this write lock
    store = create_tracker_store({"type": "sql", "db": str(path)})
    assert isinstance(store, SqlTrackerStore)
    first_use = asyncio.ensure_future(store.ping())
    try:
        # The first use starts it, a few steps on; nothing marks that step but the attribute.
        while store._migration is None:  # noqa: ASYNC110
            await asyncio.sleep(0)
        with caplog.at_level("INFO", logger="server.trackers.sql_store"):
            assert not await store.setup_done(0.0)
    finally:
        holder.rollback()
        holder.close()
        await first_use
        await store.close()
    said = [r.getMessage() for r in caplog.records if r.name == "server.trackers.sql_store"]
    assert said == [
        "No time left of the graceful period for the schema migration of SQLite database "
        f"'{path}' (the tracker store): it is given up at once"
    ], said


async def test_close_during_a_migration_leaves_no_connection_behind() -> None:
    """The server stops while its first-use migration waits for another process's (the
    migration lock held elsewhere). Before, `close()` cancelled the migration and returned at
    once: its session was still connected (and would hold the lock once granted) while the
    process went on as though the store were closed; a test, a reload or `botserver export`
    in the same process found it there. Now `close()` returns once the migration's
    connection is gone."""
    import asyncpg

    from tests.trackers.persistence_fixtures import POSTGRES, postgres_database

    async with postgres_database() as config:
        holder = await asyncpg.connect(
            host=POSTGRES[0], port=POSTGRES[1], user="postgres", database=config["db"]
        )
        admin = await asyncpg.connect(
            host=POSTGRES[0], port=POSTGRES[1], user="postgres", database="test"
        )
        others = (
            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND pid <> $2"
            " AND backend_type = 'client backend'"
        )
        store = create_tracker_store(config)
        first_use = None
        try:
            await holder.execute("SELECT pg_advisory_lock(7314206)")  # the migration lock
            first_use = asyncio.create_task(store.ping())
            waiting = (
                "SELECT count(*) FROM pg_stat_activity WHERE datname = $1"
                " AND wait_event_type = 'Lock'"
            )
            deadline = time.monotonic() + 30
            while not await admin.fetchval(waiting, config["db"]):
                assert time.monotonic() < deadline, "the migration never waited for the lock"
                await asyncio.sleep(0.05)
            await store.close()
            assert await admin.fetchval(others, config["db"], holder.get_server_pid()) == 0
        finally:
            await holder.close()
            await admin.close()
            if first_use is not None:
                with contextlib.suppress(BaseException):
                    await first_use


def test_only_a_database_an_earlier_version_could_migrate_takes_the_shared_mysql_lock() -> None:
    """Versions that knew only the shared lock name knew revisions up to 0007: they migrate
    a database with none yet or below it, and refuse one past it. The bound stays 0007 as
    revisions are added (a later revision is no earlier version's to migrate): moving it on
    would make every restart at 0007 wait for other databases' new migrations again."""
    from server.trackers.sql_schema import earlier_versions_may_migrate, known_revisions

    assert earlier_versions_may_migrate(None)
    for revision in sorted(known_revisions()):
        assert earlier_versions_may_migrate(revision) == (revision < "0007"), revision
    assert not earlier_versions_may_migrate("0010")  # (compared as 4 digits)


async def test_a_postgres_user_that_may_not_create_tables_is_told_the_grant_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A database user without CREATE on the schema (PostgreSQL 15's default for all but the
    database's owner): the set-up fails at its first try, naming the user and the grant to
    give. Before, it was tried three times on the same connections, with pauses, then said
    `permission denied for schema public` alone."""
    import asyncpg

    from server.errors import StoreFailed
    from server.trackers import sql_schema
    from tests.trackers.persistence_fixtures import POSTGRES, postgres_database, unique_name

    tries = count_migration_tries(monkeypatch, sql_schema)
    async with postgres_database() as config:
        role = unique_name("bs_nocreate")
        own = await asyncpg.connect(
            host=POSTGRES[0], port=POSTGRES[1], user="postgres", database=config["db"]
        )
        store = create_tracker_store({**config, "username": role})
        try:
            await own.execute(f'CREATE ROLE "{role}" LOGIN')
            with pytest.raises(StoreFailed) as failed:
                await store.append("s", [user("hi", 1.0)])
            assert len(tries) == 1
            grant = f"GRANT USAGE, CREATE ON SCHEMA public TO {role}"
            assert str(failed.value) == (
                f"The tracker store (postgresql at {POSTGRES[0]}:{POSTGRES[1]}/{config['db']}) "
                f"cannot set up its tables: permission denied for schema public. The database "
                f"user '{role}' needs: {grant}"
            )
            await own.execute(grant)  # as told: the next request sets them up
            await store.append("s", [user("hi", 1.0)])
            assert [e["text"] for e in await store.load("s") or []] == ["hi"]
        finally:
            await store.close()
            await own.execute(f'DROP OWNED BY "{role}"')
            await own.execute(f'DROP ROLE IF EXISTS "{role}"')
            await own.close()


@pytest.mark.parametrize("quote", ["", "'"])
async def test_a_mysql_user_that_may_not_create_tables_is_told_the_grant_at_once(
    monkeypatch: pytest.MonkeyPatch, quote: str
) -> None:
    """As on PostgreSQL: `CREATE command denied` fails the set-up at its first try, naming
    the account and the privileges the set-up and the turns need (before, three tries, then
    the server's words alone). A quote in the account's name is doubled in the grant, which
    runs as given (before, the grant said `'o'x'@'%'`, a syntax error)."""
    import aiomysql

    from server.errors import StoreFailed
    from server.trackers import sql_schema
    from tests.trackers.persistence_fixtures import MARIADB, mariadb_database, unique_name

    tries = count_migration_tries(monkeypatch, sql_schema)
    async with mariadb_database() as config:
        name = unique_name(f"bs{quote}nocreate")
        quoted = name.replace("'", "''")
        admin = await aiomysql.connect(host=MARIADB[0], port=MARIADB[1], user="root", password="")
        store = create_tracker_store({**config, "username": name, "password": "pw"})
        try:
            async with admin.cursor() as cursor:
                await cursor.execute(f"CREATE USER '{quoted}'@'%' IDENTIFIED BY 'pw'")
                await cursor.execute(
                    f"GRANT SELECT, INSERT ON `{config['db']}`.* TO '{quoted}'@'%'"
                )
            with pytest.raises(StoreFailed) as failed:
                await store.append("s", [user("hi", 1.0)])
            assert len(tries) == 1
            message = str(failed.value)
            assert "cannot set up its tables: CREATE command denied to user" in message, message
            grant = (
                "GRANT SELECT, INSERT, UPDATE, DELETE, CREATE, ALTER, INDEX"
                f" ON `{config['db']}`.* TO '{quoted}'@'%'"
            )
            assert message.endswith(f". The database user '{quoted}'@'%' needs: {grant}"), message
            async with admin.cursor() as cursor:
                await cursor.execute(grant)  # as told: the next request sets them up
            await store.append("s", [user("hi", 1.0)])
            assert [e["text"] for e in await store.load("s") or []] == ["hi"]
        finally:
            await store.close()
            async with admin.cursor() as cursor:
                await cursor.execute(f"DROP USER IF EXISTS '{quoted}'@'%'")
            admin.close()


def count_migration_tries(monkeypatch: pytest.MonkeyPatch, sql_schema: Any) -> list[None]:
    """Each try of the schema's set-up, as it starts."""
    tries: list[None] = []
    upgrade = sql_schema._upgrade

    def counted(connection: Any) -> None:
        tries.append(None)
        upgrade(connection)

    monkeypatch.setattr(sql_schema, "_upgrade", counted)
    return tries


async def test_a_sqlite_file_the_server_may_not_write_fails_the_set_up_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A SQLite file the server may only read (a volume mounted read-only, a file of another
    user): the set-up fails at its first try, saying the file must be writable. Before, it
    was tried three times, with pauses, then said `attempt to write a readonly database`
    alone. (Opened read-only by its URL here: root writes any file whatever its mode.)"""
    from server.errors import StoreFailed
    from server.trackers import sql_schema

    tries = count_migration_tries(monkeypatch, sql_schema)
    path = tmp_path / "bot.db"
    sqlite3.connect(path).execute("CREATE TABLE other (a)").connection.close()
    engine = create_async_engine(f"sqlite+aiosqlite:///file:{path}?mode=ro&uri=true")
    with pytest.raises(StoreFailed) as failed:
        await sql_schema._migrate(engine, attempts=3)
    assert len(tries) == 1
    message = str(failed.value)
    assert "cannot set up its tables: attempt to write a readonly database" in message, message
    assert message.endswith(
        f". The server's user needs to write to '{path}' and its folder '{tmp_path}' "
        "(SQLite writes its journal beside the file)"
    ), message
