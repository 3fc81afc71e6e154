"""Events a rasa-sdk action returns, applied as Rasa applies them, and the turn going on as
Rasa's would: a pause silences the bot, a rejection is not logged as a run, a user message
fills slots, a response the domain lacks is named in the log."""

from __future__ import annotations

import json
import logging
from typing import Any

import httpx
import pytest
from rasa_sdk import Action, Tracker
from rasa_sdk.events import (
    ActionExecutionRejected,
    ConversationPaused,
    SlotSet,
    UserUttered,
)
from rasa_sdk.executor import CollectingDispatcher

from server.dialogue.agent import Agent
from server.dialogue.domain import Domain
from server.dialogue.policies.prediction import PolicyPrediction
from server.dialogue.processor import DialogueModel, Processor
from server.trackers.events import Event
from server.trackers.events import SlotSet as BotSlotSet
from server.trackers.factory import create_lock_store, create_tracker_store
from server.trackers.repository import TrackerRepository
from server.trackers.tracker import Tracker as BotTracker
from tests.dialogue.conversation_fixtures import Conversation, make_agent
from tests.dialogue.sdk_transport import SdkTransport

DOMAIN = Domain.from_dict(
    {
        "intents": ["go", "mood", "restart"],
        "entities": ["mood"],
        "slots": {
            "mood": {"type": "text", "mappings": [{"type": "from_entity", "entity": "mood"}]}
        },
        "actions": [
            "action_pause",
            "action_refuse",
            "action_relay",
            "action_misnamed",
            "action_last_event",
            "action_note",
            "action_slots_seen",
        ],
        "responses": {
            "utter_greet": [{"text": "Hello!"}],
            "utter_happy": [{"text": "Glad you are {mood}!"}],
        },
    }
)


class Pause(Action):
    """Hands the conversation to a human."""

    def name(self) -> str:
        return "action_pause"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]
    ) -> list[dict[str, Any]]:
        dispatcher.utter_message(text="A human will answer you.")
        return [ConversationPaused()]


class Refuse(Action):
    """Rejects its own run with an event instead of an HTTP 400."""

    def name(self) -> str:
        return "action_refuse"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]
    ) -> list[dict[str, Any]]:
        return [ActionExecutionRejected(self.name())]


class Relay(Action):
    """Logs a user message of its own, as from a button's payload (Rasa's
    `action_force_next_utter` test)."""

    def name(self) -> str:
        return "action_relay"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]
    ) -> list[dict[str, Any]]:
        entities = [{"entity": "mood", "value": "happy", "start": 5, "end": 10}]
        parse_data = {"intent": {"name": "mood", "confidence": 1.0}, "entities": entities}
        return [UserUttered("I am happy", parse_data=parse_data)]


class Misnamed(Action):
    """Names a response the domain does not have (a typo), then says something itself."""

    def name(self) -> str:
        return "action_misnamed"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]
    ) -> list[dict[str, Any]]:
        dispatcher.utter_message(response="utter_gret")
        dispatcher.utter_message(text="Anyway.")
        return []


class LastEvent(Action):
    """Says which event its tracker ends with."""

    def name(self) -> str:
        return "action_last_event"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]
    ) -> list[dict[str, Any]]:
        last = tracker.events[-1]
        dispatcher.utter_message(text=f"{last['event']} at {last['timestamp'] > 0}")
        return []


class Note(Action):
    """Sets a declared slot and one the domain does not declare."""

    def name(self) -> str:
        return "action_note"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]
    ) -> list[dict[str, Any]]:
        return [SlotSet("mood", "calm"), SlotSet("listed_objects", ["a", "b"])]


class SlotsSeen(Action):
    """Says the slots its tracker holds."""

    def name(self) -> str:
        return "action_slots_seen"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]
    ) -> list[dict[str, Any]]:
        dispatcher.utter_message(text=repr(sorted(tracker.slots.items())))
        return []


class Scripted:
    """Predicts the given actions in turn, then listens; keeps what it was asked."""

    def __init__(self, *steps: str) -> None:
        self.steps = list(steps)
        self.asked = 0

    def predict(self, tracker: BotTracker, domain: Domain) -> PolicyPrediction:
        self.asked += 1
        step = self.steps.pop(0) if self.steps else "action_listen"
        return PolicyPrediction(step, 1.0, "Scripted", [])


def talk(policy: Scripted, sender: str) -> Conversation:
    model = DialogueModel(DOMAIN, policy)
    transport = SdkTransport(Pause, Refuse, Relay, Misnamed, LastEvent, Note, SlotsSeen)
    return Conversation(make_agent(model, transport=transport), sender)


