"""`action_default_ask_affirmation`: Rasa's "Did you mean '<intent>'?" with Yes/No buttons, or
the domain's own question when it has one (our addition, docs/differences-from-rasa.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.dialogue.conversation_fixtures import make_agent, train_files

DOMAIN = """
version: "3.1"
intents: [greet, goodbye]
responses:
  utter_greet: [{text: hello}]
"""
RULES = """
version: "3.1"
rules:
- rule: a greeting is answered
  steps: [{intent: greet}, {action: utter_greet}]
"""
OWN = """
  utter_ask_affirmation:
  - text: "Do you mean {intent}?"
    buttons: [{title: "Sure", payload: "/{intent}"}]
  utter_ask_affirm_goodbye: [{text: "Leaving already?"}]
"""
RANKING: list[dict[str, Any]] = [
    {"name": "nlu_fallback", "confidence": 0.4},
    {"name": "greet", "confidence": 0.35},
    {"name": "goodbye", "confidence": 0.25},
]


async def asked(tmp_path: Path, domain: str, ranking: list[dict[str, Any]]) -> dict[str, Any]:
    files = {
        "domain.yml": domain,
        "config.yml": "policies:\n- name: RulePolicy\n",
        "data/rules.yml": RULES,
    }
    agent = make_agent(train_files(files, tmp_path))
    unclear = {"intent": ranking[0], "entities": [], "intent_ranking": ranking}
    await agent.add_message("u", "hmm", unclear)
    _, messages = await agent.execute_action("u", "action_default_ask_affirmation")
    [message] = messages
    return {k: v for k, v in message.items() if k != "recipient_id"}


async def test_rasa_asks_about_the_intent_after_the_fallback(tmp_path: Path) -> None:
    assert await asked(tmp_path, DOMAIN, RANKING) == {
        "text": "Did you mean 'greet'?",
        "buttons": [
            {"title": "Yes", "payload": "/greet"},
            {"title": "No", "payload": "/out_of_scope"},
        ],
    }


async def test_the_domain_can_word_the_question(tmp_path: Path) -> None:
    message = await asked(tmp_path, DOMAIN + OWN, RANKING)
    assert message == {
        "text": "Do you mean greet?",
        "buttons": [{"title": "Sure", "payload": "/greet"}],
    }
    ranking = [RANKING[0], {"name": "goodbye", "confidence": 0.3}]
    message = await asked(tmp_path / "own", DOMAIN + OWN, ranking)
    assert message == {"text": "Leaving already?"}
