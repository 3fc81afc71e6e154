"""The SQL event broker: one row per event, `(id, sender_id, data)`, in Rasa's `events` table.

Rasa's broker table has the name of the tracker store's; where that database holds a tracker
store's `events` (or the `broker_events` of an earlier botserver), the broker writes to
`broker_events` instead, so both can share a database. `table_name` names it outright. An extra
nullable, unique `event_key` column (an id given to each event when it is queued) makes a
retried insert whose commit did happen write nothing twice. On a SQLite file each batch is one
hop to a thread of the broker's own (the stdlib driver, as the SQL tracker store's), its
insert and commit in one call.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from functools import lru_cache, partial
from itertools import islice
from typing import Any

from sqlalchemy import (
    Column,
    Connection,
    Index,
    Insert,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    insert,
    inspect,
    text,
)
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from server.brokers.delivery import (
    BackgroundDelivery,
    Outgoing,
    QueuedBroker,
    count_dropped,
    pop_delivered,
)
from server.brokers.delivery import waits_for_delivery as read_wait_setting
from server.brokers.event_json import rasa_text
from server.errors import InvalidConfig, first_line
from server.trackers.setup_loop import on_setup_loop
from server.trackers.silence import SilenceWatch
from server.trackers.sql_engine import (
    SQLITE_BUSY_TIMEOUT_MS,
    async_url,
    check_sqlite_folder,
    connects,
    create_engine,
    ensure_mysql_utf8mb4,
    mysql_lock_not_had,
    mysql_max_packet,
    mysql_oversize,
    sqlite_synchronous,
    unprepared_from_now,
)
from server.trackers.sql_errors import REFUSED_DATA, sql_error_kind
from server.trackers.sqlite_database import SqliteDatabase, checkpoint, write_transaction

logger = logging.getLogger(__name__)
# MySQL/MariaDB's named lock (server-wide: named after the database) held while one broker
# creates the table (see _send_pending).
_TABLE_LOCK = "CONCAT('botserver_broker_table:', LEFT(DATABASE(), 40))"
# How long a broker waits for that lock before it makes the table without it.
TABLE_LOCK_SECONDS = 10

RASA_TABLE = "events"
# Beside a tracker store's `events` in the same database (and the name before 0.x took Rasa's).
SHARED_DATABASE_TABLE = "broker_events"
_EVENT_COLUMNS = ("id", "sender_id", "data")
_BROKER_COLUMNS = set(_EVENT_COLUMNS)
# Outgoing.delivery_id, unique to one publish of one event: NULL in rows another writer
# (Rasa) made.
KEY_COLUMN = "event_key"
BATCH_SIZE = 500
# SQLite: events written between two checkpoints of the broker's file (about 2.2 WAL pages an
# event in batches of 50: some 2,200 pages, 9 MB).
SQLITE_CHECKPOINT_EVENTS = 1_000


class SqlEventBroker(QueuedBroker):
    """Writes `{"sender_id": ..., **event}` JSON rows, in order, from a background task."""

    # The `event_broker:` keys read: Rasa's SQLEventBroker arguments (the database's, as the
    # SQL tracker store's), and ours.
    SETTINGS = frozenset(
        {"dialect", "url", "host", "port", "db", "username", "password", "query"}
        | {"table_name", "retry_delay_in_seconds"}
        | QueuedBroker.SHARED_SETTINGS
    )

    def __init__(self, config: dict[str, Any]) -> None:
        self.waits_for_delivery = read_wait_setting(config)
        self.url = async_url(config, default_db="events.db")
        # Rasa's SQL broker writes to the database's default schema, whatever
        # POSTGRESQL_SCHEMA (its tracker store's) says: its consumers read there.
        self._engine = create_engine(self.url, sqlite_autocheckpoint=False, postgres_schema=False)
        self._sqlite_file = (
            str(self.url.database)
            if self.url.get_backend_name() == "sqlite"
            and self.url.database not in (None, "", ":memory:")
            else None
        )
        # A SQLite file's batches: each one hop to its own thread and back, insert and commit in
        # one call. Through SQLAlchemy's asyncio layer and aiosqlite a transaction took five
        # (cursor, insert, close, commit, the pool's reset) and three times the CPU: with
        # `wait_for_delivery` each turn is one. No commit checkpoints: the broker does, on
        # this thread, between its batches (`_written`).
        self._sqlite: SqliteDatabase | None = None
        if self._sqlite_file is not None:
            check_sqlite_folder(self._sqlite_file)
            self._sqlite = SqliteDatabase(
                self._sqlite_file,
                SQLITE_BUSY_TIMEOUT_MS,
                sqlite_synchronous(),
                autocheckpoint=False,
                thread_name="sql-event-broker",
            )
        self._events_since_checkpoint = 0
        self._table_name = str(config["table_name"]) if config.get("table_name") else None
        self.table = _broker_table(self._table_name or RASA_TABLE)
        self._table_ready = False
        self._max_packet: int | None = None  # MySQL's max_allowed_packet
        # A database that stopped answering held the delivery, with nothing in the log, until
        # the kernel gave the connection up (about 15 minutes): the tracker store's check.
        self._silence = SilenceWatch(connects(self.url))
        self._delivery = BackgroundDelivery(
            "SQL event broker",
            self._send,
            retry_delay=float(config.get("retry_delay_in_seconds", 1)),
        )

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[AsyncConnection]:
        """A transaction given up (DatabaseSilent, then retried by the delivery) when the
        database stops answering: see server.trackers.silence."""
        with self._silence():
            async with self._engine.begin() as conn:
                yield conn

    async def _send(self, pending: deque[Outgoing]) -> None:
        try:
            await self._send_pending(pending)
        except DBAPIError as exc:
            # PostgreSQL behind a pooler in transaction mode: what failed wrote nothing, and
            # goes again at once unprepared (before: after the delivery's retry delay, 1 s).
            if not await unprepared_from_now(self._engine, exc):
                raise
            await self._send_pending(pending)

    async def _set_up_table(self) -> tuple[Table, int | None]:
        """The broker's table, made if missing, and MySQL's max_allowed_packet. SQLAlchemy's
        reflection and DDL are 2-3 ms of CPU: they run on the set-up loop, on an engine of
        their own, watched for silence as the deliveries are (a database that stops
        answering gives them up, DatabaseSilent, then retried by the delivery). An in-memory
        SQLite database is the engine's own: its table is made on it, here."""
        if self.url.get_backend_name() == "sqlite" and self._sqlite_file is None:
            return await _make_table(self._engine, self._silence, self._table_name)
        return await on_setup_loop(self._set_up_table_on_own_engine)

    async def _set_up_table_on_own_engine(self) -> tuple[Table, int | None]:
        engine = create_engine(
            self.url, sqlite_autocheckpoint=False, prepared=False, postgres_schema=False
        )
        silence = SilenceWatch(connects(self.url))
        try:
            return await _make_table(engine, silence, self._table_name)
        finally:
            silence.close()
            await engine.dispose()

    async def _send_pending(self, pending: deque[Outgoing]) -> None:
        if not self._table_ready:
            self.table, self._max_packet = await self._set_up_table()
            self._table_ready = True
            if self._table_name is None and self.table.name != RASA_TABLE:
                # Said once the set-up is done: before, at each of its tries.
                logger.info(
                    "SQL event broker: writing to table '%s' (this database's 'events' is a "
                    "tracker store's, or botserver wrote '%s' before); set table_name to "
                    "choose",
                    self.table.name,
                    self.table.name,
                )
        while pending:
            batch = list(islice(pending, BATCH_SIZE))
            rows = [_row(item) for item in batch]
            if any(self._oversize(row) for row in rows):
                await self._send_one_by_one(pending, len(batch))
                continue
            try:
                await self._insert(rows)
            except DBAPIError as exc:
                if sql_error_kind(exc) is not REFUSED_DATA:
                    raise
                await self._send_one_by_one(pending, len(batch))
                continue
            pop_delivered(pending, batch)
            await self._written(len(batch))

    async def _insert(self, rows: list[dict[str, Any]]) -> None:
        """Commits `rows` in one transaction, in order."""
        if self._sqlite is None:
            async with self._transaction() as conn:
                await conn.execute(_insert_new(self.table, conn), rows)
            return
        sql = _sqlite_insert(self.table)
        try:
            await self._sqlite.run(partial(_insert_sqlite, sql, rows))
        except sqlite3.Error as error:
            # Told and judged as through SQLAlchemy: "(sqlite3.OperationalError) database is
            # locked" in the delivery's warning, a value too big dropped (REFUSED_DATA).
            raise DBAPIError.instance(sql, None, error, sqlite3.Error) from error

    async def _written(self, events: int) -> None:
        """Copies the WAL into the database file and restarts it every
        SQLITE_CHECKPOINT_EVENTS events (the first commit into the restarted WAL fsyncs its
        header: made here, not left to a tracker store's commit on the event loop when the
        two share the file). On the broker's thread; not inside one of its commits, as
        SQLite's automatic checkpoint is."""
        if self._sqlite is None:
            return
        self._events_since_checkpoint += events
        if self._events_since_checkpoint >= SQLITE_CHECKPOINT_EVENTS:
            self._events_since_checkpoint = 0
            try:
                await self._sqlite.run(checkpoint)
            except sqlite3.Error as error:  # the next one tries again; the events are in
                logger.warning(
                    "SQL event broker: checkpoint of %s failed: %s", self._sqlite_file, error
                )

    async def _send_one_by_one(self, pending: deque[Outgoing], count: int) -> None:
        """A batch the database refused for its data: each event alone, and one the database
        refuses (a value its column cannot hold, larger than it takes in a statement) is
        dropped with an error in the log, as Rasa's broker loses it, rather than retried for
        ever ahead of every later event. A connection failure still raises: the rest is
        retried."""
        for _ in range(count):
            item = pending[0]
            row = _row(item)
            refusal = self._oversize(row)
            if refusal is None:
                try:
                    await self._insert([row])
                except DBAPIError as exc:
                    if sql_error_kind(exc) is not REFUSED_DATA:
                        raise
                    refusal = first_line(exc.orig or exc)
            if refusal is not None:
                logger.error(
                    "SQL event broker: dropped a '%s' event of conversation %r: the database "
                    "refuses it: %s",
                    item.event.get("event"),
                    item.sender_id[:100],
                    refusal,
                )
                if pending and pending[0] is item:
                    count_dropped(pending)
            pop_delivered(pending, [item])

    def _oversize(self, row: dict[str, Any]) -> str | None:
        """Why MySQL would not take this row: larger than a statement may be (it would drop
        the connection, which reads as an outage however often retried)."""
        if self._max_packet is None:
            return None
        size = mysql_oversize(row["data"], self._max_packet)
        if size is None:
            return None
        return f"it takes {size:,} bytes, more than max_allowed_packet ({self._max_packet:,})"

    async def close(self) -> None:
        await self._close_delivery()
        self._silence.close()
        # The last connection to close checkpoints the WAL and removes it.
        if self._sqlite is not None:
            await self._sqlite.close()
        await self._engine.dispose()


