"""Every tracker store keeps the same contract, on the real engines of this machine."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from server.trackers.factory import create_tracker_store
from server.trackers.retention import delete_conversations_older_than
from server.trackers.store import TrackerStore
from tests.trackers.persistence_fixtures import tracker_store_config

STORES = ["memory", "sqlite", "postgres", "mariadb", "redis", "dynamo"]


@contextlib.asynccontextmanager
async def open_store(kind: str, tmp_path: Path) -> AsyncIterator[TrackerStore]:
    async with tracker_store_config(kind, tmp_path) as config:
        store = create_tracker_store(config)
        try:
            yield store
        finally:
            await store.close()


@pytest.fixture(params=STORES)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[TrackerStore]:
    async with open_store(request.param, tmp_path) as opened:
        yield opened


def user(text: str, timestamp: float) -> dict[str, Any]:
    return {
        "event": "user",
        "timestamp": timestamp,
        "text": text,
        "parse_data": {"intent": {"name": "greet", "confidence": 1.0}, "entities": []},
        "input_channel": "rest",
        "message_id": None,
        "metadata": {},
    }


def bot(text: str, timestamp: float) -> dict[str, Any]:
    return {"event": "bot", "timestamp": timestamp, "text": text, "data": {}, "metadata": {}}


def session_start(timestamp: float) -> list[dict[str, Any]]:
    return [
        {"event": "action", "timestamp": timestamp, "name": "action_session_start"},
        {"event": "session_started", "timestamp": timestamp + 0.001},
        {"event": "action", "timestamp": timestamp + 0.002, "name": "action_listen"},
    ]


async def test_unknown_conversation_loads_as_none(store: TrackerStore) -> None:
    assert await store.load("nobody") is None
    assert await store.load_all("nobody") is None


async def test_appended_events_load_back_in_order(store: TrackerStore) -> None:
    first = session_start(1.0) + [user("hi", 2.0)]
    await store.append("alice", first)
    await store.append("alice", [bot("hello", 3.0)])

    assert await store.load("alice") == first + [bot("hello", 3.0)]


async def test_load_returns_the_current_session_and_load_all_every_session(
    store: TrackerStore,
) -> None:
    old = session_start(1.0) + [user("hi", 2.0), bot("hello", 3.0)]
    new = session_start(100.0) + [user("back", 101.0)]
    await store.append("alice", old)
    await store.append("alice", new)

    assert await store.load("alice") == new
    assert await store.load_all("alice") == old + new


async def test_a_loaded_session_stays_as_it_was_while_the_conversation_goes_on(
    store: TrackerStore,
) -> None:
    first = session_start(1.0) + [user("hi", 2.0)]
    await store.append("alice", first)
    loaded = await store.load("alice")
    await store.append("alice", [bot("hello", 3.0)])
    again = await store.load("alice")
    await store.append("alice", session_start(100.0))

    assert loaded == first and list(loaded or []) == first and len(loaded or []) == 4
    assert again == first + [bot("hello", 3.0)]
    assert (again or [])[-2:] == [user("hi", 2.0), bot("hello", 3.0)]
    assert await store.load("alice") == session_start(100.0)


async def test_names_no_sql_column_holds_are_kept_whole(store: TrackerStore) -> None:
    """Before, on PostgreSQL (NUL) and MariaDB (over 255 characters) such an append failed,
    and a client posting the event got a 500: names come from clients and action servers."""
    long_name = "slot_" + "x" * 300
    odd = [
        {"event": "slot", "timestamp": 1.0, "name": long_name, "value": 1},
        {"event": "action", "timestamp": 2.0, "name": "act\x00ion"},
        {**user("hi", 3.0), "parse_data": {"intent": {"name": "gr\x00eet"}, "entities": []}},
    ]
    events = session_start(0.5) + odd
    await store.append("odd", events)
    assert await store.load("odd") == events
    assert await store.load_all("odd") == events


async def test_numbers_load_back_exactly(store: TrackerStore) -> None:
    """Before, the SQL stores read integers beyond 64 bits back as floats."""
    values = [2**64, -(2**70), 123456789012345678901234567890, 2**63 - 1, 0.1, 1e300]
    events = session_start(0.5) + [
        {"event": "slot", "timestamp": 1.0 + i, "name": f"n{i}", "value": value}
        for i, value in enumerate(values)
    ]
    await store.append("numbers", events)
    for loaded in (await store.load("numbers"), await store.load_all("numbers")):
        assert loaded is not None
        got = [event["value"] for event in loaded if event["event"] == "slot"]
        assert got == values
        assert [type(v) for v in got] == [type(v) for v in values]


async def test_ids_differing_only_in_case_or_trailing_spaces_are_other_conversations(
    store: TrackerStore,
) -> None:
    """Before, MariaDB's default collation made them one conversation: each loaded the
    others' events, and retention deleted them together."""
    names = ["Alice", "alice", "Alice ", "ALICE"]
    for i, name in enumerate(names):
        await store.append(name, [bot(name, 10.0 * (i + 1))])
    for name in names:
        loaded = await store.load(name)
        assert loaded is not None and [e["text"] for e in loaded] == [name]
    assert sorted(await store.keys()) == sorted(names)
    assert await store.delete_older_than(15.0) == 1  # only "Alice" is older
    assert sorted(await store.keys()) == sorted(names[1:])


