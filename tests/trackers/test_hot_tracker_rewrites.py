"""A hot tracker is not served after another process rewrote its conversation's events.

Two workers (or two servers) on one database (SQL, DynamoDB): the first keeps
the tracker it served; the second replaces the events (`PUT /conversations/<id>/tracker/
events`) with as many, the last one the same, an earlier one different. The first's next
turn must see the rewrite.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import boto3
import pytest

from server.trackers.dynamo_store import DynamoTrackerStore
from server.trackers.factory import create_tracker_store
from server.trackers.repository import TrackerRepository
from server.trackers.snapshot import Snapshot
from server.trackers.store import TrackerStore
from server.trackers.tracker import Tracker
from tests.trackers.persistence_fixtures import (
    delete_dynamo_table,
    moto_credentials,
    moto_endpoint,
    unique_name,
)
from tests.trackers.test_sql_tracker_store import sql_config
from tests.trackers.test_tracker_stores import bot, session_start, user


def slot(value: str, timestamp: float) -> dict[str, Any]:
    return {"event": "slot", "timestamp": timestamp, "name": "city", "value": value}


def history(city: str) -> list[dict[str, Any]]:
    return [*session_start(1.0), user("to where?", 2.0), slot(city, 3.0), bot("noted", 4.0)]


async def served_in_paris(repository: TrackerRepository) -> Tracker:
    """The conversation begun through the repository's store, and served by it."""
    await repository.store.append("alice", history("Paris"))
    served = await repository.load("alice", {"city": None})
    assert served is not None and served.get_slot("city") == "Paris"
    return served


@asynccontextmanager
async def two_dynamo_stores() -> AsyncIterator[list[TrackerStore]]:
    """Two processes' stores on one table of moto's DynamoDB server."""
    with moto_credentials():
        endpoint = moto_endpoint()
        table = unique_name("bshot")
        config = {"type": "dynamo", "table_name": table, "endpoint_url": endpoint}
        stores = [create_tracker_store(config), create_tracker_store(config)]
        try:
            yield stores
        finally:
            for store in stores:
                await store.close()
            delete_dynamo_table(endpoint, table)


@pytest.mark.parametrize("kind", ["sqlite", "postgresql", "mariadb"])
async def test_a_rewrite_by_another_process_keeping_count_and_last_event_is_seen(
    kind: str, tmp_path: Path
) -> None:
    async with sql_config(kind, tmp_path) as config:
        stores = [create_tracker_store(config), create_tracker_store(config)]
        try:
            first, second = (TrackerRepository(store) for store in stores)
            await served_in_paris(first)

            await stores[1].replace("alice", history("Berlin"))  # the other worker's PUT
            theirs = await second.load("alice", {"city": None})
            assert theirs is not None and theirs.get_slot("city") == "Berlin"

            again = await first.load("alice", {"city": None})
            assert again is not None
            assert again.get_slot("city") == "Berlin", "the first worker served a stale tracker"
            # ... and it is hot again from there: a turn appended elsewhere is folded in.
            await stores[1].append("alice", [user("and now?", 5.0)])
            after = await first.load("alice", {"city": None})
            assert after is again and after.get_slot("city") == "Berlin"
            assert [getattr(e, "text", None) for e in after.events[-2:]] == [
                "noted",
                "and now?",
            ]
        finally:
            for store in stores:
                await store.close()


async def test_a_conversation_this_process_began_stays_hot_on_sql(tmp_path: Path) -> None:
    """Its second turn reuses the tracker its first turn saved (no fold of the session)."""
    store = create_tracker_store({"type": "sql", "dialect": "sqlite", "db": str(tmp_path / "n.db")})
    try:
        repository = TrackerRepository(store)
        assert await repository.load("bob", {}) is None
        tracker = Tracker("bob", {})
        tracker.update_from_dicts(history("Rome"))
        await repository.save(tracker, list(tracker.events))
        assert await repository.load("bob", {}) is tracker
    finally:
        await store.close()