def kinds(events: list[Event]) -> list[str]:
    return [e.as_dict()["event"] for e in events]


async def test_a_pause_an_action_returns_silences_the_bot_until_resumed() -> None:
    # Before, prediction went on after the pause: the bot greeted, in the turn that handed
    # the user to a human, and answered (trigger_intent, reminders) while paused.
    policy = Scripted("action_pause", "utter_greet")
    conversation = talk(policy, "paused")
    turn = await conversation.say("/go")
    assert turn.texts == ["A human will answer you."]
    assert kinds(turn.events)[-3:] == ["action", "bot", "pause"]
    assert policy.asked == 1

    later = await conversation.say('/mood{"mood": "sad"}')
    assert later.texts == []
    assert kinds(later.events) == ["user", "slot"]  # logged, slots filled, nothing predicted
    agent = conversation.agent
    _, sent = await agent.trigger_intent(conversation.sender_id, "go")
    assert sent == []
    assert policy.asked == 1
    tracker = await conversation.tracker()
    assert tracker.paused and tracker.get_slot("mood") == "sad"


async def test_a_paused_conversation_still_answers_a_restart() -> None:
    policy = Scripted("action_pause", "action_restart")
    conversation = talk(policy, "restart-paused")
    await conversation.say("/go")
    turn = await conversation.say("/restart")
    assert turn.actions == ["action_restart"]
    assert not (await conversation.tracker()).paused


async def test_an_action_rejecting_its_run_by_event_is_not_logged_as_run() -> None:
    # Before, `action: action_refuse` was logged before its rejection, so the policies read
    # the turn as if it had run.
    conversation = talk(Scripted("action_refuse", "utter_greet"), "refused")
    turn = await conversation.say("/go")
    assert turn.actions == ["utter_greet"]
    assert turn.texts == ["Hello!"]
    assert kinds(turn.events)[3:] == [
        "user",
        "action_execution_rejected",
        "user_featurization",
        "action",
        "bot",
        "action",
    ]


async def test_a_user_message_an_action_logs_fills_slots_as_if_sent() -> None:
    # Before, the message's entity filled no slot, so `{mood}` stayed empty.
    conversation = talk(Scripted("action_relay", "utter_happy"), "relayed")
    turn = await conversation.say("/go")
    assert turn.texts == ["Glad you are happy!"]
    tracker = await conversation.tracker()
    assert tracker.get_slot("mood") == "happy"
    assert tracker.latest_message.text == "I am happy"


