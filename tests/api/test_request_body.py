"""Request bodies as the routes read them: what a careless client sends gets a clear answer."""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
from pathlib import Path

import httpx
import pytest

from server.api.request_body import COMPRESSED_MESSAGE
from tests.api.rasa_spec import RasaSpec

EVENTS = [{"event": "action", "name": "action_listen"}]
TRAINING_YAML = "nlu:\n- intent: greet\n  examples: |\n    - hi\n"


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/model/parse", json.dumps({"text": "hi"})),
        ("/model/predict", json.dumps(EVENTS)),
        ("/conversations/gz/tracker/events", json.dumps(EVENTS)),
        ("/conversations/gz/messages", json.dumps({"text": "hi", "sender": "user"})),
        ("/model/train", TRAINING_YAML),
        ("/model/test/stories", "stories: []"),
        ("/webhooks/rest/webhook", json.dumps({"sender": "gz", "message": "hi"})),
    ],
)
async def test_a_gzip_compressed_body_is_a_415_saying_so(
    client: httpx.AsyncClient, rasa_spec: RasaSpec, path: str, body: str
) -> None:
    """No route decodes a Content-Encoding (nor does Rasa). Before, a gzip body was a 400
    "Failed when parsing body as json: 'utf-8' codec can't decode byte 0x8b...", or "does
    not contain valid YAML", which does not tell the client to send it uncompressed (found
    by probing)."""
    response = await client.post(
        path, content=gzip.compress(body.encode()), headers={"Content-Encoding": "gzip"}
    )
    assert response.status_code == 415, response.text
    answer = response.json()
    rasa_spec.validate(answer, "/model/parse", "post", 400)  # Rasa's Error schema
    assert answer["reason"] == "UnsupportedMediaType"
    assert answer["message"] == COMPRESSED_MESSAGE
    # The same body uncompressed, with the header a careless client leaves on, is read.
    plain = await client.post(path, content=body, headers={"Content-Encoding": "gzip"})
    assert plain.status_code == 200, plain.text


@pytest.mark.parametrize("content_type", ["application/x-tar", "application/gzip", None])
async def test_a_model_archive_sent_as_the_body_is_not_told_to_send_it_uncompressed(
    client: httpx.AsyncClient, moodbot_model: Path, content_type: str | None
) -> None:
    """No route takes an archive as its body (Rasa's neither): `PUT /model` names one by its
    path or URL. Before, an archive uploaded to `PUT /model` or `POST /model/train` was told
    "the server does not decode a Content-Encoding: send it uncompressed", which it had not
    used, and an uncompressed tar is no better (found by review)."""
    headers = {"Content-Type": content_type} if content_type else {}
    archive = await asyncio.to_thread(moodbot_model.read_bytes)
    for method, path in [("put", "/model"), ("post", "/model/train")]:
        response = await client.request(method, path, content=archive, headers=headers)
        assert response.status_code == 415, (path, response.text)
        assert "a model archive is loaded with PUT /model" in response.json()["message"]
    assert (await client.get("/status")).json()["model_file"] == moodbot_model.name


# What `curl -d '{...}'` sends, and a client that names no type or the wrong one.
@pytest.mark.parametrize("content_type", ["application/x-www-form-urlencoded", "text/plain", None])
async def test_a_json_body_is_read_whatever_content_type_it_is_sent_as(
    client: httpx.AsyncClient, content_type: str | None
) -> None:
    """As in Rasa, the routes read the body as JSON without looking at its Content-Type."""
    headers = {"Content-Type": content_type} if content_type else {}
    message = json.dumps({"text": "hello", "sender": "user"})
    for path, body in [
        ("/model/parse", json.dumps({"text": "hello"})),
        ("/conversations/curl/messages", message),
        ("/conversations/curl/tracker/events", json.dumps(EVENTS)),
        ("/conversations/curl/trigger_intent", json.dumps({"name": "greet"})),
        ("/conversations/curl/execute", json.dumps({"name": "utter_greet"})),
        ("/model/predict", json.dumps(EVENTS)),
    ]:
        response = await client.post(path, content=body, headers=headers)
        assert response.status_code == 200, (path, response.text)
    parsed = await client.post("/model/parse", content=b'{"text": "hello"}', headers=headers)
    assert parsed.json()["intent"]["name"] == "greet"


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/model/parse", {"text": 3}, "text"),
        ("/conversations/typed/messages", {"text": ["hi"], "sender": "user"}, "text"),
        (
            "/conversations/typed/messages",
            {"text": "hi", "sender": "user", "parse_data": 1},
            "parse_data",
        ),
        ("/conversations/typed/trigger_intent", {"name": {"intent": "greet"}}, "name"),
        ("/conversations/typed/trigger_intent", {"name": "greet", "entities": 5}, "entities"),
        ("/conversations/typed/execute", {"name": 3}, "name"),
        (
            "/conversations/typed/execute",
            {"name": "utter_greet", "confidence": "high"},
            "confidence",
        ),
        ("/conversations/typed/execute", {"name": "utter_greet", "policy": 1}, "policy"),
    ],
)
async def test_a_field_of_the_wrong_type_is_a_400_naming_it(
    client: httpx.AsyncClient, rasa_spec: RasaSpec, path: str, body: dict, field: str
) -> None:
    """Each route checks its fields itself and says which one is wrong and what it must be
    (a FastAPI model would answer 422, or pydantic's "Input should be a valid string")."""
    created = await client.post("/conversations/typed/tracker/events", json=EVENTS)
    assert created.status_code == 200, created.text
    response = await client.post(path, json=body)
    assert response.status_code == 400, response.text
    answer = response.json()
    rasa_spec.validate(answer, "/model/parse", "post", 400)
    assert answer["reason"] == "BadRequest"
    assert answer["details"] == {"parameter": field, "in": "body"}
    assert f"'{field}'" in answer["message"], answer["message"]


