"""MariaDB (10.3 on) tables Rasa created: Rasa's model gives `id` a sequence, `events_seq`,
and its SQLAlchemy takes each row's id from it; botserver takes its ids there too, so Rasa
can write to the table again (beside botserver, or going back to Rasa)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.orm import declarative_base

from server.errors import StoreError
from server.trackers.factory import create_tracker_store
from server.trackers.sql_engine import async_url
from tests.trackers.persistence_fixtures import mariadb_database

# Rasa 3.6's SQLTrackerStore.SQLEvent, as its module declares it (optional sequence included).
_RasaBase: Any = declarative_base()


class RasaEvent(_RasaBase):
    __tablename__ = "events"
    id = sa.Column(
        sa.Integer,
        sa.Sequence("events_seq", metadata=declarative_base().metadata, optional=True),
        primary_key=True,
    )
    sender_id = sa.Column(sa.String(255), nullable=False, index=True)
    type_name = sa.Column(sa.String(255), nullable=False)
    timestamp = sa.Column(sa.Float)
    intent_name = sa.Column(sa.String(255))
    action_name = sa.Column(sa.String(255))
    data = sa.Column(sa.Text)


def listen(timestamp: float) -> dict[str, Any]:
    return {"event": "action", "timestamp": timestamp, "name": "action_listen"}


def rasa_row(sender_id: str, event: dict[str, Any]) -> dict[str, Any]:
    return {
        "sender_id": sender_id,
        "type_name": event["event"],
        "timestamp": event["timestamp"],
        "action_name": event.get("name"),
        "data": json.dumps(event),
    }


async def rasas_table_with_a_row(engine: Any) -> None:
    """The table and sequence as Rasa 3.6 creates them, with one row Rasa saved."""
    async with engine.begin() as conn:
        await conn.run_sync(_RasaBase.metadata.create_all)
        await conn.execute(sa.insert(RasaEvent), [rasa_row("alice", listen(1.0))])


async def test_rasa_writes_again_after_botserver_appended_to_its_table() -> None:
    """Before, botserver's rows took AUTO_INCREMENT ids, which Rasa's sequence then handed
    out again: Rasa's next saves failed with "Duplicate entry '2' for key 'PRIMARY'"."""
    async with mariadb_database() as config:
        engine = create_async_engine(async_url(config, default_db="rasa"))
        try:
            async with engine.begin() as conn:
                await conn.run_sync(_RasaBase.metadata.create_all)
                await conn.execute(sa.insert(RasaEvent), [rasa_row("alice", listen(1.0))])
                # A row an earlier botserver appended (AUTO_INCREMENT, past the sequence).
                await conn.execute(
                    sa.text(
                        "INSERT INTO events (sender_id, type_name, timestamp, data)"
                        " VALUES ('bob', 'action', 2.0, :data)"
                    ),
                    {"data": json.dumps(listen(2.0))},
                )

            store = create_tracker_store(config)
            try:
                await store.append("alice", [listen(3.0), listen(4.0)])
            finally:
                await store.close()

            async with engine.begin() as conn:  # Rasa saves again
                await conn.execute(
                    sa.insert(RasaEvent),
                    [rasa_row("alice", listen(5.0)), rasa_row("carol", listen(6.0))],
                )
                rows = (
                    await conn.execute(sa.text("SELECT sender_id, data FROM events ORDER BY id"))
                ).all()
        finally:
            await engine.dispose()

    assert [(sender, json.loads(data)["timestamp"]) for sender, data in rows] == [
        ("alice", 1.0),
        ("bob", 2.0),
        ("alice", 3.0),
        ("alice", 4.0),
        ("alice", 5.0),
        ("carol", 6.0),
    ]


