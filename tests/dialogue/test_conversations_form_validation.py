"""A form's validation action steers the form as in Rasa 3: it may change the slots the form
asks for (rasa-sdk's `required_slots`), fill slots of its own (`extract_<slot>`), end the form
early, or reject the form's turn."""

from __future__ import annotations

from typing import Any

import pytest
from rasa_sdk import Action, ActionExecutionRejection, FormValidationAction
from rasa_sdk import Tracker as SdkTracker
from rasa_sdk.events import ActionExecutionRejected
from rasa_sdk.events import ActiveLoop as SdkActiveLoop
from rasa_sdk.events import SlotSet as SdkSlotSet
from rasa_sdk.executor import CollectingDispatcher
from rasa_sdk.types import DomainDict

from server.dialogue.processor import DialogueModel
from server.trackers.events import ActionExecuted, ActiveLoop, Event
from server.trackers.events import ActionExecutionRejected as BotRejected
from server.trackers.events import SlotSet as BotSlotSet
from tests.dialogue.conversation_fixtures import Conversation, Turn, make_agent, train_files
from tests.dialogue.sdk_transport import SdkTransport

BOOKING_BOT = {
    "config.yml": "language: en\npolicies:\n  - name: RulePolicy\n",
    "domain.yml": """
version: "3.1"
intents: [book, inform, greet, plan, book_vip]
entities: [number, city, name]
slots:
  guests:
    type: float
    mappings: [{type: from_entity, entity: number}]
  city:
    type: text
    mappings: [{type: from_entity, entity: city}]
  origin:
    type: text
    mappings: [{type: from_entity, entity: city, role: from}]
  destination:
    type: text
    mappings: [{type: from_entity, entity: city, role: to}]
  guest_name:
    type: text
    mappings: [{type: custom}]
  vip:
    type: bool
    mappings:
    - type: from_trigger_intent
      intent: book_vip
      value: true
      conditions: [{active_loop: booking_form}]
  greeted:
    type: bool
    mappings: [{type: from_trigger_intent, intent: greet, value: true}]
  note:
    type: text
    mappings:
    - type: from_text
      conditions: [{active_loop: plan_form, requested_slot: note}]
responses:
  utter_ask_guests: [{text: "How many guests?"}]
  utter_ask_city: [{text: "Which city?"}]
  utter_ask_guest_name: [{text: "Your name?"}]
  utter_ask_note: [{text: "Any note?"}]
  utter_done: [{text: "Booked."}]
  utter_greet: [{text: "Hi"}]
  utter_default: [{text: "Sorry?"}]
actions: [validate_booking_form, validate_plan_form]
forms:
  booking_form:
    required_slots: [guests, city]
  plan_form:
    required_slots: []
""",
    "data/rules.yml": """
version: "3.1"
rules:
- rule: greet
  steps: [{intent: greet}, {action: utter_greet}]
- rule: activate
  steps: [{intent: book}, {action: booking_form}, {active_loop: booking_form}]
- rule: submit
  condition: [{active_loop: booking_form}]
  steps: [{action: booking_form}, {active_loop: null}, {action: utter_done}]
- rule: activate for a VIP
  steps: [{intent: book_vip}, {action: booking_form}, {active_loop: booking_form}]
- rule: plan
  steps: [{intent: plan}, {action: plan_form}, {active_loop: plan_form}]
- rule: planned
  condition: [{active_loop: plan_form}]
  steps: [{action: plan_form}, {active_loop: null}, {action: utter_done}]
""",
}


@pytest.fixture(scope="module")
def booking_bot(tmp_path_factory: pytest.TempPathFactory) -> DialogueModel:
    return train_files(BOOKING_BOT, tmp_path_factory.mktemp("booking-bot"))


@pytest.fixture(scope="module")
def unvalidated_bot(tmp_path_factory: pytest.TempPathFactory) -> DialogueModel:
    """The booking bot without `validate_booking_form`: its form takes the slots as they come
    (with the action in the domain and no action server, the form fails, as in Rasa)."""
    domain = BOOKING_BOT["domain.yml"].replace(
        "actions: [validate_booking_form, validate_plan_form]", "actions: [validate_plan_form]"
    )
    files = {**BOOKING_BOT, "domain.yml": domain}
    return train_files(files, tmp_path_factory.mktemp("unvalidated-booking-bot"))


