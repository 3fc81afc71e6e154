"""A Rasa tracker database kept in a PostgreSQL schema of its own (Rasa's
`POSTGRESQL_SCHEMA`): botserver reads and writes the table there, and a schema that does
not exist is said by name, as Rasa says it."""

from __future__ import annotations

import json
from typing import Any

import asyncpg
import pytest

from server.errors import StoreFailed
from server.trackers.factory import create_tracker_store
from tests.trackers.persistence_fixtures import POSTGRES, postgres_database

# Rows as Rasa 3.6's SQLTrackerStore writes them: json.dumps(event.as_dict()), float
# timestamps, intent_name for a user event, action_name for an event with a name.
RASA_EVENTS: list[dict[str, Any]] = [
    {"event": "action", "timestamp": 1.5, "name": "action_session_start", "policy": None,
     "confidence": 1.0, "action_text": None, "hide_rule_turn": False},
    {"event": "session_started", "timestamp": 1.6},
    {"event": "action", "timestamp": 1.7, "name": "action_listen", "policy": None,
     "confidence": None, "action_text": None, "hide_rule_turn": False},
    {"event": "user", "timestamp": 2.0, "text": "hi", "input_channel": "rest",
     "message_id": "m1", "metadata": {},
     "parse_data": {"intent": {"name": "greet", "confidence": 0.9}, "entities": [],
                    "text": "hi", "message_id": "m1", "metadata": {}, "intent_ranking": []}},
]  # fmt: skip
BOT_TURN: dict[str, Any] = {
    "event": "action", "timestamp": 3.0, "name": "utter_greet", "policy": None,
    "confidence": 1.0, "action_text": None, "hide_rule_turn": False,
}  # fmt: skip


async def _connect(database: str) -> asyncpg.Connection:
    return await asyncpg.connect(
        host=POSTGRES[0], port=POSTGRES[1], user="postgres", database=database
    )


async def test_a_rasa_table_in_the_postgresql_schema_is_read_and_written_there(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with postgres_database() as config:
        conn = await _connect(config["db"])
        try:
            await conn.execute("CREATE SCHEMA rasa_bot")
            await conn.execute(
                "CREATE TABLE rasa_bot.events (id SERIAL NOT NULL, sender_id VARCHAR(255)"
                " NOT NULL, type_name VARCHAR(255) NOT NULL, timestamp FLOAT, intent_name"
                " VARCHAR(255), action_name VARCHAR(255), data TEXT, PRIMARY KEY (id))"
            )
            await conn.execute("CREATE INDEX ix_events_sender_id ON rasa_bot.events (sender_id)")
            for event in RASA_EVENTS:
                await conn.execute(
                    "INSERT INTO rasa_bot.events (sender_id, type_name, timestamp,"
                    " intent_name, action_name, data) VALUES ($1, $2, $3, $4, $5, $6)",
                    "alice",
                    event["event"],
                    event["timestamp"],
                    event.get("parse_data", {}).get("intent", {}).get("name"),
                    event.get("name"),
                    json.dumps(event),
                )
            monkeypatch.setenv("POSTGRESQL_SCHEMA", "rasa_bot")
            store = create_tracker_store(config)
            try:
                assert await store.load("alice") == RASA_EVENTS
                await store.append("alice", [BOT_TURN])
            finally:
                await store.close()

            rows = await conn.fetch(
                "SELECT type_name, intent_name, action_name, timestamp, data"
                " FROM rasa_bot.events ORDER BY id"
            )
            assert tuple(rows[-1][:4]) == ("action", None, "utter_greet", 3.0)
            assert [json.loads(row["data"]) for row in rows] == [*RASA_EVENTS, BOT_TURN]
            placed = await conn.fetch(
                "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n"
                " ON n.oid = c.relnamespace WHERE c.relname LIKE 'ix_events%'"
                " OR c.relname LIKE 'botserver%'"
            )
            assert {schema for schema, _ in placed} == {"rasa_bot"}
        finally:
            await conn.close()


async def test_a_postgresql_schema_that_does_not_exist_is_named(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Rasa stops with "Requested PostgreSQL schema 'x' was not found in the database";
    before, botserver failed each request with "no schema has been selected to create in"."""
    async with postgres_database() as config:
        monkeypatch.setenv("POSTGRESQL_SCHEMA", "no_such_schema")
        store = create_tracker_store(config)
        try:
            with pytest.raises(StoreFailed) as failed:
                await store.load("alice")
        finally:
            await store.close()
    assert "schema 'no_such_schema'" in str(failed.value)
    assert "POSTGRESQL_SCHEMA" in str(failed.value)
