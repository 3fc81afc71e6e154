"""A read-only SQL tracker store (`botserver export`'s): it reads Rasa's table, or one an
older botserver migrated, as it is, and changes nothing in the database."""

from __future__ import annotations

import asyncio
import contextlib
import re
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from server.brokers import export
from server.brokers.export import select_events
from server.errors import NothingToExport, StoreFailed
from server.trackers.factory import create_tracker_store
from server.trackers.sql_engine import async_url
from tests.trackers.persistence_fixtures import mariadb_database, postgres_database
from tests.trackers.test_mariadb_rasa_sequence import RasaEvent, _RasaBase, listen, rasa_row

# Ids that differ only in case and a trailing space: Rasa's MySQL collation takes them as one.
SENDERS = ["Ana", "ana", "ana ", "bob"]


@contextlib.asynccontextmanager
async def rasas_database(
    dialect: str, tmp_path: Path, senders: list[str] = SENDERS, collation: str | None = None
) -> AsyncIterator[dict[str, Any]]:
    """A database as Rasa 3.6 left it (its table, four conversations of two events each, or
    of `senders`); on MariaDB, in the character set of `collation` where given (latin1,
    MySQL 5.7's default; binary: VARBINARY ids and BLOB data)."""
    holder: contextlib.AbstractAsyncContextManager[dict[str, Any]]
    if dialect == "sqlite":
        holder = contextlib.nullcontext(
            {"type": "sql", "dialect": "sqlite", "db": str(tmp_path / "rasa.db")}
        )
    elif dialect == "postgresql":
        holder = postgres_database()
    else:
        holder = mariadb_database()
    async with holder as config:
        engine = create_async_engine(async_url(config, default_db="rasa"))
        try:
            async with engine.begin() as conn:
                if collation:
                    charset = collation.split("_")[0]
                    await conn.exec_driver_sql(
                        f"ALTER DATABASE `{config['db']}`"
                        f" CHARACTER SET {charset} COLLATE {collation}"
                    )
                await conn.run_sync(_RasaBase.metadata.create_all)
                rows = [rasa_row(s, listen(t)) for s in senders for t in (1.0, 2.0)]
                await conn.execute(sa.insert(RasaEvent), rows)
        finally:
            await engine.dispose()
        yield config


def _schema(sync_connection: Any) -> dict[str, Any]:
    """Everything a migration could change: tables, columns and types, indexes, sequences,
    and SQLite's journal mode."""
    inspector = sa.inspect(sync_connection)
    tables = sorted(inspector.get_table_names())
    shape: dict[str, Any] = {
        table: (
            [(c["name"], str(c["type"]), c["nullable"]) for c in inspector.get_columns(table)],
            sorted(str(sorted(index.items())) for index in inspector.get_indexes(table)),
        )
        for table in tables
    }
    dialect = sync_connection.dialect.name
    if dialect == "sqlite":
        shape["journal"] = sync_connection.exec_driver_sql("PRAGMA journal_mode").scalar()
    if dialect == "mysql":
        shape["create"] = sync_connection.exec_driver_sql("SHOW CREATE TABLE events").all()
        shape["sequences"] = inspector.get_sequence_names()
    return shape


async def _schema_of(config: dict[str, Any]) -> dict[str, Any]:
    engine = create_async_engine(async_url(config, default_db="rasa"))
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(_schema)
    finally:
        await engine.dispose()


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql", "mysql"])
async def test_export_reads_rasas_table_and_changes_nothing(dialect: str, tmp_path: Path) -> None:
    """Before, the export's store migrated the schema first: it added botserver's version
    table and indexes, set SQLite's WAL mode, and on MySQL/MariaDB rebuilt the `events`
    table (collation, LONGTEXT), which took a lock on a large table for as long as it ran.
    Ids Rasa's MySQL collation takes for one are exported as the distinct ids they are."""
    async with rasas_database(dialect, tmp_path) as config:
        before = await _schema_of(config)
        store = create_tracker_store(config, create_missing=False, read_only=True)
        try:
            selection = await select_events(store)
        finally:
            await store.close()
        assert await _schema_of(config) == before
    assert "botserver_alembic_version" not in before
    assert selection.conversations == sorted(SENDERS)
    assert [item.sender_id for item in selection.selected] == [
        s for s in sorted(SENDERS) for _ in "12"
    ]