def _conversation(model: DialogueModel, sender: str, *actions: type[Action]) -> Conversation:
    return Conversation(make_agent(model, transport=SdkTransport(*actions)), sender)


class _AsksFor(FormValidationAction):
    """A validation action whose `required_slots` are `slots` (None: the domain's, then
    `extra`)."""

    slots: list[str] | None = None
    extra: list[str] = []

    def name(self) -> str:
        return "validate_booking_form"

    async def required_slots(
        self,
        domain_slots: list[str],
        dispatcher: CollectingDispatcher,
        tracker: SdkTracker,
        domain: DomainDict,
    ) -> list[str]:
        return list(self.slots) if self.slots is not None else [*domain_slots, *self.extra]


class _OnlyGuests(_AsksFor):
    slots = ["guests"]


async def test_a_validation_action_that_needs_fewer_slots_ends_the_form(
    booking_bot: DialogueModel,
) -> None:
    """Before, the form asked for every slot of the domain's list although the validation
    action had said (requested_slot: null) that it needed no more: "Which city?"."""
    conversation = _conversation(booking_bot, "fewer", _OnlyGuests)
    assert (await conversation.say("/book")).texts == ["How many guests?"]

    turn = await conversation.say('/inform{"number": 2}')

    assert turn.actions == ["booking_form", "utter_done"]
    assert turn.texts == ["Booked."]
    tracker = await conversation.tracker()
    assert tracker.active_loop_name is None
    assert tracker.get_slot("city") is None


class _EndsTheForm(Action):
    """Ends the form as soon as it answers for guests, with `active_loop: null`."""

    def name(self) -> str:
        return "validate_booking_form"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: SdkTracker, domain: dict[str, Any]
    ) -> list[dict[str, Any]]:
        if tracker.get_slot("guests") is None:
            return []
        return [SdkActiveLoop(None)]


async def test_a_validation_action_ending_the_form_is_followed_by_the_forms_own_end(
    booking_bot: DialogueModel,
) -> None:
    """As Rasa logs it (its `test_validate_slots`, "Validate function deactivates loop"):
    the validation action's `active_loop: null`, then the form's own end, `requested_slot`
    null and `active_loop` null. Before, the form's own `active_loop` null was left out."""
    conversation = _conversation(booking_bot, "ends", _EndsTheForm)
    await conversation.say("/book")

    turn = await conversation.say('/inform{"number": 2}')

    assert turn.actions == ["booking_form", "utter_done"]
    ends = [(type(e).__name__, e.as_dict()) for e in _events_of(turn, "booking_form")]
    assert [(kind, d.get("name"), d.get("value")) for kind, d in ends] == [
        ("ActiveLoop", None, None),
        ("SlotSet", "requested_slot", None),
        ("ActiveLoop", None, None),
    ]
    assert (await conversation.tracker()).active_loop_name is None


@pytest.mark.parametrize(
    ("validator", "logged"),
    [
        # The validation action's `active_loop: null`; the activation's slot, which it
        # did not set; the loop's end.
        (_EndsTheForm, [("ActiveLoop", None), ("guests", 2.0), ("ActiveLoop", None)]),
        # rasa-sdk's answer (the slot, `requested_slot` null: no slot left); the loop's end.
        (_OnlyGuests, [("guests", 2.0), ("requested_slot", None), ("ActiveLoop", None)]),
    ],
)
async def test_a_validation_action_ending_the_form_as_it_activates_adds_only_its_end(
    booking_bot: DialogueModel, validator: type[Action], logged: list[tuple[str, Any]]
) -> None:
    """As Rasa logs it: a form its validation action ends at activation does not run its
    turn (Rasa's `is_done` before `do`), so no `requested_slot` null of its own follows the
    validation action's events, only the loop's end. Before, an extra `requested_slot` null
    was logged before it."""
    conversation = _conversation(booking_bot, f"ends-at-once-{validator.__name__}", validator)

    turn = await conversation.say('/book{"number": 2}')

    assert turn.actions == ["booking_form", "utter_done"]
    events = [e.as_dict() for e in _events_of(turn, "booking_form")]
    seen = [
        ("ActiveLoop", e["name"]) if e["event"] == "active_loop" else (e["name"], e["value"])
        for e in events
    ]
    assert seen == [("ActiveLoop", "booking_form"), *logged]
    tracker = await conversation.tracker()
    assert tracker.active_loop_name is None
    assert tracker.get_slot("requested_slot") is None
    assert tracker.get_slot("guests") == 2


