"""The SQL store's per-process session cache stays exact next to other writers."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import sys
from pathlib import Path
from typing import Any

import pytest

from server.trackers.factory import create_tracker_store
from server.trackers.sql_store import SqlTrackerStore
from server.trackers.store import TrackerStore
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


async def append_from_another_process(path: Path, sender_id: str) -> None:
    other = await asyncio.create_subprocess_exec(
        sys.executable, "-c", OTHER_PROCESS_APPEND, str(path), sender_id
    )
    assert await other.wait() == 0


async def test_a_checked_session_still_shows_rows_another_process_appended(
    tmp_path: Path,
) -> None:
    path = tmp_path / "p.db"
    store = create_tracker_store({"type": "sql", "dialect": "sqlite", "db": str(path)})
    try:
        await store.append("alice", session_start(1.0) + [user("hi", 2.0)])
        for _ in range(2):  # the cache has seen every row there is
            assert await store.load("alice") == session_start(1.0) + [user("hi", 2.0)]

        await append_from_another_process(path, "alice")

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


def counting_reads(store: Any) -> list[int]:
    """Counts the per-turn reads (rows_from) of a SQLite store from now on."""
    reads = [0]
    rows_from = store._db.rows_from

    async def counted(sender_id: str, first_id: int) -> Any:
        reads[0] += 1
        return await rows_from(sender_id, first_id)

    store._db.rows_from = counted
    return reads


async def test_a_conversation_only_this_store_writes_loads_without_a_read_and_sees_another_process(
    tmp_path: Path,
) -> None:
    path = tmp_path / "e.db"
    store = create_tracker_store({"type": "sql", "dialect": "sqlite", "db": str(path)})
    try:
        await store.append("alice", session_start(1.0))
        await store.append("bob", session_start(1.0))
        reads = counting_reads(store)
        expected = session_start(1.0)
        for turn in range(5):
            assert await store.load("alice") == expected
            await store.load("bob")
            events = [user(f"t{turn}", 2.0 + turn), bot("ok", 2.5 + turn)]
            await asyncio.gather(store.append("alice", events), store.append("bob", events))
            expected = expected + events
        assert reads[0] <= 2  # the first load of each at most: the WAL index said the rest

        await append_from_another_process(path, "alice")

        assert await store.load("alice") == expected + [bot("from another process", 9.0)]
        assert reads[0] <= 3
    finally:
        await store.close()


async def test_two_stores_taking_turns_on_one_conversation_each_see_the_others_rows(
    tmp_path: Path,
) -> None:
    config = {"type": "sql", "dialect": "sqlite", "db": str(tmp_path / "w.db")}
    stores = [create_tracker_store(config), create_tracker_store(config)]  # two workers
    try:
        expected = session_start(1.0)
        await stores[0].append("alice", expected)
        for turn in range(12):
            store = stores[turn % 2 if turn < 6 else (turn // 2) % 2]  # alternate, then pairs
            assert await store.load("alice") == expected, f"turn {turn} saw a stale history"
            events = [user(f"t{turn}", 2.0 + turn), bot(f"from store {turn % 2}", 2.5 + turn)]
            await store.append("alice", events)
            expected = expected + events
    finally:
        for store in stores:
            await store.close()


async def test_a_commit_by_another_connection_right_after_an_inline_one_is_seen(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "r.db"
    store = create_tracker_store({"type": "sql", "dialect": "sqlite", "db": str(path)})
    try:
        await store.append("alice", session_start(1.0))
        assert await store.load("alice") == session_start(1.0)
        database = store._db  # type: ignore[attr-defined]
        carry_epoch = type(database)._carry_epoch
        other = sqlite3.connect(path, isolation_level=None)

        def other_commits_first(self: Any, *args: Any) -> Any:
            # Between this store's COMMIT and its read of the WAL-index header.
            row = json.dumps(bot("squeezed in", 3.0))
            other.execute(
                "INSERT INTO events (sender_id, type_name, timestamp, data)"
                " VALUES ('alice', 'bot', 3.0, ?)",
                (row,),
            )
            monkeypatch.setattr(type(database), "_carry_epoch", carry_epoch)
            return carry_epoch(self, *args)

        monkeypatch.setattr(type(database), "_carry_epoch", other_commits_first)
        await store.append("alice", [user("hi", 2.0)])
        other.close()

        assert await store.load("alice") == session_start(1.0) + [
            user("hi", 2.0),
            bot("squeezed in", 3.0),
        ]
    finally:
        await store.close()


async def test_an_append_cancelled_while_held_for_a_checkpoint_shows_at_the_next_load(
    tmp_path: Path,
) -> None:
    store = create_tracker_store({"type": "sql", "dialect": "sqlite", "db": str(tmp_path / "h.db")})
    try:
        await store.append("alice", session_start(1.0))
        assert await store.load("alice") == session_start(1.0)
        database = store._db  # type: ignore[attr-defined]
        database._held = []  # as while a checkpoint runs: appends wait

        append = asyncio.create_task(store.append("alice", [bot("cancelled", 3.0)]))
        await asyncio.sleep(0)
        append.cancel()
        with pytest.raises(asyncio.CancelledError):
            await append
        assert await store.load("alice") == session_start(1.0)  # read: not committed yet

        held, database._held = database._held, None  # the checkpoint ends: they commit
        database._inline_group[:0] = held
        database._commit_inline()

        assert await store.load("alice") == session_start(1.0) + [bot("cancelled", 3.0)]
    finally:
        await store.close()


async def test_an_append_right_after_another_process_appended_keeps_the_cache_exact(
    tmp_path: Path,
) -> None:
    path = tmp_path / "a.db"
    store = create_tracker_store({"type": "sql", "dialect": "sqlite", "db": str(path)})
    try:
        await store.append("alice", session_start(1.0))
        statements: list[str] = []
        for turn in range(3):  # the cache is current: its appends need no SELECT
            assert await store.load("alice") == session_start(1.0) + [
                user(f"t{n}", 2.0 + n) for n in range(turn)
            ]
            store._db._inline.set_trace_callback(statements.append)  # type: ignore[attr-defined]
            await store.append("alice", [user(f"t{turn}", 2.0 + turn)])
        assert statements and not [sql for sql in statements if "max(id)" in sql]

        await append_from_another_process(path, "alice")
        await store.append("alice", [user("mine", 10.0)])  # no load in between

        assert await store.load("alice") == session_start(1.0) + [
            user("t0", 2.0),
            user("t1", 3.0),
            user("t2", 4.0),
            bot("from another process", 9.0),
            user("mine", 10.0),
        ]
    finally:
        await store.close()


# A second server process: on each line "<turn>", loads "alice", checks it holds every
# earlier turn, appends this turn's events and says "ok"; exits on an empty line.
OTHER_PROCESS_TURNS = """
import asyncio, json, sys
from server.trackers.factory import create_tracker_store
from server.trackers.sql_store import SqlTrackerStore
from server.trackers.store import TrackerStore

