"""Slot mappings fill slots from the latest user message as Rasa 3 documents."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from server.dialogue.domain import Domain
from server.dialogue.processor import DialogueModel
from server.dialogue.slot_extraction import extract_slots
from server.trackers.events import ActionExecuted, ActiveLoop, SlotSet, UserUttered
from server.trackers.tracker import Tracker
from tests.dialogue.conversation_fixtures import (
    Conversation,
    make_agent,
    train_files,
    train_project,
)
from tests.shared_data import TESTDATA


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


def test_from_entity_takes_the_entity_value_and_lists_take_all() -> None:
    entities = [{"entity": "city", "value": "Paris"}, {"entity": "city", "value": "Rome"}]
    one = _domain([{"type": "from_entity", "entity": "city"}], "text")
    # As in Rasa: the last value said fills a slot that holds one.
    assert _filled(one, _said(one, "inform", entities=entities)) == {"s": "Rome"}
    many = _domain([{"type": "from_entity", "entity": "city"}], "list")
    assert _filled(many, _said(many, "inform", entities=entities)) == {"s": ["Paris", "Rome"]}


def test_from_entity_with_a_role_or_group_takes_only_entities_with_that_role_or_group() -> None:
    entities = [
        {"entity": "city", "value": "Berlin", "role": "departure"},
        {"entity": "city", "value": "Paris", "role": "destination", "group": "1"},
    ]
    departure = _domain([{"type": "from_entity", "entity": "city", "role": "departure"}], "text")
    assert _filled(departure, _said(departure, "inform", entities=entities)) == {"s": "Berlin"}
    grouped = _domain([{"type": "from_entity", "entity": "city", "group": "1"}], "text")
    assert _filled(grouped, _said(grouped, "inform", entities=entities)) == {}
    both = _domain(
        [{"type": "from_entity", "entity": "city", "role": "destination", "group": "1"}], "text"
    )
    assert _filled(both, _said(both, "inform", entities=entities)) == {"s": "Paris"}
    # As in Rasa 3: a mapping without a role is not filled by an entity that has one.
    plain = _domain([{"type": "from_entity", "entity": "city"}], "text")
    assert _filled(plain, _said(plain, "inform", entities=entities)) == {}
    said = [*entities, {"entity": "city", "value": "Rome"}]
    assert _filled(plain, _said(plain, "inform", entities=said)) == {"s": "Rome"}


def test_a_mapping_that_finds_nothing_to_change_lets_the_next_mapping_fill_the_slot() -> None:
    domain = _domain(
        [
            {"type": "from_intent", "intent": "inform", "value": None},
            {"type": "from_text", "intent": "inform"},
        ],
        "text",
    )
    assert _filled(domain, _said(domain, "inform", text="aisle")) == {"s": "aisle"}


def test_a_list_slot_filled_from_text_or_intent_holds_a_list() -> None:
    # Before: the text itself, so an action iterating over the slot got its letters.
    from_text = _domain([{"type": "from_text"}], "list")
    assert _filled(from_text, _said(from_text, "inform", text="tea")) == {"s": ["tea"]}
    from_intent = _domain([{"type": "from_intent", "intent": "greet", "value": "hi"}], "list")
    assert _filled(from_intent, _said(from_intent, "greet")) == {"s": ["hi"]}


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
intents: [greet, inform, tell]
entities: [amount]
slots:
  amount:
    type: float
    mappings: [{type: from_entity, entity: amount}]
responses:
  utter_greet: [{text: "Hi"}]
  utter_default: [{text: "default"}]
  utter_amount: [{text: "You said {amount}."}]
""",
    "data/rules.yml": """
version: "3.1"
rules:
- {rule: greet, steps: [{intent: greet}, {action: utter_greet}]}
- {rule: inform, steps: [{intent: inform}, {action: utter_greet}]}
- {rule: tell, steps: [{intent: tell}, {action: utter_amount}]}
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


async def test_a_float_slot_keeps_the_entity_text_as_rasa_does(float_bot: DialogueModel) -> None:
    # Before: "12" was stored as 12.0, so the reply read "You said 12.0." and an action got
    # a number; Rasa 3.6 stores the value as extracted (its policies read it as a number).
    conversation = Conversation(make_agent(float_bot), "float-text")
    assert (await conversation.say('/tell{"amount": "12"}')).texts == ["You said 12."]
    assert (await conversation.tracker()).get_slot("amount") == "12"


def test_a_bool_slot_keeps_the_entity_text_as_rasa_does() -> None:
    # Before: "yes" was stored as True, so policies saw a confirmation where Rasa sees no
    # value (only true/false and 1/0 are truth values to Rasa).
    domain = _domain([{"type": "from_entity", "entity": "city"}], "bool")
    said = _said(domain, "inform", entities=[{"entity": "city", "value": "yes"}])
    assert _filled(domain, said) == {"s": "yes"}
    assert domain.slots_by_name["s"].feature("yes") is None


@pytest.fixture(scope="module")
def trigger_bot(tmp_path_factory: pytest.TempPathFactory) -> DialogueModel:
    # Rasa's own test project: `test_trigger` (from_trigger_intent, intent mood_great) is no
    # required slot of test_form, which mood_great activates.
    folder = TESTDATA / "test_from_trigger_intent_with_no_mapping_conditions"
    return train_project(
        folder,
        tmp_path_factory.mktemp("trigger-bot"),
        [folder / "stories.yml", folder / "nlu.yml"],
    )


async def test_from_trigger_intent_fills_only_when_the_message_activates_a_form(
    trigger_bot: DialogueModel,
) -> None:
    # Before: mood_great filled the slot in any conversation, form or not.
    agent = make_agent(trigger_bot)
    no_form = Conversation(agent, "no-form")
    await no_form.say("/greet")
    turn = await no_form.say("/mood_great")
    assert turn.texts == ["Great, carry on!", "The value of test_trigger slot is: None"]
    assert (await no_form.tracker()).get_slot("test_trigger") is None

    form = Conversation(agent, "form")
    turn = await form.say("/mood_great")
    assert turn.actions == ["test_form"]
    assert [(e.key, e.value) for e in turn.events if isinstance(e, SlotSet)][0] == (
        "test_trigger",
        "testing123",
    )


ORDER_BOT = {
    "config.yml": "language: en\npolicies:\n  - name: RulePolicy\n",
    "domain.yml": """