class _CityFirst(_AsksFor):
    slots = ["city", "guests"]


async def test_the_validation_action_chooses_the_order_of_the_questions(
    booking_bot: DialogueModel,
) -> None:
    """Before, the domain's order won over the slot the validation action asked for."""
    conversation = _conversation(booking_bot, "order", _CityFirst)

    turn = await conversation.say("/book")

    assert turn.texts == ["Which city?"]
    assert (await conversation.tracker()).get_slot("requested_slot") == "city"
    assert (await conversation.say('/inform{"city": "Rome"}')).texts == ["How many guests?"]
    assert (await conversation.say('/inform{"number": 3}')).texts == ["Booked."]


class _AsksForNoName(Action):
    """Answers an answer with `requested_slot: ""`: a slot of no name."""

    def name(self) -> str:
        return "validate_booking_form"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: SdkTracker, domain: dict[str, Any]
    ) -> list[dict[str, Any]]:
        return [SdkSlotSet("requested_slot", "")] if tracker.get_slot("guests") else []


async def test_a_requested_slot_of_no_name_lets_the_form_choose_the_next_question(
    booking_bot: DialogueModel,
) -> None:
    """As in Rasa (whose form asks for the slot the validation action names only when it
    names one): the form asks for the next empty slot of its list. Before, it asked
    nothing, and the next answer was rejected as one to no question."""
    conversation = _conversation(booking_bot, "no-name", _AsksForNoName)
    await conversation.say("/book")

    turn = await conversation.say('/inform{"number": 2}')

    assert turn.texts == ["Which city?"]
    assert (await conversation.tracker()).get_slot("requested_slot") == "city"
    assert (await conversation.say('/inform{"city": "Rome"}')).texts == ["Booked."]


async def test_a_conversation_holding_a_requested_slot_of_no_name_is_not_rejected(
    booking_bot: DialogueModel,
) -> None:
    """A conversation that holds `requested_slot: ""` (stored before the form chose the next
    question in its place, or set through the events API) awaits no answer: as in Rasa
    (which rejects the form's run only when a slot was asked for), the form runs and asks
    for the next empty slot. Before, its run was rejected and the greeting rule answered."""
    conversation = _conversation(booking_bot, "holds-no-name", _AsksFor)
    await conversation.say("/book")
    await conversation.agent.append_events(
        conversation.sender_id, [BotSlotSet(key="requested_slot", value="")]
    )

    turn = await conversation.say("/greet")

    assert not any(isinstance(e, BotRejected) for e in turn.events)
    assert turn.texts == ["How many guests?"]
    assert (await conversation.tracker()).get_slot("requested_slot") == "guests"


class _WithGuestName(_AsksFor):
    """Adds `guest_name`, filled from the message text by `extract_guest_name`."""

    extra = ["guest_name"]

    async def extract_guest_name(
        self, dispatcher: CollectingDispatcher, tracker: SdkTracker, domain: DomainDict
    ) -> dict[str, Any]:
        if tracker.get_slot("requested_slot") != "guest_name":
            return {}
        return {"guest_name": tracker.latest_message.get("text")}


async def test_a_slot_the_validation_action_extracts_is_an_answer(
    booking_bot: DialogueModel,
) -> None:
    """Before, a slot filled by the validation action's `extract_<slot>` but not in the
    domain's list counted as no answer: the form was rejected and the bot said "Sorry?"."""
    conversation = _conversation(booking_bot, "extract", _WithGuestName)
    await conversation.say("/book")
    await conversation.say('/inform{"number": 2}')
    assert (await conversation.say('/inform{"city": "Oslo"}')).texts == ["Your name?"]

    turn = await conversation.say("/inform")

    assert turn.actions == ["booking_form", "utter_done"]
    assert turn.texts == ["Booked."]
    assert (await conversation.tracker()).get_slot("guest_name") == "/inform"


