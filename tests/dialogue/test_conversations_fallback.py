"""The two-stage fallback: an unclear message gets "Did you mean ...?"; yes continues as if the
message had been understood, no asks to rephrase, and a second failure gives up."""

from __future__ import annotations

import logging

import pytest

from server.dialogue.agent import Agent
from server.dialogue.processor import DialogueModel
from server.trackers.events import (
    ActionExecuted,
    ActiveLoop,
    BotUttered,
    Event,
    UserUtteranceReverted,
    UserUttered,
)
from server.trackers.tracker import EventVerbosity, Tracker, chosen_events
from tests.dialogue.conversation_fixtures import Conversation, Turn, make_agent, train_project

CONFIG = """
language: en
pipeline:
  - name: WhitespaceTokenizer
  - name: CountVectorsFeaturizer
  - name: DIETClassifier
  - name: FallbackClassifier
    threshold: 0.7
policies:
  - name: RulePolicy
"""
DOMAIN = """
version: "3.1"
intents: [greet, goodbye, thank]
responses:
  utter_greet: [{text: "Hello!"}]
  utter_goodbye: [{text: "Bye!"}]
  utter_thank: [{text: "You're welcome."}]
  utter_ask_rephrase: [{text: "Sorry, could you say that differently?"}]
  utter_default: [{text: "I give up."}]
"""
NLU = """
version: "3.1"
nlu:
- intent: greet
  examples: |
    - hello
    - hi
    - hey there
    - good morning
    - hello there
- intent: goodbye
  examples: |
    - bye
    - goodbye
    - see you later
    - see you
    - bye bye
- intent: thank
  examples: |
    - thanks
    - thank you
    - many thanks
    - thanks a lot
    - cheers
"""
RULES = """
version: "3.1"
rules:
- rule: greet
  steps:
  - intent: greet
  - action: utter_greet
- rule: goodbye
  steps:
  - intent: goodbye
  - action: utter_goodbye
- rule: thank
  steps:
  - intent: thank
  - action: utter_thank
- rule: Implementation of the Two-Stage-Fallback
  steps:
  - intent: nlu_fallback
  - action: action_two_stage_fallback
  - active_loop: action_two_stage_fallback
"""
GIBBERISH = "qzx vbnm plok"
RESPONSE_OF = {"greet": "Hello!", "goodbye": "Bye!", "thank": "You're welcome."}


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> DialogueModel:
    project = tmp_path_factory.mktemp("two-stage")
    (project / "data").mkdir()
    (project / "config.yml").write_text(CONFIG)
    (project / "domain.yml").write_text(DOMAIN)
    (project / "data" / "nlu.yml").write_text(NLU)
    (project / "data" / "rules.yml").write_text(RULES)
    return train_project(project, project / "models")


@pytest.fixture
def agent(model: DialogueModel) -> Agent:
    return make_agent(model)


def suggestion(turn: Turn) -> str:
    """The intent a "Did you mean ...?" offers, checking the message has Rasa's shape."""
    [message] = turn.messages
    yes, no = message["buttons"]
    assert yes["title"] == "Yes" and no == {"title": "No", "payload": "/out_of_scope"}
    intent = yes["payload"].removeprefix("/")
    assert message["text"] == f"Did you mean '{intent}'?"
    return intent


async def unclear(conversation: Conversation) -> str:
    turn = await conversation.say(GIBBERISH)
    assert turn.actions == ["action_two_stage_fallback"]
    assert (await conversation.tracker()).active_loop_name == "action_two_stage_fallback"
    return suggestion(turn)


def user_messages(events: list[Event]) -> list[tuple[str | None, str | None]]:
    return [(e.text, e.intent_name) for e in events if isinstance(e, UserUttered)]