async def _make_table(
    engine: AsyncEngine, silence: SilenceWatch, table_name: str | None
) -> tuple[Table, int | None]:
    """See SqlEventBroker._set_up_table. A MySQL broker that waited TABLE_LOCK_SECONDS for
    the table lock in vain goes on without it (its holder may be a session left behind,
    which keeps it for hours), saying so: where that races another broker's set-up (the
    table, its column or index made meanwhile), each step, which looks first, runs again.
    Before, the race's "Table ... already exists" was logged as a failed delivery of a
    database said to be unreachable, and the events waited for the delivery's retry."""
    locked = [True]
    for attempt in range(_UNLOCKED_ATTEMPTS):
        try:
            # (The lock waited for once: a look again goes without it.)
            return await _make_table_once(engine, silence, table_name, locked)
        except DBAPIError as exc:
            unreachable = exc.connection_invalidated or isinstance(exc.orig, OSError)
            if locked[0] or unreachable or attempt == _UNLOCKED_ATTEMPTS - 1:
                raise
            logger.info(
                "SQL event broker: setting up the table without the lock met another "
                "broker's set-up (%s); looking again",
                first_line(exc.orig or exc),
            )
            await asyncio.sleep(0.2 * (attempt + 1))
    raise AssertionError("unreachable")  # (the loop returns or raises)


