"""`action_default_ask_affirmation`: Rasa's "Did you mean '<intent>'?" with Yes/No buttons, or
the domain's own question when it has one (our addition, docs/differences-from-rasa.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from server.dialogue.nlg_client import NLGClient
from tests.dialogue.conversation_fixtures import make_agent, train_files
from tests.serving import serving

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


async def asked(
    tmp_path: Path,
    domain: str,
    ranking: list[dict[str, Any]],
    nlg_url: str | None = None,
    intent: dict[str, Any] | None = None,
) -> dict[str, Any]:
    files = {
        "domain.yml": domain,
        "config.yml": "policies:\n- name: RulePolicy\n",
        "data/rules.yml": RULES,
    }
    agent = make_agent(train_files(files, tmp_path))
    client = agent.processor.nlg_endpoint = NLGClient({"url": nlg_url}) if nlg_url else None
    unclear = {"intent": intent or ranking[0], "entities": [], "intent_ranking": ranking}
    await agent.add_message("u", "hmm", unclear)
    try:
        _, messages = await agent.execute_action("u", "action_default_ask_affirmation")
    finally:
        if client is not None:
            await client.aclose()
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


async def test_an_nlg_server_is_not_asked_for_a_question_the_domain_does_not_word(
    tmp_path: Path,
) -> None:
    """As Rasa, which asks no NLG server here: before, the server was asked for
    `utter_ask_affirm_greet`, then `utter_ask_affirmation`, and its answer (or its 404 for a
    name it does not know, which failed the fallback) replaced Rasa's question."""
    asked_for: list[str] = []
    nlg = FastAPI()

    @nlg.post("/nlg")
    async def generate(request: Request) -> JSONResponse:
        name = (await request.json())["response"]
        asked_for.append(name)
        if name == "utter_ask_affirmation":
            return JSONResponse({"text": "Is it {intent}?"})
        return JSONResponse({"error": f"no response {name}"}, status_code=404)

    async with serving(nlg) as url:
        message = await asked(tmp_path, DOMAIN, RANKING, f"{url}/nlg")
        assert message["text"] == "Did you mean 'greet'?"
        assert asked_for == []
        worded = DOMAIN.replace("intents:", "actions: [utter_ask_affirmation]\nintents:")
        message = await asked(tmp_path / "worded", worded, RANKING, f"{url}/nlg")
        assert message == {"text": "Is it {intent}?"}
        assert asked_for == ["utter_ask_affirmation"]


async def test_a_message_that_is_no_fallback_is_asked_about_itself(tmp_path: Path) -> None:
    """As Rasa: the ranking is read only when the message's intent is `nlu_fallback`
    (before: the ranking's first intent, `greet`, was asked about)."""
    ranking = [RANKING[1], {"name": "goodbye", "confidence": 0.3}]
    message = await asked(tmp_path, DOMAIN, ranking, intent=ranking[1])
    assert message["text"] == "Did you mean 'goodbye'?"


async def test_after_the_fallback_the_second_ranked_intent_is_asked_about(
    tmp_path: Path,
) -> None:
    """As Rasa, `intent_ranking[1]`, even when it is `nlu_fallback` itself (before: the first
    intent other than the fallback, here `greet`)."""
    ranking = [RANKING[0], {"name": "nlu_fallback", "confidence": 0.3}, RANKING[1]]
    message = await asked(tmp_path, DOMAIN, ranking)
    assert message["text"] == "Did you mean 'nlu_fallback'?"
    message = await asked(tmp_path / "alone", DOMAIN, [RANKING[0]])
    assert message["text"] == "Did you mean 'nlu_fallback'?"
