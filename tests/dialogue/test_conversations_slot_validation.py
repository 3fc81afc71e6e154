"""Slots filled outside a form's own validation, as in Rasa 3: after every user message the
actions of custom mappings run, then `action_validate_slot_mappings` checks the slots."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from rasa_sdk import Action, Tracker, ValidationAction
from rasa_sdk.events import SlotSet
from rasa_sdk.executor import CollectingDispatcher
from rasa_sdk.types import DomainDict

from server.dialogue.processor import DialogueModel
from server.trackers.events import UserUttered
from tests.dialogue.conversation_fixtures import Conversation, make_agent, train_files
from tests.dialogue.sdk_transport import SdkTransport

DOMAIN = """
version: "3.1"
intents: [inform, greet, trip]
entities: [city]
slots:
  city:
    type: text
    mappings: [{type: from_entity, entity: city}]
  {extra_slot}
responses:
  utter_ask_city: [{text: "Which city?"}]
  utter_greet: [{text: "Hi"}]
  utter_done: [{text: "Off to {city}."}]
  utter_default: [{text: "Sorry?"}]
actions: [{actions}]
forms:
  trip_form:
    required_slots: [city]
"""
RULES = """
version: "3.1"
rules:
- rule: greet
  steps: [{intent: greet}, {action: utter_greet}]
- rule: inform
  steps: [{intent: inform}, {action: utter_greet}]
- rule: activate
  steps: [{intent: trip}, {action: trip_form}, {active_loop: trip_form}]
- rule: submit
  condition: [{active_loop: trip_form}]
  steps: [{action: trip_form}, {active_loop: null}, {action: utter_done}]
