"""Slot mappings fill slots from the latest user message as Rasa 3 documents."""

from __future__ import annotations

import json

import pytest

from server.dialogue.domain import Domain
from server.dialogue.processor import DialogueModel
from server.dialogue.slot_extraction import extract_slots
from server.trackers.events import ActionExecuted, ActiveLoop, SlotSet, UserUttered
from server.trackers.tracker import Tracker
from tests.dialogue.conversation_fixtures import Conversation, make_agent, train_files


def _domain(mappings: list[dict], slot_type: str = "any") -> Domain:
    return Domain.from_dict(
        {
            "intents": ["greet", "inform", "deny"],
            "entities": ["city"],
            "slots": {"s": {"type": slot_type, "mappings": mappings}},
        }
    )


def _said(domain: Domain, intent: str, text: str = "x", entities: list | None = None) -> Tracker:
    tracker = Tracker("u", domain.slot_defaults())
    tracker.update(ActionExecuted(action_name="action_listen"))
    tracker.update(
        UserUttered(text=text, parse_data={"intent": {"name": intent}, "entities": entities or []})
    )
    return tracker


def _filled(domain: Domain, tracker: Tracker) -> dict:
    return {e.key: e.value for e in extract_slots(tracker, domain)}


def test_from_intent_without_intent_list_matches_any_intent_not_excluded() -> None:
    domain = _domain([{"type": "from_intent", "value": "seen", "not_intent": ["deny"]}])
    assert _filled(domain, _said(domain, "greet")) == {"s": "seen"}
    assert _filled(domain, _said(domain, "deny")) == {}


def test_from_intent_with_intent_list_matches_only_those() -> None:
    domain = _domain([{"type": "from_intent", "intent": "inform", "value": True}])
    assert _filled(domain, _said(domain, "inform")) == {"s": True}
    assert _filled(domain, _said(domain, "greet")) == {}


def test_from_entity_takes_the_last_entity_value_and_lists_take_all() -> None:
    """Before, the first value won; Rasa keeps the last one the message names."""
    entities = [{"entity": "city", "value": "Paris"}, {"entity": "city", "value": "Rome"}]
    one = _domain([{"type": "from_entity", "entity": "city"}], "text")
    assert _filled(one, _said(one, "inform", entities=entities)) == {"s": "Rome"}
    many = _domain([{"type": "from_entity", "entity": "city"}], "list")
    assert _filled(many, _said(many, "inform", entities=entities)) == {"s": ["Paris", "Rome"]}


def test_from_entity_takes_only_entities_of_the_mapping_role_and_group() -> None:
    """Before, a mapping without a role or group took any entity of its type: "from Berlin to
    Rome" set a plain `city` slot too. As in Rasa, role and group must match exactly."""
    entities = [
        {"entity": "city", "value": "Berlin", "role": "from"},
        {"entity": "city", "value": "Rome", "role": "to", "group": "1"},
    ]
    plain = _domain([{"type": "from_entity", "entity": "city"}], "text")
    assert _filled(plain, _said(plain, "inform", entities=entities)) == {}
    origin = _domain([{"type": "from_entity", "entity": "city", "role": "from"}], "text")
    assert _filled(origin, _said(origin, "inform", entities=entities)) == {"s": "Berlin"}
    to = _domain([{"type": "from_entity", "entity": "city", "role": "to"}], "text")
    assert _filled(to, _said(to, "inform", entities=entities)) == {}
    grouped = _domain([{"type": "from_entity", "entity": "city", "role": "to", "group": "1"}])
    assert _filled(grouped, _said(grouped, "inform", entities=entities)) == {"s": "Rome"}