# Set-up attempts of a broker that went on without the table lock (a race with another's).
_UNLOCKED_ATTEMPTS = 3


async def _make_table_once(
    engine: AsyncEngine, silence: SilenceWatch, table_name: str | None, locked: list[bool]
) -> tuple[Table, int | None]:
    """One attempt of `_make_table`; `locked[0]` is set False when MySQL's lock was not had
    (and, False, it is not asked for)."""
    with silence():
        async with engine.begin() as conn:
            # Brokers starting together on a new database must not both create the table:
            # the loser's CREATE failed (PostgreSQL: a duplicate key in pg_type; MySQL:
            # "table already exists"), and its events waited for the delivery's retry.
            dialect = conn.dialect.name
            if dialect == "postgresql":
                await conn.execute(text("SELECT pg_advisory_xact_lock(7314207)"))
            elif dialect == "mysql" and locked[0]:  # (DDL commits: a session lock)
                seconds = int(TABLE_LOCK_SECONDS)
                got = await conn.scalar(text(f"SELECT GET_LOCK({_TABLE_LOCK}, {seconds})"))
                if got != 1:  # 0: another session held it all along; NULL: an error
                    locked[0] = False
                    lock = f"the table set-up lock of database '{engine.url.database}'"
                    logger.warning(
                        "SQL event broker: %s; setting the table up without it",
                        mysql_lock_not_had(got, lock, seconds),
                    )
            try:
                if table_name is None:
                    table_name = await conn.run_sync(_default_table)
                table = _broker_table(table_name)
                await conn.run_sync(table.metadata.create_all)
                await conn.run_sync(_check_columns, table)
                await conn.run_sync(_add_key_column, table)
                # A table of an earlier version, in a latin1 database: one event with an
                # emoji in its sender id held up every later event.
                await conn.run_sync(ensure_mysql_utf8mb4, table.name)
                return table, await mysql_max_packet(conn) if dialect == "mysql" else None
            finally:
                if dialect == "mysql" and locked[0]:
                    with suppress(DBAPIError):
                        await conn.execute(text(f"SELECT RELEASE_LOCK({_TABLE_LOCK})"))


