"""Alembic environment: runs on the connection handed over by `server.trackers.sql_schema`."""

from __future__ import annotations

from alembic import context
from sqlalchemy import text

VERSION_TABLE = "botserver_alembic_version"

connection = context.config.attributes["connection"]
context.configure(connection=connection, version_table=VERSION_TABLE)

with context.begin_transaction():
    if connection.dialect.name == "postgresql":
        # Two processes starting together must not both create the table.
        connection.execute(text("SELECT pg_advisory_xact_lock(7314206)"))
    if connection.dialect.name == "mysql":
        connection.execute(text("SELECT GET_LOCK('botserver_migrations', 60)"))
    try:
        context.run_migrations()
    finally:
        if connection.dialect.name == "mysql":
            connection.execute(text("SELECT RELEASE_LOCK('botserver_migrations')"))
