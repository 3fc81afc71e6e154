"""Request bodies as the routes read them: what a careless client sends gets a clear answer."""

from __future__ import annotations

import gzip
import json

import httpx
import pytest

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
    assert answer["message"] == (
        "The request body is gzip-compressed, and the server does not decode a "
        "Content-Encoding: send it uncompressed."
    )
    # The same body uncompressed, with the header a careless client leaves on, is read.
    plain = await client.post(path, content=body, headers={"Content-Encoding": "gzip"})
    assert plain.status_code == 200, plain.text