class _RejectsGreetings(Action):
    """Rejects the form's turn when the user greets instead of answering."""

    def name(self) -> str:
        return "validate_booking_form"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: SdkTracker, domain: dict[str, Any]
    ) -> list[dict[str, Any]]:
        # As in Rasa, the form's own execution is the latest action: the one before it tells
        # whether the user answers the form.
        executed = [e.get("name") for e in tracker.events if e.get("event") == "action"]
        answering = executed[-2:] == ["action_listen", "booking_form"]
        if answering and tracker.latest_message["intent"].get("name") == "greet":
            return [ActionExecutionRejected("booking_form")]
        return []


class _RaisesOnGreetings(_RejectsGreetings):
    """Rejects the form's turn as rasa-sdk's `ActionExecutionRejection` does: HTTP 400."""

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: SdkTracker, domain: dict[str, Any]
    ) -> list[dict[str, Any]]:
        if await super().run(dispatcher, tracker, domain):
            raise ActionExecutionRejection("validate_booking_form", "a greeting")
        return []


def _events_of(turn: Turn, action: str) -> list[Event]:
    """The events the first run of `action` in `turn` logged after itself."""
    start = next(
        i
        for i, e in enumerate(turn.events)
        if isinstance(e, ActionExecuted) and e.action_name == action
    )
    end = next(
        (
            i
            for i in range(start + 1, len(turn.events))
            if isinstance(turn.events[i], ActionExecuted)
        ),
        len(turn.events),
    )
    return turn.events[start + 1 : end]


async def test_a_validation_action_that_rejects_stops_the_form_from_asking(
    booking_bot: DialogueModel,
) -> None:
    """Before, the form went on as if its validation action had accepted the message: it
    asked its question again (or completed) in the run the action had rejected."""
    conversation = _conversation(booking_bot, "rejects", _RejectsGreetings)
    assert (await conversation.say("/book")).texts == ["How many guests?"]

    turn = await conversation.say("/greet")

    rejected = next(i for i, e in enumerate(turn.events) if isinstance(e, BotRejected))
    # As Rasa logs a run rejected by its events: the rejection, without the form's own
    # `action` event; the policies then choose, and the form asks after the greeting.
    assert not any(isinstance(e, ActionExecuted) for e in turn.events[:rejected])
    assert turn.actions == ["utter_greet", "booking_form"]
    tracker = await conversation.tracker()
    assert tracker.active_loop_name == "booking_form"
    assert tracker.get_slot("requested_slot") == "guests"


async def test_a_validation_action_answering_400_rejects_the_forms_run_as_rasa(
    booking_bot: DialogueModel,
) -> None:
    # As in Rasa, the rejection reaches the form: its run is logged as rejected, and the
    # policies choose, as when the action returns the event.
    conversation = _conversation(booking_bot, "raises", _RaisesOnGreetings)
    assert (await conversation.say("/book")).texts == ["How many guests?"]
    turn = await conversation.say("/greet")
    kinds = [type(e) for e in turn.events]
    rejected = kinds.index(BotRejected)
    assert turn.events[rejected].as_dict()["name"] == "booking_form"
    assert ActionExecuted not in kinds[:rejected]
    assert turn.actions == ["utter_greet", "booking_form"]
    assert (await conversation.tracker()).active_loop_name == "booking_form"


async def test_a_completed_form_clears_requested_slot_then_deactivates(
    unvalidated_bot: DialogueModel,
) -> None:
    """The form's last events are Rasa's, in Rasa's order: requested_slot null, then
    active_loop null (before, the other way round)."""
    conversation = Conversation(make_agent(unvalidated_bot), "order-of-events")
    await conversation.say("/book")
    await conversation.say('/inform{"number": 2}')

    turn = await conversation.say('/inform{"city": "Rome"}')

    assert turn.actions == ["booking_form", "utter_done"]
    form_events = _events_of(turn, "booking_form")[-2:]
    assert [type(e) for e in form_events] == [BotSlotSet, ActiveLoop]
    assert form_events[0].as_dict()["name"] == "requested_slot"
    assert form_events[0].as_dict()["value"] is None
    assert form_events[1].as_dict()["name"] is None


