"""`nlu:` in endpoints.yml: every message is parsed by that server's POST /model/parse, as
Rasa's HTTP interpreter does (a fake NLU server on a free port stands in for it)."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tests.api.conftest import MEMORY_STORE

REMOTE_PARSE = {
    "text": "bonjour",
    "intent": {"name": "greet", "confidence": 0.77},
    "entities": [{"entity": "lang", "start": 0, "end": 7, "value": "fr"}],
}


@contextmanager
def fake_nlu_server(status: int = 200) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """Yields (base URL, the requests it got: path and JSON body)."""
    seen: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
            length = int(self.headers.get("Content-Length") or 0)
            seen.append({"path": self.path, "body": json.loads(self.rfile.read(length))})
            answer = json.dumps(REMOTE_PARSE).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()


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