"""
CONFIG = "language: en\npolicies:\n  - name: RulePolicy\n"


def _bot(folder: Any, extra_slot: str, actions: str) -> DialogueModel:
    domain = DOMAIN.replace("{extra_slot}", extra_slot).replace("{actions}", actions)
    files = {"config.yml": CONFIG, "domain.yml": domain, "data/rules.yml": RULES}
    return train_files(files, folder)


@pytest.fixture(scope="module")
def trip_bot(tmp_path_factory: pytest.TempPathFactory) -> DialogueModel:
    return _bot(tmp_path_factory.mktemp("trip-bot"), "", "action_validate_slot_mappings")


@pytest.fixture(scope="module")
def weekday_bot(tmp_path_factory: pytest.TempPathFactory) -> DialogueModel:
    weekday = "weekday: {type: text, mappings: [{type: custom, action: action_weekday}]}"
    return _bot(tmp_path_factory.mktemp("weekday-bot"), weekday, "action_weekday")


class _KnownCities(ValidationAction):
    """Capitalises a known city and refuses the others."""

    async def validate_city(
        self, value: Any, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> dict[str, Any]:
        if str(value).lower() in ("paris", "rome"):
            return {"city": str(value).capitalize()}
        dispatcher.utter_message(text="No such city.")
        return {"city": None}


async def test_action_validate_slot_mappings_checks_slots_of_predefined_mappings(
    trip_bot: DialogueModel,
) -> None:
    """Before, `action_validate_slot_mappings` ran only when some slot had a custom mapping:
    a bot whose mappings are all predefined kept "paris" unchecked."""
    conversation = Conversation(make_agent(trip_bot, transport=SdkTransport(_KnownCities)), "v")

    turn = await conversation.say('/inform{"city": "paris"}')

    assert turn.texts == ["Hi"]
    assert (await conversation.tracker()).get_slot("city") == "Paris"


async def test_action_validate_slot_mappings_runs_while_a_form_is_active(
    trip_bot: DialogueModel,
) -> None:
    """Before, a form took the slot unchecked: "atlantis" ended the trip form."""
    conversation = Conversation(make_agent(trip_bot, transport=SdkTransport(_KnownCities)), "f")
    assert (await conversation.say("/trip")).texts == ["Which city?"]

    turn = await conversation.say('/inform{"city": "atlantis"}')

    assert turn.texts == ["No such city.", "Which city?"]
    assert (await conversation.tracker()).active_loop_name == "trip_form"
    assert (await conversation.say('/inform{"city": "rome"}')).texts == ["Off to Rome."]


class _Weekday(Action):
    def name(self) -> str:
        return "action_weekday"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]
    ) -> list[dict[str, Any]]:
        return [SlotSet("weekday", "Monday"), {"event": "followup", "name": "utter_done"}]


async def test_the_action_of_a_custom_mapping_fills_its_slot(weekday_bot: DialogueModel) -> None:
    """Before, a custom mapping's `action` never ran: the slot stayed empty. Its events other
    than slots and bot messages are ignored, as in Rasa."""
    transport = SdkTransport(_Weekday)
    conversation = Conversation(make_agent(weekday_bot, transport=transport), "w")

    turn = await conversation.say("/greet")

    assert turn.actions == ["utter_greet"]
    assert (await conversation.tracker()).get_slot("weekday") == "Monday"
    assert transport.calls == ["action_weekday"]


async def test_without_an_action_server_the_log_says_the_mapping_actions_do_not_run(
    weekday_bot: DialogueModel, caplog: pytest.LogCaptureFixture
) -> None:
    """Rasa warns at each message that the custom mapping's action failed; before, nothing
    said why the slot stayed empty. Once per model, not per message."""
    conversation = Conversation(make_agent(weekday_bot), "no-server")

    with caplog.at_level(logging.WARNING, logger="server.dialogue.processor"):
        assert (await conversation.say("/greet")).texts == ["Hi"]
        assert (await conversation.say("/greet")).texts == ["Hi"]

    told = [r.getMessage() for r in caplog.records if "no action_endpoint" in r.getMessage()]
    assert len(told) == 1
    assert "'action_weekday'" in told[0]
    assert (await conversation.tracker()).get_slot("weekday") is None


async def test_executing_action_extract_slots_fills_and_validates_from_the_latest_message(
    trip_bot: DialogueModel,
) -> None:
    """Before, `POST .../execute {"name": "action_extract_slots"}` logged the action and did
    nothing; as in Rasa, it now fills the slots the domain maps from the latest message (here
    one posted as an event, which fills nothing) and runs `action_validate_slot_mappings`."""
    agent = make_agent(trip_bot, transport=SdkTransport(_KnownCities))
    parse_data = {
        "intent": {"name": "inform", "confidence": 1.0},
        "entities": [{"entity": "city", "value": "paris", "start": 0, "end": 5}],
    }
    await agent.append_events("execute", [UserUttered(text="paris", parse_data=parse_data)])
    assert (await agent.tracker("execute")).get_slot("city") is None

    tracker, _ = await agent.execute_action("execute", "action_extract_slots")

    assert tracker.get_slot("city") == "Paris"
    assert tracker.latest_action_name == "action_extract_slots"
    # As in Rasa, a slot the validation set is logged once, as validated.
    assert [e.as_dict()["event"] for e in tracker.events[-2:]] == ["action", "slot"]


async def test_a_message_posted_without_a_turn_fills_its_slots_as_in_rasa(
    trip_bot: DialogueModel,
) -> None:
    """`POST .../messages` runs Rasa's `action_extract_slots` after logging the message (and
    predicts nothing): the `user` event, then the `slot` events, each slot the validation
    checked once, with the value it gave (before, "paris" was logged, then "Paris")."""
    agent = make_agent(trip_bot, transport=SdkTransport(_KnownCities))

    tracker = await agent.add_message("posted", '/inform{"city": "paris"}')

    posted = [e.as_dict() for e in tracker.events[-2:]]
    assert [e["event"] for e in posted] == ["user", "slot"]
    assert (posted[1]["name"], posted[1]["value"]) == ("city", "Paris")


class _LastCity(Action):
    """Keeps the city the conversation had before this message (Rasa runs a custom mapping's
    action on the tracker as it was before the message's slots were extracted)."""

    def name(self) -> str:
        return "action_last_city"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]
    ) -> list[dict[str, Any]]:
        return [SlotSet("last_city", tracker.get_slot("city"))]