async def test_a_form_given_every_slot_at_once_completes_as_it_activates(
    unvalidated_bot: DialogueModel,
) -> None:
    """As Rasa logs it: the form activates, takes the slots, clears requested_slot and
    deactivates (before, requested_slot was not cleared in the tracker's events)."""
    conversation = Conversation(make_agent(unvalidated_bot), "all-at-once")

    turn = await conversation.say('/book{"number": 2, "city": "Rome"}')

    assert turn.actions == ["booking_form", "utter_done"]
    form_events = [e.as_dict() for e in _events_of(turn, "booking_form")]
    assert form_events[0]["event"] == "active_loop"
    assert [(e["event"], e["name"]) for e in form_events[-2:]] == [
        ("slot", "requested_slot"),
        ("active_loop", None),
    ]


async def test_the_form_asks_with_its_own_question_before_the_slot_action(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """Before, `action_ask_<slot>` won over `utter_ask_<form>_<slot>`; Rasa looks for the
    form's own question first."""
    domain = BOOKING_BOT["domain.yml"].replace(
        "  utter_ask_city:",
        '  utter_ask_booking_form_city: [{text: "Where to?"}]\n  utter_ask_city:',
    )
    domain = domain.replace("actions: [validate_booking_form,", "actions: [action_ask_city,")
    model = train_files({**BOOKING_BOT, "domain.yml": domain}, tmp_path_factory.mktemp("ask"))
    transport = SdkTransport()
    conversation = Conversation(make_agent(model, transport=transport), "ask")
    await conversation.say("/book")

    turn = await conversation.say('/inform{"number": 2}')

    assert turn.texts == ["Where to?"]
    assert transport.calls == []


class _PlanForm(_AsksFor):
    """A form whose slots only its validation action knows (the domain lists none)."""

    slots = ["note"]

    def name(self) -> str:
        return "validate_plan_form"


async def test_a_form_whose_slots_the_validation_action_names_takes_the_answers(
    booking_bot: DialogueModel,
) -> None:
    """Before, a form with `required_slots: []` and the slots named by its validation action
    (Rasa 3's dynamic form) rejected every answer: the user got the fallback."""
    conversation = _conversation(booking_bot, "dynamic", _PlanForm)
    assert (await conversation.say("/plan")).texts == ["Any note?"]

    turn = await conversation.say("/inform")

    assert turn.actions == ["plan_form", "utter_done"]
    assert (await conversation.tracker()).get_slot("note") == "/inform"


async def test_a_trigger_intent_fills_its_slot_as_it_activates_the_form(
    unvalidated_bot: DialogueModel,
) -> None:
    """Before, a `from_trigger_intent` mapping with `conditions` (as `rasa data migrate`
    writes them) never filled its slot, and one without filled it on any message of its
    intent, form or no form. As in Rasa, it fills as the form activates on that intent."""
    conversation = Conversation(make_agent(unvalidated_bot), "trigger")

    assert (await conversation.say("/greet")).texts == ["Hi"]
    assert (await conversation.tracker()).get_slot("greeted") is None

    assert (await conversation.say("/book_vip")).texts == ["How many guests?"]
    assert (await conversation.tracker()).get_slot("vip") is True


async def test_the_form_does_not_log_again_the_slots_it_takes_without_a_validation_action(
    unvalidated_bot: DialogueModel,
) -> None:
    """As Rasa 3 logs it (its `test_set_slot_and_deactivate`): the message logged the slot
    it filled; the form's run, with no validation action to answer for it, adds only the
    next question. Before, the form's run logged `guests` a second time."""
    conversation = Conversation(make_agent(unvalidated_bot), "logs-slots")
    await conversation.say("/book")

    turn = await conversation.say('/inform{"number": 2}')

    slots = [e.as_dict() for e in turn.events if isinstance(e, BotSlotSet)]
    assert [(e["name"], e["value"]) for e in slots] == [
        ("guests", 2.0),
        ("requested_slot", "city"),
    ]
    assert [type(e) for e in _events_of(turn, "booking_form")[:1]] == [BotSlotSet]
    assert _events_of(turn, "booking_form")[0].as_dict()["name"] == "requested_slot"

    turn = await conversation.say('/inform{"city": "Rome"}')
    slots = [e.as_dict() for e in turn.events if isinstance(e, BotSlotSet)]
    assert [(e["name"], e["value"]) for e in slots] == [
        ("city", "Rome"),
        ("requested_slot", None),
    ]


class _RecordsItsTracker(Action):
    """Keeps the kinds of the events in each tracker it gets, and accepts every slot."""

    seen: list[list[str]] = []

    def name(self) -> str:
        return "validate_booking_form"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: SdkTracker, domain: dict[str, Any]
    ) -> list[dict[str, Any]]:
        _RecordsItsTracker.seen.append([e["event"] for e in tracker.events])
        return []


