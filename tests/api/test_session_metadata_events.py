"""The `session_started_metadata` slot set through the events API: never read as the
metadata of the message that starts the next session."""

from __future__ import annotations

from contextlib import AsyncExitStack
from pathlib import Path

import pytest

from tests.api.conftest import open_client
from tests.dialogue.test_conversations_sessions import LaterClock, train_with


async def test_metadata_posted_last_through_the_events_api_is_not_kept_by_the_next_session(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: a `slot` event for the metadata posted last was read as set for the next
    session's start, which kept it though its message had no metadata and slots are not
    carried over; Rasa resets it with the other slots."""
    train_with(tmp_path / "bot", carry_over=False)
    (archive,) = (tmp_path / "bot" / "models").glob("*.tar.gz")
    async with AsyncExitStack() as stack:
        client = await open_client(stack, archive, tmp_path)
        said = await client.post(
            "/webhooks/rest/webhook", json={"sender": "c", "message": "/greet"}
        )
        assert said.status_code == 200
        posted = await client.post(
            "/conversations/c/tracker/events",
            json=[{"event": "slot", "name": "session_started_metadata", "value": {"user": "u-42"}}],
        )
        assert posted.status_code == 200
        assert posted.json()["slots"]["session_started_metadata"] == {"user": "u-42"}

        monkeypatch.setattr("server.dialogue.processor.time", LaterClock(61))
        said = await client.post(
            "/webhooks/rest/webhook", json={"sender": "c", "message": "/greet"}
        )
        assert said.status_code == 200

        tracker = (await client.get("/conversations/c/tracker")).json()
    assert [e["event"] for e in tracker["events"]].count("session_started") == 2
    assert tracker["slots"]["session_started_metadata"] is None


async def test_metadata_posted_last_equal_to_a_started_sessions_is_not_kept_either(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The value a client posts last may equal the metadata another message started a
    session with (here this conversation's first): still the client's, reset with the other
    slots when a message without metadata starts the next session."""
    train_with(tmp_path / "bot", carry_over=False)
    (archive,) = (tmp_path / "bot" / "models").glob("*.tar.gz")
    async with AsyncExitStack() as stack:
        client = await open_client(stack, archive, tmp_path)
        said = await client.post(
            "/webhooks/rest/webhook",
            json={"sender": "c", "message": "/greet", "metadata": {"user": "u-42"}},
        )
        assert said.status_code == 200
        started = (await client.get("/conversations/c/tracker")).json()
        assert started["slots"]["session_started_metadata"] == {"user": "u-42"}
        posted = await client.post(
            "/conversations/c/tracker/events",
            json=[{"event": "slot", "name": "session_started_metadata", "value": {"user": "u-42"}}],
        )
        assert posted.status_code == 200

        monkeypatch.setattr("server.dialogue.processor.time", LaterClock(61))
        said = await client.post(
            "/webhooks/rest/webhook", json={"sender": "c", "message": "/greet"}
        )
        assert said.status_code == 200

        tracker = (await client.get("/conversations/c/tracker")).json()
    assert [e["event"] for e in tracker["events"]].count("session_started") == 2
    assert tracker["slots"]["session_started_metadata"] is None
