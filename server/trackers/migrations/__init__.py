"""Alembic migrations of the SQL tracker store schema, run by `server.trackers.sql_schema`."""
