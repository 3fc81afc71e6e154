"""A default action the domain lists under `actions` is the project's own, run on the action
server, as in Rasa (its docs' way to customise `action_session_start`, the fallbacks...)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rasa_sdk import Action
from rasa_sdk.events import (
    ActionExecuted,
    ActiveLoop,
    SessionStarted,
    SlotSet,
    UserUtteranceReverted,
)

from tests.dialogue.conversation_fixtures import Conversation, make_agent, train_files
from tests.dialogue.sdk_transport import SdkTransport

DOMAIN = """
version: "3.1"
intents: [greet, help]
slots:
  city: {type: text, influence_conversation: false, mappings: [{type: custom}]}
responses:
  utter_greet: [{text: "hello from {city}"}]
  utter_default: [{text: "the built-in fallback"}]
actions: [action_session_start, action_default_fallback]
"""
RULES = """
version: "3.1"
rules:
- rule: a greeting is answered
  steps: [{intent: greet}, {action: utter_greet}]
"""


class SessionStart(Action):
    def name(self) -> str:
        return "action_session_start"

    async def run(self, dispatcher: Any, tracker: Any, domain: Any) -> list[dict[str, Any]]:
        metadata = tracker.get_slot("session_started_metadata") or {}
        dispatcher.utter_message(text=f"welcome, {metadata.get('user')}")
        return [SessionStarted(), SlotSet("city", "Oslo"), ActionExecuted("action_listen")]


class Fallback(Action):
    def name(self) -> str:
        return "action_default_fallback"

    async def run(self, dispatcher: Any, tracker: Any, domain: Any) -> list[dict[str, Any]]:
        dispatcher.utter_message(text="passing you to a human")
        return [UserUtteranceReverted()]


class AskAffirmation(Action):
    def name(self) -> str:
        return "action_default_ask_affirmation"

    async def run(self, dispatcher: Any, tracker: Any, domain: Any) -> list[dict[str, Any]]:
        dispatcher.utter_message(text="did you want help?", buttons=[])
        return []


class AskRephrase(Action):
    def name(self) -> str:
        return "action_default_ask_rephrase"

    async def run(self, dispatcher: Any, tracker: Any, domain: Any) -> list[dict[str, Any]]:
        dispatcher.utter_message(text="say it in other words, please")
        return []


FALLBACK_DOMAIN = """
version: "3.1"
intents: [greet]
responses:
  utter_greet: [{text: hello}]
  utter_ask_rephrase: [{text: the built-in rephrase}]
actions: [action_default_ask_affirmation, action_default_ask_rephrase]
"""
FALLBACK_RULES = """
version: "3.1"
rules:
- rule: a greeting is answered
  steps: [{intent: greet}, {action: utter_greet}]
- rule: an unclear message
  steps:
  - intent: nlu_fallback
  - action: action_two_stage_fallback
  - active_loop: action_two_stage_fallback
"""


def talk(
    folder: Path, domain: str, rules: str, *actions: type[Action]
) -> tuple[Conversation, SdkTransport]:
    """A conversation with a bot of `domain` and `rules`, `actions` on its action server."""
    files = {
        "domain.yml": domain,
        "config.yml": "policies:\n- name: RulePolicy\n",
        "data/rules.yml": rules,
    }
    transport = SdkTransport(*actions)
    agent = make_agent(train_files(files, folder), transport=transport)
    return Conversation(agent, "u"), transport


async def test_the_two_stage_fallback_asks_with_the_domains_own_actions(tmp_path: Path) -> None:
    conversation, _ = talk(tmp_path, FALLBACK_DOMAIN, FALLBACK_RULES, AskAffirmation, AskRephrase)
    # Before: the built-in "Did you mean ...?" and utter_ask_rephrase.
    assert (await conversation.say("/nlu_fallback")).texts == ["did you want help?"]
    assert (await conversation.say("/out_of_scope")).texts == ["say it in other words, please"]
    assert (await conversation.say("/greet")).texts == ["hello"]


async def test_the_domains_own_session_start_and_fallback_run(tmp_path: Path) -> None:
    conversation, transport = talk(tmp_path, DOMAIN, RULES, SessionStart, Fallback)
    # Before: the built-in session start (no welcome, no city) and fallback ran instead.
    turn = await conversation.say("/greet", user="ann")
    assert turn.texts == ["welcome, ann", "hello from Oslo"]
    assert (await conversation.say("/help")).texts == ["passing you to a human"]
    assert transport.calls == ["action_session_start", "action_default_fallback"]


async def test_a_session_start_the_action_server_cannot_run_starts_no_fallback(
    tmp_path: Path,
) -> None:
    files = {
        "domain.yml": DOMAIN.replace(", action_default_fallback]", "]"),
        "config.yml": "policies:\n- name: RulePolicy\n",
        "data/rules.yml": RULES,
    }
    agent = make_agent(train_files(files, tmp_path))  # no action server
    # The failure is logged; the message is answered. Before this fix: the fallback's
    # "the built-in fallback" first, its rewind taking back nothing of the user's.
    assert (await Conversation(agent, "u").say("/greet")).texts == ["hello from None"]


async def test_the_two_stage_fallback_gives_up_with_the_domains_own_fallback(
    tmp_path: Path,
) -> None:
    domain = FALLBACK_DOMAIN.replace(
        "action_default_ask_rephrase]", "action_default_ask_rephrase, action_default_fallback]"
    )
    conversation, transport = talk(tmp_path, domain, FALLBACK_RULES, AskAffirmation, Fallback)
    assert (await conversation.say("/nlu_fallback")).texts == ["did you want help?"]
    # Two unclear messages in a row: Rasa gives up with the project's action_default_fallback
    # (a handover, say). Before: ours, its utter_default (none in this domain: silence).
    assert (await conversation.say("/nlu_fallback")).texts == ["passing you to a human"]
    assert transport.calls[-1] == "action_default_fallback"
    assert (await conversation.say("/greet")).texts == ["hello"]


OWN_FORM_DOMAIN = """
version: "3.1"
intents: [order]
entities: [size]
slots:
  size: {type: text, influence_conversation: false, mappings: [{type: from_entity, entity: size}]}
responses:
  utter_ask_size: [{text: the built-in form asks for a size}]
forms:
  order_form: {required_slots: [size]}
actions: [order_form]
"""
OWN_FORM_RULES = """
version: "3.1"
rules:
- rule: an order opens the form
  steps: [{intent: order}, {action: order_form}, {active_loop: order_form}]
"""


class OrderForm(Action):
    def name(self) -> str:
        return "order_form"

    async def run(self, dispatcher: Any, tracker: Any, domain: Any) -> list[dict[str, Any]]:
        dispatcher.utter_message(text="the project's own form runs")
        return [ActiveLoop(None)]


async def test_a_form_listed_under_actions_runs_on_the_action_server(tmp_path: Path) -> None:
    conversation, transport = talk(tmp_path, OWN_FORM_DOMAIN, OWN_FORM_RULES, OrderForm)
    # As in Rasa, listing a form under `actions` makes it the project's own action. Before:
    # the built-in form loop ran and asked with utter_ask_size.
    assert (await conversation.say("/order")).texts == ["the project's own form runs"]
    assert transport.calls == ["order_form"]
