"""What a Rasa 3.6 client sends to the REST and callback webhooks reaches the turn as Rasa's
`UserMessage` would hold it (rasa/core/channels/rest.py, callback.py, channel.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from server.api.app import create_app
from server.channels import attach_channels, load_channels
from server.channels.socket_io import SocketIOOutput
from server.dialogue.messages import UserMessage
from tests.channels.conftest import concertbot_server, echo
from tests.channels.test_rest_channel import recording_client as recording
from tests.channels.test_socketio_channel import Client, bot
from tests.serving import serving


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


class RecordingServer:
    """python-socketio's `emit` as the socket.io output calls it, recorded."""

    def __init__(self) -> None:
        self.emitted: list[tuple[str, Any, str]] = []

    async def emit(self, event: str, data: Any, room: str, namespace: str | None = None) -> None:
        self.emitted.append((event, data, room))


async def test_socketio_sends_each_kind_of_bot_message_as_rasa_does() -> None:
    """socketio.py `SocketIOOutput`: text split on blank lines (`send_text_message`), the
    buttons with the last paragraph (`send_text_with_buttons`), then, as `OutputChannel.
    send_response` orders them, custom JSON emitted as its `data` to its `room` (default the
    recipient), the image as an image attachment, the attachment as it is."""
    sio = RecordingServer()
    pdf = {"type": "file", "payload": {"src": "https://example.test/a.pdf"}}
    output = SocketIOOutput(sio, "answer")  # type: ignore[arg-type]
    await output.send_response(
        "s1",
        {
            "text": "one\n\ntwo",
            "quick_replies": [{"title": "Yes", "payload": "/affirm"}],
            "custom": {"data": {"kind": "video"}, "room": "s2"},
            "image": "https://example.test/a.png",
            "attachment": pdf,
        },
    )
    await output.send_response("s1", {"custom": {"data": [1, 2]}})
    reply = {"content_type": "text", "title": "Yes", "payload": "/affirm"}
    image = {"type": "image", "payload": {"src": "https://example.test/a.png"}}
    assert sio.emitted == [
        ("answer", {"text": "one", "quick_replies": []}, "s1"),
        ("answer", {"text": "two", "quick_replies": [reply]}, "s1"),
        ("answer", {"kind": "video"}, "s2"),
        ("answer", {"attachment": image}, "s1"),
        ("answer", {"attachment": pdf}, "s1"),
        ("answer", [1, 2], "s1"),
    ]


async def test_an_empty_session_id_is_given_a_new_one() -> None:
    """socketio.py `session_request` confirms `""` (only a missing or null id gets a uuid),
    and `handle_message` then drops every message of it (`not data.get("session_id")`): a
    widget that stored an empty id never got a reply. Here it is confirmed a new id."""
    async with bot({"session_persistence": True}) as url:
        client = Client()
        await client.sio.connect(url, transports=["websocket"])
        try:
            await client.sio.emit("session_request", {"session_id": ""})
            ((_, session_id),) = await client.next()
            await client.sio.emit("user_uttered", {"message": "hi", "session_id": session_id})
            replies = await client.next(2)
        finally:
            await client.sio.disconnect()
    assert isinstance(session_id, str) and len(session_id) == 32
    assert replies[1] == ("bot_uttered", {"text": f"from {session_id} via socketio"})


async def test_the_user_event_keeps_the_channel_and_metadata_as_rasa_stores_them(
    concertbot_model: Path,
) -> None:
    """rest.py `receive` builds `UserMessage(..., input_channel=..., metadata=...)`, and the
    processor logs them in the `user` event with its `message_id`; `GET /tracker` shows
    them, `latest_message` the metadata too."""
    async with concertbot_server(concertbot_model, "http://127.0.0.1:9/webhook") as url:
        async with httpx.AsyncClient(base_url=url) as client:
            body = {"sender": "m1", "message": "hi", "metadata": {"page": "/a"}}
            body["input_channel"] = "mobile-app"
            answer = await client.post("/webhooks/rest/webhook", json=body)
            assert answer.status_code == 200
            tracker = (await client.get("/conversations/m1/tracker")).json()
            await client.post("/webhooks/rest/webhook", json={"sender": "m2", "message": "hi"})
            plain = (await client.get("/conversations/m2/tracker")).json()
    (user,) = [e for e in tracker["events"] if e["event"] == "user"]
    # Rasa 3.6 adds the model's `model_id` and `assistant_id` to each event's metadata.
    assert user["input_channel"] == "mobile-app"
    assert user["metadata"]["page"] == "/a" and "model_id" in user["metadata"]
    assert isinstance(user["message_id"], str) and len(user["message_id"]) == 32
    assert tracker["latest_message"]["metadata"] == {"page": "/a"}
    assert tracker["latest_input_channel"] == "mobile-app"
    # Without metadata: `{}` in the parse data, as Rasa's recorded answers show it.
    assert plain["latest_message"]["metadata"] == {}
    assert plain["latest_input_channel"] == "rest"


async def test_socketio_hands_the_turn_its_metadata_key_and_channel_name() -> None:
    """socketio.py `handle_message`: the metadata under `metadata_key` (a JSON string of it
    read as the object), the socket id as sender without session_persistence, and
    `input_channel=self.name()`."""
    handled: list[UserMessage] = []

    async def record(message: UserMessage) -> None:
        handled.append(message)
        await echo(message)

    app = create_app()
    settings = {"metadata_key": "customData", "user_message_evt": "say"}
    attach_channels(app, load_channels({"socketio": settings}), record)
    async with serving(app) as url:
        client = Client()
        await client.sio.connect(url, transports=["websocket"])
        try:
            await client.sio.emit("say", {"message": "a", "customData": {"lang": "de"}})
            await client.next(2)
            await client.sio.emit("say", {"message": "b", "customData": '{"lang": "fr"}'})
            await client.next(2)
            sid = client.sio.get_sid()
        finally:
            await client.sio.disconnect()
    assert [(m.text, m.sender_id, m.input_channel, m.metadata) for m in handled] == [
        ("a", sid, "socketio", {"lang": "de"}),
        ("b", sid, "socketio", {"lang": "fr"}),
    ]
