"""The SQL store's per-process session cache stays exact next to other writers."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from server.trackers.factory import create_tracker_store
from tests.trackers.test_tracker_stores import bot, session_start, user


async def test_own_appends_and_another_process_appends_all_show_in_order(tmp_path: Path) -> None:
    config = {"type": "sql", "dialect": "sqlite", "db": str(tmp_path / "c.db")}
    one, other = create_tracker_store(config), create_tracker_store(config)
    try:
        await one.append("alice", session_start(1.0) + [user("hi", 2.0)])
        assert await one.load("alice") == session_start(1.0) + [user("hi", 2.0)]

        await other.append("alice", [bot("from other", 3.0)])
        await one.append("alice", [user("mine", 4.0)])
        await one.append("alice", [bot("mine too", 5.0)])

        expected = session_start(1.0) + [
            user("hi", 2.0),
            bot("from other", 3.0),
            user("mine", 4.0),
            bot("mine too", 5.0),
        ]
        assert await one.load("alice") == expected
        assert await other.load("alice") == expected
    finally:
        await one.close()
        await other.close()


async def test_a_new_session_appended_by_this_process_replaces_the_cached_one(
    tmp_path: Path,
) -> None:
    store = create_tracker_store({"type": "sql", "db": str(tmp_path / "s.db")})
    try:
        await store.append("bob", session_start(1.0) + [user("old", 2.0)])
        await store.append("bob", session_start(100.0) + [user("new", 101.0)])
        assert await store.load("bob") == session_start(100.0) + [user("new", 101.0)]
        await store.append("bob", [bot("reply", 102.0)])
        assert await store.load("bob") == session_start(100.0) + [
            user("new", 101.0),
            bot("reply", 102.0),
        ]
        assert len(await store.load_all("bob") or []) == 9
    finally:
        await store.close()


async def test_many_conversations_beyond_the_cache_bound_still_load_whole(
    tmp_path: Path,
) -> None:
    store = create_tracker_store({"type": "sql", "db": str(tmp_path / "b.db"), "cache_events": 5})
    try:
        for n in range(4):
            await store.append(f"u{n}", [user(f"hi {n}", 1.0), bot("hello", 2.0)])
        for n in range(4):
            assert await store.load(f"u{n}") == [user(f"hi {n}", 1.0), bot("hello", 2.0)]
    finally:
        await store.close()


# Appends one bot event to a conversation, from another process (its own connection).
OTHER_PROCESS_APPEND = """
import json, sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
event = {"event": "bot", "timestamp": 9.0, "text": "from another process", "data": {},
         "metadata": {}}
conn.execute(
    "INSERT INTO events (sender_id, type_name, timestamp, data) VALUES (?, 'bot', 9.0, ?)",
    (sys.argv[2], json.dumps(event)),
)
"""


async def test_a_checked_session_still_shows_rows_another_process_appended(
    tmp_path: Path,
) -> None:
    path = tmp_path / "p.db"
    store = create_tracker_store({"type": "sql", "dialect": "sqlite", "db": str(path)})
    try:
        await store.append("alice", session_start(1.0) + [user("hi", 2.0)])
        for _ in range(2):  # the cache has seen every row there is
            assert await store.load("alice") == session_start(1.0) + [user("hi", 2.0)]

        other = await asyncio.create_subprocess_exec(
            sys.executable, "-c", OTHER_PROCESS_APPEND, str(path), "alice"
        )
        assert await other.wait() == 0

        assert await store.load("alice") == session_start(1.0) + [
            user("hi", 2.0),
            bot("from another process", 9.0),
        ]
    finally:
        await store.close()


async def test_an_append_cancelled_while_it_commits_still_shows_at_the_next_load(
    tmp_path: Path,
) -> None:
    store = create_tracker_store({"type": "sql", "dialect": "sqlite", "db": str(tmp_path / "x.db")})
    try:
        await store.append("alice", session_start(1.0) + [user("hi", 2.0)])
        for _ in range(2):
            assert await store.load("alice") == session_start(1.0) + [user("hi", 2.0)]

        append = asyncio.create_task(store.append("alice", [bot("cancelled", 3.0)]))
        await asyncio.sleep(0)  # grouped for this iteration's inline commit
        append.cancel()
        with pytest.raises(asyncio.CancelledError):
            await append

        # The commit went through: the caller's cancellation does not undo it.
        assert await store.load("alice") == session_start(1.0) + [
            user("hi", 2.0),
            bot("cancelled", 3.0),
        ]
    finally:
        await store.close()