version: "3.1"
intents: [order, inform]
entities: [size]
slots:
  kind:
    type: text
    mappings: [{type: from_trigger_intent, intent: order, value: pizza}]
  size:
    type: text
    mappings: [{type: from_entity, entity: size}]
forms:
  order_form:
    required_slots: [kind, size]
responses:
  utter_ask_kind: [{text: "What kind?"}]
  utter_ask_size: [{text: "What size?"}]
""",
    "data/rules.yml": 'version: "3.1"\nrules:\n- rule: order\n  steps: [{intent: order}, '
    "{action: order_form}, {active_loop: order_form}]\n",
}


async def test_a_trigger_intent_fills_the_forms_slot_as_the_form_starts(
    tmp_path: Path,
) -> None:
    conversation = Conversation(make_agent(train_files(ORDER_BOT, tmp_path)), "u1")
    turn = await conversation.say("/order")
    assert turn.texts == ["What size?"]
    tracker = await conversation.tracker()
    assert (tracker.get_slot("kind"), tracker.active_loop_name) == ("pizza", "order_form")


def _in_form(domain: Domain, requested: str) -> Tracker:
    tracker = Tracker("u", domain.slot_defaults())
    tracker.update_many(
        [
            ActionExecuted(action_name="trip_form"),
            ActiveLoop(name="trip_form"),
            SlotSet(key="requested_slot", value=requested),
            ActionExecuted(action_name="action_listen"),
            UserUttered(text="x", parse_data={"intent": {"name": "inform"}, "entities": []}),
        ]
    )
    return tracker


def _form_domain(conditions: list[dict]) -> Domain:
    return Domain.from_dict(
        {
            "intents": ["inform"],
            "slots": {
                "s": {"type": "any", "mappings": [{"type": "from_text", "conditions": conditions}]},
                "t": {"type": "any", "mappings": [{"type": "from_text"}]},
            },
            "forms": {"trip_form": {"required_slots": ["t", "s"]}},
        }
    )


@pytest.mark.parametrize(
    "condition", [{"active_loop": None, "requested_slot": "s"}, {"requested_slot": "s"}]
)
def test_a_condition_without_active_loop_holds_outside_forms_whatever_its_requested_slot(
    condition: dict,
) -> None:
    """Before, `requested_slot` was checked too, so the slot was never filled outside a form;
    as Rasa 3.6, a condition with no active loop (null or left out) only asks that no form be
    active."""
    domain = _form_domain([condition])
    assert _filled(domain, _said(domain, "inform"))["s"] == "x"
    assert "s" not in _filled(domain, _in_form(domain, "s"))


def test_a_condition_with_requested_slot_null_holds_whatever_the_form_asks() -> None:
    """Before, `requested_slot: null` held only when the form asked for nothing; as in Rasa,
    a missing or null `requested_slot` holds for any slot the form asks for."""
    domain = _form_domain([{"active_loop": "trip_form", "requested_slot": None}])
    assert _filled(domain, _in_form(domain, "t"))["s"] == "x"
    assert "s" not in _filled(domain, _said(domain, "inform"))


def test_a_message_without_text_leaves_a_slot_filled_from_text_as_it_is() -> None:
    domain = _domain([{"type": "from_text"}], slot_type="text")
    tracker = _said(domain, "inform", text="Ann")
    tracker.update(SlotSet(key="s", value="Ann"))
    tracker.update(ActionExecuted(action_name="action_listen"))
    tracker.update(UserUttered(text=None, parse_data={"intent": {"name": "inform"}}))
    # Unlike Rasa 3.6, which sets the slot to null (and a list slot to [null]): a message
    # with no text says nothing about the slot (see docs/differences-from-rasa.md).
    assert extract_slots(tracker, domain) == []


BUILT_IN = ["requested_slot", "session_started_metadata", "knowledge_base_last_object"]


def test_built_in_slots_declared_with_mappings_are_not_filled_from_messages() -> None:
    """As in Rasa, no message fills the slots the server sets itself. Before, a domain
    declaring `requested_slot` with a `from_entity` mapping set it to the city said: an
    active form then asked for a slot named 'Rome'."""
    city = [{"type": "from_entity", "entity": "city"}]
    domain = Domain.from_dict(
        {
            "intents": ["inform"],
            "entities": ["city"],
            "slots": {name: {"type": "any", "mappings": city} for name in [*BUILT_IN, "s"]},
        }
    )
    said = _said(domain, "inform", entities=[{"entity": "city", "value": "Rome"}])
    assert _filled(domain, said) == {"s": "Rome"}