@pytest.mark.parametrize(
    ("path", "body", "status", "start"),
    [
        ("/conversations/echo/trigger_intent", {"name": "LONG"}, 404, "The intent LONG"),
        ("/conversations/echo/execute", {"name": "LONG"}, 404, "The action 'LONG"),
        ("/conversations/echo/messages", {"sender": "LONG", "text": "hi"}, 400, "Currently"),
        ("/conversations/echo/tracker/events", {"event": "LONG"}, 400, "Failed to validate"),
    ],
)
async def test_an_error_quotes_a_long_name_it_was_sent_in_brief(
    client: httpx.AsyncClient,
    caplog: pytest.LogCaptureFixture,
    path: str,
    body: dict,
    status: int,
    start: str,
) -> None:
    """An unknown intent, action, sender or event type is named in the error as sent when it
    is a name, and cut when it is megabytes. Before, the whole of it came back in the body
    (a 3 MB name: a 3 MB error, found by probing)."""
    created = await client.post("/conversations/echo/tracker/events", json=EVENTS)
    assert created.status_code == 200, created.text
    name = "n" * 1_000_000
    sent = {key: name if value == "LONG" else value for key, value in body.items()}
    caplog.set_level(logging.DEBUG)
    response = await client.post(path, json=sent)
    assert response.status_code == status, response.text[:300]
    message = response.json()["message"]
    assert message.startswith(start.replace("LONG", "n" * 200)), message[:300]
    assert "n" * 201 not in message
    assert "1,000,000 characters" in message
    assert len(response.content) < 2000
    assert all(len(record.getMessage()) < 2000 for record in caplog.records)
    short = {key: "nope" if value == "LONG" else value for key, value in body.items()}
    answer = (await client.post(path, json=short)).json()["message"]
    assert "nope" in answer and "characters" not in answer, answer


async def test_a_long_undeclared_slot_is_logged_in_brief(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    """A slot the domain does not declare is logged by name (as Rasa), cut when it is long:
    before, a 3 MB name made a 3 MB error line in the log (found by probing)."""
    caplog.set_level(logging.ERROR)
    event = {"event": "slot", "name": "s" * 1_000_000, "value": 1}
    response = await client.post("/conversations/slots/tracker/events", json=event)
    assert response.status_code == 200, response.text[:300]
    [line] = [r.getMessage() for r in caplog.records if "non existent slot" in r.getMessage()]
    assert line.startswith("Tried to set non existent slot '" + "s" * 200 + "... (1,000,000")
    assert len(line) < 500


async def test_a_model_file_longer_than_any_path_is_refused_without_echoing_it(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    """No path on Linux is longer than 4,096 characters: a longer `model_file` is a 400
    saying so. Before, PUT /model quoted it whole in the error body and the log (1 MB each,
    found by probing)."""
    caplog.set_level(logging.DEBUG)
    loaded = (await client.get("/status")).json()["model_file"]
    response = await client.put("/model", json={"model_file": "/tmp/" + "m" * 1_000_000})
    assert response.status_code == 400, response.text[:300]
    answer = response.json()
    assert answer["details"] == {"parameter": "model_file", "in": "body"}
    assert answer["message"] == (
        "'model_file' is 1,000,005 characters long; a path on this server has at most 4,096."
    )
    assert all(len(record.getMessage()) < 2000 for record in caplog.records)
    assert (await client.get("/status")).json()["model_file"] == loaded