async def main():
    store = create_tracker_store({"type": "sql", "dialect": "sqlite", "db": sys.argv[1]})
    loop = asyncio.get_running_loop()
    while line := (await loop.run_in_executor(None, sys.stdin.readline)).strip():
        turn = int(line)
        events = list(await store.load("alice") or [])
        seen = [event["name"] for event in events]
        if seen != [f"t{n}" for n in range(turn)]:
            print("stale", json.dumps(seen), flush=True)
            continue
        await store.append("alice", [{"event": "action", "timestamp": turn, "name": f"t{turn}"}])
        print("ok", flush=True)
    await store.close()

asyncio.run(main())
"""


async def test_two_server_processes_taking_turns_on_one_file_each_see_the_others_rows(
    tmp_path: Path,
) -> None:
    path = tmp_path / "two.db"
    store = create_tracker_store({"type": "sql", "dialect": "sqlite", "db": str(path)})
    other = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        OTHER_PROCESS_TURNS,
        str(path),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        cwd=Path(__file__).parents[2],
    )
    assert other.stdin is not None and other.stdout is not None
    try:
        for turn in range(16):
            if turn % 3 == 2:  # every third turn in the other process
                other.stdin.write(f"{turn}\n".encode())
                await other.stdin.drain()
                answer = (await asyncio.wait_for(other.stdout.readline(), 30)).decode()
                assert answer == "ok\n", f"turn {turn} in the other process: {answer}"
                continue
            events = list(await store.load("alice") or [])
            assert [event["name"] for event in events] == [f"t{n}" for n in range(turn)]
            await store.append(
                "alice", [{"event": "action", "timestamp": turn, "name": f"t{turn}"}]
            )
    finally:
        other.stdin.write(b"\n")
        await other.stdin.drain()
        assert await asyncio.wait_for(other.wait(), 30) == 0
        await store.close()


async def test_a_session_read_while_this_store_appended_to_it_is_read_again_next_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = create_tracker_store({"type": "sql", "dialect": "sqlite", "db": str(tmp_path / "l.db")})
    try:
        await store.append("alice", session_start(1.0))
        session_cache(store).pop("alice")  # type: ignore[attr-defined]  # as if evicted
        database = store._db  # type: ignore[attr-defined]
        session_rows = database.session_rows
        read, appended = asyncio.Event(), asyncio.Event()

        async def read_before_the_append(sender_id: str) -> Any:
            rows = await session_rows(sender_id)  # on the store's thread
            read.set()
            await appended.wait()
            return rows

        monkeypatch.setattr(database, "session_rows", read_before_the_append)
        load = asyncio.create_task(store.load("alice"))
        await read.wait()
        await store.append("alice", [user("meanwhile", 2.0)])
        appended.set()
        assert await load == session_start(1.0)  # what its read saw
        monkeypatch.undo()

        assert await store.load("alice") == session_start(1.0) + [user("meanwhile", 2.0)]
    finally:
        await store.close()


async def test_a_checkpoint_that_restarts_the_wal_does_not_make_cached_sessions_read_again(
    tmp_path: Path,
) -> None:
    path = tmp_path / "k.db"
    store = create_tracker_store({"type": "sql", "dialect": "sqlite", "db": str(path)})
    try:
        senders = [f"c{n}" for n in range(5)]
        for sender in senders:
            await store.append(sender, session_start(1.0))
            await store.load(sender)
        database = store._db  # type: ignore[attr-defined]
        database.checkpoint_after = 1
        await store.append("c0", [user("starts a checkpoint", 2.0)])
        assert database._checkpointing is not None
        await database._checkpointing
        assert database.checkpoints == 1
        reads = counting_reads(store)

        for sender in senders:
            assert len(await store.load(sender) or []) == (4 if sender == "c0" else 3)
        # The WAL restart is this store's own commit of nothing: no session reads again.
        assert reads[0] == 0

        await append_from_another_process(path, "c1")  # while another writer still counts
        assert (await store.load("c1") or [])[-1] == bot("from another process", 9.0)
    finally:
        await store.close()


async def test_an_append_made_while_a_bulk_append_builds_its_rows_comes_after_it(
    tmp_path: Path,
) -> None:
    """A bulk append builds its rows in a thread; an append of the same conversation made
    meanwhile waits for it, so the events are stored in the order they were appended, and
    a session started within the bulk is the cached current session."""
    store = create_tracker_store({"type": "sql", "db": str(tmp_path / "q.db")})
    try:
        await store.append("carol", session_start(1.0) + [user("first", 2.0)])
        bulk = [user(f"bulk {i}", 3.0) for i in range(3_000)] + session_start(4.0)
        later = [bot("after the bulk", 5.0)]
        await asyncio.gather(store.append("carol", bulk), store.append("carol", later))
        everything = await store.load_all("carol") or []
        assert everything[-len(later) :] == later
        assert len(everything) == 4 + len(bulk) + len(later)
        assert list(await store.load("carol") or []) == session_start(4.0) + later
    finally:
        await store.close()


@pytest.mark.timing
async def test_a_first_load_of_200000_events_after_a_restart_holds_the_loop_briefly(
    tmp_path: Path,
) -> None:
    """Before, a process's first load of a session of 200,000 events (the first turn after a
    restart) took their JSON out of the rows and freed the rows on the event loop: 7-16 ms
    of the loop thread's CPU. Now both happen in threads."""
    from tests.loop_lag import loop_hold

    config = {"type": "sql", "dialect": "sqlite", "db": str(tmp_path / "t.db")}
    said = {"intent": {"name": "greet", "confidence": 1.0}, "entities": []}
    events = [
        *session_start(0.0),
        *[{"event": "user", "text": "hi", "parse_data": said, "timestamp": 1.0}] * 199_997,
    ]
    writer = create_tracker_store(config)
    await writer.append("long", events)
    await writer.append("short", session_start(0.0))
    await writer.close()
    del events
    reader = create_tracker_store(config)
    try:
        assert await reader.load("short")  # the store's first use (its schema check) done
        async with loop_hold() as hold:
            loaded = await reader.load("long")
        assert loaded is not None and len(loaded) == 200_000
        del loaded
        assert hold.loop_busiest < 0.003 * hold.slowness, (
            hold.loop_busiest
        )  # 7-16 ms before; now 0.3-0.4 ms
    finally:
        await reader.close()


