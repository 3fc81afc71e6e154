"""The SQL tracker store's schema: the `events` table model and running its migrations."""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import Column, Float, Integer, MetaData, String, Table, Text, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from server.errors import StoreFailed, first_line
from server.trackers.session_start import ACTION_SESSION_START
from server.trackers.setup_loop import on_setup_loop
from server.trackers.silence import SilenceWatch
from server.trackers.sql_engine import connects, describe
from server.trackers.sql_errors import privilege_denied

MIGRATIONS_DIR = Path(__file__).parent / "migrations"

metadata = MetaData()

# Rasa's columns, so a Rasa tracker database keeps working. Only used to build statements:
# the table itself is created by the migrations.
events_table = Table(
    "events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("sender_id", String(255), nullable=False),
    Column("type_name", String(255), nullable=False),
    Column("timestamp", Float),
    Column("intent_name", String(255)),
    Column("action_name", String(255)),
    Column("data", Text),
)

# The conditions of the partial indexes that find a conversation's last session start
# (SQLite and PostgreSQL; MySQL has no partial indexes and indexes every row). A query uses
# such an index only when its WHERE repeats the condition, literals included: the session
# queries of every dialect are built from these strings.
SESSION_ACTION_WHERE = f"type_name = 'action' AND action_name = '{ACTION_SESSION_START}'"
SESSION_STARTED_WHERE = "type_name = 'session_started'"
# Either kind: SQLite finds the last one walking back through ix_events_sender_id_id, and
# keeps no index of them (revision 0005).
SESSION_START_WHERE = f"({SESSION_STARTED_WHERE} OR ({SESSION_ACTION_WHERE}))"


# How long a MySQL/MariaDB migration waits for another process's (GET_LOCK) before failing.
MYSQL_MIGRATION_LOCK_SECONDS = 60

# The one migration lock name of earlier versions. MySQL's named locks are the server's, not a
# database's: every database on the server shared it. Still taken, besides the database's own,
# by a migration of a database an earlier version could migrate too (below the revision
# below), so the two versions exclude each other there.
MYSQL_SHARED_MIGRATION_LOCK = "botserver_migrations"
# The last revision earlier versions knew: they migrate no database at it or past it.
MYSQL_SHARED_LOCK_BELOW = "0007"


def mysql_migration_lock(database: str) -> str:
    """The MySQL/MariaDB migration lock of `database`, within MySQL's 64 characters: the name,
    cut to 30, for whoever reads the server's locks, then a hash of the whole name (two long
    names alike in their first 30 characters get two locks). Lower case: on a server that
    folds database names (lower_case_table_names) `Bots` and `bots` are one database."""
    name = database.lower()
    digest = hashlib.sha256(name.encode()).hexdigest()[:12]
    return f"botserver_migrations:{name[:30]}:{digest}"


def earlier_versions_may_migrate(revision: str | None) -> bool:
    """Whether an earlier botserver could migrate a database at `revision` (None: none yet)."""
    return revision is None or revision < MYSQL_SHARED_LOCK_BELOW


# How long a migration's session may sit idle before the server ends it (PostgreSQL's in its
# transaction, and undoes it; MySQL's wait_timeout): its client stopped mid-way (a silent
# network, a process stopped without a word). Its locks held the next start's migration until
# then; a live migration is idle only between its statements, for milliseconds.
MIGRATION_IDLE_SECONDS = 60


def _upgrade(sync_connection: Any) -> None:
    if sync_connection.dialect.name == "sqlite" and _sqlite_at_head(sync_connection):
        return
    # Alembic (with Mako, Pygments and every dialect's DDL: 0.15 s of CPU) only for a
    # migration to run.
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = sync_connection
    config.attributes["mysql_lock_seconds"] = MYSQL_MIGRATION_LOCK_SECONDS
    config.attributes["idle_seconds"] = MIGRATION_IDLE_SECONDS
    command.upgrade(config, "head")