async def test_a_database_without_the_table_has_nothing_to_export(tmp_path: Path) -> None:
    """Before, the export created the table (and botserver's version table) in it."""
    sqlite3.connect(tmp_path / "empty.db").close()
    config = {"type": "sql", "dialect": "sqlite", "db": str(tmp_path / "empty.db")}
    store = create_tracker_store(config, create_missing=False, read_only=True)
    try:
        with pytest.raises(NothingToExport, match="holds no conversation"):
            await select_events(store)
    finally:
        await store.close()
    with sqlite3.connect(tmp_path / "empty.db") as db:
        assert db.execute("SELECT name FROM sqlite_master").fetchall() == []


@pytest.mark.parametrize(
    ("table", "message"),
    [
        (
            "CREATE TABLE events (id INTEGER PRIMARY KEY, name TEXT)",
            "an 'events' table that is not a tracker store's (no column sender_id, timestamp, "
            "data)",
        ),
        (
            "CREATE TABLE events (id INTEGER PRIMARY KEY, sender_id TEXT, type_name TEXT, "
            "timestamp REAL, data TEXT); CREATE TABLE botserver_alembic_version "
            "(version_num TEXT); INSERT INTO botserver_alembic_version VALUES ('0042')",
            "schema is at revision 0042, which a newer botserver made",
        ),
    ],
    ids=["another-table", "newer-revision"],
)
async def test_a_schema_it_cannot_read_is_refused_untouched(
    tmp_path: Path, table: str, message: str
) -> None:
    with sqlite3.connect(tmp_path / "other.db") as db:
        db.executescript(table)
    config = {"type": "sql", "dialect": "sqlite", "db": str(tmp_path / "other.db")}
    before = await _schema_of(config)
    store = create_tracker_store(config, create_missing=False, read_only=True)
    try:
        with pytest.raises(StoreFailed, match=re.escape(message)):
            await store.keys()
    finally:
        await store.close()
    assert await _schema_of(config) == before


async def test_export_reads_rasas_redis_layout_where_it_is() -> None:
    """Rasa keeps a conversation as one JSON string of its tracker; the server converts it
    to its list at the first read, and so did the export: the Rasa servers sharing that
    Redis then failed on it (WRONGTYPE). The export now reads the string as it is."""
    import json

    from redis.asyncio import Redis

    from tests.trackers.persistence_fixtures import (
        REDIS,
        delete_redis_keys,
        require_service,
        unique_name,
    )

    require_service("Redis", REDIS)
    prefix = unique_name("bsro").replace("_", "")
    config = {"type": "redis", "url": REDIS[0], "port": REDIS[1], "key_prefix": prefix}
    tracker = json.dumps({"sender_id": "ana", "events": [listen(1.0), listen(2.0)]})
    client = Redis(host=REDIS[0], port=REDIS[1])
    try:
        await client.set(f"{prefix}:tracker:ana", tracker)
        store = create_tracker_store(config, create_missing=False, read_only=True)
        try:
            selection = await select_events(store)
        finally:
            await store.close()
        assert await client.type(f"{prefix}:tracker:ana") == b"string"
        assert await client.get(f"{prefix}:tracker:ana") == tracker.encode()
        assert [item.stamp for item in selection.selected] == [1.0, 2.0]
    finally:
        await client.aclose()
        await delete_redis_keys(prefix, db=0)


