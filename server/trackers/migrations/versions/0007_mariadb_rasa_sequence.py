"""MariaDB: the `events_seq` sequence Rasa's SQLAlchemy takes every row's id from.

On MariaDB 10.3 and later, Rasa 3.6's model gives `id` a sequence, and its SQLAlchemy inserts
each row with the sequence's next value, whether or not Rasa made the table: on a table
botserver made every save of Rasa failed with "Unknown SEQUENCE: 'events_seq'". The sequence
is created where it is missing, starting past the ids in use, and botserver's appends take
their ids from it too (sql_store._AsyncDatabase), so neither hands out an id the other used.
Nothing on MySQL (no sequences) or other dialects; no row or column changes.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "mysql" or not bind.dialect.supports_sequences:
        return
    exists = bind.execute(
        sa.text(
            "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE()"
            " AND TABLE_NAME = 'events_seq'"
        )
    ).scalar()
    if exists:
        return
    last = bind.execute(sa.text("SELECT MAX(id) FROM events")).scalar() or 0
    op.execute(f"CREATE SEQUENCE events_seq START WITH {int(last) + 1}")


def downgrade() -> None:
    """Nothing: Rasa needs the sequence, whichever botserver runs."""
