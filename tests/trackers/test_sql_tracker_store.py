"""The SQL tracker store across processes, on Rasa's schema, and through database outages."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bench.tcp_proxy import TcpProxy
from server.errors import StoreUnavailable
from server.trackers.factory import create_tracker_store
from server.trackers.sql_store import SqlTrackerStore
from tests.trackers.persistence_fixtures import POSTGRES, mariadb_database, postgres_database
from tests.trackers.test_tracker_stores import bot, session_start, user


@contextlib.asynccontextmanager
async def sql_config(kind: str, tmp_path: Path) -> AsyncIterator[dict[str, Any]]:
    if kind == "sqlite":
        yield {"type": "sql", "dialect": "sqlite", "db": str(tmp_path / "shared.db")}
    elif kind == "mariadb":
        async with mariadb_database() as config:
            yield config
    else:
        async with postgres_database() as config:
            yield config


def action(name: str, timestamp: float) -> dict[str, Any]:
    return {"event": "action", "timestamp": timestamp, "name": name}


def started(timestamp: float) -> dict[str, Any]:
    return {"event": "session_started", "timestamp": timestamp}


# Each conversation's events, and the index where its current session starts.
SESSION_SHAPES: dict[str, tuple[list[dict[str, Any]], int]] = {
    "no session start": ([user("hi", 1.0), bot("hello", 2.0)], 0),
    "action_session_start then session_started": (
        [user("a", 1.0), *session_start(2.0), user("b", 3.0)],
        1,
    ),
    "a later action_session_start alone": (
        [*session_start(1.0), user("a", 2.0), action("action_session_start", 3.0), user("b", 4.0)],
        4,
    ),
    "a later session_started alone": (
        [*session_start(1.0), user("a", 2.0), started(3.0), user("b", 4.0)],
        4,
    ),
    "session_started after another action": (
        [action("action_listen", 1.0), started(2.0), user("b", 3.0)],
        1,
    ),
}


@pytest.mark.parametrize("kind", ["sqlite", "postgres", "mariadb"])
async def test_a_cold_store_loads_the_current_session_of_every_shape(
    kind: str, tmp_path: Path
) -> None:
    async with sql_config(kind, tmp_path) as config:
        writer = create_tracker_store(config)
        try:
            for name, (events, _) in SESSION_SHAPES.items():
                await writer.append(name, events)
        finally:
            await writer.close()
        reader = create_tracker_store(config)  # nothing cached: the session is computed
        try:
            for name, (events, start) in SESSION_SHAPES.items():
                assert await reader.load(name) == events[start:], name
        finally:
            await reader.close()
        reader = create_tracker_store(config)  # the same loads made together (one group)
        try:
            names = [*SESSION_SHAPES, "nobody"]
            loaded = await asyncio.gather(*(reader.load(name) for name in names))
            assert loaded[-1] is None
            for name, session in zip(SESSION_SHAPES, loaded, strict=False):
                events, start = SESSION_SHAPES[name]
                assert session == events[start:], name
        finally:
            await reader.close()


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
async def test_two_store_instances_on_one_database_see_each_others_writes(
    kind: str, tmp_path: Path
) -> None:
    async with sql_config(kind, tmp_path) as config:
        one, other = create_tracker_store(config), create_tracker_store(config)
        try:
            await one.append("alice", session_start(1.0) + [user("hi", 2.0)])
            assert await other.load("alice") == session_start(1.0) + [user("hi", 2.0)]

            await one.append("alice", [bot("hello", 3.0)])
            assert await other.load("alice") == session_start(1.0) + [
                user("hi", 2.0),
                bot("hello", 3.0),
            ]

            await one.append("alice", session_start(50.0))
            assert await other.load("alice") == session_start(50.0)

            await other.replace("alice", [user("replaced", 60.0)])
            assert await one.load("alice") == [user("replaced", 60.0)]

            await other.delete("alice")
            assert await one.load("alice") is None
        finally:
            await one.close()
            await other.close()


# Neither a Rasa-made SQLite table nor one botserver makes has AUTOINCREMENT: ids of deleted
# rows come back where the conversation's rows were the table's last. A replace must not give
# its new rows the old ids (the one whose last event is the one before, the same JSON, would
# be taken by a process that cached the conversation for the rows it saw), nor be mistaken
# for them.
@pytest.mark.parametrize("made_by", ["botserver", "rasa"])
@pytest.mark.parametrize("kept_last", [False, True])
async def test_a_replace_is_seen_by_another_process_that_cached_the_conversation(
    made_by: str, kept_last: bool, tmp_path: Path
) -> None:
    db = tmp_path / "ids.db"
    if made_by == "rasa":
        create_rasa_sqlite_db(db, rows=[])
    config = {"type": "sql", "dialect": "sqlite", "db": str(db)}
    one, other = create_tracker_store(config), create_tracker_store(config)
    replacement = [user("x", 1.5), user("b", 2.0) if kept_last else user("y", 4.0)]
    try:
        await one.append("alice", [user("a", 1.0), user("b", 2.0)])
        assert await other.load("alice") == [user("a", 1.0), user("b", 2.0)]

        await one.replace("alice", replacement)

        assert await other.load("alice") == replacement
        assert await one.load_all("alice") == replacement
    finally:
        await one.close()
        await other.close()


def create_rasa_sqlite_db(path: Path, rows: list[tuple[str, dict[str, Any]]]) -> None:
    """The schema Rasa 3.6's SQLTrackerStore creates, with rows as it writes them."""
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.executescript(
            """
            CREATE TABLE events (
                id INTEGER NOT NULL, sender_id VARCHAR(255) NOT NULL,
                type_name VARCHAR(255) NOT NULL, timestamp FLOAT, intent_name VARCHAR(255),
                action_name VARCHAR(255), data TEXT, PRIMARY KEY (id)
            );
            CREATE INDEX ix_events_sender_id ON events (sender_id);
            """
        )
        for sender_id, event in rows:
            intent = event.get("parse_data", {}).get("intent", {}).get("name")
            conn.execute(
                "INSERT INTO events (sender_id, type_name, timestamp, intent_name, action_name,"
                " data) VALUES (?, ?, ?, ?, ?, ?)",
                (
                    sender_id,
                    event["event"],
                    event["timestamp"],
                    intent,
                    event.get("name"),
                    json.dumps(event),
                ),
            )
        conn.commit()


