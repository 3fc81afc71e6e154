"""Stories that go on after a form, as Rasa 2 and 3 projects write them: the policies read a
form that asked for slot after slot as one run, so the story's next step follows however
many questions the form asked."""

from __future__ import annotations

import pytest

from server.dialogue.processor import DialogueModel
from server.trackers.events import ActionExecuted
from server.trackers.tracker import EventVerbosity
from tests.dialogue.conversation_fixtures import Conversation, make_agent, train_files

BOT = {
    "config.yml": """
language: en
policies:
  - name: MemoizationPolicy
  - name: RulePolicy
""",
    "domain.yml": """
version: "3.1"
intents: [greet, start, inform]
slots:
  name:
    type: text
    influence_conversation: false
    mappings:
    - type: from_text
      conditions: [{active_loop: name_form, requested_slot: name}]
  age:
    type: text
    influence_conversation: false
    mappings:
    - type: from_text
      conditions: [{active_loop: name_form, requested_slot: age}]
forms:
  name_form:
    required_slots: [name, age]
responses:
  utter_greet: [{text: "Hello"}]
  utter_ask_name: [{text: "Name?"}]
  utter_ask_age: [{text: "Age?"}]
  utter_done: [{text: "Thanks {name}"}]
  utter_default: [{text: "Sorry?"}]
""",
    "data/rules.yml": """
version: "3.1"
rules:
- rule: start the form
  steps: [{intent: start}, {action: name_form}, {active_loop: name_form}]
""",
    "data/stories.yml": """
version: "3.1"
stories:
- story: greet, fill the form, thank
  steps:
  - intent: greet
  - action: utter_greet
  - intent: start
  - action: name_form
  - active_loop: name_form
  - active_loop: null
  - action: utter_done
""",
}


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> DialogueModel:
    return train_files(BOT, tmp_path_factory.mktemp("form-story-bot"))


async def test_the_story_after_a_form_of_several_questions_goes_on(model: DialogueModel) -> None:
    """Rasa's applied events keep one run of a form's happy path; before, each question's
    run stayed in the states, the story no longer matched, and the user got the fallback."""
    conversation = Conversation(make_agent(model), "several-questions")
    assert (await conversation.say("/greet")).texts == ["Hello"]
    assert (await conversation.say("/start")).texts == ["Name?"]
    assert (await conversation.say("/inform")).texts == ["Age?"]

    turn = await conversation.say("/inform")

    assert turn.actions == ["name_form", "utter_done"]
    assert turn.texts == ["Thanks /inform"]
    done = [e for e in turn.events if isinstance(e, ActionExecuted)][-2]
    assert done.action_name == "utter_done"
    assert done.policy is not None and "MemoizationPolicy" in done.policy


async def test_applied_events_show_the_form_as_one_run_as_rasa_serves_them(
    model: DialogueModel,
) -> None:
    """`GET …/tracker?include_events=APPLIED` serves Rasa's applied events: the answers'
    turns and the later runs of the form are left out, the slots it took stay (before, every
    turn of the form was served)."""
    conversation = Conversation(make_agent(model), "applied")
    for text in ("/greet", "/start", "/inform", "/inform"):
        await conversation.say(text)

    served = (await conversation.tracker()).current_state(EventVerbosity.APPLIED)["events"]

    assert [e["name"] for e in served if e["event"] == "action"] == [
        "action_listen",
        "utter_greet",
        "action_listen",
        "name_form",
        "utter_done",
        "action_listen",
    ]
    assert [e["text"] for e in served if e["event"] == "user"] == ["/greet", "/start"]
    taken = [(e["name"], e["value"]) for e in served if e["event"] == "slot"]
    assert ("name", "/inform") in taken and ("age", "/inform") in taken


# The same bot, with nothing after the form: the policies fall back once it completes.
FALLING_BACK_BOT = {
    **BOT,
    "data/stories.yml": 'version: "3.1"\nstories: []\n',
}


async def test_a_fallback_after_a_form_completes_takes_back_the_whole_form(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """As Rasa's applied events (rewinds and the collapse of the form's later runs in one
    pass): `action_default_fallback` just after the form's last answer rewinds back to the
    message that started the form, so no form is active and its slots are unset (before:
    only the last answer was taken back, the form was active again asking for the age)."""
    model = train_files(FALLING_BACK_BOT, tmp_path_factory.mktemp("form-fallback-bot"))
    conversation = Conversation(make_agent(model), "fallback-after-form")
    assert (await conversation.say("/start")).texts == ["Name?"]
    assert (await conversation.say("/inform")).texts == ["Age?"]

    turn = await conversation.say("/inform")

    assert turn.actions[-1] == "action_default_fallback"
    assert turn.texts == ["Sorry?"]
    tracker = await conversation.tracker()
    assert tracker.active_loop_name is None
    assert tracker.get_slot("name") is None and tracker.get_slot("age") is None
    assert tracker.get_slot("requested_slot") is None
