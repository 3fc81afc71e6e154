"""The retrieval action (`utter_chitchat`) says what the response selector chose, and
nothing when a client's parse data holds no usable choice."""

from __future__ import annotations

from typing import Any

import pytest

from tests.dialogue.conversation_fixtures import BotModels, make_agent


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