async def test_an_existing_rasa_sqlite_database_is_upgraded_and_keeps_working(
    tmp_path: Path,
) -> None:
    db = tmp_path / "rasa.db"
    history = session_start(1.0) + [user("hi", 2.0), bot("hello", 3.0)]
    current = session_start(100.0) + [user("back", 101.0)]
    create_rasa_sqlite_db(db, [("alice", e) for e in history + current])

    store = SqlTrackerStore.from_config({"type": "sql", "db": str(db)})
    try:
        assert await store.load("alice") == current
        assert await store.load_all("alice") == history + current
        await store.append("alice", [bot("welcome back", 102.0)])
        assert await store.load("alice") == current + [bot("welcome back", 102.0)]
    finally:
        await store.close()

    with contextlib.closing(sqlite3.connect(db)) as conn:
        indexes = {
            row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='index'")
        }
        (count,) = conn.execute("SELECT count(*) FROM events").fetchone()
    assert "ix_events_sender_id" in indexes  # Rasa's, which serves as ours
    assert count == len(history + current) + 1


async def test_a_rasa_broker_table_named_events_is_refused_with_a_clear_error(
    tmp_path: Path,
) -> None:
    db = tmp_path / "broker.db"
    with contextlib.closing(sqlite3.connect(db)) as conn:
        conn.execute(
            "CREATE TABLE events (id INTEGER PRIMARY KEY, sender_id VARCHAR(255), data TEXT)"
        )
    store = SqlTrackerStore.from_config({"type": "sql", "db": str(db)})
    try:
        with pytest.raises(Exception, match="not a Rasa tracker store table"):
            await store.load("alice")
    finally:
        await store.close()


async def test_several_stores_migrating_one_new_postgres_database_at_once() -> None:
    async with postgres_database() as config:
        stores = [create_tracker_store(config) for _ in range(3)]
        try:
            await asyncio.gather(*(store.ping() for store in stores))
            await stores[0].append("alice", [user("hi", 1.0)])
            assert await stores[2].load("alice") == [user("hi", 1.0)]
        finally:
            await asyncio.gather(*(store.close() for store in stores))


async def test_unreachable_postgres_raises_store_unavailable_then_recovers() -> None:
    async with postgres_database() as config:
        proxy = TcpProxy(POSTGRES)
        store = create_tracker_store({**config, "port": proxy.port})
        try:
            with pytest.raises(StoreUnavailable, match="tracker store .*postgresql"):
                await store.load("alice")
            with pytest.raises(StoreUnavailable):
                await store.ping()

            await proxy.restore()
            await store.append("alice", [user("hi", 1.0)])
            assert await store.load("alice") == [user("hi", 1.0)]

            await proxy.cut()
            with pytest.raises(StoreUnavailable):
                await store.load("alice")

            await proxy.restore()
            await store.append("alice", [bot("still here", 2.0)])
            assert await store.load("alice") == [user("hi", 1.0), bot("still here", 2.0)]
        finally:
            await store.close()
            await proxy.cut()


