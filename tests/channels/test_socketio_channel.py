"""The socket.io channel, driven by a python-socketio client against a running server."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import socketio
import websockets
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from server.api.app import create_app
from server.auth import redact
from server.channels import attach_channels, load_channels, socket_io, socketio_engine
from server.channels.socket_io import (
    INVALID_SESSION,
    SEND_AGAIN,
    SocketIOInput,
    SocketSessions,
    socketio_payloads,
)
from server.dialogue.messages import UserMessage
from server.errors import InvalidConfig, LockTimeout
from tests.channels.conftest import concertbot_server, echo, modelless_app
from tests.serving import serving


@contextlib.asynccontextmanager
async def bot(settings: dict[str, Any] | None) -> AsyncIterator[str]:
    app = create_app()
    attach_channels(app, load_channels({"socketio": settings}), echo)
    async with serving(app) as url:
        yield url


@contextlib.asynccontextmanager
async def recording_bot() -> AsyncIterator[tuple[str, list[str]]]:
    """The echo bot with session_persistence on; yields its URL and the senders of the
    messages it has handled."""
    handled: list[str] = []

    async def record(message: UserMessage) -> None:
        handled.append(message.sender_id)
        await echo(message)

    app = create_app()
    attach_channels(app, load_channels({"socketio": {"session_persistence": True}}), record)
    async with serving(app) as url:
        yield url, handled


class Client:
    """A socket.io client that queues everything the bot emits."""

    def __init__(self, bot_evt: str = "bot_uttered") -> None:
        self.sio = socketio.AsyncClient(reconnection=False)
        self.inbox: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()

        async def on_bot(data: Any) -> None:
            await self.inbox.put((bot_evt, data))

        async def on_confirm(data: Any) -> None:
            await self.inbox.put(("session_confirm", data))

        self.sio.on(bot_evt, on_bot)
        self.sio.on("session_confirm", on_confirm)

    async def next(self, n: int = 1) -> list[tuple[str, Any]]:
        return [await asyncio.wait_for(self.inbox.get(), 5) for _ in range(n)]


@contextlib.asynccontextmanager
async def session_on_concertbot(
    model: Path, action_url: str, session_id: str
) -> AsyncIterator[tuple[Client, str]]:
    """A client in session `session_id` (session_persistence on) of the whole server on
    concertbot; yields the client and the server's URL."""
    credentials = {"socketio": {"session_persistence": True}}
    async with concertbot_server(model, action_url, credentials) as bot_url:
        client = Client()
        await client.sio.connect(bot_url, transports=["websocket"])
        try:
            await client.sio.emit("session_request", {"session_id": session_id})
            await client.next()
            yield client, bot_url
        finally:
            await client.sio.disconnect()


async def test_user_uttered_gets_bot_uttered_for_the_socket() -> None:
    async with bot(None) as url:
        client = Client()
        await client.sio.connect(url, transports=["websocket"])
        try:
            health = await asyncio.to_thread(_get, f"{url}/webhooks/socketio/")
            await client.sio.emit("user_uttered", {"message": "hi"})
            replies = await client.next(2)
            sid = client.sio.get_sid()
        finally:
            await client.sio.disconnect()
    assert health == {"status": "ok"}
    assert replies == [
        ("bot_uttered", {"text": "echo: hi"}),
        ("bot_uttered", {"text": f"from {sid} via socketio"}),
    ]


async def test_buttons_become_quick_replies_and_images_attachments() -> None:
    async with bot({}) as url:
        client = Client()
        await client.sio.connect(url, transports=["websocket"])
        try:
            await client.sio.emit("user_uttered", {"message": "buttons"})
            (buttons,) = await client.next()
            await client.sio.emit("user_uttered", {"message": "image"})
            text, image = await client.next(2)
        finally:
            await client.sio.disconnect()
    assert buttons[1] == {
        "text": "pick one",
        "quick_replies": [
            {"content_type": "text", "title": "Yes", "payload": "/affirm"},
            {"content_type": "text", "title": "No", "payload": "/deny"},
        ],
    }
    assert text[1] == {"text": "look"}
    assert image[1] == {
        "attachment": {"type": "image", "payload": {"src": "https://example.test/a.png"}}
    }


def test_a_button_with_a_url_and_no_payload_is_a_link_without_a_type() -> None:
    """The button Rocket.Chat opens as a link (`{title, url}`) is one in rasa-webchat too,
    which needs `type: web_url`. Before, the widget showed a button that sent nothing: the
    visitor's click appeared as their message, and no answer came."""
    message = {"text": "See", "buttons": [{"title": "Site", "url": "https://example.test/s"}]}
    (payload,) = socketio_payloads(message)
    assert payload["quick_replies"] == [
        {
            "content_type": "text",
            "title": "Site",
            "payload": None,
            "url": "https://example.test/s",
            "type": "web_url",
        }
    ]
    # A button with a payload, or a type of its own, is left as it is.
    both = {"text": "x", "buttons": [{"title": "T", "payload": "/p", "url": "https://e.test"}]}
    assert "type" not in socketio_payloads(both)[0]["quick_replies"][0]
    typed = {"text": "x", "buttons": [{"title": "T", "type": "postback", "url": "https://e.test"}]}
    assert socketio_payloads(typed)[0]["quick_replies"][0]["type"] == "postback"


def test_a_link_button_reaches_the_widget_as_a_link() -> None:
    """rasa-webchat shows a quick reply of `type: web_url` as a link to its `url`. Before, the
    button went out as `{content_type, title, payload: null}`: a button sending nothing
    (Rasa fails the turn on a button without `payload`)."""
    message = {
        "text": "Read more",
        "buttons": [
            {"title": "Docs", "type": "web_url", "url": "https://example.test/docs"},
            {"title": "Yes", "payload": "/affirm"},
        ],
    }
    assert socketio_payloads(message) == [
        {
            "text": "Read more",
            "quick_replies": [
                {
                    "content_type": "text",
                    "title": "Docs",
                    "payload": None,
                    "type": "web_url",
                    "url": "https://example.test/docs",
                },
                {"content_type": "text", "title": "Yes", "payload": "/affirm"},
            ],
        }
    ]


@pytest.mark.parametrize("key", ["buttons", "quick_replies"])
def test_choices_without_a_text_come_with_an_empty_text(key: str) -> None:
    """rasa-sdk's `dispatcher.utter_message(buttons=...)` (or a response of buttons only) sends
    `text: null`. rasa-webchat shows the text of a message with choices as `String(text)`:
    before, a bubble saying "null" above the buttons (Rasa fails the turn on it)."""
    message = {"text": None, key: [{"title": "Yes", "payload": "/affirm"}], "image": None}
    assert socketio_payloads(message) == [
        {
            "text": "",
            "quick_replies": [{"content_type": "text", "title": "Yes", "payload": "/affirm"}],
        }
    ]
    assert socketio_payloads({key: [{"title": "No", "payload": "/deny"}]})[0]["text"] == ""


async def test_session_persistence_keeps_the_conversation_across_sockets() -> None:
    settings = {
        "session_persistence": True,
        "user_message_evt": "say",
        "bot_message_evt": "answer",
        "socketio_path": "/chat.io",
    }
    async with bot(settings) as url:
        first = Client("answer")
        await first.sio.connect(url, socketio_path="/chat.io", transports=["websocket"])
        await first.sio.emit("session_request", {"session_id": "s-42"})
        assert await first.next() == [("session_confirm", "s-42")]
        # Without its session id the message is dropped: nothing comes back.
        await first.sio.emit("say", {"message": "lost"})
        await first.sio.emit("say", {"message": "hi", "session_id": "s-42"})
        replies = await first.next(2)
        await first.sio.disconnect()

        second = Client("answer")
        await second.sio.connect(url, socketio_path="/chat.io", transports=["websocket"])
        await second.sio.emit("session_request", {"session_id": "s-42"})
        await second.next()
        await second.sio.emit("say", {"message": "again", "session_id": "s-42"})
        again = await second.next(2)
        await second.sio.disconnect()

        fresh = Client("answer")
        await fresh.sio.connect(url, socketio_path="/chat.io", transports=["websocket"])
        await fresh.sio.emit("session_request", None)
        ((_, new_id),) = await fresh.next()
        await fresh.sio.disconnect()
    assert replies == [
        ("answer", {"text": "echo: hi"}),
        ("answer", {"text": "from s-42 via socketio"}),
    ]
    assert again[1] == ("answer", {"text": "from s-42 via socketio"})
    assert isinstance(new_id, str) and len(new_id) == 32


async def test_jwt_protects_the_connection() -> None:
    key = "socket-secret-of-at-least-32-bytes!"
    async with bot({"jwt_key": key, "jwt_method": "HS256"}) as url:
        refused = Client()
        with pytest.raises(socketio.exceptions.ConnectionError):
            await refused.sio.connect(url, transports=["websocket"], auth={"token": "Bearer nope"})
        allowed = Client()
        token = jwt.encode({"user": "u1"}, key, algorithm="HS256")
        await allowed.sio.connect(url, transports=["websocket"], auth={"token": f"Bearer {token}"})
        await allowed.sio.emit("user_uttered", {"message": "hi", "metadata": '{"page": "home"}'})
        (reply,) = await allowed.next()
        await allowed.sio.disconnect()
    assert reply == ("bot_uttered", {"text": "echo: hi"})