async def test_a_custom_mapping_action_sees_the_slots_as_they_were_before_the_message(
    tmp_path: Any,
) -> None:
    """Before, the domain's own mappings filled `city` first and the action read the new
    city: `last_city` became "rome" where Rasa keeps "paris"."""
    last_city = "last_city: {type: text, mappings: [{type: custom, action: action_last_city}]}"
    model = _bot(tmp_path, last_city, "action_last_city")
    conversation = Conversation(make_agent(model, transport=SdkTransport(_LastCity)), "last")

    await conversation.say('/inform{"city": "paris"}')
    await conversation.say('/inform{"city": "rome"}')

    tracker = await conversation.tracker()
    assert (tracker.get_slot("city"), tracker.get_slot("last_city")) == ("rome", "paris")


def _city_bot(folder: Any, mappings: str, actions: str = "action_default_city") -> DialogueModel:
    """The trip bot with `city` mapped by `mappings` and `actions` listed."""
    domain = DOMAIN.replace("{extra_slot}", "").replace("{actions}", actions)
    domain = domain.replace(
        "mappings: [{type: from_entity, entity: city}]", f"mappings: {mappings}"
    )
    files = {"config.yml": CONFIG, "domain.yml": domain, "data/rules.yml": RULES}
    return train_files(files, folder)


class _DefaultCity(Action):
    def name(self) -> str:
        return "action_default_city"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]
    ) -> list[dict[str, Any]]:
        return [SlotSet("city", "Lyon")]


async def test_a_slot_takes_the_value_of_its_mapping_listed_last(tmp_path: Any) -> None:
    """As in Rasa, a slot's mappings apply in the order the domain lists them, a custom one
    included: the city the user named (its from_entity mapping comes second) wins over the
    custom mapping's default. Before, custom mappings ran after all others: "Lyon"."""
    model = _city_bot(
        tmp_path, "[{type: custom, action: action_default_city}, {type: from_entity, entity: city}]"
    )
    conversation = Conversation(make_agent(model, transport=SdkTransport(_DefaultCity)), "o")

    await conversation.say("/greet")
    assert (await conversation.tracker()).get_slot("city") == "Lyon"
    await conversation.say('/inform{"city": "rome"}')

    assert (await conversation.tracker()).get_slot("city") == "rome"


async def test_a_custom_mapping_after_one_that_filled_the_slot_does_not_run(
    tmp_path: Any,
) -> None:
    """As in Rasa, the first mapping that fills a slot ends its turn: the custom mapping
    listed after the city's entity runs only for a message without a city. Before, it ran
    after every message, and "Lyon" overwrote the city the user named."""
    model = _city_bot(
        tmp_path, "[{type: from_entity, entity: city}, {type: custom, action: action_default_city}]"
    )
    transport = SdkTransport(_DefaultCity)
    conversation = Conversation(make_agent(model, transport=transport), "after")

    await conversation.say('/inform{"city": "rome"}')
    assert transport.calls == []
    assert (await conversation.tracker()).get_slot("city") == "rome"
    await conversation.say("/greet")

    assert transport.calls == ["action_default_city"]
    assert (await conversation.tracker()).get_slot("city") == "Lyon"


class _Note(Action):
    def name(self) -> str:
        return "action_note"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]
    ) -> list[dict[str, Any]]:
        return [SlotSet("note", tracker.latest_message.get("text"))]


