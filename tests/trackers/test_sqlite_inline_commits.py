"""SQLite appends committed on the event loop's thread keep the store's guarantees: all or
nothing per append, a refused append fails alone, a writer in another process is waited for
(on the store's thread) and seen, and the WAL file is checkpointed and reused."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from server.trackers import sqlite_database
from server.trackers.factory import create_tracker_store
from server.trackers.sql_store import SqlTrackerStore, _rows
from server.trackers.sqlite_database import SqliteDatabase
from tests.sqlite_reader import open_descriptors, reading_in_a_rollback_journal
from tests.trackers.test_sql_tracker_store import create_rasa_sqlite_db
from tests.trackers.test_tracker_stores import session_start, user


def sqlite_store(path: Path) -> SqlTrackerStore:
    store = create_tracker_store({"type": "sql", "dialect": "sqlite", "db": str(path)})
    assert isinstance(store, SqlTrackerStore)
    return store


def database_of(store: SqlTrackerStore) -> SqliteDatabase:
    assert isinstance(store._db, SqliteDatabase)
    return store._db


def file_size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def wal_frames(path: Path) -> int:
    """Frames in the database's WAL file now (what a checkpoint would have to copy)."""
    with sqlite3.connect(path) as conn:
        _, frames, _ = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    return int(frames)


def count_rows(path: Path, sender_id: str) -> int:
    with sqlite3.connect(path) as conn:
        (count,) = conn.execute(
            "SELECT count(*) FROM events WHERE sender_id = ?", (sender_id,)
        ).fetchone()
    return int(count)


