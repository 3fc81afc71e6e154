"""SQLite: a table an earlier botserver created loses AUTOINCREMENT, in place.

Revision 0001 gave SQLite tables AUTOINCREMENT until revision 0005's time: SQLite then reads
and writes the table's row in `sqlite_sequence` at every INSERT, and its page is in every
commit, 9.3k instructions of an append (docs/benchmarks.md, twenty-fourth round). Tables made
since, and Rasa's, have none. Rebuilding such a table would copy every row (minutes and twice
the disk for a large file); AUTOINCREMENT changes nothing on disk but that sequence row, so
the table's definition is rewritten instead, as SQLite documents for changes that leave the
stored content as it is (https://www.sqlite.org/lang_altertable.html, "Making Other Kinds Of
Table Schema Changes"): no row is read or written, whatever the file's size.

From then on the table is as Rasa's and ours since revision 0005: ids are the largest + 1,
so those of deleted rows at the end of the table may come back, which the per-process cache
tells by the JSON of the last row it saw, and which a replace never gives its own
conversation (sqlite_database.SqliteDatabase.replace). Where SQLite refuses to change its
schema table (a library built in defensive mode), the table keeps AUTOINCREMENT and works as
before.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import contextlib
import logging
import re
import sqlite3

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

logger = logging.getLogger(__name__)

# As revision 0001 (SQLAlchemy) wrote it: `id INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT`.
_AUTOINCREMENT = re.compile(r"(\bPRIMARY\s+KEY)\s+AUTOINCREMENT\b", re.IGNORECASE)


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "sqlite":
        return
    sql = bind.execute(
        sa.text("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'events'")
    ).scalar()
    if sql is None:
        return
    new_sql, found = _AUTOINCREMENT.subn(r"\1", str(sql))
    if found != 1 or not _same_table(str(sql), new_sql):
        return  # none (Rasa's, ours since 0005), or a definition this revision did not write
    # Under the migration's write transaction (BEGIN IMMEDIATE, see env.py): another
    # connection sees the new definition at its next statement, as the schema version changed.
    version = int(bind.exec_driver_sql("PRAGMA schema_version").scalar_one())
    bind.exec_driver_sql("PRAGMA writable_schema = ON")
    try:
        bind.exec_driver_sql(
            "UPDATE sqlite_master SET sql = ? WHERE type = 'table' AND name = 'events'",
            (new_sql,),
        )
    except sa.exc.DBAPIError as error:  # defensive mode: the schema table is read-only
        logger.info("The SQLite events table keeps AUTOINCREMENT: %s", error.orig)
        return
    finally:
        bind.exec_driver_sql("PRAGMA writable_schema = OFF")
    bind.exec_driver_sql(f"PRAGMA schema_version = {version + 1}")
    bind.exec_driver_sql("DELETE FROM sqlite_sequence WHERE name = 'events'")


def _same_table(sql: str, new_sql: str) -> bool:
    """Whether `new_sql` is a valid definition of the same columns, keys and constraints
    without AUTOINCREMENT (checked in a scratch database: a definition SQLite could not
    parse would make the file unreadable)."""
    with contextlib.closing(sqlite3.connect(":memory:")) as scratch:
        try:
            scratch.execute(sql)
            before = scratch.execute("PRAGMA table_xinfo(events)").fetchall()
            scratch.execute("DROP TABLE events")
            scratch.execute(new_sql)
            after = scratch.execute("PRAGMA table_xinfo(events)").fetchall()
        except sqlite3.Error:
            return False
    return before == after


def downgrade() -> None:
    pass  # the table keeps its ids; AUTOINCREMENT is not given back