async def test_the_validation_action_sees_how_the_policies_read_the_message(
    booking_bot: DialogueModel,
) -> None:
    """As Rasa sends it: the form's tracker (ending with the message's `user_featurization`
    when the policies predicted the form after it), then the form's own `action`. Before,
    the validation action's tracker had no `user_featurization` in the turn."""
    _RecordsItsTracker.seen = []
    conversation = _conversation(booking_bot, "featurized", _RecordsItsTracker)
    await conversation.say("/book")
    await conversation.say('/inform{"number": 2}')

    answer = _RecordsItsTracker.seen[-1]
    turn = answer[len(answer) - answer[::-1].index("user") :]
    assert turn.count("user_featurization") == 1
    assert turn.index("user_featurization") < turn.index("action")


class _RecordingNLG:
    """An NLG server that keeps the event kinds of each tracker it gets, and says the name."""

    def __init__(self) -> None:
        self.seen: list[list[str]] = []

    async def generate(
        self, response: str, tracker_state: dict[str, Any], output_channel: str, /, **kwargs: Any
    ) -> dict[str, Any] | None:
        self.seen.append([e["event"] for e in tracker_state["events"]])
        return {"text": response}


async def test_the_forms_question_sees_the_form_run_after_how_the_message_was_read(
    booking_bot: DialogueModel,
) -> None:
    """As Rasa asks: on the form's tracker, then the form's `action` and its events so far.
    Before, the question's tracker had neither the `user_featurization` nor the form's run."""
    nlg = _RecordingNLG()
    agent = make_agent(booking_bot, transport=SdkTransport(_RecordsItsTracker))
    agent.processor.nlg_endpoint = nlg
    conversation = Conversation(agent, "asked")
    await conversation.say("/book")
    assert (await conversation.say('/inform{"number": 2}')).texts == ["utter_ask_city"]

    asked = nlg.seen[-1]
    turn = asked[len(asked) - asked[::-1].index("user") :]
    assert turn.count("user_featurization") == 1
    assert turn.index("user_featurization") < turn.index("action")


class _SaysWhatItValidates(FormValidationAction):
    """Says which slots each call of it validates (rasa-sdk's `slots_to_validate`)."""

    def name(self) -> str:
        return "validate_booking_form"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: SdkTracker, domain: DomainDict
    ) -> list[dict[str, Any]]:
        dispatcher.utter_message(text=f"validating {sorted(tracker.slots_to_validate())}")
        return await super().run(dispatcher, tracker, domain)


@pytest.mark.parametrize(
    ("message", "said"),
    [("/book", "validating []"), ('/book{"number": 2}', "validating ['guests']")],
)
async def test_a_form_calls_its_validation_action_once_as_it_activates(
    booking_bot: DialogueModel, message: str, said: str
) -> None:
    """Rasa 3.6 calls it once there, with the required slots filled so far (releases before
    the fix of rasa#11595, January 2023, called it a second time for the same message): a
    validation action that utters or counts sees one call."""
    conversation = _conversation(booking_bot, f"once-{message}", _SaysWhatItValidates)

    turn = await conversation.say(message)

    assert turn.texts[0] == said
    assert [text for text in turn.texts if text and text.startswith("validating")] == [said]
