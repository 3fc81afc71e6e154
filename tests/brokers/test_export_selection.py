"""What `botserver export` selects from a tracker store (a real SQLite one) before it
publishes: every event exactly as stored, and a bounded footprint in memory."""

from __future__ import annotations

import json
import tracemalloc
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from server.brokers.export import publish_events, select_events
from server.trackers.dynamo_store import DynamoTrackerStore
from server.trackers.factory import create_tracker_store
from tests.trackers.persistence_fixtures import (
    delete_dynamo_table,
    moto_credentials,
    moto_endpoint,
    unique_name,
)


def _user(number: int, at: float) -> dict[str, Any]:
    text = f"message number {number}"
    intent = {"name": "greet", "confidence": 0.9}
    return {
        "event": "user",
        "timestamp": at,
        "text": text,
        "parse_data": {
            "intent": intent,
            "entities": [],
            "intent_ranking": [intent, {"name": "goodbye", "confidence": 0.1}],
            "text": text,
        },
        "input_channel": "rest",
        "message_id": f"{number:032x}",
        "metadata": {},
    }


async def test_a_large_store_is_selected_in_a_few_times_its_json(tmp_path: Path) -> None:
    """The selection keeps each event as its JSON text until it is published. Before, it
    held every selected event as Python dicts until the end: 7.5 times the events' JSON
    (279 MB for 100,000 user messages, 37 MB of JSON), so a store of a few million events
    could not be exported on a host of a few GB."""
    store = create_tracker_store({"type": "sql", "dialect": "sqlite", "db": str(tmp_path / "t.db")})
    conversations, each = 20, 500
    for c in range(conversations):
        await store.append(f"c{c}", [_user(i, 1e9 + 10 * i + c / 100) for i in range(each)])
    json_bytes = conversations * sum(len(json.dumps(_user(i, 1e9))) for i in range(each))
    tracemalloc.start()
    try:
        selection = await select_events(store)
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        await store.close()
    assert len(selection.messages) == conversations * each
    assert held < 2 * json_bytes, f"{held / json_bytes:.1f} times the events' JSON"


class _Collecting:
    """A broker that keeps what it is handed (no queue, no outage)."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []

    async def deliver(self, items: Any) -> None:
        while items:
            self.bodies.append(items.popleft().body())


async def test_events_go_out_exactly_as_stored(tmp_path: Path) -> None:
    odd = {
        "event": "slot",
        "timestamp": 2.5,
        "name": "odd",
        "value": {"text": "héllo 👋 \ud800", "tenth": 0.1, "zero": -0.0, "big": 10**30, "n": None},
    }
    events = [_user(1, 1.0), odd, {"event": "action", "name": "action_listen", "timestamp": 3}]
    store = create_tracker_store({"type": "sql", "dialect": "sqlite", "db": str(tmp_path / "t.db")})
    await store.append("ann", events)
    selection = await select_events(store)
    await store.close()
    broker = _Collecting()
    assert await publish_events(broker, selection) == 3  # type: ignore[arg-type]
    published = broker.bodies
    assert published == [{"sender_id": "ann", **event} for event in events]
    assert [list(body) for body in published] == [["sender_id", *event] for event in events]
    assert isinstance(published[2]["timestamp"], int)
    assert str(published[1]["value"]["zero"]) == "-0.0"


@pytest.fixture
async def dynamo() -> AsyncIterator[tuple[DynamoTrackerStore, list[str]]]:
    """A DynamoDB store on a new table on moto's server, and the names of the requests it
    makes (botocore's own hook: nothing is faked)."""
    pytest.importorskip("boto3")
    endpoint, table = moto_endpoint(), unique_name("bs_export")
    with moto_credentials():
        store = create_tracker_store(
            {"type": "dynamo", "table_name": table, "endpoint_url": endpoint}
        )
        assert isinstance(store, DynamoTrackerStore)
        requests: list[str] = []
        store._client.meta.events.register(
            "before-call.dynamodb.*", lambda model, **_: requests.append(model.name)
        )
        try:
            yield store, requests
        finally:
            await store.close()
            delete_dynamo_table(endpoint, table)


async def test_conversation_ids_are_read_without_scanning_the_table(
    dynamo: tuple[DynamoTrackerStore, list[str]],
) -> None:
    """`--conversation-ids` reads those conversations alone. Before, the export first listed
    every conversation of the store (on DynamoDB a Scan, which reads and bills every item
    of the table) to find which of them it held."""
    store, requests = dynamo
    for c in range(3):
        await store.append(f"c{c}", [_user(i, 10.0 * i + c) for i in range(2)])
    requests.clear()
    selection = await select_events(store, ["c1", "zed"])
    assert (selection.conversations, selection.missing) == (["c1"], ["zed"])
    assert [m.event["timestamp"] for m in selection.messages] == [1.0, 11.0]
    assert requests == ["GetItem", "GetItem"]


async def test_every_conversation_of_a_dynamodb_table_is_read_in_one_scan(
    dynamo: tuple[DynamoTrackerStore, list[str]],
) -> None:
    """The whole table in one pass, a Scan page (1 MB) at a time. Before, a Scan listed the
    conversations (it reads, and bills, every item whole), then a GetItem read each one
    again: a request per conversation, and three times the read units."""
    store, requests = dynamo
    for c in (2, 0, 1):
        await store.append(f"c{c}", [_user(i, 10.0 * i) for i in range(2)])
    requests.clear()
    selection = await select_events(store)
    assert requests == ["Scan"]
    assert selection.conversations == ["c0", "c1", "c2"]
    # Equal timestamps across conversations: by conversation id, as from the other stores.
    assert [(m.sender_id, m.event["timestamp"]) for m in selection.messages] == [
        ("c0", 0.0), ("c1", 0.0), ("c2", 0.0), ("c0", 10.0), ("c1", 10.0), ("c2", 10.0)
    ]  # fmt: skip
