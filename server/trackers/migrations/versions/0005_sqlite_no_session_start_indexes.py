"""SQLite: no index of session starts; one index of a conversation's rows, not two.

Revision 0002's two partial indexes (one of `action_session_start` actions, one of
`session_started` events) tested every appended row against their conditions and opened a
cursor each in every INSERT: 9.4k instructions of a moodbot append's 147k (docs/benchmarks.md,
twenty-fourth and twenty-fifth rounds). They served only a load of a conversation that is
not cached, which reads the current session's rows anyway: walking the conversation's rows
back from its last to the session start costs a row lookup per row of that session, less
than reading and parsing them. Nothing changes on other dialects (PostgreSQL keeps its two,
MySQL its full index); no row is touched.

A table Rasa created has Rasa's `ix_events_sender_id` (sender_id), which revision 0001 kept
beside ours, `ix_events_sender_id_id` (sender_id, id): every append wrote both. SQLite ends
every index entry with the row id, which `id` is, so Rasa's serves each of our queries as
ours does (the same seeks and order, no sort): ours is dropped there.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from server.trackers.sql_schema import SESSION_ACTION_WHERE, SESSION_STARTED_WHERE

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

# Revision 0002's, by name -> condition.
PARTIAL_INDEXES = {
    "ix_events_session_start_action": SESSION_ACTION_WHERE,
    "ix_events_session_started": SESSION_STARTED_WHERE,
}


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "sqlite":
        return
    existing = {ix["name"] for ix in sa.inspect(bind).get_indexes("events")}
    for name in PARTIAL_INDEXES:
        if name in existing:
            op.drop_index(name, table_name="events")
    if "ix_events_sender_id_id" in existing and _has_rasas_index(bind):
        op.drop_index("ix_events_sender_id_id", table_name="events")


def _has_rasas_index(bind: sa.engine.Connection) -> bool:
    """Whether Rasa's `ix_events_sender_id` indexes `sender_id`, and only it."""
    for index in sa.inspect(bind).get_indexes("events"):
        if index["name"] == "ix_events_sender_id":
            return list(index["column_names"]) == ["sender_id"]
    return False


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "sqlite":
        return
    existing = {ix["name"] for ix in sa.inspect(bind).get_indexes("events")}
    for name, where in PARTIAL_INDEXES.items():
        if name not in existing:
            condition = sa.text(where)
            op.create_index(name, "events", ["sender_id", "id"], sqlite_where=condition)
    if "ix_events_sender_id_id" not in existing:
        op.create_index("ix_events_sender_id_id", "events", ["sender_id", "id"])
