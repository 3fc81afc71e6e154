"""Conversations a Rasa server stored load and go on: legacy events Rasa still reads."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.trackers.test_sql_tracker_store import create_rasa_sqlite_db


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
    db = tmp_path / "rasa.db"
    create_rasa_sqlite_db(db, [("old-user", event) for event in events])
    client = await make_client(
        endpoints={"tracker_store": {"type": "SQL", "dialect": "sqlite", "db": str(db)}}
    )

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
