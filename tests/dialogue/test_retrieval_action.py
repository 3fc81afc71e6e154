"""The retrieval action (`utter_chitchat`) says what the response selector chose, and
nothing when a client's parse data holds no usable choice."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from fastapi import FastAPI, Request, Response

from server.dialogue.nlg_client import NLGClient
from tests.dialogue.conversation_fixtures import BotModels, make_agent
from tests.serving import serving


def _chitchat(selection: Any) -> dict[str, Any]:
    return {
        "intent": {"name": "chitchat", "confidence": 1.0},
        "entities": [],
        "response_selector": {"chitchat": selection},
    }


async def test_execute_says_the_selected_response(bot_models: BotModels) -> None:
    agent = make_agent(bot_models["responseselectorbot"])
    chosen = {"response": {"intent_response_key": "chitchat/ask_weather"}}
    await agent.add_message("chosen", "name?", parse_data=_chitchat(chosen))

    _, messages = await agent.execute_action("chosen", "utter_chitchat")

    assert messages[0]["text"] in (
        "Oh, it does look sunny right now in Berlin.",
        "I am not sure of the whole week but I can see the sun is out today.",
    )


@pytest.mark.parametrize(
    "selection",
    [
        "oops",
        {"response": "x"},
        {"response": {"intent_response_key": 5}},
        {"response": {"responses": "abc"}},
        {"response": {"responses": [5]}},
        {"response": {"responses": [{"text": 5}]}},
    ],
)
async def test_a_selection_not_in_rasas_shape_says_nothing(
    bot_models: BotModels, selection: Any
) -> None:
    """Parse data given to POST /messages is the client's. Before, each of these raised
    (AttributeError, TypeError, ValueError) and `execute` answered a 500."""
    agent = make_agent(bot_models["responseselectorbot"])
    await agent.add_message("odd", "name?", parse_data=_chitchat(selection))

    tracker, messages = await agent.execute_action("odd", "utter_chitchat")

    assert messages == []
    assert tracker.latest_action_name == "utter_chitchat"


async def test_the_nlg_servers_empty_answer_says_nothing(
    bot_models: BotModels, caplog: pytest.LogCaptureFixture
) -> None:
    """As for any response, and as in Rasa. Before, the selector's own variation was said in
    its place."""
    app = FastAPI()
    asked: list[str] = []

    async def nlg(request: Request) -> Response:
        asked.append((await request.json())["response"])
        return Response(status_code=200)

    app.add_api_route("/nlg", nlg, methods=["POST"])
    agent = make_agent(bot_models["responseselectorbot"])
    chosen = {
        "response": {
            "intent_response_key": "chitchat/ask_weather",
            "responses": [{"text": "From the selector"}],
        }
    }
    async with serving(app) as url:
        agent.processor.nlg_endpoint = client = NLGClient({"url": f"{url}/nlg"})
        try:
            await agent.add_message("nlg", "weather?", parse_data=_chitchat(chosen))
            with caplog.at_level(logging.WARNING, logger="server.dialogue.actions"):
                _, messages = await agent.execute_action("nlg", "utter_chitchat")
        finally:
            await client.aclose()
    assert asked == ["utter_chitchat/ask_weather"]
    assert messages == []
    assert [r.getMessage() for r in caplog.records if r.name == "server.dialogue.actions"] == [
        "the NLG server gave no message for response 'utter_chitchat/ask_weather' (an empty "
        "answer, or null): nothing is said"
    ]
