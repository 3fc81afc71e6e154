"""SQLite: one partial index of session starts instead of two.

Revision 0002's two partial indexes (one of `action_session_start` actions, one of
`session_started` events) each tested every appended row against its condition and opened a
cursor in every INSERT: 9.4k instructions of a moodbot append's 147k (docs/benchmarks.md,
twenty-fourth round). One index whose condition is either kind finds the last session start
of both, and the query reads the kind from its row. Nothing changes on other dialects
(PostgreSQL keeps its two, MySQL its full index); no row is touched.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from server.trackers.sql_schema import (
    SESSION_ACTION_WHERE,
    SESSION_START_WHERE,
    SESSION_STARTED_WHERE,
)

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

INDEX = "ix_events_session_starts"
# Revision 0002's, by name -> condition.
TWO_INDEXES = {
    "ix_events_session_start_action": SESSION_ACTION_WHERE,
    "ix_events_session_started": SESSION_STARTED_WHERE,
}


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "sqlite":
        return
    existing = {ix["name"] for ix in sa.inspect(bind).get_indexes("events")}
    if INDEX not in existing:
        condition = sa.text(SESSION_START_WHERE)
        op.create_index(INDEX, "events", ["sender_id", "id"], sqlite_where=condition)
    for name in TWO_INDEXES:
        if name in existing:
            op.drop_index(name, table_name="events")


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "sqlite":
        return
    existing = {ix["name"] for ix in sa.inspect(bind).get_indexes("events")}
    for name, where in TWO_INDEXES.items():
        if name not in existing:
            condition = sa.text(where)
            op.create_index(name, "events", ["sender_id", "id"], sqlite_where=condition)
    if INDEX in existing:
        op.drop_index(INDEX, table_name="events")
