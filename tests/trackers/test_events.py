"""Every Rasa event type goes through event_from_dict and as_dict unchanged, in Rasa's full
form (key order included); Rasa's short docs/fixture forms come out in that full form."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from server.errors import InvalidEvent
from server.trackers.events import EVENT_TYPES, Event, event_from_dict
from tests.shared_data import RECORDED

T = 1795311849.5640774
META = {"model_id": "feb0aa8eead941eda4c8ba3786e417b3", "assistant_id": "placeholder_default"}

# Rasa's full as_dict form of each event type (base keys, then the type's own keys).
FULL_FORMS: list[dict[str, Any]] = [
    {
        "event": "user",
        "timestamp": T,
        "metadata": {"model_id": "m1"},
        "text": "Hey",
        "parse_data": {
            "intent": {"name": "greet", "confidence": 0.9},
            "entities": [{"entity": "name", "value": "Ada", "start": 0, "end": 3}],
            "text": "Hey",
            "message_id": "abc",
            "metadata": {},
            "intent_ranking": [{"name": "greet", "confidence": 0.9}],
        },
        "input_channel": "rest",
        "message_id": "abc",
    },
    {"event": "user_featurization", "timestamp": T, "use_text_for_featurization": False},
    {"event": "entities", "timestamp": T, "entities": [{"entity": "city", "value": "Rome"}]},
    {
        "event": "bot",
        "timestamp": T,
        "metadata": {"utter_action": "utter_greet"},
        "text": "Hey there!",
        "data": {
            "elements": None,
            "quick_replies": None,
            "buttons": [{"title": "yes", "payload": "/affirm"}],
            "attachment": None,
            "image": None,
            "custom": None,
        },
    },
    {"event": "slot", "timestamp": T, "name": "departure_airport", "value": "BER"},
    {"event": "slot", "timestamp": T, "name": "seats", "value": [1, 2]},
    {"event": "reset_slots", "timestamp": T},
    {"event": "restart", "timestamp": T},
    {"event": "session_started", "timestamp": T, "metadata": META},
    {"event": "rewind", "timestamp": T},
    {"event": "undo", "timestamp": T},
    {"event": "export", "timestamp": T},
    {"event": "pause", "timestamp": T},
    {"event": "resume", "timestamp": T},
    {
        "event": "action",
        "timestamp": T,
        "metadata": META,
        "name": "utter_greet",
        "policy": "MemoizationPolicy",
        "confidence": 1.0,
        "action_text": None,
        "hide_rule_turn": False,
    },
    {
        "event": "action",
        "timestamp": T,
        "name": None,
        "policy": None,
        "confidence": None,
        "action_text": "Welcome!",
        "hide_rule_turn": True,
    },
    {
        "event": "action_execution_rejected",
        "timestamp": T,
        "name": "restaurant_form",
        "policy": "RulePolicy",
        "confidence": 1.0,
    },
    {"event": "followup", "timestamp": T, "name": "my_action"},
    {"event": "active_loop", "timestamp": T, "name": "restaurant_form"},
    {"event": "active_loop", "timestamp": T, "name": None},
    {"event": "loop_interrupted", "timestamp": T, "is_interrupted": True},
    {
        "event": "reminder",
        "timestamp": T,
        "intent": "my_intent",
        "date_time": "2018-09-03T11:41:10.128172",
        "entities": {"entity1": "value1"},
        "name": "my_reminder",
        "kill_on_user_msg": True,
    },
    {"event": "cancel_reminder", "timestamp": T},
    {"event": "agent", "timestamp": T, "text": "Hey, how are you?", "data": None},
    {"event": "stack", "timestamp": T, "update": '[{"op": "add", "path": "/0", "value": {}}]'},
]


def dumps(d: dict[str, Any]) -> str:
    """Key order matters: the wire format is compared as text."""
    return json.dumps(d)


def test_every_event_type_has_a_full_form_here() -> None:
    assert {d["event"] for d in FULL_FORMS} == set(EVENT_TYPES)


@pytest.mark.parametrize("full", FULL_FORMS, ids=lambda d: d["event"])
def test_full_form_round_trips_exactly(full: dict[str, Any]) -> None:
    assert dumps(event_from_dict(full).as_dict()) == dumps(full)


# Short forms from Rasa's docs and tests/shared/core/test_events.py, and what they become.
SHORT_FORMS = [
    (
        {"event": "slot", "name": "departure_airport", "value": "BER", "timestamp": T},
        {"event": "slot", "timestamp": T, "name": "departure_airport", "value": "BER"},
    ),
    (
        {
            "event": "user",
            "text": "Hey",
            "parse_data": {"intent": {"name": "greet", "confidence": 0.9}, "entities": []},
            "metadata": {},
            "timestamp": T,
        },
        {
            "event": "user",
            "timestamp": T,
            "text": "Hey",
            "parse_data": {
                "intent": {"name": "greet", "confidence": 0.9},
                "entities": [],
                "text": "Hey",
                "message_id": None,
                "metadata": {},
            },
            "input_channel": None,
            "message_id": None,
            # Rasa writes an empty metadata after the event's own keys
            "metadata": {},
        },
    ),
    (
        {
            "event": "action",
            "name": "action_listen",
            "policy": None,
            "confidence": None,
            "timestamp": T,
        },
        {
            "event": "action",
            "timestamp": T,
            "name": "action_listen",
            "policy": None,
            "confidence": None,
            "action_text": None,
            "hide_rule_turn": False,
        },
    ),
    (
        {"event": "bot", "text": "Hey there!", "data": {}, "timestamp": T},
        {"event": "bot", "timestamp": T, "text": "Hey there!", "data": {}, "metadata": {}},
    ),
    (
        {
            "event": "reminder",
            "intent": "my_intent",
            "entities": {"entity1": "value1"},
            "date_time": "2018-09-03T11:41:10.128172",
            "name": "my_reminder",
            "kill_on_user_msg": True,
            "timestamp": T,
        },
        {
            "event": "reminder",
            "timestamp": T,
            "intent": "my_intent",
            "date_time": "2018-09-03T11:41:10.128172",
            "entities": {"entity1": "value1"},
            "name": "my_reminder",
            "kill_on_user_msg": True,
        },
    ),
    (
        # filters are read but, as in Rasa, not serialised
        {
            "event": "cancel_reminder",
            "name": "my_reminder",
            "intent": "my_intent",
            "entities": [{"entity": "entity1", "value": "value1"}],
            "timestamp": T,
        },
        {"event": "cancel_reminder", "timestamp": T},
    ),
    (
        {"event": "followup", "name": "my_action", "timestamp": T},
        {"event": "followup", "timestamp": T, "name": "my_action"},
    ),
    (
        {"event": "agent", "text": "Hey, how are you?", "timestamp": T},
        {"event": "agent", "timestamp": T, "text": "Hey, how are you?", "data": None},
    ),
    (
        {"event": "export", "path": "stories.yml", "timestamp": T},
        {"event": "export", "timestamp": T},
    ),
    # legacy names
    (
        {"event": "form", "name": "restaurant_form", "timestamp": T},
        {"event": "active_loop", "timestamp": T, "name": "restaurant_form"},
    ),
    (
        {"event": "form_validation", "validate": False, "timestamp": T},
        {"event": "loop_interrupted", "timestamp": T, "is_interrupted": True},
    ),
]


@pytest.mark.parametrize(("short", "full"), SHORT_FORMS, ids=lambda d: d["event"])
def test_short_forms_come_out_in_full(short: dict[str, Any], full: dict[str, Any]) -> None:
    assert dumps(event_from_dict(short).as_dict()) == dumps(full)
    assert dumps(event_from_dict(full).as_dict()) == dumps(full)


@pytest.mark.parametrize(
    "plain", ["restart", "session_started", "reset_slots", "rewind", "undo", "pause", "resume"]
)
def test_plain_events_without_timestamp_get_one(plain: str) -> None:
    d = event_from_dict({"event": plain}).as_dict()
    assert d["event"] == plain and isinstance(d["timestamp"], float)
    assert list(d) == ["event", "timestamp"]


def _recorded_events() -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []

    def walk(obj: Any) -> None:
        if isinstance(obj, dict):
            if "event" in obj and "timestamp" in obj:
                events.append(obj)
            for value in obj.values():
                walk(value)
        elif isinstance(obj, list):
            for value in obj:
                walk(value)

    text = RECORDED.read_text(encoding="utf-8")
    for block in re.findall(r"```json\n(.*?)```", text, flags=re.S):
        body = "\n".join(line for line in block.splitlines() if not line.startswith("//"))
        try:
            walk(json.loads(body))
        except json.JSONDecodeError:
            continue  # cut bodies (over 8,000 characters) are not complete JSON
    return events


def test_every_event_recorded_from_rasa_round_trips_exactly() -> None:
    events = _recorded_events()
    assert len(events) > 50
    assert {"user", "bot", "action", "session_started", "user_featurization"} <= {
        e["event"] for e in events
    }
    for recorded in events:
        assert dumps(event_from_dict(recorded).as_dict()) == dumps(recorded)


@pytest.mark.parametrize(
    "bad",
    [
        {"event": "nope"},
        {"name": "x"},
        {"event": "slot", "name": "x"},
        {"event": "action"},
        {"event": "entities"},
        {"event": "user", "parse_data": []},
        {"event": "action", "name": "x", "timestamp": "yesterday"},
        [],
    ],
)
def test_malformed_events_are_invalid(bad: Any) -> None:
    with pytest.raises(InvalidEvent):
        event_from_dict(bad)


@pytest.mark.parametrize("name", ["action", "bot", "user"])
@pytest.mark.parametrize("metadata", [{}, {"model_id": "m", "utter_action": "utter_greet"}])
def test_events_with_their_own_as_dict_write_the_generic_keys_in_the_generic_order(
    name: str, metadata: dict[str, Any]
) -> None:
    # The turn's events write their dicts in one literal; the generic Event.as_dict, which
    # every other event uses, says what that must be (values and key order).
    full = next(f for f in FULL_FORMS if f["event"] == name)
    event = event_from_dict({**full, "metadata": metadata})
    assert type(event).as_dict is not Event.as_dict
    own, generic = event.as_dict(), Event.as_dict(event)
    if name == "user":  # its own parse data, filled in
        generic["parse_data"] = event.full_parse_data()  # type: ignore[attr-defined]
    assert list(own.items()) == list(generic.items())