async def test_affirming_continues_as_if_the_message_had_that_intent(agent: Agent) -> None:
    conversation = Conversation(agent, "affirm")
    intent = await unclear(conversation)

    turn = await conversation.say(f"/{intent}")
    assert turn.actions == ["action_two_stage_fallback", f"utter_{intent}"]
    assert turn.texts == [RESPONSE_OF[intent]]
    tracker = await conversation.tracker()
    assert tracker.active_loop_name is None
    assert user_messages(tracker.applied_events()) == [(GIBBERISH, intent)]
    # As Rasa logs it: the loop's deactivation, then its turns taken back (before, no
    # `active_loop: null` was logged: a reader of the event stream saw the loop never end).
    kinds = [e.as_dict()["event"] for e in turn.events]
    fallback = kinds.index("action")
    assert kinds[fallback + 1 : fallback + 3] == ["active_loop", "rewind"]
    assert turn.events[fallback + 1].as_dict()["name"] is None

    assert (await conversation.say("bye")).texts == ["Bye!"]


@pytest.mark.parametrize("rephrase", [False, True])
async def test_a_clarified_fallback_takes_back_only_its_own_messages(
    agent: Agent, rephrase: bool
) -> None:
    """The messages before the unclear one stay: the loop's later runs collapse in the
    applied events (as Rasa's), so one rewind takes back the whole fallback, and one is
    logged, as Rasa logs it (before: one per message of the fallback)."""
    conversation = Conversation(agent, f"greeted-then-unclear-{rephrase}")
    assert (await conversation.say("hello")).texts == ["Hello!"]
    intent = await unclear(conversation)
    if rephrase:
        await conversation.say("/out_of_scope")
        intent = "thank"

    turn = await conversation.say(f"/{intent}")

    assert turn.texts == [RESPONSE_OF[intent]]
    tracker = await conversation.tracker()
    assert tracker.active_loop_name is None
    clarified = GIBBERISH if not rephrase else f"/{intent}"
    assert user_messages(tracker.applied_events()) == [("hello", "greet"), (clarified, intent)]
    # One rewind logged, as Rasa logs it (before: one per message of the fallback).
    assert [e.as_dict()["event"] for e in turn.events].count("rewind") == 1


async def test_denying_asks_to_rephrase_and_a_clear_rephrase_continues(agent: Agent) -> None:
    conversation = Conversation(agent, "rephrase")
    await unclear(conversation)

    turn = await conversation.say("/out_of_scope")
    assert turn.actions == ["action_two_stage_fallback"]
    assert turn.texts == ["Sorry, could you say that differently?"]

    turn = await conversation.say("hello there")
    assert turn.actions == ["action_two_stage_fallback", "utter_greet"]
    assert turn.texts == ["Hello!"]
    tracker = await conversation.tracker()
    assert tracker.active_loop_name is None
    assert user_messages(tracker.applied_events()) == [("hello there", "greet")]


REPHRASE = '  utter_ask_rephrase: [{text: "Sorry, could you say that differently?"}]\n'
# Only a variation for German speakers: the log said before that the domain had no response.
GERMAN_REPHRASE = (
    '  utter_ask_rephrase: [{text: "Wie bitte?", condition: [{name: lang, value: de}]}]\n'
)


@pytest.mark.parametrize(
    ("rephrase", "logged"),
    [
        ("", "the domain has no response 'utter_ask_rephrase'"),
        (GERMAN_REPHRASE, "the domain's 'utter_ask_rephrase' has no variation that fits"),
    ],
)
async def test_denying_says_nothing_in_a_domain_without_a_rephrase_response(
    tmp_path_factory: pytest.TempPathFactory,
    caplog: pytest.LogCaptureFixture,
    rephrase: str,
    logged: str,
) -> None:
    """As Rasa's `utter_ask_rephrase`, said only when the domain has it (the loop still waits
    for the rephrase). Before, an English sentence of our own was said, whatever the bot's
    language. The log says why once per model: before, at every such turn of every
    conversation."""
    project = tmp_path_factory.mktemp("two-stage-no-rephrase")
    (project / "data").mkdir()
    (project / "config.yml").write_text(CONFIG)
    slots = "slots:\n  lang: {type: text, mappings: [{type: custom}]}\n"
    (project / "domain.yml").write_text(DOMAIN.replace(REPHRASE, rephrase) + slots)
    (project / "data" / "nlu.yml").write_text(NLU)
    (project / "data" / "rules.yml").write_text(RULES)
    agent = make_agent(train_project(project, project / "models"))
    for sender in ("mute", "quiet", "mute"):
        conversation = Conversation(agent, sender)
        await unclear(conversation)

        turn = await conversation.say("/out_of_scope")
        assert turn.actions == ["action_two_stage_fallback"]
        assert turn.texts == []
        assert (await conversation.tracker()).active_loop_name == "action_two_stage_fallback"

        turn = await conversation.say("hello there")
        assert turn.texts == ["Hello!"]
    warnings = [r for r in caplog.records if "utter_ask_rephrase" in r.getMessage()]
    assert [r.levelno for r in warnings] == [logging.WARNING], caplog.text
    assert logged in warnings[0].getMessage()

    caplog.clear()  # the model loaded again says it again
    conversation = Conversation(make_agent(train_project(project, project / "models")), "mute")
    await unclear(conversation)
    assert (await conversation.say("/out_of_scope")).texts == []
    assert logged in caplog.text