async def test_unusable_sqlite_path_raises_store_unavailable(tmp_path: Path) -> None:
    """A folder gone after the start (one missing at the start stops it: test_store_factory)."""
    folder = tmp_path / "removed"
    folder.mkdir()
    store = create_tracker_store({"type": "sql", "db": str(folder / "x.db")})
    folder.rmdir()
    try:
        with pytest.raises(StoreUnavailable, match="sqlite"):
            await store.load("alice")
    finally:
        await store.close()


async def test_sqlite_commits_concurrent_appends_together_and_keeps_each_conversation_whole(
    tmp_path: Path,
) -> None:
    store = create_tracker_store({"type": "sql", "dialect": "sqlite", "db": str(tmp_path / "g.db")})
    assert isinstance(store, SqlTrackerStore)
    try:
        await store.append("warm", session_start(0.0))
        database = store._db
        commits_before = database.group_commits  # type: ignore[attr-defined]

        async def conversation(number: int) -> None:
            for turn in range(5):
                await store.append(f"c{number}", [user(f"m{turn}", float(turn))])

        await asyncio.gather(*(conversation(number) for number in range(40)))
        for number in range(40):
            loaded = await store.load(f"c{number}")
            assert loaded == [user(f"m{turn}", float(turn)) for turn in range(5)]
        commits = database.group_commits - commits_before  # type: ignore[attr-defined]
        assert 5 <= commits < 200  # 200 appends, committed in groups

        # One append that the database refuses (type_name is NOT NULL) fails alone; the
        # append committed in the same group is kept.
        good_row = ("c1", "user", 9.0, "greet", None, '{"event": "user"}')
        bad_row = ("c0", None, 9.0, None, None, "{}")
        commits_before = database.group_commits  # type: ignore[attr-defined]
        results = await asyncio.gather(
            database.insert("c1", [good_row]),  # type: ignore[attr-defined]
            database.insert("c0", [bad_row]),  # type: ignore[attr-defined]
            return_exceptions=True,
        )
        assert database.group_commits == commits_before + 1  # type: ignore[attr-defined]
        assert isinstance(results[1], sqlite3.IntegrityError)
        previous_id, written, _ = results[0]  # type: ignore[misc]
        assert previous_id is not None and written is not None and len(written) == 1
        with sqlite3.connect(tmp_path / "g.db") as conn:
            counts = dict(
                conn.execute(
                    "SELECT sender_id, count(*) FROM events WHERE sender_id IN ('c0', 'c1')"
                    " GROUP BY sender_id"
                ).fetchall()
            )
        assert counts == {"c0": 5, "c1": 6}
    finally:
        await store.close()


async def test_event_json_of_every_kind_of_key_and_number_is_stored_as_before(
    tmp_path: Path,
) -> None:
    path = tmp_path / "json.db"
    store = create_tracker_store({"type": "sql", "dialect": "sqlite", "db": str(path)})
    try:
        events = [
            user("hi", 1.5),
            {"event": "slot", "timestamp": 2.0, "name": "n", "value": {1: "a", "b": {2.5: 3}}},
            {"event": "slot", "timestamp": 3.0, "name": "big", "value": 2**70},
            {"event": "slot", "timestamp": 4.0, "name": "x", "value": float("nan")},
        ]
        await store.append("c", events)

        with sqlite3.connect(path) as conn:
            stored = [row[0] for row in conn.execute("SELECT data FROM events ORDER BY id")]
        assert stored == [
            json.dumps(user("hi", 1.5), separators=(",", ":")),
            '{"event":"slot","timestamp":2.0,"name":"n","value":{"1":"a","b":{"2.5":3}}}',
            json.dumps(events[2]),  # orjson refuses integers over 64 bits: json writes them
            '{"event":"slot","timestamp":4.0,"name":"x","value":null}',
        ]
    finally:
        await store.close()


async def test_sqlite_a_bulk_append_is_overtaken_by_no_later_append(tmp_path: Path) -> None:
    """A bulk append (over 500 rows) commits on the store's thread, not on the event loop;
    an append of the same conversation made while it runs must still land after it."""
    store = create_tracker_store({"type": "sql", "dialect": "sqlite", "db": str(tmp_path / "b.db")})
    try:
        bulk = [bot(f"bulk {i}", float(i)) for i in range(1_200)]
        after = [bot("after", 5_000.0)]
        await asyncio.gather(store.append("bulk", bulk), store.append("bulk", after))
        reader = create_tracker_store(
            {"type": "sql", "dialect": "sqlite", "db": str(tmp_path / "b.db")}
        )
        try:
            assert await reader.load("bulk") == bulk + after
        finally:
            await reader.close()
    finally:
        await store.close()
