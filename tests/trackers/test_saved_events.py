"""A saved event is the event as it is when saved, not as it was when first serialised."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from server.trackers.events import ActionExecuted, UserUttered
from server.trackers.factory import create_tracker_store
from server.trackers.repository import TrackerRepository
from server.trackers.tracker import Tracker


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
async def test_an_event_changed_after_it_was_applied_is_saved_as_changed(
    kind: str, tmp_path: Path
) -> None:
    """The processor stamps the model's id into an event's metadata after the turn applied
    it (and may have sent it, as `latest_message`), just before saving it."""
    if kind == "memory":
        store = create_tracker_store({"type": "in_memory"})
    else:
        store = create_tracker_store(
            {"type": "SQL", "dialect": "sqlite", "db": str(tmp_path / "trackers.db")}
        )
    try:
        tracker = Tracker("u1", {})
        user = UserUttered(text="hi", parse_data={"intent": {"name": "greet"}}, timestamp=1.0)
        listen = ActionExecuted(action_name="action_listen", timestamp=2.0)
        tracker.update_many([user, listen])
        before = json.dumps(tracker.current_state())  # serialised once before the change
        assert "model_id" not in before

        for event in (user, listen):
            event.metadata.setdefault("model_id", "m1")
        user.parse_data["intent_ranking"] = [{"name": "greet", "confidence": 1.0}]
        await TrackerRepository(store).save(tracker, [user, listen])

        rows = list(await store.load("u1") or [])
        assert [row["metadata"] for row in rows] == [{"model_id": "m1"}, {"model_id": "m1"}]
        assert rows[0]["parse_data"]["intent_ranking"] == [{"name": "greet", "confidence": 1.0}]
        # The metadata comes before the user event's own keys once it is not empty.
        assert list(rows[0]) == [
            "event", "timestamp", "metadata", "text", "parse_data", "input_channel", "message_id"
        ]  # fmt: skip
        state = tracker.current_state()
        assert state["latest_message"]["intent_ranking"] == rows[0]["parse_data"]["intent_ranking"]
        assert state["events"][0]["metadata"] == {"model_id": "m1"}
    finally:
        await store.close()