def _sqlite_at_head(sync_connection: Any) -> bool:
    """Whether a SQLite database is at the latest revision, read under the write lock the
    migration takes (BEGIN IMMEDIATE, as the migrations' env.py): another process's
    migration under way is waited for. SQLite grants that lock on a file opened read-only
    too: such a file passes here at the latest revision, as it passed Alembic with nothing
    to do, and fails in the migration when one is due."""
    sync_connection.exec_driver_sql("BEGIN IMMEDIATE")
    found = sync_connection.exec_driver_sql(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name = ?", (VERSION_TABLE,)
    ).first()
    at_head = False
    if found is not None:
        revisions = sync_connection.exec_driver_sql(f"SELECT version_num FROM {VERSION_TABLE}")
        at_head = [row[0] for row in revisions] == [max(known_revisions())]
    if not at_head:  # the migration takes the lock again, in its own transaction
        sync_connection.exec_driver_sql("ROLLBACK")
    return at_head


# Alembic keeps its context in module globals: one migration at a time in the process (all
# run on the set-up loop).
_migrating: asyncio.Lock | None = None


async def migrate(make_engine: Callable[[], AsyncEngine], attempts: int = 3) -> None:
    """Bring the schema to the latest revision (idempotent; safe from several processes).

    Runs on the set-up loop (server.trackers.setup_loop), on an engine `make_engine` makes
    there (and disposes of): Alembic's own work (reading the revision scripts, its imports,
    comparing revisions) is 10 ms of CPU with nothing to do and 35-40 ms in a fresh process,
    which held the event loop during the first turn after every restart (an async engine's
    `run_sync` runs on the loop's thread). Cancelling the caller stops the migration (its
    connection dropped: PostgreSQL and SQLite undo it)."""
    await on_setup_loop(lambda: _migrate_one_at_a_time(make_engine, attempts))


async def _migrate_one_at_a_time(make_engine: Callable[[], AsyncEngine], attempts: int) -> None:
    global _migrating
    if _migrating is None:
        _migrating = asyncio.Lock()
    async with _migrating:
        await _migrate(make_engine(), attempts)


async def migrate_in_place(engine: AsyncEngine) -> None:
    """`migrate` on `engine` itself, on the caller's loop, and kept: an in-memory SQLite
    database is its engine's own (the schema migrated on another engine was another
    database's). No network, no wait: its few ms of CPU on the loop, once."""
    await _migrate(engine, attempts=1, dispose=False)


async def _migrate(engine: AsyncEngine, attempts: int, dispose: bool = True) -> None:
    # Watched as the store's statements are: a database that stops answering mid-way gives
    # the migration up (DatabaseSilent, a 503 that says so) rather than hold the request,
    # and every turn behind it, until the network drops the connection; one only slow (an
    # index on a large table, another process's migration holding the lock) goes on.
    silence = SilenceWatch(connects(engine.url))
    try:
        for attempt in range(attempts):
            try:
                with silence():
                    async with engine.begin() as conn:
                        await conn.run_sync(_upgrade)
                return
            except DBAPIError as exc:
                if privilege_denied(exc):  # (before: tried again, as the same user)
                    raise StoreFailed(await _set_up_denied(engine, exc)) from exc
                # Another process may have created the table between our check and our CREATE.
                if attempt == attempts - 1 or exc.connection_invalidated or _is_unreachable(exc):
                    raise
                await asyncio.sleep(0.2 * (attempt + 1))
    finally:
        silence.close()
        if dispose:
            await engine.dispose()


def _is_unreachable(exc: DBAPIError) -> bool:
    return isinstance(exc.orig, OSError | ConnectionError)


# What the turns and the schema's set-up do on MySQL/MariaDB: read and write rows; create the
# tables, their indexes and the sequence (MariaDB); change a column's type.
_MYSQL_PRIVILEGES = "SELECT, INSERT, UPDATE, DELETE, CREATE, ALTER, INDEX"


