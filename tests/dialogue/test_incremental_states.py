"""A prediction's conversation states, extended turn by turn on a hot tracker, equal the
states computed from scratch (restarts and rewinds included)."""

from __future__ import annotations

from server.dialogue.domain import Domain
from server.dialogue.policies.featurization import ConversationStates, states_and_labels
from server.trackers.events import (
    ActionExecuted,
    BotUttered,
    Restarted,
    SlotSet,
    UserUtteranceReverted,
    UserUttered,
)
from server.trackers.tracker import Tracker

DOMAIN = Domain.from_dict(
    {
        "intents": ["greet", "mood_great"],
        "slots": {"mood": {"type": "text", "mappings": [{"type": "custom"}]}},
        "responses": {"utter_greet": [{"text": "hi"}]},
    }
)


def turn(n: int) -> list:
    return [
        UserUttered(text=f"m{n}", parse_data={"intent": {"name": "greet", "confidence": 1.0}}),
        SlotSet(key="mood", value=f"v{n % 3}"),
        ActionExecuted(action_name="utter_greet"),
        BotUttered(text="hi"),
        ActionExecuted(action_name="action_listen"),
    ]


def test_incremental_states_equal_a_full_recompute() -> None:
    tracker = Tracker("t", DOMAIN.slot_defaults(), [ActionExecuted(action_name="action_listen")])
    for n in range(30):
        events = turn(n)
        if n == 10:
            events = [UserUtteranceReverted(), *events]
        if n == 20:
            events = [Restarted(), ActionExecuted(action_name="action_listen"), *events]
        tracker.update_many(events)
        conversation = ConversationStates(tracker, DOMAIN)
        expected, _ = states_and_labels(tracker.applied_events(), DOMAIN)
        assert conversation.states == expected
        assert conversation.events == tracker.applied_events()
