"""The `session_started_metadata` slot set through the events API: never read as the
metadata of the message that starts the next session."""

from __future__ import annotations

from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api.conftest import open_client
from tests.dialogue.test_conversations_sessions import LaterClock, train_with

POSTED = {"user": "u-42"}


async def say(client: httpx.AsyncClient, metadata: dict[str, Any] | None = None) -> None:
    body: dict[str, Any] = {"sender": "c", "message": "/greet"}
    if metadata is not None:
        body["metadata"] = metadata
    said = await client.post("/webhooks/rest/webhook", json=body)
    assert said.status_code == 200, said.text


async def post_metadata_slot(client: httpx.AsyncClient) -> None:
    """The client sets the slot through the events API (its last event)."""
    posted = await client.post(
        "/conversations/c/tracker/events",
        json=[{"event": "slot", "name": "session_started_metadata", "value": POSTED}],
    )
    assert posted.status_code == 200, posted.text
    assert posted.json()["slots"]["session_started_metadata"] == POSTED


async def tracker_after_a_later_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, first: dict[str, Any] | None
) -> dict[str, Any]:
    """A message (with `first` as its metadata), the slot posted, then, past the session's
    expiry, a message without metadata: the tracker then (slots not carried over)."""
    train_with(tmp_path / "bot", carry_over=False)
    (archive,) = (tmp_path / "bot" / "models").glob("*.tar.gz")
    async with AsyncExitStack() as stack:
        client = await open_client(stack, archive, tmp_path)
        await say(client, first)
        await post_metadata_slot(client)
        monkeypatch.setattr("server.dialogue.processor.time", LaterClock(61))
        await say(client)
        tracker: dict[str, Any] = (await client.get("/conversations/c/tracker")).json()
    assert [e["event"] for e in tracker["events"]].count("session_started") == 2
    return tracker


async def test_metadata_posted_last_through_the_events_api_is_not_kept_by_the_next_session(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: a `slot` event for the metadata posted last was read as set for the next
    session's start, which kept it though its message had no metadata and slots are not
    carried over; Rasa resets it with the other slots."""
    tracker = await tracker_after_a_later_message(tmp_path, monkeypatch, None)
    assert tracker["slots"]["session_started_metadata"] is None


async def test_metadata_posted_last_equal_to_a_started_sessions_is_not_kept_either(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The value a client posts last may equal the metadata a message started a session
    with (here this conversation's first): still the client's, reset with the other slots
    when a message without metadata starts the next session."""
    tracker = await tracker_after_a_later_message(tmp_path, monkeypatch, dict(POSTED))
    assert tracker["slots"]["session_started_metadata"] is None


async def test_action_session_start_run_through_the_execute_api_keeps_no_posted_metadata(
    tmp_path: Path,
) -> None:
    """No message starts that session: a metadata a client posted last is reset with the
    other slots, as in Rasa (it was kept when its `slot` event was the last)."""
    train_with(tmp_path / "bot", carry_over=False)
    (archive,) = (tmp_path / "bot" / "models").glob("*.tar.gz")
    async with AsyncExitStack() as stack:
        client = await open_client(stack, archive, tmp_path)
        await post_metadata_slot(client)
        ran = await client.post("/conversations/c/execute", json={"name": "action_session_start"})
        assert ran.status_code == 200, ran.text
        tracker = (await client.get("/conversations/c/tracker")).json()
    assert [e["event"] for e in tracker["events"]].count("session_started") == 2
    assert tracker["slots"]["session_started_metadata"] is None
