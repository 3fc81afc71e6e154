"""The `session_started_metadata` slot across sessions: the metadata of the message that
started the session, never an earlier session's when slots are not carried over."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.dialogue.conversation_fixtures import Conversation, make_agent
from tests.dialogue.test_conversations_sessions import LaterClock, train_with


async def test_a_new_session_without_metadata_does_not_keep_the_last_sessions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rasa 3.6's `ActionSessionStart.run` (rasa/core/actions/action.py:593-600) logs
    `session_started`, which resets every slot, and copies the earlier `slot` events only
    with `carry_over_slots`; the processor sets the slot before it only `if metadata`
    (rasa/core/processor.py:310). So a session started by a message without metadata has
    no `session_started_metadata` when slots are not carried over."""
    agent = make_agent(train_with(tmp_path, carry_over=False))
    conversation = Conversation(agent, "metadata-once")
    await conversation.say("/greet", channel_user="u-42")
    assert (await conversation.tracker()).get_slot("session_started_metadata") == {
        "channel_user": "u-42"
    }

    monkeypatch.setattr("server.dialogue.processor.time", LaterClock(61))
    await conversation.say("/greet")

    assert (await conversation.tracker()).get_slot("session_started_metadata") is None


async def test_a_new_session_keeps_the_metadata_of_the_message_that_started_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Unlike Rasa, which resets it with the other slots when they are not carried over,
    the metadata of the message that starts the session stays (a channel's user id, say)."""
    agent = make_agent(train_with(tmp_path, carry_over=False))
    conversation = Conversation(agent, "metadata-each-time")
    await conversation.say("/greet", channel_user="u-42")

    monkeypatch.setattr("server.dialogue.processor.time", LaterClock(61))
    await conversation.say("/greet", channel_user="u-43")

    assert (await conversation.tracker()).get_slot("session_started_metadata") == {
        "channel_user": "u-43"
    }
