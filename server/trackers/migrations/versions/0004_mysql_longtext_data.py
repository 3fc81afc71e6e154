"""MySQL and MariaDB: an event's JSON of any size the server accepts, on Rasa's table too.

Rasa creates `data` as TEXT, which MySQL caps at 65,535 bytes: a user message of about
32,000 ASCII characters (its text is stored twice, as `text` and `parse_data.text`), or
8,000 emoji, was refused, although the server accepts texts of 100,000 characters. Tables
botserver creates have LONGTEXT; a narrower `data` is widened to it (Rasa reads it the same
way). Rebuilds the table once; nothing on other dialects.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "mysql":
        return
    data_type = bind.execute(
        sa.text(
            "SELECT DATA_TYPE FROM information_schema.COLUMNS "
            "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'events' AND COLUMN_NAME = 'data'"
        )
    ).scalar()
    if str(data_type).lower() in ("tinytext", "text", "mediumtext"):
        op.execute("ALTER TABLE events MODIFY data LONGTEXT CHARACTER SET utf8mb4")


def downgrade() -> None:
    """Nothing: the wider column holds whatever the narrower one did."""