async def test_a_bulk_append_and_replace_keep_every_event_in_order(store: TrackerStore) -> None:
    """A bulk append or replace (over 500 events) is converted and, on SQLite, committed off
    the event loop."""
    bulk = [bot(f"bulk {i}", float(i)) for i in range(1_200)]
    after = [bot("after", 5_000.0)]
    await store.append("bulk", bulk)
    await store.append("bulk", after)
    loaded = await store.load("bulk")
    assert loaded is not None and list(loaded) == bulk + after
    await store.replace("bulk", bulk[:700])
    assert await store.load_all("bulk") == bulk[:700]


async def test_session_start_split_across_two_appends(store: TrackerStore) -> None:
    await store.append("bob", [user("hi", 1.0), session_start(50.0)[0]])
    await store.append("bob", session_start(50.0)[1:] + [user("again", 51.0)])

    assert await store.load("bob") == session_start(50.0) + [user("again", 51.0)]


async def test_only_action_session_start_itself_starts_a_session(store: TrackerStore) -> None:
    """An action whose name differs from it in case or trailing spaces is an ordinary one.
    Before, MariaDB's collation of `action_name` took `Action_Session_Start ` for it, and a
    load there left out the events before it."""
    events = [
        user("hi", 1.0),
        {"event": "action", "timestamp": 2.0, "name": "Action_Session_Start "},
        {"event": "action", "timestamp": 3.0, "name": "ACTION_SESSION_START"},
        {"event": "action", "timestamp": 3.5, "name": "action_session_start "},  # (PAD SPACE)
        user("again", 4.0),
    ]
    await store.append("erin", events)

    assert await store.load("erin") == events


async def test_without_session_start_load_returns_everything(store: TrackerStore) -> None:
    events = [user("hi", 1.0), bot("hello", 2.0)]
    await store.append("carol", events)
    assert await store.load("carol") == events


async def test_replace_really_replaces_even_with_fewer_events(store: TrackerStore) -> None:
    await store.append("dave", session_start(1.0) + [user("a", 2.0), bot("b", 3.0)])
    await store.load("dave")

    await store.replace("dave", [user("only", 10.0)])

    assert await store.load("dave") == [user("only", 10.0)]
    assert await store.load_all("dave") == [user("only", 10.0)]


async def test_keys_and_delete(store: TrackerStore) -> None:
    await store.append("erin", [user("hi", 1.0)])
    await store.append("frank", [user("hi", 1.0)])
    assert sorted(await store.keys()) == ["erin", "frank"]

    await store.delete("erin")
    await store.delete("nobody")

    assert await store.keys() == ["frank"]
    assert await store.load("erin") is None


async def test_retention_deletes_only_conversations_whose_latest_event_is_old(
    store: TrackerStore,
) -> None:
    now = time.time()
    await store.append("stale", [user("hi", now - 10 * 86400), bot("bye", now - 9 * 86400)])
    await store.append("active", [user("hi", now - 10 * 86400), user("still here", now - 60)])

    deleted = (await delete_conversations_older_than(store, max_age_seconds=86400)).deleted

    assert deleted == 1
    assert await store.keys() == ["active"]


async def test_ping_succeeds_on_a_reachable_store(store: TrackerStore) -> None:
    await store.ping()