async def test_a_session_another_process_started_has_the_generation_a_fresh_read_gives(
    tmp_path: Path,
) -> None:
    """The generation is the session's first row id however the session was read: a
    process that followed the new session row by row, and one that read it whole, agree
    (so an evicted session read again keeps its hot tracker)."""
    config = {"type": "sql", "dialect": "sqlite", "db": str(tmp_path / "s.db")}
    stores = [create_tracker_store(config) for _ in range(3)]
    try:
        await stores[0].append("carol", history("Oslo"))
        followed = await stores[0].load("carol")
        await stores[1].append("carol", [*session_start(10.0), user("hello again", 11.0)])
        followed = await stores[0].load("carol")  # the new rows, read after the last seen
        fresh = await stores[2].load("carol")  # the session, read whole
        assert isinstance(followed, Snapshot) and isinstance(fresh, Snapshot)
        assert list(followed) == list(fresh) and len(fresh) == 4
        assert followed.generation == fresh.generation is not None
    finally:
        for store in stores:
            await store.close()


async def test_a_rewrite_by_another_process_is_seen_on_dynamodb() -> None:
    """The same on DynamoDB (moto's server): the replace's item carries a rewrite token,
    kept by later appends, which its loads hand out as their generation."""
    async with two_dynamo_stores() as stores:
        first = TrackerRepository(stores[0])
        served = await served_in_paris(first)
        assert await first.load("alice", {"city": None}) is served  # hot

        await stores[1].replace("alice", history("Berlin"))
        again = await first.load("alice", {"city": None})
        assert again is not None and again.get_slot("city") == "Berlin"
        await stores[1].append("alice", [user("and now?", 5.0)])
        after = await first.load("alice", {"city": None})
        assert after is again  # another process's append: folded in, not anew
        assert [getattr(e, "text", None) for e in after.events[-2:]] == ["noted", "and now?"]


async def test_a_conversation_deleted_and_begun_again_elsewhere_is_seen_on_dynamodb() -> None:
    """Another process deletes the conversation (`PUT .../tracker/events` with no events)
    and begins it again by appends, with as many events and the same last one: the item the
    appends create carries a rewrite token too, so the first process folds it anew."""
    async with two_dynamo_stores() as stores:
        first, second = (TrackerRepository(store) for store in stores)
        await served_in_paris(first)

        await stores[1].replace("alice", [])
        await stores[1].append("alice", history("Berlin"))
        again = await first.load("alice", {"city": None})
        assert again is not None
        assert again.get_slot("city") == "Berlin", "the first process served a stale tracker"
        assert await first.load("alice", {"city": None}) is again  # hot from there
        # The process that began it again keeps its own tracker hot too.
        theirs = await second.load("alice", {"city": None})
        assert theirs is not None
        theirs.update_from_dicts([user("and now?", 5.0)])
        await second.save(theirs, theirs.events[-1:])
        assert await second.load("alice", {"city": None}) is theirs


async def test_an_item_an_earlier_botserver_wrote_stays_hot_in_the_process_appending() -> None:
    """An item without a rewrite token (an earlier botserver's: its append token alone)
    gets one from the first append of ours; the process that made it keeps its tracker hot
    when another process appends after (not folded again for a token it wrote itself)."""
    async with two_dynamo_stores() as stores:
        assert isinstance(stores[0], DynamoTrackerStore)
        assert await stores[0].keys() == []  # (the table made)
        earlier = boto3.resource("dynamodb", region_name="us-east-1", endpoint_url=moto_endpoint())
        events = json.loads(json.dumps(history("Paris")), parse_float=Decimal)
        earlier.Table(stores[0].table).put_item(
            Item={"sender_id": "alice", "name": "alice", "events": events, "botserver_append": "a1"}
        )
        first = TrackerRepository(stores[0])
        served = await first.load("alice", {"city": None})
        assert served is not None and served.get_slot("city") == "Paris"
        served.update_from_dicts([user("hello", 5.0)])
        await first.save(served, served.events[-1:])

        await stores[1].append("alice", [bot("hi there", 6.0)])
        again = await first.load("alice", {"city": None})
        assert again is served, "folded again"
        assert [getattr(e, "text", None) for e in again.events[-2:]] == ["hello", "hi there"]
