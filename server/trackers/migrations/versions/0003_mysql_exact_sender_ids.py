"""MySQL and MariaDB: one conversation per exact sender id, and any text in the table.

MySQL compares strings by the column's collation, and the default ones ignore case and
trailing spaces: the conversations "Alice", "alice" and "Alice " shared one tracker (each
loaded the others' events, retention deleted them together), where SQLite, PostgreSQL and
Redis keep them apart. `sender_id` gets a binary collation that pads nothing. A table in
another character set than utf8mb4 (latin1 is MySQL's old default, and Rasa creates its
table in the database's default) could not hold most of Unicode (an emoji in a message
failed the append): it is converted. Nothing changes on other dialects.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

from server.trackers.sql_engine import ensure_mysql_utf8mb4, mysql_column_charsets

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

# Binary collations that do not pad, by preference: MySQL 8's, then MariaDB's; utf8mb4_bin
# (which ignores trailing spaces) only where neither exists.
EXACT_COLLATIONS = ("utf8mb4_0900_bin", "utf8mb4_nopad_bin", "utf8mb4_bin")


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "mysql":
        return
    ensure_mysql_utf8mb4(bind, "events")
    exact = exact_collation(bind)
    if mysql_column_charsets(bind, "events")["sender_id"][1] != exact:
        op.execute(
            "ALTER TABLE events MODIFY sender_id VARCHAR(255) "
            f"CHARACTER SET utf8mb4 COLLATE {exact} NOT NULL"
        )


def exact_collation(bind: Any) -> str:
    available = {
        str(row[0]) for row in bind.execute(sa.text("SHOW COLLATION WHERE Charset = 'utf8mb4'"))
    }
    return next(name for name in EXACT_COLLATIONS if name in available)


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "mysql":
        op.execute(
            "ALTER TABLE events MODIFY sender_id VARCHAR(255) CHARACTER SET utf8mb4 NOT NULL"
        )
