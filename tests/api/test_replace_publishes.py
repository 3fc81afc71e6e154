"""PUT /conversations/{id}/tracker/events publishes what Rasa 3.6 publishes: the events past
the length of the conversation's stored session (all of them for a new conversation)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any


def said(text: str, at: float) -> dict[str, Any]:
    parse = {"intent": {"name": "greet", "confidence": 1.0}, "entities": [], "text": text}
    return {"event": "user", "timestamp": at, "text": text, "parse_data": parse}


def listen(at: float) -> dict[str, Any]:
    return {"event": "action", "timestamp": at, "name": "action_listen"}


def logged(log: Path) -> list[dict[str, Any]]:
    """The broker's complete lines so far (a line it is still writing has no newline yet)."""
    if not log.exists():
        return []
    *complete, _partial = log.read_text().split("\n")
    return [json.loads(line) for line in complete]


async def published(log: Path, expected: int) -> list[dict[str, Any]]:
    """The broker's log once it holds `expected` lines (delivered in the background)."""
    for _ in range(100):
        if len(logged(log)) >= expected:
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.2)  # anything more would be a line too many
    return logged(log)


async def test_a_put_publishes_the_events_past_the_stored_session_as_rasa_does(
    make_client: Callable[..., Any], tmp_path: Path
) -> None:
    """Before, a PUT published nothing (the docs said "as in Rasa"), while Rasa's
    `tracker_store.save` publishes every event past the stored session's length: a
    conversation imported or seeded with a PUT never reached the consumers."""
    log = tmp_path / "events.log"
    broker = {"type": "file", "path": str(log)}
    endpoints = {"tracker_store": {"type": "in_memory"}, "event_broker": broker}
    client = await make_client(endpoints=endpoints)
    first = [listen(1.0), said("hi", 2.0)]
    url = "/conversations/imported/tracker/events?include_events=NONE"

    assert (await client.put(url, json=first)).status_code == 200
    events = await published(log, 2)
    assert [(e["sender_id"], e["event"], e["timestamp"]) for e in events] == [
        ("imported", "action", 1.0),
        ("imported", "user", 2.0),
    ]
    assert events[1]["text"] == "hi" and events[1]["parse_data"]["intent"]["name"] == "greet"

    longer = [*first, listen(3.0), said("again", 4.0)]
    assert (await client.put(url, json=longer)).status_code == 200
    events = await published(log, 4)
    assert [e["timestamp"] for e in events] == [1.0, 2.0, 3.0, 4.0]  # only the new tail

    assert (await client.put(url, json=[listen(5.0)])).status_code == 200  # shorter: none
    assert len(await published(log, 5)) == 4


async def test_a_bulk_put_is_published_whole_and_in_order(
    make_client: Callable[..., Any], tmp_path: Path
) -> None:
    """More events than are turned into dicts on the event loop (1,000): made in a thread."""
    log = tmp_path / "events.log"
    endpoints = {
        "tracker_store": {"type": "in_memory"},
        "event_broker": {"type": "file", "path": str(log)},
    }
    client = await make_client(endpoints=endpoints)
    body = [said(f"n{n}", float(n)) for n in range(1_500)]
    url = "/conversations/bulk/tracker/events?include_events=NONE"
    assert (await client.put(url, json=body)).status_code == 200
    assert [e["text"] for e in await published(log, 1_500)] == [e["text"] for e in body]


async def test_a_put_onto_a_rasa_conversation_holding_a_topic_event_publishes_its_new_tail(
    make_client: Callable[..., Any], tmp_path: Path
) -> None:
    """A stored item Rasa leaves out of trackers (Rasa Core 0.x's `topic`) is not counted
    in the stored session's length: Rasa's loaded tracker has no such item. Before, it was,
    so the PUT's first new event was taken as stored and never published."""
    from tests.trackers.test_sql_tracker_store import create_rasa_sqlite_db

    stored = [listen(1.0), {"event": "topic", "timestamp": 1.5, "topic": "x"}, said("hi", 2.0)]
    db = tmp_path / "rasa.db"
    create_rasa_sqlite_db(db, [("old", event) for event in stored])
    log = tmp_path / "events.log"
    client = await make_client(
        endpoints={
            "tracker_store": {"type": "SQL", "dialect": "sqlite", "db": str(db)},
            "event_broker": {"type": "file", "path": str(log)},
        }
    )
    url = "/conversations/old/tracker/events?include_events=NONE"

    new = [listen(1.0), said("hi", 2.0), listen(3.0)]
    assert (await client.put(url, json=new)).status_code == 200
    events = await published(log, 1)
    assert [(e["sender_id"], e["event"], e["timestamp"]) for e in events] == [
        ("old", "action", 3.0)
    ]