async def test_a_jwt_without_claims_is_refused_as_rasa_refuses_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Rasa lets a socket connect only when its token's claims are not empty: a token signed
    over `{}` is refused there. Before, it connected here."""
    key = "socket-secret-of-at-least-32-bytes!"
    caplog.set_level(logging.INFO)
    async with bot({"jwt_key": key, "jwt_method": "HS256"}) as url:
        empty = jwt.encode({}, key, algorithm="HS256")
        with pytest.raises(socketio.exceptions.ConnectionError):
            await Client().sio.connect(url, transports=["websocket"], auth={"token": empty})
    assert any("JWT rejected: no claims" in r.getMessage() for r in caplog.records)


async def test_a_jwt_with_an_audience_or_just_expired_is_refused_as_in_rasa(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """As docs/channels.md says: `jwt_key` takes no audience and no leeway (Rasa's neither)."""
    key = "socket-secret-of-at-least-32-bytes!"
    caplog.set_level(logging.INFO)
    audience = jwt.encode({"user": "u1", "aud": "bot"}, key, algorithm="HS256")
    expired = jwt.encode({"user": "u1", "exp": int(time.time()) - 2}, key, algorithm="HS256")
    async with bot({"jwt_key": key, "jwt_method": "HS256"}) as url:
        for token in (audience, expired):
            with pytest.raises(socketio.exceptions.ConnectionError):
                await Client().sio.connect(url, transports=["websocket"], auth={"token": token})
    said = [r.getMessage() for r in caplog.records]
    assert any("JWT rejected: InvalidAudienceError" in m for m in said), said
    assert any("JWT rejected: ExpiredSignatureError" in m for m in said), said


@pytest.mark.parametrize("key_kind", ["public", "private"])
async def test_rs256_jwt_key_verifies_with_the_public_key_given_either_half(key_kind: str) -> None:
    # Before, a private key PEM (what some guides put there) failed every connection with
    # an AttributeError inside python-socketio, and the client was never told why.
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = (
        private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        if key_kind == "public"
        else private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    ).decode()
    async with bot({"jwt_key": pem, "jwt_method": "RS256"}) as url:
        allowed = Client()
        token = jwt.encode({"user": "u1"}, private, algorithm="RS256")
        await allowed.sio.connect(url, transports=["websocket"], auth={"token": f"Bearer {token}"})
        await allowed.sio.disconnect()
        forged = Client()
        hs = jwt.encode({"user": "u1"}, "a-guessed-secret-of-32-bytes-or-more!", algorithm="HS256")
        with pytest.raises(socketio.exceptions.ConnectionError):
            await forged.sio.connect(url, transports=["websocket"], auth={"token": hs})


async def test_a_jwt_key_naming_a_file_is_that_file_s_key(tmp_path: Path) -> None:
    # Before (and in Rasa), the path itself was the key: anyone who guessed or read it
    # could connect; and with the file not there, the same, without a word.
    with pytest.raises(InvalidConfig, match="there is no such file"):
        SocketIOInput.from_credentials({"jwt_key": str(tmp_path / "missing" / "jwt")})
    key = "socket-secret-of-at-least-32-bytes!"
    (tmp_path / "jwt").write_text(key + "\n")
    async with bot({"jwt_key": str(tmp_path / "jwt")}) as url:
        allowed = Client()
        token = jwt.encode({"user": "u1"}, key, algorithm="HS256")
        await allowed.sio.connect(url, transports=["websocket"], auth={"token": f"Bearer {token}"})
        await allowed.sio.disconnect()
        with pytest.raises(socketio.exceptions.ConnectionError):
            forged = jwt.encode({"user": "u1"}, str(tmp_path / "jwt"), algorithm="HS256")
            await Client().sio.connect(url, transports=["websocket"], auth={"token": forged})


def test_a_public_key_body_as_an_hs256_jwt_key_stops_startup() -> None:
    # Keycloak shows a realm's public key without its PEM lines; with the default HS256 it
    # was a shared secret, and anyone holding the public key could connect.
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    body = "".join(pem.decode().strip().splitlines()[1:-1])
    with pytest.raises(InvalidConfig, match="set 'jwt_method' RS256"):
        SocketIOInput.from_credentials({"jwt_key": body})


async def test_a_refused_connection_is_logged_with_client_and_reason_and_bounded(
    caplog: pytest.LogCaptureFixture,
) -> None:
    key = "socket-secret-of-at-least-32-bytes!"
    expired = jwt.encode({"user": "u1", "exp": 1}, key, algorithm="HS256")
    caplog.set_level(logging.INFO)
    async with bot({"jwt_key": key, "jwt_method": "HS256"}) as url:
        for auth in [{"token": f"Bearer {expired}"}] + [None] * 40:
            with pytest.raises(socketio.exceptions.ConnectionError):
                await Client().sio.connect(url, transports=["websocket"], auth=auth)
    lines = [r.getMessage() for r in caplog.records if "efused" in r.getMessage()]
    assert "socket.io connection from 127.0.0.1: JWT rejected: ExpiredSignatureError" in lines[0]
    assert "no token" in lines[1]
    # The hint says how to send one, and survives the log's redaction of secrets (before,
    # `botserver run` wrote "no token (auth: {token: ***})").
    assert "'Bearer <jwt>'" in redact(lines[1])
    assert len(lines) <= 25, len(lines)


@contextlib.asynccontextmanager
async def persistent_bot(
    ping_seconds: float | None = None, **settings: Any
) -> AsyncIterator[tuple[str, SocketIOInput]]:
    """The echo bot with session_persistence on (and these other `settings`); yields its URL
    and its channel. `ping_seconds`: engine.io's ping interval and timeout (25 s and 20 s)."""
    (channel,) = load_channels({"socketio": {"session_persistence": True, **settings}})
    assert isinstance(channel, SocketIOInput)
    if ping_seconds is not None:
        channel.sio.eio.ping_interval = channel.sio.eio.ping_timeout = ping_seconds
    app = create_app()
    attach_channels(app, [channel], echo)
    async with serving(app) as url:
        yield url, channel


@contextlib.asynccontextmanager
async def in_session(
    session_id: str, ping_seconds: float | None = None, **settings: Any
) -> AsyncIterator[tuple[Client, SocketIOInput]]:
    """A client in session `session_id` of the echo bot (session_persistence on, and these
    other `settings`); yields it and the channel, whose output pushes to sessions."""
    async with persistent_bot(ping_seconds, **settings) as (url, channel):
        client = Client()
        await client.sio.connect(url, transports=["websocket"])
        await client.sio.emit("session_request", {"session_id": session_id})
        assert await client.next() == [("session_confirm", session_id)]
        yield client, channel


async def test_pushed_messages_reach_the_session_room() -> None:
    async with in_session("room-7") as (client, channel):
        output = channel.get_output_channel()
        await output.send_response("room-7", {"text": "reminder!"})
        (pushed,) = await client.next()
        # A custom message's `room` names a session, as the recipient does.
        custom = {"custom": {"data": {"text": "to room-7"}, "room": "room-7"}}
        await output.send_response("another-session", custom)
        (sent_to_room,) = await client.next()
        await client.sio.disconnect()
    assert pushed == ("bot_uttered", {"text": "reminder!"})
    assert sent_to_room == ("bot_uttered", {"text": "to room-7"})


async def test_a_namespace_s_clients_get_their_confirmation_and_bot_messages_on_it() -> None:
    (channel,) = load_channels({"socketio": {"namespace": "chat", "session_persistence": True}})
    assert isinstance(channel, SocketIOInput)
    app = create_app()
    attach_channels(app, [channel], echo)
    async with serving(app) as url:
        client = socketio.AsyncClient(reconnection=False)
        inbox: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        client.on("session_confirm", lambda d: inbox.put_nowait(("confirm", d)), namespace="/chat")
        client.on("bot_uttered", lambda d: inbox.put_nowait(("bot", d)), namespace="/chat")
        await client.connect(url, namespaces=["/chat"], transports=["websocket"])
        await client.emit("session_request", {"session_id": "s-ns"}, namespace="/chat")
        await client.emit(
            "user_uttered", {"message": "hi", "session_id": "s-ns"}, namespace="/chat"
        )
        answered = [await asyncio.wait_for(inbox.get(), 5) for _ in range(3)]
        # A push, and a custom message without `data`, which Rasa's emit() fails on.
        await channel.get_output_channel().send_response("s-ns", {"custom": {"type": "video"}})
        pushed = await asyncio.wait_for(inbox.get(), 5)
        await client.disconnect()
    # Rasa registers its handlers on the namespace but emits on `/`: its clients get nothing.
    assert answered == [
        ("confirm", "s-ns"),
        ("bot", {"text": "echo: hi"}),
        ("bot", {"text": "from s-ns via socketio"}),
    ]
    assert pushed == ("bot", {"type": "video"})


def _get(url: str) -> Any:
    import httpx

    return httpx.get(url).json()


async def test_a_numeric_session_id_gets_its_replies() -> None:
    async with bot({"session_persistence": True}) as url:
        client = Client()
        await client.sio.connect(url, transports=["websocket"])
        await client.sio.emit("session_request", {"session_id": 42})
        confirmed = await client.next()
        await client.sio.emit("user_uttered", {"message": "hi", "session_id": 42})
        # Before: the socket joined room 42 and the replies went to room "42": none came.
        replies = await client.next(2)
        await client.sio.disconnect()
    assert confirmed == [("session_confirm", "42")]
    assert replies[1] == ("bot_uttered", {"text": "from 42 via socketio"})


@pytest.mark.parametrize(
    "requested",
    # A lone surrogate: python-socketio's JSON reader takes its escape (`"\\ud800"`), as a
    # client cutting an emoji id in half sends it; no SQL store or Redis can hold it.
    [{"id": 1}, ["s"], "x" * 256, "a\x00b", True, "a\ud800b"],
    ids=["object", "list", "too-long", "nul", "bool", "lone-surrogate"],
)
async def test_a_session_id_no_conversation_can_have_is_replaced(requested: Any) -> None:
    async with bot({"session_persistence": True}) as url:
        client = Client()
        await client.sio.connect(url, transports=["websocket"])
        # Before: an object or list failed in the server (no session_confirm ever came);
        # an id too long or with NUL was confirmed, then every message was dropped.
        await client.sio.emit("session_request", {"session_id": requested})
        ((_, session_id),) = await client.next()
        await client.sio.emit("user_uttered", {"message": "hi", "session_id": session_id})
        replies = await client.next(2)
        await client.sio.disconnect()
    assert isinstance(session_id, str) and len(session_id) == 32
    assert replies[1] == ("bot_uttered", {"text": f"from {session_id} via socketio"})


async def test_binary_metadata_does_not_lose_the_turn_and_odd_messages_are_not_turns(
    concertbot_model: Path,
    action_servers,  # noqa: ANN001
) -> None:
    url = action_servers["concertbot"].url
    async with session_on_concertbot(concertbot_model, url, "bin-1") as (client, bot_url):
        for odd in (5, None, {"text": "hi"}, b"hi"):
            await client.sio.emit("user_uttered", {"message": odd, "session_id": "bin-1"})
        await client.sio.emit(
            "user_uttered",
            {"message": "hi", "session_id": "bin-1", "metadata": {"file": b"\x00\x01png"}},
        )
        replies = await client.next()
        async with httpx.AsyncClient(base_url=bot_url) as http:
            events = (await http.get("/conversations/bin-1/tracker")).json()["events"]
    assert replies == [("bot_uttered", {"text": "Hey there!"})]
    # Before: the bot answered, then the turn could not be stored (bytes are not JSON), and
    # each odd message was recorded as a user message without text and answered.
    said = [(e["event"], e.get("text")) for e in events if e["event"] in ("user", "bot")]
    assert said == [("user", "hi"), ("bot", "Hey there!")]


async def test_arguments_after_the_message_are_ignored() -> None:
    async with bot({"session_persistence": True}) as url:
        client = Client()
        await client.sio.connect(url, transports=["websocket"])
        await client.sio.emit("session_request", ({"session_id": "s-9"}, "extra"))
        confirmed = await client.next()
        # Before: the handler took one argument, failed, and the message was lost.
        await client.sio.emit("user_uttered", ({"message": "hi", "session_id": "s-9"}, 1, 2))
        replies = await client.next(2)
        await client.sio.disconnect()
    assert confirmed == [("session_confirm", "s-9")]
    assert replies[0] == ("bot_uttered", {"text": "echo: hi"})


async def test_malformed_packets_are_ignored_in_one_log_line_each(
    caplog: pytest.LogCaptureFixture,
) -> None:
    import websockets

    malformed = ["", "9", "4{", "42[", '42["user_uttered"', "42" + "[" * 3000 + "]" * 3000]
    # Events without a name: no list, an empty one, or a name that is no string.
    malformed += ['42{"a":1}', "42[]", '42[{"a":1}]', '42[["user_uttered"]]', "42[5]", "42[null]"]
    async with bot(None) as url:
        ws_url = url.replace("http", "ws") + "/socket.io/?EIO=4&transport=websocket"
        async with websockets.connect(ws_url) as ws:
            await ws.recv()  # Engine.IO open
            await ws.send("40")
            await ws.recv()  # Socket.IO connect
            for frame in malformed:
                await ws.send(frame)
            await ws.send('42["user_uttered",{"message":"hi"}]')
            reply = await asyncio.wait_for(ws.recv(), 5)
    # Before: the empty frame closed the socket (no reply), and each bad packet logged a
    # traceback (twice: engine.io's own handler too); an event named by an object or a list
    # logged one from the handler's task (TypeError: unhashable type), a name that was a
    # number or null nothing at all.
    assert reply == '42["bot_uttered",{"text":"echo: hi"}]'
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert len([r for r in caplog.records if "ignored" in r.getMessage()]) == len(malformed)


async def test_requests_engine_io_refuses_are_warnings_not_errors(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A client's mistake that engine.io answers 400 (an old protocol version, an unknown
    transport, a session that does not exist, a websocket request without its upgrade) is
    logged as a warning: engine.io logs the first of each kind as an ERROR, which any port
    scanner would set off in a log watched for errors."""
    caplog.set_level(logging.INFO)
    queries = ["EIO=3&transport=polling", "EIO=4&transport=flash", "EIO=4&transport=polling&sid=x"]
    queries.append("EIO=4&transport=websocket")  # without the Upgrade header
    async with bot(None) as url, httpx.AsyncClient(base_url=url, timeout=5) as client:
        answers = [(await client.get(f"/socket.io/?{query}")).status_code for query in queries]
    assert answers == [400, 400, 400, 400]
    refusals = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [r.levelname for r in refusals] == ["WARNING"] * 4, [r.getMessage() for r in refusals]
    assert "Invalid session x" in refusals[2].getMessage()


@pytest.mark.parametrize(
    "body", ["0", "6", "4" + "x" * 1_000_000], ids=["open", "noop", "over-1-MB"]
)
async def test_a_polling_post_engine_io_refuses_is_answered_without_a_poll(
    body: str, caplog: pytest.LogCaptureFixture
) -> None:
    """An OPEN or NOOP packet from the client, or a body over 1 MB: engine.io closes the
    session and answers 400, with no long-poll of the client's waiting."""
    async with bot(None) as url, httpx.AsyncClient(base_url=url, timeout=5) as client:
        opened = await client.get("/socket.io/?EIO=4&transport=polling")
        polling = f"/socket.io/?EIO=4&transport=polling&sid={json.loads(opened.text[1:])['sid']}"
        await client.post(polling, content="40")
        await client.get(polling)  # the socket.io connection's answer
        refused = await client.post(polling, content=body)
        after = await client.get(polling)
    # Before: the POST waited for a poll to take engine.io's close packet, for ever when none
    # came (no request timeout, unlike Rasa's Sanic): a request and a task held per such
    # POST, and each delayed the server's stop, ending in a traceback.
    assert refused.status_code == 400
    assert after.status_code == 400  # the session is gone
    assert not [r for r in caplog.records if r.exc_info]


async def test_a_polling_post_after_the_client_closed_its_session_is_answered_400(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with bot(None) as url, httpx.AsyncClient(base_url=url, timeout=5) as client:
        opened = await client.get("/socket.io/?EIO=4&transport=polling")
        polling = f"/socket.io/?EIO=4&transport=polling&sid={json.loads(opened.text[1:])['sid']}"
        await client.post(polling, content="40")
        await client.get(polling)
        closed = await client.post(polling, content="1")  # engine.io's CLOSE
        late = await client.post(polling, content='42["user_uttered",{"message":"hi"}]')
    # Before: 500, and the log an "Unhandled error" traceback (KeyError: 'Session is
    # disconnected'), once per session any client closed so; a GET was answered 400.
    assert closed.status_code == 200
    assert late.status_code == 400
    assert not [r for r in caplog.records if r.exc_info]


async def test_a_polling_post_whose_body_comes_after_its_session_closed_is_answered_400(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A POST whose headers arrive while its session is open and whose body arrives after
    the client closed it (from another request: a slow network, or on purpose)."""
    async with bot(None) as url, httpx.AsyncClient(base_url=url, timeout=5) as client:
        opened = await client.get("/socket.io/?EIO=4&transport=polling")
        polling = f"/socket.io/?EIO=4&transport=polling&sid={json.loads(opened.text[1:])['sid']}"
        await client.post(polling, content="40")
        await client.get(polling)
        closing = asyncio.Event()
        message = b'42["user_uttered",{"message":"hi"}]'

        async def late_body() -> AsyncIterator[bytes]:
            await closing.wait()
            yield message

        headers = {"content-length": str(len(message))}
        late = asyncio.create_task(client.post(polling, content=late_body(), headers=headers))
        await asyncio.sleep(0.3)  # the late POST's headers are in
        closed = await client.post(polling, content="1")  # engine.io's CLOSE
        closing.set()
        answered = await late
    # Before: 500, and an "Unhandled error" traceback (KeyError: 'Session is disconnected'):
    # the closed session was looked for before the body came, found only after.
    assert closed.status_code == 200
    assert answered.status_code == 400
    assert not [r for r in caplog.records if r.exc_info]


async def test_deeply_nested_metadata_does_not_lose_the_message() -> None:
    import websockets

    nested = '{"a":' * 900 + "1" + "}" * 900  # as deep as the REST webhook takes
    too_deep = json.dumps("[" * 5000 + "]" * 5000)  # a JSON string no decoder reads
    async with bot(None) as url:
        ws_url = url.replace("http", "ws") + "/socket.io/?EIO=4&transport=websocket"
        async with websockets.connect(ws_url) as ws:
            await ws.recv()
            await ws.send("40")
            await ws.recv()
            replies = []
            for metadata in (nested, too_deep):
                await ws.send(f'42["user_uttered",{{"message":"hi","metadata":{metadata}}}]')
                replies.append(await asyncio.wait_for(ws.recv(), 5))
                await asyncio.wait_for(ws.recv(), 5)  # the second paragraph
    # Before: the handler failed with a RecursionError and the message was lost.
    assert replies == ['42["bot_uttered",{"text":"echo: hi"}]'] * 2


async def test_origins_are_checked_and_cors_headers_not_doubled_by_the_cors_flag() -> None:
    from server.api.settings import ApiSettings

    app = create_app(ApiSettings(cors_origins=("*",)))  # `botserver run --cors "*"`
    settings = {"cors_allowed_origins": ["https://good.example"]}
    attach_channels(app, load_channels({"socketio": settings}), echo)
    handshake = "/socket.io/?EIO=4&transport=polling"
    async with serving(app) as url, httpx.AsyncClient(base_url=url) as client:
        good = await client.get(handshake, headers={"Origin": "https://good.example"})
        evil = await client.get(handshake, headers={"Origin": "https://evil.example"})
    # Before: two Access-Control-Allow-Origin headers, which browsers refuse.
    assert good.status_code == 200
    assert good.headers.get_list("access-control-allow-origin") == ["https://good.example"]
    assert evil.status_code == 400


async def test_a_configured_origin_matches_as_a_browser_sends_it() -> None:
    """A browser's Origin is its scheme and host in lower case, without a trailing slash or
    the scheme's default port;
    python-socketio compares it with the configured origins as they are written. Before, a
    configured `https://Good.example/` refused every connection from https://good.example."""
    configured = ["HTTPS://Good.example/", "http://Other.example:8080", "https://third.example:443"]
    settings = {"cors_allowed_origins": configured}
    app = create_app()
    attach_channels(app, load_channels({"socketio": settings}), echo)
    handshake = "/socket.io/?EIO=4&transport=polling"
    async with serving(app) as url, httpx.AsyncClient(base_url=url) as client:
        good = await client.get(handshake, headers={"Origin": "https://good.example"})
        other = await client.get(handshake, headers={"Origin": "http://other.example:8080"})
        third = await client.get(handshake, headers={"Origin": "https://third.example"})
        evil = await client.get(handshake, headers={"Origin": "https://evil.example"})
    assert good.status_code == 200, good.text
    assert good.headers.get_list("access-control-allow-origin") == ["https://good.example"]
    assert other.status_code == 200, other.text
    assert third.status_code == 200, third.text  # a browser leaves the default port out
    assert evil.status_code == 400


@contextlib.asynccontextmanager
async def raw_session(bot_url: str, session_id: str) -> AsyncIterator[Any]:
    """A bare websocket in socket.io session `session_id`, to send packets no client would."""
    import websockets

    ws_url = bot_url.replace("http", "ws") + "/socket.io/?EIO=4&transport=websocket"
    async with websockets.connect(ws_url) as ws:
        await ws.recv()
        await ws.send("40")
        await ws.recv()
        await ws.send(f'42["session_request",{{"session_id":"{session_id}"}}]')
        await ws.recv()
        yield ws


async def test_a_message_no_json_answer_could_hold_is_dropped(
    concertbot_model: Path,
    action_servers,  # noqa: ANN001
) -> None:

    # What Python's json reads but no JSON answer can hold: an unpaired surrogate escape, NaN,
    # Infinity, a number beyond a double; in the message or the metadata. Metadata given as a
    # JSON string holding them is no JSON, and ignored as such.
    odd = [
        '{"message":"hi \\ud83d","session_id":"odd-1"}',
        '{"message":"hi","session_id":"odd-1","metadata":{"x":"\\udc00"}}',
        '{"message":"hi","session_id":"odd-1","metadata":{"x":NaN}}',
        '{"message":"hi","session_id":"odd-1","metadata":{"x":-Infinity}}',
        '{"message":"hi","session_id":"odd-1","metadata":{"x":1e400}}',
    ]
    odd_strings = [
        '{"message":"hey","session_id":"odd-1","metadata":"{\\"x\\":\\"\\\\ud83d\\"}"}',
        '{"message":"hey","session_id":"odd-1","metadata":"{\\"x\\":NaN}"}',
    ]
    credentials = {"socketio": {"session_persistence": True}}
    url = action_servers["concertbot"].url
    async with concertbot_server(concertbot_model, url, credentials) as bot_url:
        async with raw_session(bot_url, "odd-1") as ws:
            for data in odd:
                await ws.send(f'42["user_uttered",{data}]')
            big = "9" * 100  # an integer beyond 64 bits is JSON, and kept exactly
            await ws.send(
                f'42["user_uttered",{{"message":"hi","session_id":"odd-1","metadata":{{"n":{big}}}}}]'
            )
            reply = await asyncio.wait_for(ws.recv(), 5)
            for data in odd_strings:
                await ws.send(f'42["user_uttered",{data}]')
                await asyncio.wait_for(ws.recv(), 5)
        async with httpx.AsyncClient(base_url=bot_url) as http:
            answer = await http.get("/conversations/odd-1/tracker")
    # Before: the odd messages were recorded, and every later read of the conversation
    # (and every action-server call for it) failed with a 500.
    assert reply == '42["bot_uttered",{"text":"Hey there!"}]'
    assert answer.status_code == 200
    users = [e for e in answer.json()["events"] if e["event"] == "user"]
    assert [(e["text"], e["metadata"].get("n"), "x" in e["metadata"]) for e in users] == [
        ("hi", int(big), False),
        ("hey", None, False),
        ("hey", None, False),
    ]


async def test_a_message_too_long_to_read_is_answered_and_not_stored(
    concertbot_model: Path,
    action_servers,  # noqa: ANN001
) -> None:
    url = action_servers["concertbot"].url
    async with session_on_concertbot(concertbot_model, url, "long-1") as (client, bot_url):
        long_text = "a" * 100_001
        await client.sio.emit("user_uttered", {"message": long_text, "session_id": "long-1"})
        (refusal,) = await client.next()
        await client.sio.emit("user_uttered", {"message": "hi", "session_id": "long-1"})
        (greeting,) = await client.next()
        async with httpx.AsyncClient(base_url=bot_url) as http:
            tracker = (await http.get("/conversations/long-1/tracker")).json()
    # Before: the turn refused the text in the log only, and the user waited for a reply.
    assert refusal == (
        "bot_uttered",
        {"text": "The message is 100,001 characters long; at most 100,000 are read."},
    )
    assert greeting == ("bot_uttered", {"text": "Hey there!"})
    assert [e["text"] for e in tracker["events"] if e["event"] == "user"] == ["hi"]


async def test_a_message_that_could_not_be_recorded_is_answered_send_it_again() -> None:
    async def busy(message: UserMessage) -> None:
        raise LockTimeout("conversation is locked")

    app = create_app()
    attach_channels(app, load_channels({"socketio": None}), busy)
    async with serving(app) as url:
        client = Client()
        await client.sio.connect(url, transports=["websocket"])
        try:
            await client.sio.emit("user_uttered", {"message": "hi"})
            (reply,) = await client.next()
        finally:
            await client.sio.disconnect()
    # Before: only the log knew; the user waited for a reply to a message that was lost.
    assert reply == (
        "bot_uttered",
        {"text": "Your message could not be handled just now. Please send it again."},
    )


async def test_a_burst_on_a_busy_conversation_is_two_warnings_not_one_error_per_message(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before, each socket.io message that timed out waiting for its conversation's lock was
    an ERROR line of its own; now, as in the REST channel, the first is a warning and the
    rest of the burst one count. Each user is still asked to send the message again."""
    from server.api.errors import BUSY_CONVERSATIONS
    from server.trackers.memory_lock import InMemoryLockStore

    monkeypatch.setattr(BUSY_CONVERSATIONS, "window", 0.3)
    locks = InMemoryLockStore(wait_timeout=0.05)

    async def turn(message: UserMessage) -> None:
        async with locks.lock(message.sender_id):
            await echo(message)

    app = create_app()
    attach_channels(app, load_channels({"socketio": {"session_persistence": True}}), turn)
    caplog.set_level(logging.INFO)
    async with serving(app) as url:
        client = Client()
        await client.sio.connect(url, transports=["websocket"])
        try:
            await client.sio.emit("session_request", {"session_id": "busy"})
            await client.next()
            async with locks.lock("busy"):  # an earlier turn, still running
                for _ in range(5):
                    await client.sio.emit("user_uttered", {"message": "hi", "session_id": "busy"})
                replies = await client.next(5)
            await asyncio.sleep(0.6)  # the window ends
        finally:
            await client.sio.disconnect()

    assert replies == [("bot_uttered", {"text": SEND_AGAIN})] * 5
    lines = [r for r in caplog.records if "conversation 'busy'" in r.getMessage()]
    assert [r.levelname for r in lines] == ["WARNING", "WARNING"], [r.getMessage() for r in lines]
    assert "socketio: message from busy was not recorded" in lines[0].getMessage()
    assert lines[1].getMessage().startswith("4 more times in the last 0.3 s: ")


async def test_rasa_webchats_empty_init_payload_is_no_turn_and_no_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with bot({"session_persistence": True, "metadata_key": "customData"}) as url:
        client = Client()
        await client.sio.connect(url, transports=["websocket"])
        # rasa-webchat 1.0.1 without `initPayload`, as a new session starts: exactly these.
        await client.sio.emit("session_request", {"session_id": None})
        ((_, session_id),) = await client.next()
        with caplog.at_level(logging.INFO, logger="server.channels.socket_io"):
            await client.sio.emit(
                "user_uttered", {"customData": {"language": "en"}, "session_id": session_id}
            )
            await client.sio.emit(
                "user_uttered",
                {"message": "hi", "customData": {"language": "en"}, "session_id": session_id},
            )
            replies = await client.next(2)
        await client.sio.disconnect()
    assert replies[0] == ("bot_uttered", {"text": "echo: hi"})
    # Before: a warning that a message was dropped, for every visitor's new session.
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO] == []


async def test_a_tracker_store_outage_is_counted_not_one_error_per_message(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Before, each socket.io message the unreachable store could not record was an ERROR line
    of its own; now the outage is one line when Redis goes away and one when it is back, with
    the number of messages it cost. Each user is still asked to send the message again."""
    from bench.tcp_proxy import TcpProxy
    from server.trackers.redis_store import RedisTrackerStore
    from tests.trackers.persistence_fixtures import (
        REDIS,
        delete_redis_keys,
        require_service,
        unique_name,
    )

    require_service("Redis", REDIS)
    proxy = TcpProxy(REDIS)
    await proxy.restore()
    prefix = unique_name("bssio")
    store = RedisTrackerStore({"url": "127.0.0.1", "port": proxy.port, "key_prefix": prefix})

    async def turn(message: UserMessage) -> None:
        await store.append(message.sender_id, [{"event": "restart", "timestamp": 1.0}])
        await echo(message)

    app = create_app()
    attach_channels(app, load_channels({"socketio": None}), turn)
    caplog.set_level(logging.INFO)
    try:
        async with serving(app) as url:
            client = Client()
            await client.sio.connect(url, transports=["websocket"])
            try:
                await proxy.cut()
                for _ in range(5):
                    await client.sio.emit("user_uttered", {"message": "hi"})
                refused = await client.next(5)
                await proxy.restore()
                await client.sio.emit("user_uttered", {"message": "back"})
                answered = await client.next()
            finally:
                await client.sio.disconnect()
    finally:
        await store.close()
        await proxy.cut()
        await delete_redis_keys(prefix)

    assert refused == [("bot_uttered", {"text": SEND_AGAIN})] * 5
    assert answered == [("bot_uttered", {"text": "echo: back"})]
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("server")]
    dependency = f"Redis at 127.0.0.1:{proxy.port} (the tracker store)"
    assert not [line for line in lines if "was not recorded" in line], lines
    away = [line for line in lines if line.startswith(f"{dependency} is unreachable: ")]
    assert len(away) == 1 and 'answered with the bot\'s "send it again" (socketio)' in away[0]
    back = [line for line in lines if line.startswith(f"{dependency} reachable again")]
    assert len(back) == 1 and back[0].endswith(", 5 requests refused meanwhile"), lines


async def test_metadata_nested_more_than_100_levels_is_dropped_and_the_message_kept(
    concertbot_model: Path,
    action_servers,  # noqa: ANN001
    tmp_path: Path,
) -> None:
    stores = {"tracker_store": {"type": "sql", "dialect": "sqlite", "db": str(tmp_path / "t.db")}}
    credentials = {"socketio": {"session_persistence": True}}
    url = action_servers["concertbot"].url
    deep = "[" * 900 + "]" * 900
    async with concertbot_server(concertbot_model, url, credentials, stores=stores) as bot_url:
        async with raw_session(bot_url, "deep-1") as ws:
            await ws.send(
                f'42["user_uttered",{{"message":"hi","session_id":"deep-1","metadata":{{"x":{deep}}}}}]'
            )
            reply = await asyncio.wait_for(ws.recv(), 5)
            # The reply goes out before the turn is stored; the next turn waits for it.
            await ws.send('42["user_uttered",{"message":"hey","session_id":"deep-1"}]')
            await asyncio.wait_for(ws.recv(), 5)
        async with httpx.AsyncClient(base_url=bot_url) as http:
            answer = await http.get("/conversations/deep-1/tracker")
    # Before: stored 900 levels deep, where the REST webhook and the API refuse more than 100
    # (a slot value that deep made every later GET /story a 500).
    assert reply == '42["bot_uttered",{"text":"Hey there!"}]'
    first = next(e for e in answer.json()["events"] if e["event"] == "user")
    assert (first["text"], "x" in first["metadata"]) == ("hi", False)


async def test_a_message_to_a_session_the_socket_did_not_request_gets_its_replies() -> None:
    async with bot({"session_persistence": True}) as url:
        client = Client()
        await client.sio.connect(url, transports=["websocket"])
        # A backend client (or a widget after the server restarted) that sends its session
        # id with each message but no session_request on this socket.
        await client.sio.emit("user_uttered", {"message": "hi", "session_id": "s-7"})
        # Before: the replies went to the room of s-7, which the socket was not in: none came.
        replies = await client.next(2)
        await client.sio.disconnect()
    assert replies[1] == ("bot_uttered", {"text": "from s-7 via socketio"})


@pytest.mark.parametrize(
    "session_id", ["x" * 256, "a\x00b", "a\ud800b"], ids=["too-long", "nul", "lone-surrogate"]
)
async def test_a_message_for_a_session_id_no_store_can_hold_is_answered(
    session_id: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with bot({"session_persistence": True}) as url:
        client = Client()
        await client.sio.connect(url, transports=["websocket"])
        with caplog.at_level(logging.INFO, logger="server.channels.socket_io"):
            await client.sio.emit("user_uttered", {"message": "hi", "session_id": session_id})
            # Before: no reply at all, and an ERROR line holding the whole id.
            (reply,) = await client.next()
        await client.sio.disconnect()
    assert reply == ("bot_uttered", {"text": INVALID_SESSION})
    lines = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert lines == [
        ("WARNING", "socketio: a message for a session_id no store can hold was refused")
    ]


async def test_a_message_sent_as_a_json_string_is_handled() -> None:
    async with bot({"session_persistence": True}) as url:
        client = Client()
        await client.sio.connect(url, transports=["websocket"])
        # Some widgets JSON.stringify() what they emit, session_request included.
        await client.sio.emit("session_request", json.dumps({"session_id": "s-json"}))
        confirmed = await client.next()
        await client.sio.emit("user_uttered", json.dumps({"message": "hi", "session_id": "s-json"}))
        # Before: ignored, with a warning about a missing session_id (at debug level only
        # without session_persistence): the user waited for a reply.
        replies = await client.next(2)
        await client.sio.disconnect()
    assert confirmed == [("session_confirm", "s-json")]
    assert replies == [
        ("bot_uttered", {"text": "echo: hi"}),
        ("bot_uttered", {"text": "from s-json via socketio"}),
    ]


@pytest.mark.parametrize(
    "data", ["hi", "[1, 2]", ["hi"], 5], ids=["text", "json-list", "list", "number"]
)
async def test_a_message_that_is_no_object_is_dropped_with_a_warning(
    data: Any, caplog: pytest.LogCaptureFixture
) -> None:
    async with bot(None) as url:
        client = Client()
        await client.sio.connect(url, transports=["websocket"])
        with caplog.at_level(logging.INFO, logger="server.channels.socket_io"):
            await client.sio.emit("user_uttered", data)
            await client.sio.emit("user_uttered", {"message": "next"})
            replies = await client.next(2)
        await client.sio.disconnect()
    assert replies[0] == ("bot_uttered", {"text": "echo: next"})
    # Before: logged at debug level only, so nobody learnt why the bot never answered.
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        (
            "WARNING",
            "socketio: a user_uttered whose data is not an object (or a JSON text of one) "
            "was dropped",
        )
    ]


async def test_socket_io_at_the_channels_webhook_path_works_on_every_transport() -> None:
    path = "/webhooks/socketio"
    async with bot({"socketio_path": path}) as url:
        async with httpx.AsyncClient(base_url=url) as http:
            # Long-polling's handshake (rasa-webchat's first request). Before: the health
            # route answered it, and the client never connected ("Unexpected response").
            opened = await http.get(f"{path}/", params={"EIO": "4", "transport": "polling"})
            health = await http.get(f"{path}/")
        client = Client()
        await client.sio.connect(url, socketio_path=path, transports=["websocket"])
        await client.sio.emit("user_uttered", {"message": "hi"})
        replies = await client.next(2)
        await client.sio.disconnect()
    assert opened.status_code == 200 and opened.text.startswith('0{"sid":')
    assert replies[0] == ("bot_uttered", {"text": "echo: hi"})
    assert health.json() == {"status": "ok"}


async def test_a_message_while_no_model_is_loaded_is_answered_send_it_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    async with serving(modelless_app(tmp_path, {"socketio": None})) as url:
        client = Client()
        await client.sio.connect(url, transports=["websocket"])
        await client.sio.emit("user_uttered", {"message": "hi"})
        # Before: no reply, and an ERROR line for each message.
        (reply,) = await client.next()
        await client.sio.disconnect()
    assert reply == ("bot_uttered", {"text": SEND_AGAIN})
    lines = [(r.levelname, r.getMessage()) for r in caplog.records if "socketio:" in r.getMessage()]
    assert [level for level, _ in lines] == ["WARNING"], lines
    assert "no model is loaded" in lines[0][1]


async def test_many_messages_fast_on_one_session_are_handled_and_answered_in_order(
    concertbot_model: Path,
    action_servers,  # noqa: ANN001
) -> None:
    said = ["hi", "bye", "thanks", "hello", "goodbye", "thank you"] * 2
    url = action_servers["concertbot"].url
    async with session_on_concertbot(concertbot_model, url, "fast-1") as (client, bot_url):
        for text in said:  # without waiting for any reply
            await client.sio.emit("user_uttered", {"message": text, "session_id": "fast-1"})
        replies = [data["text"] for _, data in await client.next(len(said))]
        async with httpx.AsyncClient(base_url=bot_url) as http:
            events = (await http.get("/conversations/fast-1/tracker")).json()["events"]
    greet, bye, welcome = "Hey there!", "Goodbye :(", "You're very welcome."
    assert replies == [greet, bye, welcome] * 4
    assert [e["text"] for e in events if e["event"] == "user"] == said


async def test_a_socket_that_leaves_mid_turn_leaves_no_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    started, finish, finished = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def slow(message: UserMessage) -> None:
        started.set()
        await finish.wait()
        await echo(message)
        finished.set()

    app = create_app()
    attach_channels(app, load_channels({"socketio": None}), slow)
    caplog.set_level(logging.WARNING)
    async with serving(app) as url:
        client = Client()
        await client.sio.connect(url, transports=["websocket"])
        await client.sio.emit("user_uttered", {"message": "hi"})
        await asyncio.wait_for(started.wait(), 5)
        await client.sio.disconnect()
        finish.set()  # the turn goes on and replies to a socket that is gone
        await asyncio.wait_for(finished.wait(), 5)
    assert [r.getMessage() for r in caplog.records] == []


@pytest.mark.parametrize("event", ["session_request", "user_uttered"])
async def test_a_socket_that_leaves_in_the_same_request_as_its_message_leaves_no_error(
    event: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    async with recording_bot() as (url, handled), httpx.AsyncClient(base_url=url) as http:
        polling = "/socket.io/?EIO=4&transport=polling"
        sid = json.loads((await http.get(polling)).text[1:])["sid"]
        await http.post(f"{polling}&sid={sid}", content="40")
        await http.get(f"{polling}&sid={sid}")
        # One long-polling POST holding the event and the disconnect: the handler runs
        # after the socket has left.
        data = {"message": "hi", "session_id": "gone-1"}
        packets = f"42{json.dumps([event, data])}\x1e41"
        await http.post(f"{polling}&sid={sid}", content=packets)
        await asyncio.sleep(0.5)
    # Before: "Task exception was never retrieved ... ValueError: sid is not connected to
    # requested namespace", with a traceback, and the message was not handled.
    assert [r.getMessage() for r in caplog.records] == []
    assert handled == (["gone-1"] if event == "user_uttered" else [])


async def test_a_session_id_that_is_another_sockets_id_is_kept_and_apart_from_that_socket(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with bot({"session_persistence": True}) as url:
        first, second = Client(), Client()
        await first.sio.connect(url, transports=["websocket"])
        await second.sio.connect(url, transports=["websocket"])
        # A widget that took its socket's id as session id (as a popular tutorial does),
        # reloaded while its first socket is still open (long-polling lingers until its
        # ping timeout), or open in a second tab.
        taken = first.sio.get_sid()
        caplog.set_level(logging.WARNING)
        await second.sio.emit("session_request", {"session_id": taken})
        # Before: replaced by a new id (the conversation lost), as python-socketio lets no
        # socket into another socket's own room, which was the session's room too.
        confirmed = await second.next()
        await second.sio.emit("user_uttered", {"message": "hi", "session_id": taken})
        replies = await second.next(2)
        await asyncio.sleep(0.5)  # a reply to the first socket would be in by now
        heard_by_first = first.inbox.qsize()
        await first.sio.disconnect()
        await second.sio.disconnect()
    assert confirmed == [("session_confirm", taken)]
    assert replies[1] == ("bot_uttered", {"text": f"from {taken} via socketio"})
    assert heard_by_first == 0
    assert [r.getMessage() for r in caplog.records] == []


async def test_a_message_naming_another_sockets_id_as_session_reaches_only_its_sender() -> None:
    async with recording_bot() as (url, handled):
        victim, other = Client(), Client()
        await victim.sio.connect(url, transports=["websocket"])
        await other.sio.connect(url, transports=["websocket"])
        taken = victim.sio.get_sid()
        await other.sio.emit("user_uttered", {"message": "hi", "session_id": taken})
        # The session's room is not the victim's own: before the two were one room, and
        # the turn's replies were shown in the victim's widget (then, until the message
        # was refused, its sender got none).
        replies = await other.next(2)
        await asyncio.sleep(0.5)  # a reply to the victim would be in by now
        heard_by_victim = victim.inbox.qsize()
        await victim.sio.disconnect()
        await other.sio.disconnect()
    assert (heard_by_victim, handled) == (0, [taken])
    assert replies[1] == ("bot_uttered", {"text": f"from {taken} via socketio"})


async def test_sockets_of_two_sessions_get_only_their_own_replies() -> None:
    """Joining the session a message names (no session_request needed) must not let a
    socket hear another session: each socket gets the replies of the sessions it named."""
    async with bot({"session_persistence": True}) as url:
        ana, bo = Client(), Client()
        await ana.sio.connect(url, transports=["websocket"])
        await bo.sio.connect(url, transports=["websocket"])
        await ana.sio.emit("session_request", {"session_id": "s-ana"})
        assert await ana.next() == [("session_confirm", "s-ana")]
        await bo.sio.emit("user_uttered", {"message": "hi", "session_id": "s-bo"})
        await ana.sio.emit("user_uttered", {"message": "hello", "session_id": "s-ana"})
        heard_by_bo = await bo.next(2)
        heard_by_ana = await ana.next(2)
        await asyncio.sleep(0.5)  # anything more (the other's replies) would be in by now
        assert ana.inbox.empty() and bo.inbox.empty()
        await ana.sio.disconnect()
        await bo.sio.disconnect()
    assert heard_by_ana[1] == ("bot_uttered", {"text": "from s-ana via socketio"})
    assert heard_by_bo[1] == ("bot_uttered", {"text": "from s-bo via socketio"})


async def test_a_socket_that_requested_two_sessions_gets_the_replies_of_both() -> None:
    """A gateway serving several users over one socket sends a session_request for each, as
    Rasa's socket.io channel expects: in Rasa 3.6 the socket stays in every session's room.
    For a few hours the socket was moved out of its previous session, and the first user's
    replies were lost."""
    async with in_session("user-a") as (client, channel):
        await client.sio.emit("session_request", {"session_id": "user-b"})
        assert await client.next() == [("session_confirm", "user-b")]
        output = channel.get_output_channel()

        await output.send_response("user-a", {"text": "to user-a"})
        await output.send_response("user-b", {"text": "to user-b"})

        assert await client.next() == [("bot_uttered", {"text": "to user-a"})]
        assert await client.next() == [("bot_uttered", {"text": "to user-b"})]
        await client.sio.disconnect()


async def test_a_gateway_socket_stays_in_its_latest_sessions_only(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A backend gateway relays many users over one socket that stays connected for weeks,
    requesting a session per user. The socket is kept in the `sessions_per_socket` sessions
    it used last; before, it stayed in every session it ever named (a room each, about
    600 bytes), so the server's memory grew with every user the gateway had ever relayed."""
    async with in_session("user-0", sessions_per_socket=3) as (client, channel):
        sid = client.sio.get_sid()
        for user in range(1, 6):
            await client.sio.emit("session_request", {"session_id": f"user-{user}"})
        confirmed = await client.next(5)
        held = sorted(channel.sio.manager.get_rooms(sid, "/"))
        output = channel.get_output_channel()
        # A push to a session the socket left reaches nobody; one to a kept session arrives.
        await output.send_response("user-0", {"text": "to user-0"})
        await output.send_response("user-5", {"text": "to user-5"})
        (pushed,) = await client.next()
        # A message of a session it left joins it again (the oldest kept one is left) and
        # is answered, as a message of a session never requested is.
        await client.sio.emit("user_uttered", {"message": "hi", "session_id": "user-0"})
        replies = await client.next(2)
        held_after = sorted(channel.sio.manager.get_rooms(sid, "/"))
        await client.sio.disconnect()
        # The server forgets the socket's sessions when it handles the disconnect.
        for _ in range(200):
            kept_after_disconnect = len(channel.socket_sessions)
            if kept_after_disconnect == 0:
                break
            await asyncio.sleep(0.01)
    assert confirmed == [("session_confirm", f"user-{user}") for user in range(1, 6)]
    assert held == sorted([sid, "session:user-3", "session:user-4", "session:user-5"])
    assert pushed == ("bot_uttered", {"text": "to user-5"})
    assert replies[1] == ("bot_uttered", {"text": "from user-0 via socketio"})
    assert held_after == sorted([sid, "session:user-4", "session:user-5", "session:user-0"])
    assert kept_after_disconnect == 0
    # Pushes to the sessions left are lost without a word: the operator is told once per
    # socket (three sessions left here) which setting to raise.
    warnings = [r.getMessage() for r in caplog.records if "sessions_per_socket" in r.getMessage()]
    assert len(warnings) == 1, warnings
    assert f"socketio: socket {sid} is in 3 sessions" in warnings[0]


def test_a_socket_past_one_session_per_socket_is_said_to_be_in_1_session(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Before: "is in 1 sessions"."""
    sessions = SocketSessions(1)
    sessions.use("sid-1", "user-1")
    assert sessions.use("sid-1", "user-2") == (True, ["user-1"])
    (said,) = [r.getMessage() for r in caplog.records]
    assert said.startswith("socketio: socket sid-1 is in 1 session (sessions_per_socket): ")


def test_sessions_per_socket_is_a_positive_whole_number_and_1000_by_default() -> None:
    (channel,) = load_channels({"socketio": {"session_persistence": True}})
    assert isinstance(channel, SocketIOInput)
    assert channel.socket_sessions.limit == 1000
    (from_text,) = load_channels({"socketio": {"sessions_per_socket": "50"}})  # a ${VAR}
    assert isinstance(from_text, SocketIOInput) and from_text.socket_sessions.limit == 50
    for wrong in (0, -1, 2.5, "many", "\u00b2", True):
        with pytest.raises(InvalidConfig, match="'sessions_per_socket' must be"):
            load_channels({"socketio": {"sessions_per_socket": wrong}})


async def test_the_sessions_of_a_client_that_vanished_are_dropped() -> None:
    """Visitors whose browser went away without a word (long-polling, no more requests):
    engine.io drops each socket when its ping goes unanswered, and with it every entry the
    channel held for it, so a server running for months does not hold their sessions."""
    async with persistent_bot(ping_seconds=0.5) as (url, channel):
        async with httpx.AsyncClient(base_url=url) as http:
            polling = "/socket.io/?EIO=4&transport=polling"
            for visitor in range(3):
                sid = json.loads((await http.get(polling)).text[1:])["sid"]
                await http.post(f"{polling}&sid={sid}", content="40")
                await http.get(f"{polling}&sid={sid}")
                request = ["session_request", {"session_id": f"gone-{visitor}"}]
                await http.post(f"{polling}&sid={sid}", content="42" + json.dumps(request))
                # Confirmed: the socket is in its session.
                assert "gone-" in (await http.get(f"{polling}&sid={sid}")).text
        for _ in range(500):  # bounded: at most 5 s (engine.io's own wait is 45 s)
            if not channel.sio.eio.sockets and not channel.socket_sessions:
                break
            await asyncio.sleep(0.01)
        left = (len(channel.socket_sessions), channel.sio.manager.rooms)
    assert left == (0, {})


async def test_a_session_answering_a_turn_is_kept_past_sessions_per_socket() -> None:
    """A gateway's socket sends a message of session A, whose turn waits (on an action
    server, say); meanwhile the gateway relays more users than `sessions_per_socket`. A is
    the socket's least recently used session, but its turn's reply must still reach it:
    before, the socket had left A's room and the reply was lost."""
    answer = asyncio.Event()

    async def slow(message: UserMessage) -> None:
        if message.sender_id == "user-a":
            await answer.wait()
        await echo(message)

    settings = {"session_persistence": True, "sessions_per_socket": 2}
    (channel,) = load_channels({"socketio": settings})
    assert isinstance(channel, SocketIOInput)
    app = create_app()
    attach_channels(app, [channel], slow)
    async with serving(app) as url:
        client = Client()
        await client.sio.connect(url, transports=["websocket"])
        sid = client.sio.get_sid()
        await client.sio.emit("user_uttered", {"message": "hi", "session_id": "user-a"})
        for user in "bcd":
            await client.sio.emit("session_request", {"session_id": f"user-{user}"})
        confirmed = await client.next(3)
        held_during_turn = sorted(channel.sio.manager.get_rooms(sid, "/"))
        answer.set()
        replies = await client.next(2)
        # Once the turn is answered, the socket is back within its two sessions.
        held_after = sorted(channel.sio.manager.get_rooms(sid, "/"))
        await client.sio.disconnect()
    assert confirmed == [("session_confirm", f"user-{user}") for user in "bcd"]
    assert held_during_turn == sorted([sid, "session:user-a", "session:user-c", "session:user-d"])
    assert replies == [
        ("bot_uttered", {"text": "echo: hi"}),
        ("bot_uttered", {"text": "from user-a via socketio"}),
    ]
    assert held_after == sorted([sid, "session:user-c", "session:user-d"])


@contextlib.asynccontextmanager
async def held_turns_bot(**settings: Any) -> AsyncIterator[tuple[str, asyncio.Event, list[str]]]:
    """The echo bot whose turns wait until the yielded event is set; yields its URL, the event
    and the texts of the turns started so far."""
    release = asyncio.Event()
    started: list[str] = []

    async def held(message: UserMessage) -> None:
        started.append(message.text or "")
        await release.wait()
        await echo(message)

    app = create_app()
    attach_channels(app, load_channels({"socketio": settings}), held)
    async with serving(app) as url:
        yield url, release, started


async def _polling_session(http: httpx.AsyncClient) -> str:
    """A socket.io connection over long-polling; its polling URL (the connection's answer
    taken)."""
    opened = await http.get("/socket.io/?EIO=4&transport=polling")
    polling = f"/socket.io/?EIO=4&transport=polling&sid={json.loads(opened.text[1:])['sid']}"
    await http.post(polling, content="40")
    await http.get(polling)
    return polling


async def test_a_socket_has_at_most_100_messages_handled_at_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A client sending messages without waiting for replies: long-polling POSTs of 15
    `user_uttered` packets each, back to back (or a WebSocket sending without pause).
    python-socketio starts a task for each message as it arrives: before, every one became a
    turn at once, each held until its conversation was free (up to the lock's 60 s wait), so
    while turns took their time (an action server, the conversation's lock) one socket made
    the server hold as many as it sent, where the REST webhook takes one message per
    request. A socket now has at most `messages_per_socket` (100) handled at once; the rest
    are answered "send it again", as a message on a busy conversation is."""
    message = '42["user_uttered",{"message":"hi"}]'
    async with held_turns_bot() as (url, release, started):
        async with httpx.AsyncClient(base_url=url, timeout=5) as http:
            polling = await _polling_session(http)
            posted = [
                (await http.post(polling, content="\x1e".join([message] * 15))).status_code
                for _ in range(10)
            ]
            for _ in range(200):  # bounded: 2 s
                if len(started) >= 100:
                    break
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.2)  # a turn past the bound would have started by now
            assert len(started) == 100  # before: all 150 (and the poll below waited in vain)
            told = (await http.get(polling)).text
            release.set()
            replies = ""
            for _ in range(20):  # the held turns' replies, over a few polls
                replies += (await http.get(polling)).text
                if replies.count("echo: hi") == 100:
                    break
    assert posted == [200] * 10
    assert told.count(SEND_AGAIN) == 50
    assert replies.count("echo: hi") == 100
    refused = [r.getMessage() for r in caplog.records if "messages_per_socket" in r.getMessage()]
    assert len(refused) == 1, refused  # the other 49 are counted in one line at 60 s


async def test_messages_per_socket_bounds_a_websocket_too_and_frees_as_turns_end() -> None:
    async with held_turns_bot(messages_per_socket=2) as (url, release, started):
        client = Client()
        await client.sio.connect(url, transports=["websocket"])
        try:
            for text in ("one", "two", "three"):
                await client.sio.emit("user_uttered", {"message": text})
            told = await client.next()
            release.set()
            answered = await client.next(4)
            await client.sio.emit("user_uttered", {"message": "four"})
            after = await client.next(2)
        finally:
            await client.sio.disconnect()
    assert told == [("bot_uttered", {"text": SEND_AGAIN})]
    assert started == ["one", "two", "four"]
    assert sorted(data["text"] for _, data in answered if "echo" in data["text"]) == [
        "echo: one",
        "echo: two",
    ]
    assert after[0] == ("bot_uttered", {"text": "echo: four"})


def _messages_per_socket(channel: SocketIOInput) -> int:
    return channel.messages_per_socket


def _max_sessions(channel: SocketIOInput) -> int:
    return int(channel.sio.eio.max_sessions)


@pytest.mark.parametrize(
    ("key", "default", "read"),
    [("messages_per_socket", 100, _messages_per_socket), ("max_sessions", 10_000, _max_sessions)],
)
def test_a_socket_bound_is_a_positive_whole_number_with_its_default(
    key: str, default: int, read: Any
) -> None:
    (channel,) = load_channels({"socketio": {}})
    assert isinstance(channel, SocketIOInput) and read(channel) == default
    (from_text,) = load_channels({"socketio": {key: "500"}})  # a ${VAR}
    assert isinstance(from_text, SocketIOInput) and read(from_text) == 500
    for wrong in (0, -1, 2.5, "many", True):
        with pytest.raises(InvalidConfig, match=f"'{key}' must be"):
            load_channels({"socketio": {key: wrong}})


async def test_a_client_that_takes_none_of_its_messages_is_closed_past_the_bound(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A long-polling client that sends messages and never polls (or a WebSocket that reads
    nothing) stays connected as long as it answers engine.io's pings, which it may do without
    reading them. Before, the server kept every bot message for it, without bound: a few
    bytes sent for each reply held. Past `MAX_QUEUED_PACKETS` waiting, its session is closed."""
    monkeypatch.setattr(socketio_engine, "MAX_QUEUED_PACKETS", 30, raising=False)
    message = '42["user_uttered",{"message":"hi"}]'
    async with bot(None) as url, httpx.AsyncClient(base_url=url, timeout=5) as http:
        polling = await _polling_session(http)
        for _ in range(10):  # two bot messages each, never polled
            assert (await http.post(polling, content=message)).status_code == 200
            await asyncio.sleep(0.02)
        kept = (await http.post(polling, content=message)).status_code
        for _ in range(20):
            await http.post(polling, content="\x1e".join(["3", message]))
            await asyncio.sleep(0.02)
        after = await http.post(polling, content=message)
    assert kept == 200  # 20 packets waiting: below the bound
    assert after.status_code == 400  # the session is gone
    closed = [r.getMessage() for r in caplog.records if "took none of" in r.getMessage()]
    assert len(closed) == 1, closed


def _client_frame(text: str) -> bytes:
    """A masked WebSocket text frame, as a client sends it."""
    data = text.encode()
    mask = b"\x01\x02\x03\x04"
    size = bytes([0x80 | len(data)]) if len(data) < 126 else b"\xfe" + len(data).to_bytes(2)
    return b"\x81" + size + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data))


async def test_a_websocket_whose_client_reads_nothing_is_given_up(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A WebSocket client that writes (messages, engine.io pongs, which need no reading) but
    reads nothing. Before, engine.io's writer waited for ever for the client to take a frame,
    and the connection, its session and every packet queued for it were held for as long as
    the client wrote: even the server's keepalive closing the connection, or the session being
    closed past MAX_QUEUED_PACKETS, freed none of it."""
    monkeypatch.setattr(socket_io, "WEBSOCKET_SEND_WAIT", 1.0, raising=False)
    live = [0]

    async def big(message: UserMessage) -> None:
        assert message.output_channel is not None
        await message.output_channel.send_response(message.sender_id, {"text": "x" * 60_000})

    app = create_app()
    attach_channels(app, load_channels({"socketio": {}}), big)

    async def counting(scope: Any, receive: Any, send: Any) -> None:
        live[0] += scope["type"] == "websocket"
        try:
            await app(scope, receive, send)
        finally:
            live[0] -= scope["type"] == "websocket"

    async with serving(counting) as url:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", int(url.rsplit(":")[2])))
        _, writer = await asyncio.open_connection(sock=sock, limit=1024)
        writer.write(
            b"GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: x\r\n"
            b"Upgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        try:
            await asyncio.sleep(0.3)  # the handshake's answer
            writer.write(_client_frame("40"))
            held = live[0]
            for _ in range(150):  # bounded: 150 messages, then pongs for up to 10 s
                writer.write(_client_frame('42["user_uttered",{"message":"hi"}]'))
                await asyncio.sleep(0.005)
            for _ in range(50):
                writer.write(_client_frame("3"))
                await asyncio.sleep(0.2)
                if live[0] == 0:
                    break
            after = live[0]
        finally:
            writer.transport.abort()
    assert held == 1
    assert after == 0  # before: 1, as long as the client wrote
    assert any("took nothing sent to it" in r.getMessage() for r in caplog.records)


async def test_a_session_whose_waiting_output_passes_its_byte_budget_is_closed(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Bot messages of 60 KB each (an image's data, a custom payload) for a client that never
    polls: well below `MAX_QUEUED_PACKETS`, they pass the byte budget and the session is
    closed. Before, 10,000 of them (600 MB) were held for it."""
    monkeypatch.setattr(socketio_engine, "MAX_QUEUED_BYTES", 1_000_000, raising=False)
    monkeypatch.setattr(socketio_engine, "QUEUED_BYTES_GRACE", 0.2, raising=False)

    async def big(message: UserMessage) -> None:
        assert message.output_channel is not None
        await message.output_channel.send_response(message.sender_id, {"text": "x" * 60_000})

    app = create_app()
    attach_channels(app, load_channels({"socketio": {}}), big)
    message = '42["user_uttered",{"message":"hi"}]'
    async with serving(app) as url, httpx.AsyncClient(base_url=url, timeout=5) as http:
        polling = await _polling_session(http)
        for _ in range(10):  # 600 KB waiting
            assert (await http.post(polling, content=message)).status_code == 200
            await asyncio.sleep(0.05)
        kept = (await http.post(polling, content=message)).status_code
        for _ in range(10):
            await http.post(polling, content=message)
            await asyncio.sleep(0.05)
        after = await http.post(polling, content=message)
    assert kept == 200
    assert after.status_code == 400  # the session is gone
    closed = [r.getMessage() for r in caplog.records if "took none of" in r.getMessage()]
    assert len(closed) == 1, closed


@pytest.mark.parametrize("sizes", [[1_500_000], [400_000, 400_000, 400_000]])
async def test_a_client_that_takes_its_messages_gets_a_turn_bigger_than_the_byte_budget(
    sizes: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A turn whose bot messages pass the byte budget together (an image's data followed by
    text, a large custom payload), for a long-polling client waiting for them: the client
    gets them all, as in Rasa; only output left waiting past `QUEUED_BYTES_GRACE` closes
    the session. Before, the session was closed on the spot and the client got nothing."""
    monkeypatch.setattr(socketio_engine, "MAX_QUEUED_BYTES", 1_000_000, raising=False)

    async def big(message: UserMessage) -> None:
        assert message.output_channel is not None
        for i, size in enumerate(sizes):
            await message.output_channel.send_response(message.sender_id, {"text": str(i) * size})

    app = create_app()
    attach_channels(app, load_channels({"socketio": {}}), big)
    async with serving(app) as url, httpx.AsyncClient(base_url=url, timeout=5) as http:
        polling = await _polling_session(http)
        await http.post(polling, content='42["user_uttered",{"message":"hi"}]')
        got = ""
        while got.count("bot_uttered") < len(sizes):
            answer = await http.get(polling)
            assert answer.status_code == 200, answer.text
            got += answer.text
    assert got.count("bot_uttered") == len(sizes)
    assert len(got) > sum(sizes)


async def test_output_far_past_the_byte_budget_closes_the_session_within_the_grace(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A client that takes nothing while its bot answers fast: within `QUEUED_BYTES_GRACE`,
    what waits for it still may not pass `QUEUED_BYTES_BURST` times the budget (16 MiB)."""
    monkeypatch.setattr(socketio_engine, "MAX_QUEUED_BYTES", 100_000, raising=False)

    async def big(message: UserMessage) -> None:
        assert message.output_channel is not None
        for _ in range(10):
            await message.output_channel.send_response(message.sender_id, {"text": "x" * 60_000})

    app = create_app()
    attach_channels(app, load_channels({"socketio": {}}), big)
    async with serving(app) as url, httpx.AsyncClient(base_url=url, timeout=5) as http:
        polling = await _polling_session(http)
        await http.post(polling, content='42["user_uttered",{"message":"hi"}]')
        await asyncio.sleep(0.3)
        after = await http.post(polling, content="3")
    assert after.status_code == 400  # the session is gone: 600 KB waited, over 4 x 100 KB
    assert any("took none of" in r.getMessage() for r in caplog.records)


async def test_sessions_past_max_sessions_are_refused_and_those_open_keep_working() -> None:
    """With `max_sessions: 2`, a third engine.io session is answered 503 (and a socket.io
    client cannot connect), while the two open get their replies; once one closes, a new one
    opens. Before, every handshake made a session, without bound."""
    async with bot({"max_sessions": 2}) as url, httpx.AsyncClient(base_url=url, timeout=5) as http:
        first = await _polling_session(http)
        second = await _polling_session(http)
        refused = await http.get("/socket.io/?EIO=4&transport=polling")
        for transport in ("polling", "websocket"):
            client = socketio.AsyncClient(reconnection=False)
            with pytest.raises(socketio.exceptions.ConnectionError):
                await client.connect(url, transports=[transport], wait_timeout=2)
        await http.post(first, content='42["user_uttered",{"message":"hi"}]')
        reply = await http.get(first)
        await http.post(second, content="1")  # the client closes its session
        await asyncio.sleep(0.1)
        reopened = await http.get("/socket.io/?EIO=4&transport=polling")
    assert refused.status_code == 503
    assert refused.headers["retry-after"]
    assert "bot_uttered" in reply.text
    assert reopened.status_code == 200


async def test_a_session_that_joins_no_namespace_is_closed(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """An engine.io session whose client never sends socket.io's CONNECT is closed past
    `JOIN_TIMEOUT` (45 s), as socket.io's own server does; a joined one stays. Before, such a
    session was held as long as its client answered pings."""
    monkeypatch.setattr(socketio_engine, "JOIN_TIMEOUT", 0.3, raising=False)
    async with bot(None) as url, httpx.AsyncClient(base_url=url, timeout=5) as http:
        opened = await http.get("/socket.io/?EIO=4&transport=polling")
        unjoined = f"/socket.io/?EIO=4&transport=polling&sid={json.loads(opened.text[1:])['sid']}"
        joined = await _polling_session(http)
        await asyncio.sleep(0.8)
        left = await http.post(unjoined, content="40")
        stayed = await http.post(joined, content='42["user_uttered",{"message":"hi"}]')
    assert left.status_code == 400
    assert stayed.status_code == 200
    assert any("joined no namespace" in r.getMessage() for r in caplog.records)


async def test_an_upgrade_that_does_not_finish_is_closed_and_long_polling_goes_on(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A long-polling session opens its WebSocket and sends neither probe nor UPGRADE: past
    `UPGRADE_TIMEOUT` (10 s) the WebSocket is closed and the session's long-polls get its
    packets again, as in socket.io's own server. Before, engine.io waited without end,
    holding the connection, while every long-poll of the session got nothing."""
    monkeypatch.setattr(socketio_engine, "UPGRADE_TIMEOUT", 0.5, raising=False)
    async with bot(None) as url, httpx.AsyncClient(base_url=url, timeout=5) as http:
        polling = await _polling_session(http)
        upgrade = url.replace("http", "ws") + polling.replace("polling", "websocket")
        async with websockets.connect(upgrade) as ws:
            with pytest.raises(websockets.ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 3)
        await http.post(polling, content='42["user_uttered",{"message":"hi"}]')
        reply = await http.get(polling)
    assert "bot_uttered" in reply.text
    assert any("upgrade did not finish" in r.getMessage() for r in caplog.records)