async def test_rasa_writes_to_a_table_botserver_made() -> None:
    """Rasa's SQLAlchemy inserts with the sequence whether or not it made the table: before,
    on a table botserver made, every save of Rasa failed with "Unknown SEQUENCE:
    'events_seq'"."""
    async with mariadb_database() as config:
        store = create_tracker_store(config)
        try:
            await store.append("alice", [listen(1.0), listen(2.0)])
        finally:
            await store.close()
        engine = create_async_engine(async_url(config, default_db="rasa"))
        try:
            async with engine.begin() as conn:
                await conn.run_sync(_RasaBase.metadata.create_all)  # Rasa's start: no change
                await conn.execute(sa.insert(RasaEvent), [rasa_row("alice", listen(3.0))])
            store = create_tracker_store(config)
            try:
                await store.append("alice", [listen(4.0)])
                loaded = await store.load("alice")
                assert loaded is not None
                assert [event["timestamp"] for event in loaded] == [1.0, 2.0, 3.0, 4.0]
            finally:
                await store.close()
        finally:
            await engine.dispose()


@contextlib.asynccontextmanager
async def rasas_database() -> AsyncIterator[tuple[dict[str, Any], Any]]:
    """A MariaDB database as Rasa 3.6 left it (one row saved): its config and an engine."""
    async with mariadb_database() as config:
        engine = create_async_engine(async_url(config, default_db="rasa"))
        try:
            await rasas_table_with_a_row(engine)
            yield config, engine
        finally:
            await engine.dispose()


async def test_a_turn_on_a_rasa_table_is_one_insert_on_the_wire(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Taking ids from Rasa's sequence must not cost a round trip per event: aiomysql folds
    an executemany into one multi-row INSERT only when its VALUES hold parameters alone, and
    `NEXT VALUE FOR events_seq` among them made it send one INSERT a row (a turn of 5 events:
    5 statements, 1 before the sequence was used)."""
    import aiomysql.cursors

    sent: list[str] = []
    query = aiomysql.cursors.Cursor._query

    async def counted(self: Any, statement: str) -> Any:
        sent.append(statement)
        return await query(self, statement)

    async with rasas_database() as (config, engine):
        store = create_tracker_store(config)
        try:
            await store.append("alice", [listen(2.0)])  # the first write looks around
            monkeypatch.setattr(aiomysql.cursors.Cursor, "_query", counted)
            await store.append("alice", [listen(3.0 + i) for i in range(5)])
            await store.replace("bob", [listen(10.0 + i) for i in range(4)])
            monkeypatch.undo()
            await store.append("carol", [listen(20.0)])
        finally:
            await store.close()
        async with engine.begin() as conn:  # and Rasa still saves after them
            await conn.execute(sa.insert(RasaEvent), [rasa_row("alice", listen(30.0))])
            rows = (await conn.execute(sa.text("SELECT id, data FROM events ORDER BY id"))).all()
    inserts = [statement for statement in sent if statement.lstrip().upper().startswith("INSERT")]
    assert len(inserts) == 2, inserts
    assert [json.loads(data)["timestamp"] for _, data in rows] == [
        1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 10.0, 11.0, 12.0, 13.0, 20.0, 30.0
    ]  # fmt: skip


async def test_a_first_write_cut_short_still_takes_ids_from_rasas_sequence(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A first write that timed out while moving the sequence past the table's ids (the
    table locked by another client) left the process on AUTO_INCREMENT ids for good: its
    next rows took ids the sequence later handed Rasa again ("Duplicate entry '2' for key
    'PRIMARY'")."""
    import aiomysql

    monkeypatch.setenv("SQL_STATEMENT_TIMEOUT", "1")
    async with rasas_database() as (config, engine):
        store = create_tracker_store(config)
        try:
            assert await store.load("alice") == [listen(1.0)]  # set up, nothing written
            locker = await aiomysql.connect(
                host=config["url"], port=config["port"], user="root", db=config["db"]
            )
            try:
                async with locker.cursor() as cursor:
                    await cursor.execute("LOCK TABLES events WRITE")
                with pytest.raises(StoreError):
                    await store.append("alice", [listen(2.0)])
            finally:
                locker.close()
            await store.append("alice", [listen(3.0)])
        finally:
            await store.close()
        async with engine.begin() as conn:  # Rasa saves again
            await conn.execute(sa.insert(RasaEvent), [rasa_row("alice", listen(4.0))])
            rows = (await conn.execute(sa.text("SELECT data FROM events ORDER BY id"))).all()
    assert [json.loads(data)["timestamp"] for (data,) in rows] == [1.0, 3.0, 4.0]