# Holds SQLite's write lock (one uncommitted row) until told to commit, in another process.
WRITER = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
conn.execute(
    "INSERT INTO events (sender_id, type_name, timestamp, data)"
    " VALUES ('other', 'user', 1.0, ?)", (sys.argv[2],),
)
print("locked", flush=True)
sys.stdin.readline()
conn.execute("COMMIT")
print("committed", flush=True)
"""


async def test_the_appends_of_one_loop_iteration_commit_inline_in_one_transaction(
    tmp_path: Path,
) -> None:
    store = sqlite_store(tmp_path / "i.db")
    try:
        await store.append("warm", session_start(0.0))
        database = database_of(store)
        inline_before = database.inline_commits

        await asyncio.gather(*(store.append(f"c{n}", [user(f"m{n}", 1.0)]) for n in range(30)))

        assert database.inline_commits == inline_before + 1
        for n in range(30):
            assert await store.load(f"c{n}") == [user(f"m{n}", 1.0)]
    finally:
        await store.close()


def create_autoincrement_table(path: Path) -> None:
    """The events table as botserver created it before revision 0005 (AUTOINCREMENT)."""
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute(
            "CREATE TABLE events (id INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,"
            " sender_id VARCHAR(255) NOT NULL, type_name VARCHAR(255) NOT NULL,"
            " timestamp FLOAT, intent_name VARCHAR(255), action_name VARCHAR(255), data TEXT)"
        )


def has_autoincrement(path: Path) -> bool:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        (sql,) = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'events'").fetchone()
    return "AUTOINCREMENT" in str(sql).upper()


# botserver's tables since revision 0005 and Rasa's have no AUTOINCREMENT; earlier ones lose it
# at revision 0006.
@pytest.mark.parametrize("made_by", ["botserver", "earlier botserver", "rasa"])
async def test_an_append_reports_the_ids_its_rows_were_given(made_by: str, tmp_path: Path) -> None:
    path = tmp_path / "ids.db"
    if made_by == "rasa":
        create_rasa_sqlite_db(path, rows=[])
    elif made_by == "earlier botserver":
        create_autoincrement_table(path)
    store = sqlite_store(path)
    try:
        await store.append("warm", session_start(0.0))
        database = database_of(store)
        assert not has_autoincrement(path)  # an earlier botserver's loses it (revision 0006)
        await store.delete("warm")  # the largest id is gone: the next ones take it again
        appends = {
            f"c{n}": _rows(f"c{n}", [user(f"m{n}-{i}", float(i)) for i in range(n + 1)])
            for n in range(5)
        }
        results = await asyncio.gather(
            *(database.insert(sender, rows) for sender, rows in appends.items())
        )

        with sqlite3.connect(path) as conn:
            for (sender, rows), (previous, written, _) in zip(
                appends.items(), results, strict=True
            ):
                stored = conn.execute(
                    "SELECT id, data FROM events WHERE sender_id = ? ORDER BY id", (sender,)
                ).fetchall()
                assert previous is None
                assert written == stored
                assert [data for _, data in written] == [row[5] for row in rows]
    finally:
        await store.close()


async def test_the_indexed_columns_are_stored_as_given_null_included(tmp_path: Path) -> None:
    store = sqlite_store(tmp_path / "n.db")
    try:
        await store.append("warm", session_start(0.0))
        rows = [
            ("c", "user", 1.5, "greet", None, "{}"),
            ("c", "action", 2, None, "action_listen", "{}"),
            ("c", "bot", None, "", "", "{}"),
            ("c", "slot", 3.0, None, None, "{}"),
            ("c", "user", 4.0, "0", "NULL", "{}"),
        ]
        await database_of(store).insert("c", rows)

        with sqlite3.connect(tmp_path / "n.db") as conn:
            stored = conn.execute(
                "SELECT sender_id, type_name, timestamp, intent_name, action_name, data,"
                " typeof(timestamp), typeof(intent_name), typeof(action_name)"
                " FROM events WHERE sender_id = 'c' ORDER BY id"
            ).fetchall()
        assert [row[:6] for row in stored] == rows
        assert [row[6:] for row in stored] == [
            ("real", "text", "null"),
            ("real", "null", "text"),
            ("null", "text", "text"),
            ("real", "null", "null"),
            ("real", "text", "text"),
        ]
    finally:
        await store.close()


async def test_an_append_stores_no_name_as_null_and_names_as_text(tmp_path: Path) -> None:
    """The store's rows carry the database's cheaper null marker; the columns hold NULL."""
    store = sqlite_store(tmp_path / "a.db")
    try:
        await store.append("c", session_start(0.0))
        await store.append(
            "c",
            [
                {"event": "user", "timestamp": 1.0, "text": "hi", "parse_data": {}},
                {"event": "user", "timestamp": 2.0, "parse_data": {"intent": {"name": "0"}}},
                {"event": "action", "timestamp": 3.0, "name": "utter_greet"},
                {"event": "slot", "timestamp": 4.0, "name": "mood", "value": None},
                {"event": "bot", "timestamp": 5.0, "text": "hey"},
            ],
        )
        with sqlite3.connect(tmp_path / "a.db") as conn:
            stored = conn.execute(
                "SELECT type_name, intent_name, action_name FROM events"
                " WHERE sender_id = 'c' ORDER BY id"
            ).fetchall()
        assert stored[-5:] == [
            ("user", None, None),
            ("user", "0", None),
            ("action", None, "utter_greet"),
            ("slot", None, "mood"),
            ("bot", None, None),
        ]
    finally:
        await store.close()


async def test_appends_of_any_shape_store_their_rows_as_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rasa's event types are written into the INSERT, per shape of append, up to a bound;
    a type of a client's own (a quote in it), and any shape past the bound, are bound."""
    store = sqlite_store(tmp_path / "s.db")
    try:
        await store.append("warm", session_start(0.0))
        monkeypatch.setattr(sqlite_database, "_SHAPES", {})
        monkeypatch.setattr(sqlite_database, "_SHAPES_KEPT", 3)
        appends: list[list[sqlite_database.Row]] = [
            [("c", "user", 1.0, "greet", None, "{}"), ("c", "action", 2.0, None, "a", "{}")],
            [("c", "it's", 3.0, None, None, "{}"), ("c", "bot", 4.0, None, None, "{}")],
            [("c", "bot", 5.0, "i", "n", "{}"), ("c", "slot", 6.0, None, "x'); --", "{}")],
            [("c", "user", 7.0, "greet", None, "{}"), ("c", "action", 8.0, None, "b", "{}")],
            [("c", "session_started", 9.0, None, None, "{}")],
            [("c", "user", 10.0, "", None, "{}"), ("c", "restart", 11.0, None, None, "{}")],
        ]
        for rows in appends:
            await database_of(store).insert("c", rows)

        with sqlite3.connect(tmp_path / "s.db") as conn:
            stored = conn.execute(
                "SELECT sender_id, type_name, timestamp, intent_name, action_name, data"
                " FROM events WHERE sender_id = 'c' ORDER BY id"
            ).fetchall()
        assert stored == [row for rows in appends for row in rows]
        assert len(sqlite_database._SHAPES) == 3
    finally:
        await store.close()