async def test_chosen_ids_of_rasas_mysql_table_are_read_within_the_budget(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rasa's MySQL collation matches `ana` to `Ana` and `ana ` too: before, their rows came
    with `ana`'s and took the budget, and the read of `ana` went round for ever."""
    monkeypatch.setattr(export, "EXPORT_BATCH_BYTES", 1)
    async with rasas_database("mysql", tmp_path) as config:
        store = create_tracker_store(config, create_missing=False, read_only=True)
        try:
            selection = await asyncio.wait_for(select_events(store, ["ana", "bob"]), 30)
        finally:
            await store.close()
    assert [item.sender_id for item in selection.selected] == ["ana", "ana", "bob", "bob"]


async def test_skipping_one_of_rasas_mysql_ids_skips_it_alone(tmp_path: Path) -> None:
    """After an unreadable conversation, the rest of its batch is read one at a time: before,
    Rasa's MySQL collation gave `ana` the rows of `Ana` and `ana ` too (the unreadable one's
    among them), so those were skipped as well, or exported merged."""
    async with rasas_database("mysql", tmp_path) as config:
        engine = create_async_engine(async_url(config, default_db="rasa"))
        try:
            async with engine.begin() as conn:
                await conn.execute(
                    sa.text("UPDATE events SET data = 'not JSON' WHERE BINARY sender_id = 'Ana'")
                )
        finally:
            await engine.dispose()
        store = create_tracker_store(config, create_missing=False, read_only=True)
        found = export.Found()
        try:
            selected = [
                item.sender_id
                async for item in export.selected_events(store, found=found, skip_unreadable=True)
            ]
        finally:
            await store.close()
    assert found.unreadable == ["Ana"]
    assert selected == ["ana", "ana", "ana ", "ana ", "bob", "bob"]


async def _rows_read(store: Any) -> int:
    """The rows MariaDB went through (by index, by table) for the store's connection (its
    pool's one), less those the look itself went through."""
    show = (
        "SHOW SESSION STATUS WHERE Variable_name IN ('Handler_read_next', 'Handler_read_rnd_next')"
    )
    async with store._db._engine.connect() as conn:
        first = sum(int(value) for _, value in await conn.exec_driver_sql(show))
        second = sum(int(value) for _, value in await conn.exec_driver_sql(show))
    return 2 * first - second


async def test_an_export_of_mariadb_reads_each_row_once(tmp_path: Path) -> None:
    """A batch's rows came in pages of up to 4,096 (64 first), each page a query that went
    through every row of the batch again and sorted them: 100 conversations of 100 events
    took the database through 40,000 rows for 10,000 (and the listing of the ids 10,000
    more). Now the batch is read by whole conversations, a query each group the budget has
    room for: each row once."""
    async with mariadb_database() as config:
        store = create_tracker_store(config)  # (botserver's table)
        try:
            for c in range(100):
                await store.append(f"c{c:02}", [listen(float(t)) for t in range(100)])
        finally:
            await store.close()
        store = create_tracker_store(config, create_missing=False, read_only=True)
        try:
            await store.keys()  # (its connection made)
            before = await _rows_read(store)
            selection = await select_events(store)
            read = await _rows_read(store) - before
        finally:
            await store.close()
    assert len(selection.selected) == 10_000
    assert read < 22_000, f"{read} rows gone through for 10,000 (and the listing's 10,000)"


# Ids in code point order; a latin1 (cp1252) column's bytes put the last four first (0x80,
# 0x8C, 0x9A, 0x9F), and its collation takes `e` and `é`, `y` and `ÿ` for one.
LATIN1_SENDERS = ["e", "y", "z", "é", "ÿ", "Œ", "š", "Ÿ", "€"]


@pytest.mark.parametrize("batch", [1, 2, 3, 100])
async def test_a_latin1_rasa_table_exports_each_conversation_once(
    batch: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rasa's table in a latin1 database (MySQL 5.7's default), read in small batches and
    byte budgets: every conversation goes out once, whole, in the export's order."""
    monkeypatch.setattr(export, "EXPORT_BATCH", batch)
    monkeypatch.setattr(export, "EXPORT_BATCH_BYTES", 100)  # (about one conversation)
    async with rasas_database("mysql", tmp_path, LATIN1_SENDERS, "latin1_swedish_ci") as config:
        store = create_tracker_store(config, create_missing=False, read_only=True)
        try:
            selection = await select_events(store)
        finally:
            await store.close()
    assert [item.sender_id for item in selection.selected] == [
        s for s in sorted(LATIN1_SENDERS) for _ in "12"
    ]


@pytest.mark.parametrize("collation", ["latin1_swedish_ci", "latin1_general_cs"])
async def test_a_requested_id_a_latin1_table_cannot_hold_is_missing_not_a_failure(
    collation: str, tmp_path: Path
) -> None:
    """`botserver export --conversation-ids` naming an id Rasa's latin1 table cannot hold
    (`中`, an emoji: Rasa's own insert of it fails there): before, MySQL refused the whole
    query, 'Illegal mix of collations', and the export stopped (exit 1) without the others
    asked for. Now it is one the store does not hold, and the others go out."""
    async with rasas_database("mysql", tmp_path, ["é", "e", "?"], collation) as config:
        store = create_tracker_store(config, create_missing=False, read_only=True)
        try:
            selection = await select_events(store, conversation_ids=["中", "é", "😀"])
            assert await store.load_all("中") is None
        finally:
            await store.close()
    assert [item.sender_id for item in selection.selected] == ["é", "é"]
    assert selection.missing == ["中", "😀"]


# Ids a `binary` column holds as their UTF-8 bytes (as Rasa's driver sent them).
BINARY_SENDERS = ["Ana", "ana", "ana ", "é", "中", "😀"]


async def test_a_binary_rasa_table_exports_ids_as_the_text_rasa_wrote() -> None:
    """Rasa's table in a database whose character set is `binary` (VARBINARY ids, BLOB
    data): before, the listing gave the ids as bytes and the export stopped with an
    AttributeError traceback. Now they are the ids Rasa was given (its UTF-8), each once."""
    async with rasas_database("mysql", Path(), BINARY_SENDERS, "binary") as config:
        store = create_tracker_store(config, create_missing=False, read_only=True)
        try:
            everything = await select_events(store)
            asked = await select_events(store, conversation_ids=["中", "ana", "x"])
        finally:
            await store.close()
    assert [item.sender_id for item in everything.selected] == [
        s for s in sorted(BINARY_SENDERS) for _ in "12"
    ]
    assert [item.sender_id for item in asked.selected] == ["ana", "ana", "中", "中"]
    assert asked.missing == ["x"]


async def test_an_id_in_a_binary_column_that_is_not_utf8_is_named() -> None:
    """An id of bytes that are no UTF-8 (Rasa never wrote one) stops the export with a
    message naming the table and column, not a traceback."""
    async with rasas_database("mysql", Path(), ["ok"], "binary") as config:
        engine = create_async_engine(async_url(config, default_db="rasa"))
        try:
            async with engine.begin() as conn:
                await conn.exec_driver_sql(
                    "INSERT INTO events (sender_id, type_name, data) VALUES (X'E9', 'action', '{}')"
                )
        finally:
            await engine.dispose()
        store = create_tracker_store(config, create_missing=False, read_only=True)
        try:
            with pytest.raises(StoreFailed, match=r"events\.sender_id .*not UTF-8.*\\xe9"):
                await select_events(store)
        finally:
            await store.close()


async def test_a_binary_rasa_table_botserver_migrated_restarts_and_exports() -> None:
    """In a database whose character set is `binary`, the schema revision botserver records
    is bytes too: before, the store's next start failed (Alembic: "revision identifier
    b'0007' is not a string") and the export said a newer botserver made the schema."""
    async with rasas_database("mysql", Path(), BINARY_SENDERS, "binary") as config:
        for _ in "12":  # (the first start creates the revision's table, the second reads it)
            store = create_tracker_store(config, create_missing=False)
            try:
                assert sorted(await store.keys()) == sorted(BINARY_SENDERS)
            finally:
                await store.close()
        # As a botserver before this one left it: the revision's column in binary.
        engine = create_async_engine(async_url(config, default_db="rasa"))
        try:
            async with engine.begin() as conn:
                await conn.exec_driver_sql(
                    "ALTER TABLE botserver_alembic_version"
                    " MODIFY version_num VARBINARY(32) NOT NULL"
                )
        finally:
            await engine.dispose()
        store = create_tracker_store(config, create_missing=False, read_only=True)
        try:
            everything = await select_events(store)
        finally:
            await store.close()
        store = create_tracker_store(config, create_missing=False)
        try:
            assert sorted(await store.keys()) == sorted(BINARY_SENDERS)
        finally:
            await store.close()
    assert [item.sender_id for item in everything.selected] == [
        s for s in sorted(BINARY_SENDERS) for _ in "12"
    ]