async def _set_up_denied(engine: AsyncEngine, exc: DBAPIError) -> str:
    """Why the schema's set-up failed for a privilege its database user lacks: the user, as
    the database knows it, and the grant to give."""
    error = exc.orig or exc
    args = error.args
    if len(args) == 2 and isinstance(args[0], int) and isinstance(args[1], str):
        words = args[1]  # (MySQL's: its number, then its words)
    else:
        words = first_line(error)
    said = f"The tracker store ({describe(engine.url)}) cannot set up its tables: {words}"
    if engine.dialect.name == "sqlite":
        path = Path(str(engine.url.database))
        if engine.url.query.get("uri") == "true":  # (a URI: file:<path>)
            path = Path(str(path).removeprefix("file:"))
        return (
            f"{said}. The server's user needs to write to '{path}' and its folder "
            f"'{path.parent}' (SQLite writes its journal beside the file)"
        )
    try:
        async with engine.connect() as conn:
            if engine.dialect.name == "postgresql":
                row = (await conn.execute(text("SELECT current_user, current_schema()"))).one()
                role, schema = str(row[0]), row[1] or "public"
                quote = conn.dialect.identifier_preparer.quote
                owned = re.search(r"must be owner of (?:table|relation|index) (\S+)", said)
                grant = (
                    f"ALTER TABLE {owned[1]} OWNER TO {quote(role)}"
                    if owned
                    else f"GRANT USAGE, CREATE ON SCHEMA {quote(schema)} TO {quote(role)}"
                )
                return f"{said}. The database user '{role}' needs: {grant}"
            if engine.dialect.name == "mysql":
                account = str(await conn.scalar(text("SELECT CURRENT_USER()")))
                name, _, host = account.rpartition("@")
                # Quoted as MySQL reads them: the grant runs as given whatever the names.
                who = f"'{_mysql_literal(name)}'@'{_mysql_literal(host)}'"
                database = str(engine.url.database).replace("`", "``")
                grant = f"GRANT {_MYSQL_PRIVILEGES} ON `{database}`.* TO {who}"
                return f"{said}. The database user {who} needs: {grant}"
    except (DBAPIError, OSError):  # (the grant unknown: the database's words alone)
        pass
    return said


def _mysql_literal(words: str) -> str:
    """`words` inside a MySQL string literal's quotes: a quote doubled (a backslash, which
    reads differently with NO_BACKSLASH_ESCAPES, is left as it is)."""
    return words.replace("'", "''")


# The columns a read-only store reads (Rasa's table has had them from its first version).
READ_COLUMNS = ("id", "sender_id", "timestamp", "data")
VERSION_TABLE = "botserver_alembic_version"


def known_revisions() -> set[str]:
    """This botserver's schema revisions (the migrations' file names start with them)."""
    return {path.name[:4] for path in (MIGRATIONS_DIR / "versions").glob("[0-9]*.py")}


def readable_as_it_is(columns: set[str] | None, revision: str | None) -> bool:
    """Whether an `events` table with `columns` (None: no such table) at schema `revision`
    (None: botserver never migrated it, Rasa's) is read without migrating it: False when
    there is no table, which holds no conversation. A table that is not a tracker store's,
    or one a newer botserver migrated, is refused (RuntimeError) rather than read wrong."""
    if columns is None:
        return False
    missing = [name for name in READ_COLUMNS if name not in columns]
    if missing:
        raise RuntimeError(
            "the database holds an 'events' table that is not a tracker store's (no column "
            + ", ".join(missing)
            + ")"
        )
    if revision is not None and revision not in known_revisions():
        newest = max(known_revisions())
        raise RuntimeError(
            f"the tracker store's schema is at revision {revision}, which a newer botserver "
            f"made (this one knows up to {newest}): read it with that version"
        )
    return True


def inspect_events(sync_connection: Any) -> tuple[set[str] | None, str | None]:
    """The `events` table's columns (None: no such table) and the schema's revision (None:
    never migrated by botserver), through an inspector: nothing is written."""
    from sqlalchemy import inspect, text

    inspector = inspect(sync_connection)
    if not inspector.has_table("events"):
        return None, None
    columns = {column["name"] for column in inspector.get_columns("events")}
    revision = None
    if inspector.has_table(VERSION_TABLE):
        revision = sync_connection.execute(
            text(f"SELECT version_num FROM {VERSION_TABLE}")
        ).scalar()
    if isinstance(revision, bytes):  # (a MySQL database in the `binary` character set)
        revision = revision.decode("ascii", "replace")
    return columns, revision