async def test_a_custom_mapping_runs_only_while_its_conditions_hold(tmp_path: Any) -> None:
    """As in Rasa, a custom mapping's `conditions` (and `intent`, `not_intent`) decide whether
    its action runs at all: not at "/greet"; at "/trip" once the form is active (Rasa's form
    extracts the slots again as it activates), then at each message in the form. Before, it
    ran after every message: outside the trip form too."""
    note = (
        "note: {type: text, mappings: [{type: custom, action: action_note,"
        " conditions: [{active_loop: trip_form}]}]}"
    )
    model = _bot(tmp_path, note, "action_note")
    transport = SdkTransport(_Note)
    conversation = Conversation(make_agent(model, transport=transport), "n")

    assert (await conversation.say("/greet")).texts == ["Hi"]
    assert transport.calls == []
    assert (await conversation.say("/trip")).texts == ["Which city?"]
    assert transport.calls == ["action_note"]
    assert (await conversation.tracker()).get_slot("note") == "/trip"
    await conversation.say('/inform{"city": "rome"}')

    assert transport.calls == ["action_note", "action_note"]
    assert (await conversation.tracker()).get_slot("note") == '/inform{"city": "rome"}'


class _ChattyLastCity(_LastCity):
    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]
    ) -> list[dict[str, Any]]:
        dispatcher.utter_message(text=f"You were in {tracker.get_slot('city')}.")
        return await super().run(dispatcher, tracker, domain)


async def test_a_custom_mapping_actions_message_comes_before_the_validations(
    tmp_path: Any,
) -> None:
    """Rasa 3.6 drops what a custom mapping's action says; botserver sends it, before the
    messages of `action_validate_slot_mappings` (docs/differences-from-rasa.md). Before, its
    `bot` event came after the slots in the tracker the validation got, so rasa-sdk saw no
    slot to validate: "atlantis" was kept, and the action read it as the earlier city."""
    last_city = "last_city: {type: text, mappings: [{type: custom, action: action_last_city}]}"
    model = _bot(tmp_path, last_city, "action_last_city, action_validate_slot_mappings")
    transport = SdkTransport(_ChattyLastCity, _KnownCities)
    conversation = Conversation(make_agent(model, transport=transport), "chatty")
    await conversation.say('/inform{"city": "paris"}')

    turn = await conversation.say('/inform{"city": "atlantis"}')

    assert turn.texts == ["You were in Paris.", "No such city.", "Hi"]
    tracker = await conversation.tracker()
    assert (tracker.get_slot("city"), tracker.get_slot("last_city")) == (None, "Paris")


class _DefaultCityOnInform(_DefaultCity):
    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]
    ) -> list[dict[str, Any]]:
        if tracker.get_intent_of_latest_message() != "inform":
            return []
        return await super().run(dispatcher, tracker, domain)


class _TripValidation(Action):
    """Keeps the slot events at the end of each tracker it gets: the form's candidates."""

    candidates: list[list[tuple[str, Any]]] = []

    def name(self) -> str:
        return "validate_trip_form"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]
    ) -> list[dict[str, Any]]:
        trailing: list[tuple[str, Any]] = []
        for event in reversed(tracker.events):
            if event["event"] != "slot":
                break
            trailing.insert(0, (event["name"], event["value"]))
        _TripValidation.candidates.append(trailing)
        return []


async def test_a_forms_validation_gets_each_slot_once_with_its_last_value(tmp_path: Any) -> None:
    """As Rasa's form, a slot two mappings filled is one candidate, with the value the later
    mapping gave. Before, both came: older rasa-sdk releases read the first of two (here the
    custom mapping's "Lyon" instead of the city the user named), and the form logged both."""
    model = _city_bot(
        tmp_path,
        "[{type: custom, action: action_default_city}, {type: from_entity, entity: city}]",
        "action_default_city, validate_trip_form",
    )
    transport = SdkTransport(_DefaultCityOnInform, _TripValidation)
    conversation = Conversation(make_agent(model, transport=transport), "form-once")
    _TripValidation.candidates.clear()
    assert (await conversation.say("/trip")).texts == ["Which city?"]

    turn = await conversation.say('/inform{"city": "rome"}')

    assert _TripValidation.candidates[-1] == [("city", "rome")]
    assert turn.texts == ["Off to rome."]


