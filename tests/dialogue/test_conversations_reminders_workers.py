"""Reminders across two processes of one deployment (workers, hosts) sharing a Redis tracker
store and Redis locks: what one process applies to a conversation, the other's timers obey."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from server.dialogue.agent import Agent
from server.dialogue.processor import Processor
from server.trackers.events import event_from_dict
from server.trackers.factory import create_lock_store, create_tracker_store
from server.trackers.repository import TrackerRepository
from tests.dialogue.conversation_fixtures import BotModels, Conversation
from tests.dialogue.test_conversations_reminders import (
    DELAY,
    CallbackChannel,
    QuickReminder,
    reminderbot,
)
from tests.trackers.persistence_fixtures import (
    REDIS,
    delete_redis_keys,
    require_service,
    unique_name,
)


@pytest.fixture
async def two_processes(
    bot_models: BotModels,
) -> AsyncIterator[tuple[Agent, Agent, CallbackChannel]]:
    """reminderbot in two processes: each its own tracker store client, hot trackers, locks
    client and timers, over one Redis (keys under a `sock_...` prefix)."""
    require_service("Redis", REDIS)
    prefix = unique_name("sock").replace("_", "")  # letters and digits, as Rasa takes
    config = {"type": "redis", "url": REDIS[0], "port": REDIS[1], "key_prefix": prefix}
    first, callback = reminderbot(bot_models, QuickReminder)
    stores: list[Any] = []
    agents = []
    for _ in range(2):
        store = create_tracker_store(config)
        locks = create_lock_store(config)
        stores += [store, locks]
        processor = Processor(
            TrackerRepository(store), locks, action_server=first.processor.action_server
        )
        agents.append(Agent(processor, first.model_provider, first.output_channels))
    try:
        yield agents[0], agents[1], callback
    finally:
        for agent in agents:
            await agent.processor.reminders.stop()
        for closing in stores:
            await closing.close()
        await delete_redis_keys(prefix)


@pytest.mark.parametrize(
    ("cancel", "texts"),
    [
        ({"event": "cancel_reminder", "name": "another_reminder"}, ["Remember to call Ada!"]),
        ({"event": "cancel_reminder", "intent": "EXTERNAL_dry_plant"}, ["Remember to call Ada!"]),
        ({"event": "cancel_reminder", "name": "my_reminder"}, []),
        ({"event": "cancel_reminder", "intent": "EXTERNAL_reminder"}, []),
        ({"event": "cancel_reminder"}, []),
    ],
)
async def test_a_cancel_applied_by_another_process_cancels_what_it_names(
    two_processes: tuple[Agent, Agent, CallbackChannel], cancel: dict[str, Any], texts: list[str]
) -> None:
    """Before, the stored `cancel_reminder` kept no filters, so the process timing the
    reminder took one applied elsewhere for "cancel them all": a cancel naming another
    reminder (or another intent) stopped "Remember to call Ada!" too."""
    timing, other, callback = two_processes
    await Conversation(timing, "named").say('/ask_remind_call{"PERSON": "Ada"}')

    await other.append_events("named", [event_from_dict(cancel)], execute_side_effects=True)

    assert await callback.texts_within(DELAY + 1) == texts


async def test_a_cancel_only_recorded_by_another_process_cancels_nothing(
    two_processes: tuple[Agent, Agent, CallbackChannel],
) -> None:
    """As in Rasa, a `cancel_reminder` posted without `execute_side_effects=true` is only
    recorded. Before, through another process it cancelled all the conversation's reminders."""
    timing, other, callback = two_processes
    await Conversation(timing, "recorded").say('/ask_remind_call{"PERSON": "Ada"}')

    cancel = event_from_dict({"event": "cancel_reminder"})
    await other.append_events("recorded", [cancel], execute_side_effects=False)

    assert await callback.texts_within(5) == ["Remember to call Ada!"]


async def test_the_forget_action_run_by_another_process_cancels_the_reminders(
    two_processes: tuple[Agent, Agent, CallbackChannel],
) -> None:
    """reminderbot's "forget my reminders" reaching the other process still stops them."""
    timing, other, callback = two_processes
    await Conversation(timing, "forgotten").say('/ask_remind_call{"PERSON": "Ada"}')

    turn = await Conversation(other, "forgotten").say("/ask_forget_reminders")

    assert turn.texts == ["Okay, I'll cancel all your reminders."]
    assert await callback.texts_within(DELAY + 1) == []
