"""`/restart`, `/back` and `/session_start` in the middle of a form: what each default action
logs and what the conversation keeps, as Rasa 3.6 does."""

from __future__ import annotations

import pytest

from server.dialogue.processor import DialogueModel
from server.trackers.events import ActionExecuted, Event, Restarted, SessionStarted, SlotSet
from server.trackers.events import UserUtteranceReverted as Rewind
from tests.dialogue.conversation_fixtures import Conversation, make_agent, train_files

BOOKING = {
    "config.yml": "language: en\nassistant_id: booking\npolicies:\n  - name: RulePolicy\n",
    "domain.yml": """
version: "3.1"
intents: [greet, book, inform, restart, back, session_start]
entities: [city, name]
slots:
  name:
    type: text
    initial_value: guest
    mappings: [{type: from_entity, entity: name}]
  city:
    type: text
    mappings: [{type: from_entity, entity: city}]
  people:
    type: text
    mappings:
    - type: from_text
      conditions: [{active_loop: booking_form, requested_slot: people}]
forms:
  booking_form:
    required_slots: [city, people]
responses:
  utter_greet: [{text: "Hi {name}"}]
  utter_restart: [{text: "Starting over."}]
  utter_back: [{text: "Going back."}]
  utter_ask_city: [{text: "Which city?"}]
  utter_ask_people: [{text: "How many?"}]
session_config:
  session_expiration_time: 60
  carry_over_slots_to_new_session: true
""",
    "data/rules.yml": """
version: "3.1"
rules:
- rule: greet
  steps: [{intent: greet}, {action: utter_greet}]
- rule: book
  steps: [{intent: book}, {action: booking_form}, {active_loop: booking_form}]
""",
}


@pytest.fixture(scope="module")
def booking(tmp_path_factory: pytest.TempPathFactory) -> DialogueModel:
    return train_files(BOOKING, tmp_path_factory.mktemp("default-intents"))


def _shape(events: list[Event]) -> list[str]:
    """The turn's actions, restarts, rewinds, session starts and slots, in order."""
    shape = []
    for event in events:
        if isinstance(event, ActionExecuted):
            shape.append(event.action_name or "")
        elif isinstance(event, Restarted):
            shape.append("restart")
        elif isinstance(event, Rewind):
            shape.append("rewind")
        elif isinstance(event, SessionStarted):
            shape.append("session_started")
        elif isinstance(event, SlotSet):
            shape.append(f"slot {event.key}={event.value}")
    return shape


async def test_restart_in_a_form_ends_it_and_carries_no_slot(booking: DialogueModel) -> None:
    """Rasa: `restart` resets the tracker and asks for `action_session_start` as the
    followup (rasa/shared/core/events.py:1066-1069); the session start carries the slots of
    the applied events (rasa/core/actions/action.py:579-583), none after a restart, so every
    slot is back to its initial value and the form is over."""
    conversation = Conversation(make_agent(booking), "restarts")
    await conversation.say('/greet{"name": "Ada"}')
    await conversation.say('/book{"city": "Oslo"}')

    turn = await conversation.say("/restart")

    assert turn.texts == ["Starting over."]
    # As in Rasa, the message answers the form's question first (a `from_text` mapping).
    assert _shape(turn.events) == [
        "slot people=/restart",
        "action_restart",
        "restart",
        "action_session_start",
        "session_started",
        "action_listen",
    ]
    tracker = await conversation.tracker()
    assert tracker.active_loop_name is None
    assert (tracker.get_slot("name"), tracker.get_slot("city")) == ("guest", None)
    assert (await conversation.say("/greet")).texts == ["Hi guest"]


async def test_back_in_a_form_takes_back_the_message_that_started_it(
    booking: DialogueModel,
) -> None:
    """Rasa's `action_back` says `utter_back` and rewinds twice
    (rasa/core/actions/action.py, `ActionBack.run`): the `/back` message and the one before
    it are taken back with the slots and the form they started."""
    conversation = Conversation(make_agent(booking), "goes-back")
    await conversation.say('/greet{"name": "Ada"}')
    assert (await conversation.say('/book{"city": "Oslo"}')).texts == ["How many?"]

    turn = await conversation.say("/back")

    assert turn.texts == ["Going back."]
    assert _shape(turn.events)[-4:] == ["action_back", "rewind", "rewind", "action_listen"]
    tracker = await conversation.tracker()
    assert tracker.active_loop_name is None
    # The slots of the rewound messages are gone: `/back` as the answer, Oslo with it.
    assert (tracker.get_slot("city"), tracker.get_slot("people")) == (None, None)
    assert tracker.get_slot("name") == "Ada"


async def test_session_start_intent_starts_a_session_carrying_the_slots(
    booking: DialogueModel,
) -> None:
    """Rasa maps the `session_start` intent to `action_session_start`
    (rasa/core/policies/rule_policy.py:64-68) and predicts nothing after it
    (rasa/core/processor.py:899): the new session carries the slots set so far."""
    conversation = Conversation(make_agent(booking), "new-session")
    await conversation.say('/greet{"name": "Ada"}')

    turn = await conversation.say("/session_start")

    assert turn.texts == []
    assert _shape(turn.events) == [
        "action_session_start",
        "session_started",
        "slot name=Ada",
        "action_listen",
    ]
    assert (await conversation.say("/greet")).texts == ["Hi Ada"]