async def test_a_refused_append_fails_alone_in_its_inline_group(tmp_path: Path) -> None:
    store = sqlite_store(tmp_path / "r.db")
    try:
        await store.append("good", session_start(0.0))
        database = database_of(store)
        inline_before = database.inline_commits
        good_row = ("good", "user", 9.0, "greet", None, '{"event": "user"}')
        bad_good_row = ("bad", *good_row[1:])
        bad_row = ("bad", None, 9.0, None, None, "{}")  # type_name is NOT NULL

        results = await asyncio.gather(
            database.insert("good", [good_row, good_row]),
            database.insert("bad", [bad_good_row, bad_row]),
            return_exceptions=True,
        )

        assert database.inline_commits == inline_before + 1
        assert isinstance(results[1], sqlite3.IntegrityError)
        assert not isinstance(results[0], BaseException)
        previous_id, written, _ = results[0]
        assert previous_id is not None and len(written) == 2
        assert count_rows(tmp_path / "r.db", "good") == len(session_start(0.0)) + 2
        assert count_rows(tmp_path / "r.db", "bad") == 0  # not even its good row
    finally:
        await store.close()


async def test_an_append_of_rows_of_two_conversations_is_refused_and_writes_nothing(
    tmp_path: Path,
) -> None:
    # An append binds its conversation's id once for all its rows: a row of another
    # conversation is refused, not stored under the first row's.
    store = sqlite_store(tmp_path / "m.db")
    try:
        await store.append("a", session_start(0.0))
        database = database_of(store)
        row = ("a", "user", 9.0, "greet", None, '{"event": "user"}')
        results = await asyncio.gather(
            database.insert("a", [row]),
            database.insert("a", [row, ("b", *row[1:])]),
            return_exceptions=True,
        )

        assert not isinstance(results[0], BaseException)
        assert isinstance(results[1], ValueError)
        assert count_rows(tmp_path / "m.db", "a") == len(session_start(0.0)) + 1
        assert count_rows(tmp_path / "m.db", "b") == 0
    finally:
        await store.close()


async def test_a_refused_append_of_a_kept_shape_fails_alone_in_its_inline_group(
    tmp_path: Path,
) -> None:
    """A turn's append runs its shape's INSERT (OR FAIL, without a statement journal): one
    it refuses writes none of its rows, and the appends beside it commit."""
    store = sqlite_store(tmp_path / "s.db")
    try:
        await store.append("warm", session_start(0.0))
        database = database_of(store)
        inline_before = database.inline_commits

        def rows(sender: Any) -> list[sqlite_database.Row]:
            return [
                (sender, "user", 9.0, "greet", None, '{"event": "user"}'),
                (sender, "action", 9.1, None, "utter_greet", '{"event": "action"}'),
                (sender, "bot", 9.2, None, None, '{"event": "bot"}'),
            ]

        results = await asyncio.gather(
            database.insert("one", rows("one")),
            database.insert("none", rows(None)),  # sender_id is NOT NULL
            database.insert("two", rows("two")),
            return_exceptions=True,
        )

        assert database.inline_commits == inline_before + 1
        assert isinstance(results[1], sqlite3.IntegrityError)
        for sender, result in (("one", results[0]), ("two", results[2])):
            assert not isinstance(result, BaseException)
            assert count_rows(tmp_path / "s.db", sender) == 3
        with sqlite3.connect(tmp_path / "s.db") as conn:
            assert conn.execute("SELECT count(*) FROM events").fetchone() == (
                len(session_start(0.0)) + 6,
            )
    finally:
        await store.close()


async def test_a_refused_long_append_fails_alone_in_its_inline_group(tmp_path: Path) -> None:
    store = sqlite_store(tmp_path / "r.db")
    try:
        await store.append("good", session_start(0.0))
        database = database_of(store)
        good_row = ("good", "user", 9.0, "greet", None, '{"event": "user"}')
        bad_row = ("bad", None, 9.0, None, None, "{}")  # type_name is NOT NULL
        long_good = [good_row] * 400  # three INSERT statements

        results = await asyncio.gather(
            database.insert("good", long_good),
            database.insert("bad", [("bad", *good_row[1:])] * 300 + [bad_row]),
            return_exceptions=True,
        )

        assert isinstance(results[1], sqlite3.IntegrityError)
        assert not isinstance(results[0], BaseException)
        assert count_rows(tmp_path / "r.db", "good") == len(session_start(0.0)) + 400
        assert count_rows(tmp_path / "r.db", "bad") == 0  # not even the first 300
    finally:
        await store.close()


