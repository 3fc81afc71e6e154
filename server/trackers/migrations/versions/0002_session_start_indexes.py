"""Fewer index writes per append: the last session start is found in partial indexes that
hold only session starts, and a table botserver created drops `ix_events_sender_id`.

Revision 0001 used to index every row in `ix_events_session_start` (sender_id, type_name,
action_name, id) and to give the tables it created Rasa's `ix_events_sender_id`, whose one
column begins `ix_events_sender_id_id`. On SQLite and PostgreSQL the full index becomes two
partial ones; MySQL and MariaDB have no partial indexes and keep (or get) the full one. A
Rasa-made table keeps Rasa's `ix_events_sender_id`, and so does a PostgreSQL table made by
an earlier botserver (its columns are the same as Rasa's: we cannot tell which it is).

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

from server.trackers.sql_schema import SESSION_ACTION_WHERE, SESSION_STARTED_WHERE

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

FULL_INDEX = "ix_events_session_start"
FULL_COLUMNS = ["sender_id", "type_name", "action_name", "id"]
# name -> condition; each holds (sender_id, id) of the session starts of its kind only.
PARTIAL_INDEXES = {
    "ix_events_session_start_action": SESSION_ACTION_WHERE,
    "ix_events_session_started": SESSION_STARTED_WHERE,
}
PARTIAL_INDEX_DIALECTS = ("sqlite", "postgresql")


def upgrade() -> None:
    bind = op.get_bind()
    inspector = sa.inspect(bind)
    existing = {ix["name"] for ix in inspector.get_indexes("events")}
    if bind.dialect.name in PARTIAL_INDEX_DIALECTS:
        for name, where in PARTIAL_INDEXES.items():
            if name not in existing:
                condition = sa.text(where)
                op.create_index(
                    name,
                    "events",
                    ["sender_id", "id"],
                    sqlite_where=condition,
                    postgresql_where=condition,
                )
        if FULL_INDEX in existing:
            op.drop_index(FULL_INDEX, table_name="events")
    elif FULL_INDEX not in existing:
        op.create_index(FULL_INDEX, "events", FULL_COLUMNS)
    if "ix_events_sender_id" in existing and _made_by_botserver(bind, inspector):
        op.drop_index("ix_events_sender_id", table_name="events")


def _made_by_botserver(bind: Any, inspector: Any) -> bool:
    """Whether revision 0001 created the table: on SQLite it has AUTOINCREMENT, on MySQL a
    DOUBLE timestamp (Rasa's are a plain integer key and FLOAT). 0001 no longer gives SQLite
    tables AUTOINCREMENT, nor any table ix_events_sender_id: a new one has nothing to drop."""
    if bind.dialect.name == "sqlite":
        sql = bind.execute(
            sa.text("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'events'")
        ).scalar()
        return "AUTOINCREMENT" in str(sql).upper()
    if bind.dialect.name == "mysql":
        columns = {c["name"]: c["type"] for c in inspector.get_columns("events")}
        return isinstance(columns["timestamp"], mysql.DOUBLE)
    return False


def downgrade() -> None:
    existing = {ix["name"] for ix in sa.inspect(op.get_bind()).get_indexes("events")}
    for name in PARTIAL_INDEXES:
        if name in existing:
            op.drop_index(name, table_name="events")
    if FULL_INDEX not in existing:
        op.create_index(FULL_INDEX, "events", FULL_COLUMNS)
