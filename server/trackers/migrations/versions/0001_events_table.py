"""Rasa's `events` table, created if missing, plus the index of incremental reads.

An existing Rasa tracker database keeps its table and rows; only the index is added. The
session-start indexes are revision 0002's (this one made a full one before 0002 existed).

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

RASA_COLUMNS = {"id", "sender_id", "type_name", "timestamp", "intent_name", "action_name", "data"}


def upgrade() -> None:
    inspector = sa.inspect(op.get_bind())
    if not inspector.has_table("events"):
        op.create_table(
            "events",
            sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
            sa.Column("sender_id", sa.String(255), nullable=False),
            sa.Column("type_name", sa.String(255), nullable=False),
            # Rasa's Float is single precision on MySQL: seconds get lost, so use DOUBLE there.
            sa.Column("timestamp", sa.Float().with_variant(mysql.DOUBLE(), "mysql")),
            sa.Column("intent_name", sa.String(255)),
            sa.Column("action_name", sa.String(255)),
            sa.Column("data", sa.Text().with_variant(mysql.LONGTEXT(), "mysql")),
            # No AUTOINCREMENT on SQLite (as Rasa's table): its sequence row was read and
            # written by every INSERT and its page was in every commit, 9.3k instructions of
            # an append's 147k (docs/benchmarks.md, twenty-fourth round). Ids are still the
            # largest + 1; those of deleted rows may come back, which the per-process cache
            # tells by the JSON of the last row it saw, and a replace does not give its
            # conversation (sqlite_database.SqliteDatabase.replace). Revision 0006 takes it
            # from tables made with it.
        )
        # Not Rasa's ix_events_sender_id: ix_events_sender_id_id starts with the same column.
    else:
        columns = {c["name"] for c in inspector.get_columns("events")}
        missing = RASA_COLUMNS - columns
        if missing:
            raise RuntimeError(
                "A table named 'events' exists but is not a Rasa tracker store table "
                f"(missing columns: {', '.join(sorted(missing))}). Is this an event broker "
                "database? Point the tracker store at another database."
            )

    existing = {ix["name"] for ix in sa.inspect(op.get_bind()).get_indexes("events")}
    if "ix_events_sender_id_id" not in existing:
        op.create_index("ix_events_sender_id_id", "events", ["sender_id", "id"])


def downgrade() -> None:
    op.drop_index("ix_events_sender_id_id", table_name="events")
