"""PostgreSQL store: appends made together commit together (one transaction), and each is
still all or nothing: one the database refuses fails alone."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import pytest

from server.errors import StoreRefusedData
from server.trackers.factory import create_tracker_store
from server.trackers.sql_store import SqlTrackerStore
from server.trackers.store import TrackerStore
from tests.loop_lag import paced
from tests.trackers.persistence_fixtures import POSTGRES, postgres_database


@pytest.fixture(autouse=True)
def no_silence_checks(monkeypatch: pytest.MonkeyPatch) -> None:
    """What is checked here is grouping, not how long the database takes. A fresh database's
    first append (its schema, the first connection's row type) took 0.4-0.8 s at load 6; on
    a host crowded enough to hold it 2 s, a new connection beside it that had no answer in 3 s
    read as a silent database, a 503. tests/trackers/test_silent_database.py checks those."""
    monkeypatch.setenv("SQL_SILENCE_CHECK_AFTER", "30")  # the statement timeout


def turn(text: str, timestamp: float) -> list[dict[str, Any]]:
    return [
        {"event": "user", "timestamp": timestamp, "text": text, "parse_data": {}},
        {"event": "action", "timestamp": timestamp + 0.1, "name": "action_listen"},
    ]


async def transactions_that_wrote(database: str) -> int:
    """How many transactions wrote the rows of `events` (rows of one share their xmin)."""
    conn = await asyncpg.connect(
        host=POSTGRES[0], port=POSTGRES[1], user="postgres", database=database
    )
    try:
        return int(await conn.fetchval("SELECT count(DISTINCT xmin::text) FROM events"))
    finally:
        await conn.close()


@asynccontextmanager
async def reader_and_writer(
    config: dict[str, Any],
) -> AsyncIterator[tuple[TrackerStore, TrackerStore]]:
    """Two stores over one database: the reader caches what it loads, the writer stands for
    another process appending to the same conversations."""
    reader, writer = create_tracker_store(config), create_tracker_store(config)
    try:
        yield reader, writer
    finally:
        try:
            await reader.close()
        finally:
            await writer.close()


async def test_appends_made_together_commit_in_one_transaction() -> None:
    async with postgres_database() as config:
        store = create_tracker_store(config)
        try:
            await store.append("warm-up", turn("hi", 1.0))  # creates the table
            senders = [f"user{n}" for n in range(20)]
            await asyncio.gather(*(store.append(s, turn(s, 2.0)) for s in senders))
            for sender in senders:
                assert await store.load(sender) == turn(sender, 2.0)
        finally:
            await store.close()
        assert await transactions_that_wrote(config["db"]) == 2  # the warm-up's, the group's
        reader = create_tracker_store(config)  # nothing cached
        try:
            for sender in senders:
                assert await reader.load(sender) == turn(sender, 2.0)
        finally:
            await reader.close()


async def test_an_append_the_database_refuses_fails_alone() -> None:
    too_long = "x" * 300  # sender_id is VARCHAR(255)
    async with postgres_database() as config:
        store = create_tracker_store(config)
        try:
            await store.append("warm-up", turn("hi", 1.0))
            results = await asyncio.gather(
                store.append("alice", turn("a", 2.0)),
                store.append(too_long, turn("b", 2.0)),
                store.append("bob", turn("c", 2.0)),
                return_exceptions=True,
            )
            assert not isinstance(results[0], BaseException), results[0]
            assert not isinstance(results[2], BaseException), results[2]
            assert isinstance(results[1], StoreRefusedData)  # a 400: the client's sender id
            assert isinstance(results[1].__cause__, asyncpg.StringDataRightTruncationError)
            assert await store.load("alice") == turn("a", 2.0)
            assert await store.load("bob") == turn("c", 2.0)
            assert sorted(await store.keys()) == ["alice", "bob", "warm-up"]
        finally:
            await store.close()


@pytest.mark.parametrize("cached", [False, True])
async def test_two_appends_of_one_conversation_in_a_group_keep_their_order(cached: bool) -> None:
    async with postgres_database() as config:
        store = create_tracker_store(config)
        assert isinstance(store, SqlTrackerStore)
        try:
            await store.append("warm-up", turn("hi", 1.0))
            if cached:
                await store.append("alice", turn("first", 1.0))
                assert await store.load("alice") == turn("first", 1.0)
            await asyncio.gather(
                store.append("alice", turn("a", 2.0)), store.append("alice", turn("b", 3.0))
            )
            expected = (turn("first", 1.0) if cached else []) + turn("a", 2.0) + turn("b", 3.0)
            assert await store.load("alice") == expected
        finally:
            await store.close()
        reader = create_tracker_store(config)
        try:
            assert await reader.load("alice") == expected
        finally:
            await reader.close()


async def test_loads_made_together_each_see_their_own_newer_rows() -> None:
    senders = [f"user{n}" for n in range(10)]
    async with postgres_database() as config, reader_and_writer(config) as (reader, writer):
        for sender in senders:
            await reader.append(sender, turn(sender, 1.0))
            assert await reader.load(sender) == turn(sender, 1.0)  # cached
        for number, sender in enumerate(senders):  # another process's turns
            for later in range(number % 3):
                await writer.append(sender, turn(f"{sender} {later}", 2.0 + later))
        loaded = await asyncio.gather(*(reader.load(sender) for sender in senders))
        for number, (sender, events) in enumerate(zip(senders, loaded, strict=True)):
            later_turns = [turn(f"{sender} {later}", 2.0 + later) for later in range(number % 3)]
            assert events == turn(sender, 1.0) + [e for t in later_turns for e in t]


@pytest.mark.timing
@pytest.mark.parametrize("alone", [False, True])
async def test_an_append_cancelled_before_its_group_goes_out_is_not_written(alone: bool) -> None:
    async with postgres_database() as config:
        store = create_tracker_store(config)
        try:
            await store.append("warm-up", turn("hi", 1.0))
            others = [] if alone else [store.append("alice", turn("a", 2.0))]
            kept = asyncio.gather(*others)
            cancelled = asyncio.ensure_future(store.append("bob", turn("b", 2.0)))
            await asyncio.sleep(0)  # they wait for the group, which has not gone out yet
            cancelled.cancel()
            await kept
            with pytest.raises(asyncio.CancelledError):
                await cancelled
            assert await store.load("alice") == (None if alone else turn("a", 2.0))
            assert await store.load("bob") is None
        finally:
            await asyncio.wait_for(store.close(), paced(5))  # the groups' task has ended
        assert await transactions_that_wrote(config["db"]) == (1 if alone else 2)


async def test_reads_of_known_and_new_conversations_made_together_each_get_their_rows() -> None:
    known = [f"known{n}" for n in range(4)]
    new = {
        "new plain": [turn("a", 1.0)[0]],
        "new with a later session": [
            {"event": "action", "timestamp": 1.0, "name": "action_session_start"},
            {"event": "session_started", "timestamp": 1.1},
            *turn("old session", 1.2),
            {"event": "action", "timestamp": 2.0, "name": "action_session_start"},
            {"event": "session_started", "timestamp": 2.1},
            *turn("this session", 2.2),
        ],
    }
    async with postgres_database() as config, reader_and_writer(config) as (reader, writer):
        for sender in known:
            await reader.append(sender, turn(sender, 1.0))
            assert await reader.load(sender) == turn(sender, 1.0)  # cached
            await writer.append(sender, turn(f"{sender} later", 2.0))
        for sender, events in new.items():
            await writer.append(sender, events)
        # Newer-row reads and whole-session reads, interleaved, in one group.
        senders = [known[0], "new plain", known[1], "new with a later session", *known[2:]]
        loaded = await asyncio.gather(*(reader.load(sender) for sender in senders))
        expected = {s: turn(s, 1.0) + turn(f"{s} later", 2.0) for s in known}
        expected["new plain"] = new["new plain"]
        expected["new with a later session"] = new["new with a later session"][4:]
        assert dict(zip(senders, loaded, strict=True)) == expected