async def test_denying_the_second_suggestion_gives_up(agent: Agent) -> None:
    conversation = Conversation(agent, "give-up")
    await unclear(conversation)
    await conversation.say("/out_of_scope")

    turn = await conversation.say(GIBBERISH)
    suggestion(turn)

    turn = await conversation.say("/out_of_scope")
    assert turn.actions == ["action_two_stage_fallback"]
    assert turn.texts == ["I give up."]
    tracker = await conversation.tracker()
    assert tracker.active_loop_name is None
    assert tracker.latest_action_name == "action_listen"
    assert user_messages(tracker.applied_events()) == []

    assert (await conversation.say("hi")).texts == ["Hello!"]


async def test_two_unclear_messages_in_a_row_give_up(agent: Agent) -> None:
    conversation = Conversation(agent, "twice")
    await unclear(conversation)

    turn = await conversation.say(GIBBERISH)
    assert turn.texts == ["I give up."]
    assert (await conversation.tracker()).active_loop_name is None
    # As Rasa logs it: the loop's deactivation, then the default fallback's message and its
    # rewind (before, the message came first: the event stream said "I give up." inside
    # a loop still running).
    kinds = [e.as_dict()["event"] for e in turn.events]
    fallback = kinds.index("action")
    assert kinds[fallback + 1 : fallback + 4] == ["active_loop", "bot", "rewind"]


async def test_a_rephrase_that_is_still_unclear_is_offered_for_affirmation(
    agent: Agent,
) -> None:
    conversation = Conversation(agent, "second-affirm")
    await unclear(conversation)
    await conversation.say("/out_of_scope")
    rephrased = "plok qzx"
    turn = await conversation.say(rephrased)
    intent = suggestion(turn)

    turn = await conversation.say(f"/{intent}")
    assert turn.texts == [RESPONSE_OF[intent]]
    tracker = await conversation.tracker()
    assert user_messages(tracker.applied_events()) == [(rephrased, intent)]


def test_an_affirmed_two_stage_fallback_rasa_logged_leaves_no_loop_active() -> None:
    """Rasa 3.6 logs one `rewind` when the user affirms (its applied events collapse the
    loop's second run first, so that rewind takes back the unclear message too): the
    conversation goes on from the clarified message, no loop active. Read here (a tracker
    store Rasa wrote, or events posted to the API), it reads the same (before: the rewind
    took back only the affirmation and `action_two_stage_fallback` stayed the active loop)."""
    loop = "action_two_stage_fallback"

    def said(intent: str) -> UserUttered:
        return UserUttered(text=intent, parse_data={"intent": {"name": intent, "confidence": 1.0}})

    events: list[Event] = [
        ActionExecuted(action_name="action_listen"),
        said("nlu_fallback"),
        ActionExecuted(action_name=loop),
        ActiveLoop(name=loop),
        BotUttered(text="Did you mean 'greet'?"),
        ActionExecuted(action_name="action_listen"),
        said("greet"),
        ActionExecuted(action_name=loop),
        ActiveLoop(name=None),
        UserUtteranceReverted(),
        ActionExecuted(action_name="action_listen"),
        said("greet"),
    ]
    tracker = Tracker("rasa-logged-fallback", {}, events)
    assert tracker.active_loop_name is None
    applied = chosen_events(tracker.events, EventVerbosity.APPLIED)
    assert [type(e).__name__ for e in applied] == ["ActionExecuted", "UserUttered"]