async def test_a_mapping_conditioned_on_the_form_fills_as_the_message_activates_it(
    tmp_path: Any,
) -> None:
    """As Rasa's form, which runs `action_extract_slots` again once it is active, a mapping
    whose `conditions` name the form takes the entity of the message that activates it: the
    form has its city and ends. Before, only `from_trigger_intent` mappings filled there and
    the form asked "Which city?" for the city the user had just named."""
    model = _city_bot(
        tmp_path,
        "[{type: from_entity, entity: city, conditions: [{active_loop: trip_form}]}]",
        "utter_done",
    )
    conversation = Conversation(make_agent(model), "conditioned")

    turn = await conversation.say('/trip{"city": "rome"}')

    assert turn.texts == ["Off to rome."]


class _HomeCity(Action):
    """Proposes Paris for a trip while the trip form runs."""

    def name(self) -> str:
        return "action_home_city"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]
    ) -> list[dict[str, Any]]:
        if tracker.active_loop.get("name") != "trip_form" or tracker.get_slot("city"):
            return []
        return [SlotSet("city", "Paris")]


async def test_a_custom_mapping_conditioned_on_the_form_runs_as_the_message_activates_it(
    tmp_path: Any,
) -> None:
    """As in Rasa, the custom mapping's action runs again once the form is active (its
    condition then holds) and its city completes the form. Before, it ran only at the next
    message: the form asked "Which city?" first."""
    model = _city_bot(
        tmp_path,
        "[{type: from_entity, entity: city},"
        " {type: custom, action: action_home_city, conditions: [{active_loop: trip_form}]}]",
        "action_home_city",
    )
    transport = SdkTransport(_HomeCity)
    conversation = Conversation(make_agent(model, transport=transport), "home")

    turn = await conversation.say("/trip")

    assert turn.texts == ["Off to Paris."]
    assert transport.calls == ["action_home_city"]


async def test_a_trigger_intent_mapping_fills_a_slot_of_the_active_form(tmp_path: Any) -> None:
    """As in Rasa, a `from_trigger_intent` mapping fills while a form is active, not only as
    it activates (docs/differences-from-rasa.md): the form asking for the city takes the
    mode of "/greet". Before, a form's slot other than the one asked for was skipped, as a
    `from_text` one is, and the form rejected the message."""
    mode = (
        "mode: {type: text, mappings: [{type: from_trigger_intent, intent: greet, value: train}]}"
    )
    domain = DOMAIN.replace("{extra_slot}", mode).replace("{actions}", "utter_done")
    domain = domain.replace("required_slots: [city]", "required_slots: [city, mode]")
    files = {"config.yml": CONFIG, "domain.yml": domain, "data/rules.yml": RULES}
    conversation = Conversation(make_agent(train_files(files, tmp_path)), "mode")
    assert (await conversation.say("/trip")).texts == ["Which city?"]

    turn = await conversation.say("/greet")

    assert (await conversation.tracker()).get_slot("mode") == "train"
    assert turn.texts == ["Which city?"]


async def test_with_selective_domain_action_validate_slot_mappings_still_checks_slots(
    trip_bot: DialogueModel,
) -> None:
    """rasa-sdk's `ValidationAction` reads the slots to check from the domain. Rasa 3.6 sends
    it none under `enable_selective_domain` (only `validate_...` names get one unasked), so
    rasa-sdk 3.6 checked nothing: "atlantis" was kept. botserver sends it the domain."""
    transport = SdkTransport(_KnownCities, domain_cache=False)
    agent = make_agent(trip_bot, transport=transport, enable_selective_domain=True)
    conversation = Conversation(agent, "selective")

    turn = await conversation.say('/inform{"city": "atlantis"}')

    assert turn.texts == ["No such city.", "Hi"]
    assert (await conversation.tracker()).get_slot("city") is None
