"""A form interrupted by another action (`loop_interrupted`) is interrupted only until the next
action: any action while a loop is active clears it, as Rasa's tracker does."""

from __future__ import annotations

import pytest

from server.dialogue.processor import DialogueModel
from server.trackers.events import ActionExecuted, LoopInterrupted
from tests.dialogue.conversation_fixtures import Conversation, make_agent, train_files
from tests.dialogue.test_conversations_default_intents import BOOKING


@pytest.fixture(scope="module")
def booking(tmp_path_factory: pytest.TempPathFactory) -> DialogueModel:
    return train_files(BOOKING, tmp_path_factory.mktemp("loop-interruption"))


async def test_any_action_in_a_loop_ends_its_interruption(booking: DialogueModel) -> None:
    """Rasa's `DialogueStateTracker.set_latest_action`
    (rasa/shared/core/trackers.py:367-369) clears `is_interrupted` whenever an action runs
    while a loop is active, whichever action it is; only the rejection waits for the loop's
    own action (:371-376). So a form interrupted, then listening, validates the next answer
    (rasa/core/actions/forms.py:540-543): a message filling none of its slots rejects it."""
    agent = make_agent(booking)
    conversation = Conversation(agent, "interrupted")
    assert (await conversation.say("/book")).texts == ["Which city?"]
    # An unhappy path that ends listening (as a custom action's events or the events API
    # may log it): the form is interrupted by `utter_greet`, then the bot listens.
    interruption = [
        LoopInterrupted(is_interrupted=True),
        ActionExecuted(action_name="utter_greet"),
    ]
    tracker = await agent.append_events("interrupted", interruption)
    assert tracker.active_loop["is_interrupted"] is False
    tracker = await agent.append_events(
        "interrupted", [ActionExecuted(action_name="action_listen")]
    )
    assert tracker.active_loop["is_interrupted"] is False

    turn = await conversation.say("/greet")

    # The form validated the answer, found no city and was rejected: the greeting's rule
    # answers, where the interrupted form used to ask again without looking at the answer.
    assert "action_execution_rejected" in [e.type_name for e in turn.events]
    assert turn.texts[0] == "Hi guest"