@pytest.mark.timing
async def test_reading_a_whole_conversation_of_100000_events_holds_the_loop_briefly(
    tmp_path: Path,
) -> None:
    """Before, reading every session of a conversation (`GET .../tracker`, `/story`) on
    SQLite took the JSON out of 100,000 rows and freed the rows on the event loop. Now on
    the store's thread."""
    from tests.loop_lag import loop_hold

    config = {"type": "sql", "dialect": "sqlite", "db": str(tmp_path / "t.db")}
    said = {"intent": {"name": "greet", "confidence": 1.0}, "entities": []}
    events = [
        *session_start(0.0),
        *[{"event": "user", "text": "hi", "parse_data": said, "timestamp": 1.0}] * 99_997,
    ]
    store = create_tracker_store(config)
    try:
        await store.append("long", events)
        del events
        assert await store.load_all("short") is None  # the read path used once
        async with loop_hold() as hold:
            loaded = await store.load_all("long")
        assert loaded is not None and len(loaded) == 100_000
        del loaded
        assert hold.loop_busiest < 0.0015 * hold.slowness, (
            hold.loop_busiest
        )  # 2.9-3.3 ms before; now 0.4 ms
    finally:
        await store.close()


async def test_a_new_conversations_first_append_asks_no_previous_row_id_after_an_empty_load(
    tmp_path: Path,
) -> None:
    # The load found no rows, at an epoch nobody has ended since: the append knows there is
    # no previous row without asking again (one SELECT a new conversation's first turn).
    store = create_tracker_store({"type": "sql", "dialect": "sqlite", "db": str(tmp_path / "n.db")})
    try:
        await store.append("warm", session_start(1.0))  # opens the inline connection
        statements: list[str] = []
        store._db._inline.set_trace_callback(statements.append)  # type: ignore[attr-defined]

        assert await store.load("new") is None
        await store.append("new", session_start(2.0) + [user("hi", 3.0)])

        assert not [sql for sql in statements if "max(id)" in sql]
        assert await store.load("new") == session_start(2.0) + [user("hi", 3.0)]
    finally:
        await store.close()


