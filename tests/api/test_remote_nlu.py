"""`nlu:` in endpoints.yml: every message is parsed by that server's POST /model/parse, as
Rasa's HTTP interpreter does (a fake NLU server on a free port stands in for it)."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from tests.api.conftest import MEMORY_STORE
from tests.fake_http import serve_json

REMOTE_PARSE = {
    "text": "bonjour",
    "intent": {"name": "greet", "confidence": 0.77},
    "entities": [{"entity": "lang", "start": 0, "end": 7, "value": "fr"}],
}


@contextmanager
def fake_nlu_server(status: int = 200) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """Yields (base URL, the requests it got: path and JSON body)."""
    seen: list[dict[str, Any]] = []

    def respond(path: str, body: bytes) -> tuple[int, Any]:
        seen.append({"path": path, "body": json.loads(body)})
        return status, REMOTE_PARSE

    with serve_json(respond) as url:
        yield url, seen


async def test_messages_are_parsed_by_the_nlu_server_of_endpoints_yml(
    make_client: Callable[..., Any],
) -> None:
    """Before, `nlu:` was read and ignored: the model's own NLU parsed "bonjour" (moodbot:
    some English intent, no entities). Now the NLU server's parse is the answer and what the
    conversation stores, and the token reaches a server run with --auth-token (query)."""
    with fake_nlu_server() as (url, seen):
        endpoints = {**MEMORY_STORE, "nlu": {"url": url + "/", "token": "s3cret"}}
        client = await make_client(endpoints=endpoints)
        parsed = (await client.post("/model/parse", json={"text": "bonjour"})).json()
        assert parsed["intent"] == {"name": "greet", "confidence": 0.77}
        assert parsed["entities"] == REMOTE_PARSE["entities"]

        await client.post("/webhooks/rest/webhook", json={"sender": "fr", "message": "bonjour"})
        tracker = (await client.get("/conversations/fr/tracker")).json()
        assert tracker["latest_message"]["intent"] == {"name": "greet", "confidence": 0.77}
    assert seen[0]["path"] == "/model/parse?token=s3cret"
    assert seen[0]["body"] == {"token": "s3cret", "text": "bonjour", "message_id": None}


async def test_a_failing_nlu_server_leaves_the_message_without_intent(
    make_client: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    with fake_nlu_server(status=500) as (url, _):
        client = await make_client(endpoints={**MEMORY_STORE, "nlu": {"url": url}})
        with caplog.at_level(logging.ERROR):
            parsed = (await client.post("/model/parse", json={"text": "hi"})).json()
    assert parsed == {"text": "hi", "intent": {"name": None, "confidence": 0.0}, "entities": []}
    assert "The NLU server at" in caplog.text and "HTTP 500" in caplog.text


async def test_test_intents_still_evaluates_the_models_own_nlu(
    make_client: Callable[..., Any],
) -> None:
    """As in Rasa, `POST /model/test/intents` evaluates the model, not the NLU server."""
    examples = [
        {"text": "hello there", "intent": "greet", "entities": []},
        {"text": "bye bye", "intent": "goodbye", "entities": []},
    ]
    with fake_nlu_server() as (url, seen):
        client = await make_client(endpoints={**MEMORY_STORE, "nlu": {"url": url}})
        response = await client.post(
            "/model/test/intents", json={"rasa_nlu_data": {"common_examples": examples}}
        )
    assert response.status_code == 200
    assert response.json()["intent_evaluation"]["predictions"][0]["predicted"] == "greet"
    assert seen == []


NOT_A_PARSE = {
    "an intent named by a list": {"intent": {"name": ["greet"], "confidence": 0.9}},
    "a confidence that is text": {"intent": {"name": "greet", "confidence": "high"}},
    "entities that are text": {"intent": {"name": "greet"}, "entities": "Berlin"},
    "an entity without its value": {"intent": {"name": "greet"}, "entities": [{"entity": "x"}]},
}


@pytest.mark.parametrize("answer", NOT_A_PARSE.values(), ids=NOT_A_PARSE.keys())
async def test_an_answer_breaking_rasas_parse_schema_leaves_the_message_without_intent(
    answer: dict[str, Any], make_client: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    """Checked as a client's parse data is. Before, an intent named by a list or entities
    that were text failed the turn (the user's message was lost, the REST channel answered
    nothing), and the others were stored, breaking the schema of every later answer about
    the conversation."""
    with serve_json(lambda path, body: (200, {"text": "hi", **answer})) as url:
        client = await make_client(endpoints={**MEMORY_STORE, "nlu": {"url": url}})
        with caplog.at_level(logging.ERROR):
            parsed = (await client.post("/model/parse", json={"text": "hi"})).json()
            await client.post("/webhooks/rest/webhook", json={"sender": "s", "message": "hi"})
        tracker = (await client.get("/conversations/s/tracker")).json()
    assert parsed == {"text": "hi", "intent": {"name": None, "confidence": 0.0}, "entities": []}
    assert tracker["latest_message"]["text"] == "hi"
    assert tracker["latest_message"]["intent"] == {"name": None, "confidence": 0.0}
    assert "The NLU server at" in caplog.text and "'answer." in caplog.text
