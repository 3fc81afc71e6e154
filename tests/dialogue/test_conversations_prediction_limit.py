"""The prediction limit (`MAX_NUMBER_OF_PREDICTIONS`, 10) counts the actions a turn ran, as
Rasa counts them: a form its validation rejects ran none."""

from __future__ import annotations

import logging

import httpx
import pytest

from server.dialogue.processor import DialogueModel
from tests.dialogue.conversation_fixtures import Conversation, make_agent, train_files

CHAIN = [f"utter_{n}" for n in range(1, 11)]

BOOKING = {
    "config.yml": "language: en\nassistant_id: booking\npolicies:\n  - name: RulePolicy\n",
    "domain.yml": f"""
version: "3.1"
intents: [book, tour, again]
actions: [action_again]
entities: [city]
slots:
  city:
    type: text
    mappings: [{{type: from_entity, entity: city}}]
forms:
  booking_form:
    required_slots: [city]
responses:
  utter_ask_city: [{{text: "Which city?"}}]
{"".join(f'  {name}: [{{text: "{name}"}}]{chr(10)}' for name in CHAIN)}
""",
    "data/rules.yml": f"""
version: "3.1"
rules:
- rule: book
  steps: [{{intent: book}}, {{action: booking_form}}, {{active_loop: booking_form}}]
- rule: an action of the action server
  steps: [{{intent: again}}, {{action: action_again}}]
- rule: a tour of ten messages
  steps: [{{intent: tour}}, {", ".join(f"{{action: {name}}}" for name in CHAIN)}]
""",
}


@pytest.fixture(scope="module")
def booking(tmp_path_factory: pytest.TempPathFactory) -> DialogueModel:
    return train_files(BOOKING, tmp_path_factory.mktemp("prediction-limit"))


async def test_ten_actions_run_in_a_turn(booking: DialogueModel) -> None:
    """Rasa stops a turn when the actions logged since the last `action_listen` (or
    `action_session_start`) number `max_number_of_predictions`
    (rasa/core/processor.py:829-854, checked before each prediction at :523-530): ten
    messages of a rule are all said, then the turn ends."""
    turn = await Conversation(make_agent(booking), "tour").say("/tour")
    assert turn.texts == turn.actions == CHAIN
    # Unlike Rasa, the turn ends listening (see docs/differences-from-rasa.md).
    assert turn.events[-1].type_name == "action"
    assert turn.events[-1].as_dict()["name"] == "action_listen"


async def test_a_rejected_form_does_not_count_towards_the_limit(booking: DialogueModel) -> None:
    """A form its validation rejects is logged as `action_execution_rejected`, not as an
    action run (rasa/core/processor.py, `_log_action_on_tracker`), so Rasa's count
    (rasa/core/processor.py:843-849, `ActionExecuted` events only) leaves it out: the ten
    messages that follow are all said. Before, the rejection took one of the ten, and the
    user got nine."""
    conversation = Conversation(make_agent(booking), "tour-in-form")
    assert (await conversation.say("/book")).texts == ["Which city?"]

    turn = await conversation.say("/tour")

    assert "action_execution_rejected" in [e.type_name for e in turn.events]
    assert turn.texts == CHAIN


async def test_actions_logging_their_own_listen_end_the_turn_with_a_warning_that_says_so(
    booking: DialogueModel, caplog: pytest.LogCaptureFixture
) -> None:
    """An action server whose action logs `action_listen` itself starts the count again each
    time (in Rasa too, whose turn then never ends): the turn ends after three times the limit
    of predictions. Before, the warning said it "stopped after 0 actions since the bot
    listened" when 30 had run."""
    listening = {"events": [{"event": "action", "name": "action_listen"}]}
    server = httpx.MockTransport(lambda request: httpx.Response(200, json=listening))
    conversation = Conversation(make_agent(booking, transport=server), "listens-itself")

    with caplog.at_level(logging.WARNING, logger="server.dialogue.processor"):
        turn = await conversation.say("/again")

    assert turn.actions == ["action_again"] * 30
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        "conversation listens-itself: stopped after 30 predictions in one turn, 3 times "
        "MAX_NUMBER_OF_PREDICTIONS (10): its actions keep being rejected, or log "
        "action_listen themselves"
    ]
    assert (await conversation.say("/tour")).texts == CHAIN  # the conversation goes on