async def test_a_response_the_domain_lacks_is_logged_by_name(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # As in Rasa, nothing is said for it and the turn goes on; before, not a word in the log.
    conversation = talk(Scripted("action_misnamed", "utter_greet"), "misnamed")
    with caplog.at_level(logging.WARNING, logger="server.dialogue.actions"):
        turn = await conversation.say("/go")
    assert turn.texts == ["Anyway.", "Hello!"]
    assert any(
        "'utter_gret'" in r.getMessage() and "the domain does not have" in r.getMessage()
        for r in caplog.records
    )


async def test_the_action_server_gets_the_tracker_as_rasa_sends_it() -> None:
    # The first action the policies predict after a user message sees how they read that
    # message (Rasa sends its prediction's events); before, its tracker ended with the user
    # message. A later action of the turn sees the turn so far.
    conversation = talk(Scripted("action_last_event", "utter_greet", "action_last_event"), "t")
    turn = await conversation.say("/go")
    assert turn.texts == ["user_featurization at True", "Hello!", "bot at True"]
    assert kinds(turn.events).count("user_featurization") == 1


async def test_a_slot_the_domain_does_not_declare_is_not_set_as_in_rasa(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Before, `listed_objects` was kept in the tracker's slots and sent back to the action
    # server; Rasa logs "Tried to set non existent slot" and leaves the slots as they were,
    # while the event stays in the conversation's events.
    conversation = talk(Scripted("action_note", "action_slots_seen"), "undeclared")
    with caplog.at_level(logging.ERROR, logger="server.trackers.tracker"):
        turn = await conversation.say("/go")
    assert turn.texts == ["[('mood', 'calm'), ('session_started_metadata', None)]"]
    slot_events = [e.as_dict() for e in turn.events if kinds([e]) == ["slot"]]
    assert [(e["name"], e["value"]) for e in slot_events] == [
        ("mood", "calm"),
        ("listed_objects", ["a", "b"]),
    ]
    tracker = await conversation.tracker()
    assert tracker.current_state()["slots"] == {"mood": "calm", "session_started_metadata": None}
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert errors == [
        "Tried to set non existent slot 'listed_objects' in conversation 'undeclared'. Make "
        "sure you added all your slots to your domain file."
    ]


class RecordingNLG:
    """An NLG server that keeps the tracker each request carried."""

    def __init__(self) -> None:
        self.trackers: list[dict[str, Any]] = []

    async def generate(
        self, response: str, tracker_state: dict[str, Any], output_channel: str, /, **kwargs: Any
    ) -> dict[str, Any] | None:
        self.trackers.append(json.loads(json.dumps(tracker_state)))  # as it went out
        return {"text": f"{response} after {tracker_state['events'][-1]['event']}"}


def nlg_agent(nlg: RecordingNLG, model: DialogueModel) -> Agent:
    """An agent on in-memory stores whose responses come from `nlg`."""
    processor = Processor(
        TrackerRepository(create_tracker_store({"type": "in_memory"})),
        create_lock_store(None),
        nlg_endpoint=nlg,
    )
    return Agent(processor, lambda: model)


async def test_the_nlg_server_gets_the_tracker_as_rasa_sends_it() -> None:
    nlg = RecordingNLG()
    agent = nlg_agent(nlg, DialogueModel(DOMAIN, Scripted("utter_greet", "utter_greet")))
    turn = await Conversation(agent, "nlg").say("/go")
    # The second runs after the first said its message; its own `action` is logged after.
    assert turn.texts == ["utter_greet after user_featurization", "utter_greet after bot"]


class RecordingTransport(SdkTransport):
    """`SdkTransport`, keeping the tracker each call carried."""

    def __init__(self, *actions: type[Action]) -> None:
        super().__init__(*actions)
        self.trackers: list[dict[str, Any]] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.trackers.append(json.loads(await request.aread())["tracker"])
        return await super().handle_async_request(request)


class WithEvents(Scripted):
    """`Scripted`, its custom actions' predictions carrying one event (the same object each
    time, as a policy's remembered prediction does)."""

    def __init__(self, *steps: str) -> None:
        super().__init__(*steps)
        self.event = BotSlotSet(key="mood", value="calm")

    def predict(self, tracker: BotTracker, domain: Domain) -> PolicyPrediction:
        prediction = super().predict(tracker, domain)
        if prediction.action_name.startswith("action_last"):
            return prediction.with_events([self.event])
        return prediction


def assert_sent_as_stored(sent: list[dict[str, Any]], stored: list[dict[str, Any]]) -> None:
    assert sent
    for state in sent:
        events = state["events"]
        assert events == stored[: len(events)]
        assert {e["metadata"].get("model_id") for e in events} == {"model-1"}
        assert {e["metadata"].get("assistant_id") for e in events} == {"bot-1"}


async def test_the_action_server_gets_the_turns_events_as_they_are_then_stored() -> None:
    # Before, the turn's events were sent without the model's model_id and assistant_id
    # (given when saved), and the prediction's events and the user_featurization were stamped
    # again when logged, after the action ran: GET .../tracker differed from what was sent.
    steps = ("action_last_event", "utter_greet", "action_last_event", "action_listen")
    model = DialogueModel(
        DOMAIN, WithEvents(*steps, *steps), model_id="model-1", assistant_id="bot-1"
    )
    transport = RecordingTransport(LastEvent)
    conversation = Conversation(make_agent(model, transport=transport), "stamped")
    await conversation.say("/go")
    await conversation.say("/go")  # a tracker loaded from the store this time
    assert len(transport.trackers) == 4
    stored = (await conversation.agent.tracker("stamped")).current_state()["events"]
    assert_sent_as_stored(transport.trackers, stored)


async def test_the_nlg_server_gets_the_turns_events_as_they_are_then_stored() -> None:
    nlg = RecordingNLG()
    steps = ("utter_greet", "utter_greet", "action_listen")
    model = DialogueModel(
        DOMAIN, Scripted(*steps, *steps), model_id="model-1", assistant_id="bot-1"
    )
    agent = nlg_agent(nlg, model)
    conversation = Conversation(agent, "nlg-stamped")
    await conversation.say("/go")
    await conversation.say("/go")
    assert len(nlg.trackers) == 4
    stored = (await agent.tracker("nlg-stamped")).current_state()["events"]
    assert_sent_as_stored(nlg.trackers, stored)