async def test_rows_another_process_appended_after_an_empty_load_come_before_this_append(
    tmp_path: Path,
) -> None:
    path = tmp_path / "o.db"
    store = create_tracker_store({"type": "sql", "dialect": "sqlite", "db": str(path)})
    try:
        await store.append("warm", session_start(1.0))
        assert await store.load("carol") is None

        await append_from_another_process(path, "carol")
        await store.append("carol", [user("mine", 10.0)])

        expected = [bot("from another process", 9.0), user("mine", 10.0)]
        assert await store.load("carol") == expected
        assert await store.load("carol") == expected
    finally:
        await store.close()


def session_cache(store: TrackerStore) -> Any:
    assert isinstance(store, SqlTrackerStore)
    return store._cache


def heavy_user(text: str, timestamp: float, kib: int) -> dict[str, Any]:
    """A user event whose metadata makes its JSON `kib` KiB and a bit: it weighs 1 + kib."""
    return user(text, timestamp) | {"metadata": {"blob": "x" * (kib * 1024)}}


async def test_a_heavy_event_weighs_its_kib_and_evicts_the_least_recently_used(
    tmp_path: Path,
) -> None:
    store = create_tracker_store({"type": "sql", "db": str(tmp_path / "h.db"), "cache_events": 103})
    try:
        await store.append("light", [user("hi", 1.0), bot("hello", 2.0)])
        await store.append("heavy", [heavy_user("big", 3.0, 40)])  # weighs 41
        assert session_cache(store).get("light") is not None  # 43 of 103
        await store.append("heavier", [heavy_user("bigger", 4.0, 60)])  # 104 of 103

        assert session_cache(store).get("light") is None  # the least recently used went
        assert session_cache(store).get("heavy") is not None
        assert session_cache(store).weight == 41 + 61
        assert await store.load("light") == [user("hi", 1.0), bot("hello", 2.0)]  # read again
        assert session_cache(store).get("heavy") is None  # 104 again: the next least recently used
        assert session_cache(store).get("heavier") is not None
        assert session_cache(store).weight == 61 + 2
        assert await store.load("heavy") == [heavy_user("big", 3.0, 40)]
    finally:
        await store.close()