def _broker_table(name: str) -> Table:
    return Table(
        name,
        MetaData(),
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("sender_id", String(255), nullable=False, index=True),
        Column("data", Text().with_variant(mysql.LONGTEXT(), "mysql")),
        Column(KEY_COLUMN, String(32), nullable=True),
        Index(f"uq_{name[:40]}_{KEY_COLUMN}", KEY_COLUMN, unique=True),  # MySQL: 64 at most
        mysql_charset="utf8mb4",
    )


def _check_columns(conn: Connection, table: Table) -> None:
    """InvalidConfig when the table (there before) has none of the columns events go in:
    another program's, which is left as it is. Before, it was given the `event_key` column
    and its index, then every delivery failed on a missing column, told as an outage."""
    columns = [column["name"] for column in inspect(conn).get_columns(table.name)]
    if not _BROKER_COLUMNS <= set(columns):
        raise InvalidConfig(
            f"table '{table.name}' is not an event table (its columns: {', '.join(columns)}; "
            f"an event table has {', '.join(_EVENT_COLUMNS)}): set the SQL event broker's "
            "table_name to another"
        )


def _add_key_column(conn: Connection, table: Table) -> None:
    """A table made by Rasa or an earlier botserver gets the nullable `event_key` column and
    its unique index; its rows, and Rasa's readers and writers, are untouched. Two workers
    starting at once may race: the loser's attempt fails, and its retry finds the column."""
    columns = {column["name"] for column in inspect(conn).get_columns(table.name)}
    if KEY_COLUMN in columns:
        return
    quoted = conn.dialect.identifier_preparer.quote
    conn.execute(
        text(f"ALTER TABLE {quoted(table.name)} ADD COLUMN {quoted(KEY_COLUMN)} VARCHAR(32)")
    )
    for index in table.indexes:
        if index.unique:
            index.create(conn)
    logger.info("SQL event broker: added column '%s' to table '%s'", KEY_COLUMN, table.name)


def _insert_new(table: Table, conn: Any) -> Insert:
    """An insert that skips rows whose `event_key` is there already: a retry after a lost
    reply to COMMIT (the rows were committed) writes nothing twice."""
    return _insert_for(table, conn.dialect.name)


# Built once per table and database kind: with `wait_for_delivery: true` each turn is a
# batch of its own, and building the statement (and its cache key) again was part of it.
@lru_cache(maxsize=16)
def _insert_for(table: Table, dialect: str) -> Insert:
    if dialect == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing(index_elements=[KEY_COLUMN])
    if dialect == "sqlite":
        return sqlite.insert(table).on_conflict_do_nothing(index_elements=[KEY_COLUMN])
    if dialect == "mysql":
        statement = mysql.insert(table)
        return statement.on_duplicate_key_update({KEY_COLUMN: statement.inserted[KEY_COLUMN]})
    return insert(table)


@lru_cache(maxsize=16)
def _sqlite_insert(table: Table) -> str:
    """`_insert_for`'s SQLite statement as text, its parameters named after `_row`'s keys."""
    statement = _insert_for(table, "sqlite")
    dialect = sqlite.dialect(paramstyle="named")
    return str(statement.compile(dialect=dialect, column_keys=list(_ROW_KEYS)))


def _insert_sqlite(sql: str, rows: list[dict[str, Any]], conn: sqlite3.Connection) -> None:
    """On the broker's SQLite thread: the rows in one write transaction."""
    write_transaction(conn, lambda: conn.executemany(sql, rows))


def _default_table(conn: Connection) -> str:
    """Rasa's `events`, unless this database's `events` is a tracker store's or an earlier
    botserver wrote `broker_events` here (its consumers read that)."""
    inspector = inspect(conn)
    if inspector.has_table(RASA_TABLE):
        columns = {column["name"] for column in inspector.get_columns(RASA_TABLE)}
        if columns - {KEY_COLUMN} == _BROKER_COLUMNS:
            return RASA_TABLE
        name = SHARED_DATABASE_TABLE
    elif inspector.has_table(SHARED_DATABASE_TABLE):
        name = SHARED_DATABASE_TABLE
    else:
        return RASA_TABLE
    return name


_ROW_KEYS = ("sender_id", "data", KEY_COLUMN)


def _row(item: Outgoing) -> dict[str, Any]:
    return {
        "sender_id": item.sender_id,
        "data": rasa_text(item.body()),
        KEY_COLUMN: item.delivery_id,
    }
