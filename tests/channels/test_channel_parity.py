"""What a Rasa 3.6 client sends to the REST and callback webhooks reaches the turn as Rasa's
`UserMessage` would hold it (rasa/core/channels/rest.py, callback.py, channel.py)."""

from __future__ import annotations

from server.dialogue.messages import UserMessage
from tests.channels.test_rest_channel import recording_client as recording


async def test_rest_fields_reach_the_turn_as_in_rasa() -> None:
    """rest.py `_extract_sender`/`_extract_message`/`get_metadata`/`_extract_input_channel`,
    and channel.py `UserMessage.__init__`: the text stripped, the sender as its text."""
    handled: list[UserMessage] = []
    async with recording({"rest": None}, handled) as client:
        body = {"sender": 7, "message": "  hi  ", "metadata": {"k": [1]}, "input_channel": ""}
        answer = await client.post("/webhooks/rest/webhook", json=body)
        assert answer.status_code == 200
        assert answer.json()[0]["recipient_id"] == "7"
    (message,) = handled
    assert (message.sender_id, message.text, message.metadata) == ("7", "hi", {"k": [1]})
    assert message.input_channel == "rest"


async def test_callback_records_its_own_channel_name_whatever_the_body_says() -> None:
    """callback.py `webhook`: `input_channel=self.name()`, the body's `input_channel` unread;
    `response.text("success")`."""
    handled: list[UserMessage] = []
    credentials = {"callback": {"url": "http://127.0.0.1:9/bot"}}
    async with recording(credentials, handled) as client:
        answer = await client.post(
            "/webhooks/callback/webhook",
            json={"sender": "u1", "message": "hi", "input_channel": "web"},
        )
        assert (answer.status_code, answer.text) == (200, "success")
        assert answer.headers["content-type"].startswith("text/plain")
        health = await client.get("/webhooks/callback/")
        assert health.json() == {"status": "ok"}
    assert [(m.sender_id, m.input_channel) for m in handled] == [("u1", "callback")]