async def test_a_session_heavier_than_the_bound_is_read_from_the_database(
    tmp_path: Path,
) -> None:
    store = create_tracker_store({"type": "sql", "db": str(tmp_path / "o.db"), "cache_events": 50})
    try:
        for n in range(3):  # 30 KiB each: the session outweighs the cache from the second
            await store.append("big", [heavy_user(f"big {n}", float(n), 30)])
            assert await store.load("big") == [
                heavy_user(f"big {i}", float(i), 30) for i in range(n + 1)
            ]
        assert session_cache(store).get("big") is None
        assert session_cache(store).weight == 0
        await store.append("big", [bot("still here", 9.0)])
        loaded = await store.load("big")
        assert loaded is not None and len(loaded) == 4 and loaded[-1] == bot("still here", 9.0)
    finally:
        await store.close()


async def test_a_long_session_of_ordinary_events_stays_cached_beyond_the_bound(
    tmp_path: Path,
) -> None:
    """Ordinary events weigh 1: a conversation longer than `cache_events` is still kept,
    alone (its turns read no rows), as before events were weighed."""
    store = create_tracker_store({"type": "sql", "db": str(tmp_path / "l.db"), "cache_events": 5})
    try:
        await store.append("long", [user(f"hi {n}", float(n)) for n in range(20)])
        assert session_cache(store).get("long") is not None
        assert len(await store.load("long") or []) == 20
    finally:
        await store.close()


async def test_heavy_rows_another_process_appended_are_weighed_when_read(
    tmp_path: Path,
) -> None:
    path = tmp_path / "r.db"
    writer = create_tracker_store({"type": "sql", "db": str(path)})
    reader = create_tracker_store({"type": "sql", "db": str(path), "cache_events": 100})
    try:
        await writer.append("a", [heavy_user("big", 1.0, 40)])
        await writer.append("b", [user("hi", 1.0)])
        assert await reader.load("a") == [heavy_user("big", 1.0, 40)]
        assert await reader.load("b") == [user("hi", 1.0)]
        assert session_cache(reader).weight == 41 + 1
        await writer.append("b", [heavy_user("bigger", 2.0, 70)])
        loaded = await reader.load("b")  # 'b' read on: 71 more, 'a' goes
        assert loaded is not None and len(loaded) == 2
        assert session_cache(reader).get("a") is None
        assert session_cache(reader).weight == 1 + 71
    finally:
        await writer.close()
        await reader.close()
