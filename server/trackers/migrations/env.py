"""Alembic environment: runs on the connection handed over by `server.trackers.sql_schema`."""

from __future__ import annotations

import math
import os
from typing import Any

from alembic import context
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from server.errors import StoreUnavailable
from server.trackers.sql_engine import lock_timeout_seconds, mysql_lock_not_had
from server.trackers.sql_schema import (
    MYSQL_SHARED_MIGRATION_LOCK,
    VERSION_TABLE,
    earlier_versions_may_migrate,
    mysql_migration_lock,
)


def _text_revision_column(connection: Any) -> None:
    """In a MySQL/MariaDB database whose character set is `binary` (where Rasa's table may
    be), the revision's column as text: Alembic's own would be VARBINARY, whose revision it
    reads back as bytes and refuses ("revision identifier b'0007' is not a string"), which
    stopped the store's every start after its first."""
    charset = connection.execute(
        text(
            "SELECT DEFAULT_CHARACTER_SET_NAME FROM information_schema.SCHEMATA"
            " WHERE SCHEMA_NAME = DATABASE()"
        )
    ).scalar()
    column = connection.execute(
        text(
            "SELECT CHARACTER_SET_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA ="
            " DATABASE() AND TABLE_NAME = :table AND COLUMN_NAME = 'version_num'"
        ),
        {"table": VERSION_TABLE},
    ).one_or_none()
    as_text = "VARCHAR(32) CHARACTER SET ascii COLLATE ascii_bin NOT NULL"
    if column is None and charset == "binary":  # (Alembic's table, its column as text)
        connection.execute(
            text(
                f"CREATE TABLE {VERSION_TABLE} (version_num {as_text},"
                f" CONSTRAINT {VERSION_TABLE}_pkc PRIMARY KEY (version_num))"
            )
        )
    elif column is not None and column[0] is None:  # (made by a botserver before this one)
        connection.execute(text(f"ALTER TABLE {VERSION_TABLE} MODIFY version_num {as_text}"))


connection = context.config.attributes["connection"]
lock_seconds = context.config.attributes.get("mysql_lock_seconds", 60)
idle_seconds = context.config.attributes.get("idle_seconds", 60)
context.configure(connection=connection, version_table=VERSION_TABLE)
mysql_locks: list[str] = []  # (MySQL's named locks taken, in order)


def take_mysql_lock(name: str) -> None:
    """Wait up to `lock_seconds` for MySQL's named lock `name`; StoreUnavailable (the
    locks already taken released) when another session kept it."""
    got = connection.execute(
        text("SELECT GET_LOCK(:name, :seconds)"), {"name": name, "seconds": lock_seconds}
    ).scalar()
    if got != 1:  # 0: another session held it all along; NULL: an error
        release_mysql_locks()
        # Migrating without it could create the table twice or change it under another
        # process's migration. The store is not ready; the next request tries again.
        # (An error told as a lock held sent whoever read it after a migration.)
        what = "the next request tries again"
        if got is not None:
            what = "release it or wait for that migration to end"
        why = mysql_lock_not_had(got, f"the schema migration lock ('{name}')", lock_seconds)
        raise StoreUnavailable(f"{why}; {what}")
    mysql_locks.append(name)


def release_mysql_locks() -> None:
    while mysql_locks and not connection.invalidated:
        connection.execute(text("SELECT RELEASE_LOCK(:name)"), {"name": mysql_locks.pop()})


with context.begin_transaction():
    if connection.dialect.name == "sqlite":
        # Two processes starting together on a database an older botserver made: the second
        # waits here (busy timeout) for the first's migration, then finds nothing to do.
        # Before, both read the old revision and the second failed to record the new one.
        connection.exec_driver_sql("BEGIN IMMEDIATE")
    if connection.dialect.name == "postgresql":
        # A migration whose client fell silent mid-way (the network, a process stopped
        # meanwhile) is ended by the server, undone, and its lock below released: it held
        # the next start's migration for as long as the server kept the session.
        connection.execute(
            text(f"SET LOCAL idle_in_transaction_session_timeout = {round(idle_seconds * 1000)}")
        )
        # Two processes starting together must not both create the table.
        try:
            connection.execute(text("SELECT pg_advisory_xact_lock(7314206)"))
        except DBAPIError as exc:
            if getattr(exc.orig, "sqlstate", None) != "55P03":  # lock_timeout: not another
                raise
            # Said as MySQL's, and not retried: the next request tries again.
            raise StoreUnavailable(
                f"another session held the schema migration lock (pg_advisory_xact_lock"
                f"(7314206)) for {lock_timeout_seconds():g} s (SQL_LOCK_TIMEOUT): another "
                f"process's migration, or one a process left mid-way, which PostgreSQL ends "
                f"{idle_seconds:g} s after it went quiet"
            ) from None
        if connection.execute(text("SELECT current_schema()")).scalar() is None:
            # No schema of the search path exists: say which, as Rasa does, rather than
            # PostgreSQL's "no schema has been selected to create in".
            path = connection.execute(text("SHOW search_path")).scalar()
            named = os.environ.get("POSTGRESQL_SCHEMA")
            raise RuntimeError(
                f"PostgreSQL schema '{named}' (POSTGRESQL_SCHEMA) was not found in the "
                f"database: create it (CREATE SCHEMA {named}) or unset POSTGRESQL_SCHEMA"
                if named
                else f"no schema of the search_path ({path}) exists in the database"
            )
    try:
        if connection.dialect.name == "mysql":
            # As PostgreSQL's above: a session whose client fell silent mid-way is ended by the
            # server, and its lock released (its default wait_timeout is 8 hours). The engine is
            # the migration's own, disposed of after it: the setting goes with its sessions.
            connection.execute(
                text(f"SET SESSION wait_timeout = {max(1, math.ceil(idle_seconds))}")
            )
            # Named locks are the server's: a name of the database's own, so a migration left
            # mid-way in another database on the server holds up none here.
            database = connection.execute(text("SELECT DATABASE()")).scalar() or ""
            take_mysql_lock(mysql_migration_lock(database))
            _text_revision_column(connection)  # (before the revision is read: bytes otherwise)
            if earlier_versions_may_migrate(context.get_context().get_current_revision()):
                # An earlier version, which knows only the shared name, could migrate this
                # database too (read under the lock above: no other of this version migrates).
                take_mysql_lock(MYSQL_SHARED_MIGRATION_LOCK)
                # The revision was read before this lock, and InnoDB (repeatable read) answers
                # every later read of the transaction from that first read's snapshot: an
                # earlier version's migration, which held the lock meanwhile, would go unseen,
                # and its revisions run again. A new snapshot (named locks outlive a COMMIT;
                # MySQL's DDL commits anyway).
                connection.exec_driver_sql("COMMIT")
                _text_revision_column(connection)  # (a table the earlier version made meanwhile)
        context.run_migrations()
    finally:
        # Every lock taken, whatever failed after it (a user who may not CREATE the version
        # table, before the revisions run): they held every other start's migration until
        # this session closed.
        # (Not on a connection given up mid-way, a silent database's: the locks go with it,
        # and the statement's error, "Can't reconnect until invalid transaction is rolled
        # back", took the place of the reason.)
        release_mysql_locks()