def test_an_entity_fills_a_slot_the_form_did_not_ask_for_when_its_mapping_is_unique() -> None:
    """Before, two slots of a form taking `city` for different intents both counted as the
    same mapping: "I leave from Berlin" while the form asked for the destination filled
    nothing, and the form was rejected. As in Rasa, the whole mapping decides."""
    city = {"type": "from_entity", "entity": "city"}
    domain = Domain.from_dict(
        {
            "intents": ["depart", "arrive", "inform"],
            "entities": ["city"],
            "slots": {
                "origin": {"type": "text", "mappings": [{**city, "intent": "depart"}]},
                "destination": {"type": "text", "mappings": [{**city, "intent": "arrive"}]},
                "stopover": {"type": "text", "mappings": [city]},
                "hotel_city": {"type": "text", "mappings": [city]},
            },
            "forms": {
                "trip": {"required_slots": ["origin", "destination", "stopover", "hotel_city"]}
            },
        }
    )
    berlin = [{"entity": "city", "value": "Berlin"}]

    def said_in_form(intent: str) -> Tracker:
        tracker = _said(domain, intent, entities=berlin)
        tracker.update_many(
            [ActiveLoop(name="trip"), SlotSet(key="requested_slot", value="destination")]
        )
        return tracker

    assert _filled(domain, said_in_form("depart")) == {"origin": "Berlin"}
    # stopover and hotel_city share one mapping: neither is filled unasked.
    assert _filled(domain, said_in_form("inform")) == {}


def test_a_form_ignores_the_intent_its_ignored_intents_names_as_one_string() -> None:
    """Before, `ignored_intents: chitchat` (one name, not a list) was read letter by letter:
    chitchat during the form filled the requested slot with its text."""
    domain = Domain.from_dict(
        {
            "intents": ["chitchat", "inform"],
            "slots": {"s": {"type": "text", "mappings": [{"type": "from_text"}]}},
            "forms": {"f": {"required_slots": ["s"], "ignored_intents": "chitchat"}},
        }
    )
    tracker = _said(domain, "chitchat", text="tell me a joke")
    tracker.update_many([ActiveLoop(name="f"), SlotSet(key="requested_slot", value="s")])

    assert _filled(domain, tracker) == {}


def test_from_text_respects_not_intent() -> None:
    domain = _domain([{"type": "from_text", "not_intent": "deny"}], "text")
    assert _filled(domain, _said(domain, "inform", text="a window seat")) == {"s": "a window seat"}
    assert _filled(domain, _said(domain, "deny", text="no")) == {}


FLOAT_BOT = {
    "config.yml": "language: en\npolicies:\n  - name: RulePolicy\n",
    "domain.yml": """
version: "3.1"
intents: [greet, inform]
entities: [amount]
slots:
  amount:
    type: float
    mappings: [{type: from_entity, entity: amount}]
responses:
  utter_greet: [{text: "Hi"}]
  utter_default: [{text: "default"}]
""",
    "data/rules.yml": """
version: "3.1"
rules:
- {rule: greet, steps: [{intent: greet}, {action: utter_greet}]}
- {rule: inform, steps: [{intent: inform}, {action: utter_greet}]}
""",
}


@pytest.fixture(scope="module")
def float_bot(tmp_path_factory: pytest.TempPathFactory) -> DialogueModel:
    return train_files(FLOAT_BOT, tmp_path_factory.mktemp("float-bot"))


@pytest.mark.parametrize("value", ['"nan"', '"inf"', '"-1e999"', "9" * 400])
async def test_a_float_slot_never_holds_what_json_cannot(
    float_bot: DialogueModel, value: str
) -> None:
    """Before, `"nan"` or `"1e999"` typed by a user became a float slot's NaN or infinity,
    and every later GET of the tracker was a 500; an integer beyond a double raised an
    OverflowError out of the turn (no answer, the message lost)."""
    conversation = Conversation(make_agent(float_bot), f"float-{value[:5]}")

    turn = await conversation.say(f'/inform{{"amount": {value}}}')

    assert turn.texts == ["Hi"]
    tracker = await conversation.tracker()
    json.dumps(tracker.current_state(), allow_nan=False)  # what the API will send
    assert (await conversation.say("/greet")).texts == ["Hi"]
