"""Conversations a Rasa server stored load and go on: legacy events Rasa still reads."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.trackers.test_sql_tracker_store import create_rasa_sqlite_db


async def _on_rasas_sqlite(
    make_client: Callable[..., Any], tmp_path: Path, sender_id: str, events: list[Any]
) -> Any:
    """A client of a server whose SQLite store holds these events, as Rasa stored them."""
    db = tmp_path / "rasa.db"
    create_rasa_sqlite_db(db, [(sender_id, event) for event in events])
    return await make_client(
        endpoints={"tracker_store": {"type": "SQL", "dialect": "sqlite", "db": str(db)}}
    )


async def test_a_conversation_holding_a_pre_1_0_topic_event_loads_and_goes_on(
    make_client: Callable[..., Any], tmp_path: Path
) -> None:
    """Rasa 3.6 still reads trackers holding the `topic` events of Rasa Core 0.x: it leaves
    them out of the tracker. Before, such a conversation could not be loaded at all (400
    "unknown event type 'topic'" for its tracker and for every message of its user)."""
    now = time.time() - 60
    events = [
        {"event": "action", "timestamp": now, "name": "action_listen"},
        {"event": "topic", "timestamp": now + 1, "topic": "greetings"},
        {
            "event": "user",
            "timestamp": now + 2,
            "text": "hello",
            "parse_data": {"intent": {"name": "greet", "confidence": 1.0}, "entities": []},
        },
        {"event": "action", "timestamp": now + 3, "name": "utter_greet"},
        {"event": "bot", "timestamp": now + 4, "text": "Hey! How are you?", "data": None},
        {"event": "action", "timestamp": now + 5, "name": "action_listen"},
    ]
    client = await _on_rasas_sqlite(make_client, tmp_path, "old-user", events)

    response = await client.get("/conversations/old-user/tracker")
    assert response.status_code == 200, response.text
    kinds = [event["event"] for event in response.json()["events"]]
    assert kinds == ["action", "user", "action", "bot", "action"]

    response = await client.post(
        "/conversations/old-user/messages", json={"text": "/mood_great", "sender": "user"}
    )
    assert response.status_code == 200, response.text
    response = await client.post(
        "/webhooks/rest/webhook", json={"sender": "old-user", "message": "/goodbye"}
    )
    assert response.status_code == 200, response.text
    assert response.json() == [{"recipient_id": "old-user", "text": "Bye"}]


async def test_an_action_rasas_execute_stored_with_a_boolean_confidence_loads(
    make_client: Callable[..., Any], tmp_path: Path
) -> None:
    """Rasa's `execute` stores any `confidence` it is given: a client refused one for a new
    event (400), the conversation Rasa stored with it still loads."""
    now = time.time() - 60
    events = [
        {"event": "action", "timestamp": now, "name": "action_listen"},
        {"event": "action", "timestamp": now + 1, "name": "utter_greet", "confidence": True},
    ]
    client = await _on_rasas_sqlite(make_client, tmp_path, "executed", events)
    response = await client.get("/conversations/executed/tracker")
    assert response.status_code == 200, response.text
    assert response.json()["latest_action_name"] == "utter_greet"
    refused = await client.post(
        "/conversations/executed/tracker/events",
        json={"event": "action", "name": "utter_greet", "confidence": True},
    )
    assert refused.status_code == 400, refused.text


async def test_a_carried_over_slot_leaves_the_earlier_sessions_event_as_stored(
    make_client: Callable[..., Any],
) -> None:
    """The new session's copy of a slot event gets the model's ids; the earlier session's
    event keeps its metadata as stored. Before, both held one metadata dict: stamping the
    copy stamped the original too, and the tracker a message answered with showed the
    earlier session's event with ids it was never stored with."""
    client = await make_client()
    earlier = time.time() - 3 * 3600  # past moodbot's 60 minute session expiration
    slot = {"event": "slot", "timestamp": earlier, "name": "mood", "value": "great"}
    events = [
        {"event": "action", "timestamp": earlier - 2, "name": "action_listen"},
        {
            "event": "user",
            "timestamp": earlier - 1,
            "text": "/mood_great",
            "parse_data": {"intent": {"name": "mood_great", "confidence": 1.0}},
        },
        {**slot, "metadata": {"source": "import"}},
    ]
    response = await client.put("/conversations/carry/tracker/events", json=events)
    assert response.status_code == 200, response.text

    response = await client.post(
        "/conversations/carry/messages", json={"text": "/greet", "sender": "user"}
    )
    assert response.status_code == 200, response.text
    answered = [e for e in response.json()["events"] if e["event"] == "slot"]
    stored = (await client.get("/conversations/carry/tracker?include_events=ALL")).json()
    assert answered[0] == [e for e in stored["events"] if e["event"] == "slot"][0]
    assert answered[0]["metadata"] == {"source": "import"}
    assert answered[1]["metadata"]["source"] == "import"
    assert "model_id" in answered[1]["metadata"]


async def test_a_stored_event_this_server_cannot_read_is_a_500_naming_it_not_a_400(
    make_client: Callable[..., Any], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A stored conversation holding an event type this server does not know (here one of
    Rasa Pro's): the fault is the stored data's, not the request's. Before, its tracker and
    every message of its user were a 400 "unknown event type", which tells a client its
    request was wrong and told the operator nothing."""
    now = time.time() - 60
    events = [
        {"event": "action", "timestamp": now, "name": "action_listen"},
        {"event": "flow_started", "timestamp": now + 1, "flow_id": "transfer_money"},
    ]
    db = tmp_path / "rasa.db"
    create_rasa_sqlite_db(db, [("pro-user", event) for event in events])
    client = await make_client(
        endpoints={"tracker_store": {"type": "sql", "dialect": "sqlite", "db": str(db)}}
    )

    for response in (
        await client.get("/conversations/pro-user/tracker"),
        await client.post("/webhooks/rest/webhook", json={"sender": "pro-user", "message": "hi"}),
    ):
        assert response.status_code == 500, response.text
    assert "'pro-user'" in caplog.text and "flow_started" in caplog.text