async def test_an_append_failing_after_its_rows_were_written_fails_its_whole_group(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = sqlite_store(tmp_path / "late.db")
    try:
        await store.append("warm", session_start(0.0))
        database = database_of(store)
        insert = sqlite_database._insert

        def failing_after_the_insert(conn: sqlite3.Connection, rows: Any, *args: Any) -> Any:
            written = insert(conn, rows, *args)
            if rows[0][0] == "late":
                raise ValueError("after the INSERT")
            return written

        monkeypatch.setattr(sqlite_database, "_insert", failing_after_the_insert)
        row = ("x", "user", 9.0, "greet", None, "{}")

        results = await asyncio.gather(
            database.insert("early", [("early", *row[1:])]),
            database.insert("late", [("late", *row[1:])]),
            return_exceptions=True,
        )

        assert all(isinstance(result, ValueError) for result in results)
        assert count_rows(tmp_path / "late.db", "late") == 0
        assert count_rows(tmp_path / "late.db", "early") == 0
        monkeypatch.undo()
        await store.append("after", [user("m", 10.0)])  # the store goes on
        assert count_rows(tmp_path / "late.db", "after") == 1
    finally:
        await store.close()


async def test_a_writer_in_another_process_sends_appends_to_the_thread_and_none_is_lost(
    tmp_path: Path,
) -> None:
    path = tmp_path / "x.db"
    store = sqlite_store(path)
    other_event = user("from the other process", 1.0)
    try:
        await store.append("warm", session_start(0.0))
        database = database_of(store)
        writer = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            WRITER,
            str(path),
            _rows("other", [other_event])[0][5],
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        assert writer.stdin is not None and writer.stdout is not None
        assert await writer.stdout.readline() == b"locked\n"
        fallbacks_before = database.busy_fallbacks

        appends = asyncio.gather(*(store.append(f"c{n}", [user(f"m{n}", 2.0)]) for n in range(20)))
        # Until an append found the database locked (at once on a quiet host, later on a
        # loaded one): then they wait for the other process, off the event loop.
        for _ in range(600):
            if database.busy_fallbacks > fallbacks_before:
                break
            await asyncio.sleep(0.05)
        assert database.busy_fallbacks > fallbacks_before
        await asyncio.sleep(0.3)
        assert not appends.done()
        writer.stdin.write(b"commit\n")
        assert await writer.stdout.readline() == b"committed\n"
        await appends
        assert await writer.wait() == 0

        for n in range(20):
            assert await store.load(f"c{n}") == [user(f"m{n}", 2.0)]
        assert await store.load("other") == [other_event]
        inline_before = database.inline_commits
        await store.append("c0", [user("again", 3.0)])
        assert database.inline_commits == inline_before + 1  # inline again once it is free
    finally:
        await store.close()


async def test_a_conversation_waiting_on_the_thread_keeps_the_order_of_its_appends(
    tmp_path: Path,
) -> None:
    path = tmp_path / "o.db"
    store = sqlite_store(path)
    try:
        await store.append("warm", session_start(0.0))
        blocker = sqlite3.connect(path, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
        first = asyncio.ensure_future(store.append("alice", [user("first", 1.0)]))
        await asyncio.sleep(0.3)  # busy inline: on the thread, asleep in the busy handler
        blocker.execute("COMMIT")
        blocker.close()
        # The write lock is free at once, the thread notices later: the second append must
        # not commit inline before the first.
        second = asyncio.ensure_future(store.append("alice", [user("second", 2.0)]))
        await asyncio.gather(first, second)

        with sqlite3.connect(path) as conn:
            texts = [
                json.loads(data)["text"]
                for (data,) in conn.execute(
                    "SELECT data FROM events WHERE sender_id = 'alice' ORDER BY id"
                )
            ]
        assert texts == ["first", "second"]
    finally:
        await store.close()


async def test_checkpoints_run_and_the_wal_file_is_reused_instead_of_growing(
    tmp_path: Path,
) -> None:
    path = tmp_path / "w.db"
    wal = Path(f"{path}-wal")
    store = sqlite_store(path)
    try:
        await store.append("warm", session_start(0.0))
        database = database_of(store)
        database.checkpoint_after = 10  # commits, until the first checkpoint has counted pages
        database.checkpoint_frames = 50  # about 10 commits of one append each
        for turn in range(10):
            await store.append(f"c{turn % 7}", [user(f"m{turn}", float(turn))])
            if database._checkpointing is not None:
                await database._checkpointing
                break
        # The checkpoint copied the whole WAL and the store's thread started it afresh with
        # one commit of its own, so no inline commit has to (that commit fsyncs the WAL).
        assert database.checkpoints == 1
        assert wal_frames(path) == 1
        for turn in range(10, 60):
            await store.append(f"c{turn % 7}", [user(f"m{turn}", float(turn))])
        size_after_60 = file_size(wal)
        for turn in range(60, 600):
            await store.append(f"c{turn % 7}", [user(f"m{turn}", float(turn))])

        assert database.checkpoints >= 10, database.checkpoint_after
        # Reused from its start after each checkpoint, the WAL stays at the size of one cycle
        # (give or take a few pages); had it not started afresh it would be ten times larger.
        assert file_size(wal) <= 2 * size_after_60
        assert database.inline_commits >= 500
        for sender in range(7):
            assert len(await store.load(f"c{sender}") or []) in (85, 86)
    finally:
        await store.close()
    assert file_size(wal) == 0  # the last connection to close checkpointed it


async def test_appends_waiting_for_a_checkpoint_commit_inline_after_it_in_one_group(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "h.db"
    store = sqlite_store(path)
    paused, go_on = pause_checkpoint(monkeypatch, "held")
    try:
        database, checkpoint = await start_checkpoint(store, paused)
        inline, on_thread = (
            database.inline_commits,
            database.group_commits - database.inline_commits,
        )

        appends = asyncio.gather(*(store.append(f"c{n}", [user(f"m{n}", 2.0)]) for n in range(20)))
        await asyncio.sleep(0.05)
        assert not appends.done()  # held: the store's thread is restarting the WAL
        go_on.set()
        await asyncio.wait_for(appends, timeout=5)

        assert checkpoint.done()
        assert database.checkpoints == 1
        # On the thread they would have held the write lock while the next inline groups
        # tried to start, and sent those to the thread too.
        assert database.group_commits - database.inline_commits == on_thread
        assert database.inline_commits == inline + 1
        # ... and after the thread's first commit into the restarted WAL, not before it.
        assert wal_frames(path) > 1
        for n in range(20):
            assert await store.load(f"c{n}") == [user(f"m{n}", 2.0)]
    finally:
        go_on.set()
        await store.close()


def wal_index_frames(database: SqliteDatabase) -> int:
    """The WAL's frames as the store's WAL index says (no checkpoint, unlike wal_frames)."""
    assert database._wal_index is not None
    header = database._wal_index.header()
    assert header is not None
    return sqlite_database._WalIndex.frames(header)


def pause_checkpoint(
    monkeypatch: pytest.MonkeyPatch, step: str
) -> tuple[threading.Event, threading.Event]:
    """Makes a checkpoint wait on the store's thread until told to go on, (paused, go on):
    step "copied" once the copy beside the appends has pinned and copied the WAL, step
    "held" as the held step starts (appends are held by then)."""
    paused, go_on = threading.Event(), threading.Event()
    name = "_copy_pinned" if step == "copied" else "_finish_checkpoint"
    original = getattr(SqliteDatabase, name)

    def pausing(self: SqliteDatabase, argument: Any, conn: sqlite3.Connection) -> int:
        if step == "held":
            paused.set()
            go_on.wait(10)
        result: int = original(self, argument, conn)
        if step == "copied":
            paused.set()
            go_on.wait(10)
        return result

    monkeypatch.setattr(SqliteDatabase, name, pausing)
    return paused, go_on


async def start_checkpoint(
    store: SqlTrackerStore, paused: threading.Event
) -> tuple[SqliteDatabase, asyncio.Task[None]]:
    """Starts a checkpoint after a few appends; returns once it paused (pause_checkpoint)."""
    await store.append("warm", session_start(0.0))
    database = database_of(store)
    database.checkpoint_after = 1
    await store.append("warm", [user("starts a checkpoint", 1.0)])
    checkpoint = database._checkpointing
    assert checkpoint is not None
    await asyncio.get_running_loop().run_in_executor(None, paused.wait, 10)
    return database, checkpoint


async def test_appends_commit_inline_while_a_checkpoint_copies_the_wal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = sqlite_store(tmp_path / "b.db")
    paused, go_on = pause_checkpoint(monkeypatch, "copied")
    try:
        database, checkpoint = await start_checkpoint(store, paused)
        frames = wal_index_frames(database)
        inline = database.inline_commits

        # The whole WAL is copied and the checkpoint not over: the appends commit inline
        # meanwhile, without waiting for it ...
        await asyncio.wait_for(
            asyncio.gather(*(store.append(f"c{n}", [user(f"m{n}", 2.0)]) for n in range(10))),
            timeout=5,
        )
        assert not checkpoint.done()
        assert database.inline_commits == inline + 1
        # ... after the copied frames: the pinned WAL was not restarted by an inline commit
        # (that would fsync its header on the event loop).
        assert wal_index_frames(database) > frames

        go_on.set()
        await checkpoint
        assert database.checkpoints == 1
        assert wal_index_frames(database) == 1  # restarted by the store's thread
        for n in range(10):
            assert await store.load(f"c{n}") == [user(f"m{n}", 2.0)]
    finally:
        go_on.set()
        await store.close()


async def test_appends_wait_for_a_checkpoint_once_the_wal_outgrows_its_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = sqlite_store(tmp_path / "g.db")
    paused, go_on = pause_checkpoint(monkeypatch, "copied")
    try:
        database, checkpoint = await start_checkpoint(store, paused)
        database.checkpoint_frames = 10
        limit = sqlite_database._WAL_GROWTH_LIMIT * database.checkpoint_frames

        turn = 0
        while wal_index_frames(database) <= limit:
            await asyncio.wait_for(store.append("c", [user(f"m{turn}", 2.0)]), timeout=5)
            turn += 1
        assert turn > 1
        waiting = asyncio.ensure_future(store.append("c", [user("waits", 3.0)]))
        await asyncio.sleep(0.05)
        assert not waiting.done()  # held until the WAL is copied and restarted

        go_on.set()
        await checkpoint
        await asyncio.wait_for(waiting, timeout=5)
        assert database.checkpoints == 1
        assert wal_index_frames(database) < limit
        loaded = await store.load("c") or []
        assert [event["text"] for event in loaded] == [f"m{n}" for n in range(turn)] + ["waits"]
    finally:
        go_on.set()
        await store.close()


async def test_the_held_step_waits_for_an_inline_commit_under_way(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store's thread starts the hold itself; an inline transaction already past its
    look at the hold (SQLite releases the GIL inside it) ends before the WAL is copied."""
    store = sqlite_store(tmp_path / "u.db")
    paused, go_on = pause_checkpoint(monkeypatch, "copied")
    try:
        database, checkpoint = await start_checkpoint(store, paused)
        database._inline_busy = True  # as while an inline commit is inside SQLite
        go_on.set()
        for _ in range(2000):  # the store's thread starts the hold
            if database._held is not None or checkpoint.done():
                break
            await asyncio.sleep(0.001)
        await asyncio.sleep(0.05)
        assert not checkpoint.done()  # the held step waits for the commit under way
        assert database._held is not None
        database._inline_busy = False
        await asyncio.wait_for(checkpoint, timeout=5)
        assert database.checkpoints == 1
    finally:
        go_on.set()
        await store.close()


async def test_a_failed_checkpoint_unpins_the_wal_and_the_next_one_restarts_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = sqlite_store(tmp_path / "e.db")
    checkpoint = sqlite_database._checkpoint
    failures = [sqlite3.OperationalError("disk I/O error")]

    def failing_once(conn: sqlite3.Connection, **kwargs: Any) -> int:
        if failures:
            raise failures.pop()
        return checkpoint(conn, **kwargs)

    monkeypatch.setattr(sqlite_database, "_checkpoint", failing_once)
    try:
        await store.append("warm", session_start(0.0))
        database = database_of(store)
        database.checkpoint_after = 1
        await store.append("warm", [user("starts a checkpoint", 1.0)])
        assert database._checkpointing is not None
        await database._checkpointing  # logs the failure
        assert not failures and database.checkpoints == 0
        await database.run(lambda conn: None)  # after anything queued on the thread
        assert not any(pin.in_transaction for pin in database._pins)

        await store.append("warm", [user("starts another", 2.0)])
        assert database._checkpointing is not None
        await database._checkpointing
        assert database.checkpoints == 1
        assert wal_index_frames(database) == 1  # nothing pinned it: restarted
        assert [event.get("text") for event in await store.load("warm") or []][-2:] == [
            "starts a checkpoint",
            "starts another",
        ]
    finally:
        await store.close()


async def test_synchronous_full_commits_on_the_store_thread(tmp_path: Path) -> None:
    path = tmp_path / "f.db"
    store = sqlite_store(path)
    await store.append("warm", session_start(0.0))  # creates the table
    await store.close()
    database = SqliteDatabase(str(path), busy_timeout_ms=1000, synchronous="FULL")
    try:
        rows = [(sender, "user", 1.0, "greet", None, '{"event": "user"}') for sender in "ab"]
        await asyncio.gather(database.insert("a", rows[:1]), database.insert("b", rows[1:]))
        assert database.group_commits == 1
        assert database.inline_commits == 0
        assert count_rows(path, "a") == count_rows(path, "b") == 1
    finally:
        await database.close()


async def test_a_new_conversation_loads_without_waiting_for_the_store_thread(
    tmp_path: Path,
) -> None:
    store = sqlite_store(tmp_path / "n.db")
    database = database_of(store)
    busy = threading.Event()
    try:
        await store.append("warm", session_start(0.0))
        blocked = asyncio.ensure_future(database.run(lambda conn: busy.wait(10)))

        # Nothing stored for it: one index seek on the loop's thread, no wait for the thread.
        assert await asyncio.wait_for(store.load("new"), timeout=2) is None

        busy.set()
        await blocked
        assert await store.load("warm") == session_start(0.0)
    finally:
        busy.set()
        await store.close()


async def test_a_cancelled_checkpoint_leaves_no_hold_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A checkpoint task cancelled while its thread still copies (the loop shutting down):
    the thread, going on afterwards, holds no appends and leaves no pin."""
    store = sqlite_store(tmp_path / "x.db")
    paused, go_on = pause_checkpoint(monkeypatch, "copied")
    try:
        database, checkpoint = await start_checkpoint(store, paused)
        checkpoint.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await checkpoint
        go_on.set()
        await database.run(lambda conn: None)  # the thread's checkpoint call has ended
        await database.run(lambda conn: None)  # and anything it queued
        assert database._held is None
        assert not any(pin.in_transaction for pin in database._pins)
        await asyncio.wait_for(store.append("c", [user("after", 1.0)]), timeout=5)
        assert await store.load("c") == [user("after", 1.0)]
    finally:
        go_on.set()
        await store.close()


def test_a_transaction_whose_commit_fails_is_rolled_back_and_the_next_one_starts(
    tmp_path: Path,
) -> None:
    """A COMMIT SQLite refuses leaves its transaction open (here a deferred foreign key; in
    a rollback journal, readers it waited for in vain): it is rolled back, its error raised,
    and the connection's next write transaction starts (before: "cannot start a transaction
    within a transaction", the write lock held against every other writer meanwhile)."""
    with contextlib.closing(sqlite3.connect(tmp_path / "f.db", isolation_level=None)) as conn:
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("CREATE TABLE parent (id INTEGER PRIMARY KEY)")
        conn.execute(
            "CREATE TABLE child (parent REFERENCES parent (id) DEFERRABLE INITIALLY DEFERRED)"
        )
        with pytest.raises(sqlite3.IntegrityError, match="FOREIGN KEY"):
            sqlite_database.write_transaction(
                conn, lambda: conn.execute("INSERT INTO child VALUES (1)")
            )
        assert not conn.in_transaction
        sqlite_database.write_transaction(
            conn, lambda: conn.execute("INSERT INTO parent VALUES (1)")
        )
        assert conn.execute("SELECT count(*) FROM child").fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM parent").fetchone() == (1,)


async def test_a_connection_refused_the_wal_by_another_program_leaves_no_file_open(
    tmp_path: Path,
) -> None:
    """Another program reads the file in a rollback journal: a connection of the store's
    thread cannot switch it to WAL ("database is locked"), and the next call tries again.
    Once one works and the store is closed, none of the attempts has the file open still
    (before: one descriptor each, until the process ended)."""
    db = tmp_path / "t.db"
    database = SqliteDatabase(str(db), 100, "NORMAL")
    try:
        with reading_in_a_rollback_journal(db):
            for _ in range(3):
                with pytest.raises(sqlite3.OperationalError, match="database is locked"):
                    await database.ping()
        await database.ping()
    finally:
        await database.close()
    assert open_descriptors(tmp_path) == []
