"""`POST /conversations/{id}/tracker/events?execute_side_effects=true`: the bot messages a
`user` JWT posts go to its own conversation only, never to the socket.io session or the
Rocket.Chat room a custom payload names; an admin's go where they name, as in Rasa."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import jwt
import pytest
import socketio

from server.api.server import ServerOptions, build_app
from server.auth import AuthConfig
from tests.channels.fake_rocketchat import FakeRocketChat
from tests.serving import serving

SECRET = "a-jwt-secret-long-enough-for-hs256-keys!"
TOKEN = "the-static-token-of-the-side-effects-tests"
VICTIM = "victim-session"
SIDE_EFFECTS = "/conversations/{}/tracker/events?execute_side_effects=true&output_channel={}"


def _bearer(username: str, role: str) -> dict[str, str]:
    token = jwt.encode({"user": {"username": username, "role": role}}, SECRET, algorithm="HS256")
    return {"Authorization": f"Bearer {token}"}


def _bot(custom: dict[str, Any], where: str = "data") -> dict[str, Any]:
    """A bot event whose message carries `custom`, in its `data` or its `metadata` (both
    reach the channel)."""
    return {"event": "bot", "text": None, where: {"custom": custom}}


@contextlib.asynccontextmanager
async def server(model: Path) -> AsyncIterator[tuple[str, FakeRocketChat]]:
    """The whole server with a JWT secret, socket.io sessions and a fake Rocket.Chat."""
    rocket = FakeRocketChat("bot", "bot-password")
    async with serving(rocket.app) as rocket_url:
        credentials = {
            "socketio": {"session_persistence": True},
            "rocketchat": {"user": "bot", "password": "bot-password", "server_url": rocket_url},
        }
        options = ServerOptions(
            model_path=model,
            enable_api=True,
            endpoints={"tracker_store": {"type": "in_memory"}},
            credentials=credentials,
            models_dir=model.parent,
            auth=AuthConfig(token=TOKEN, jwt_secret=SECRET),
        )
        async with serving(build_app(options)) as url:
            yield url, rocket


@contextlib.asynccontextmanager
async def session(url: str, session_id: str) -> AsyncIterator[asyncio.Queue[Any]]:
    """A socket.io client in session `session_id`; yields what the bot emits to it."""
    inbox: asyncio.Queue[Any] = asyncio.Queue()
    sio = socketio.AsyncClient(reconnection=False)
    sio.on("bot_uttered", inbox.put)
    sio.on("session_confirm", inbox.put)
    await sio.connect(url, transports=["websocket"])
    try:
        await sio.emit("session_request", {"session_id": session_id})
        assert await asyncio.wait_for(inbox.get(), 5) == session_id
        yield inbox
    finally:
        await sio.disconnect()


async def _received(inbox: asyncio.Queue[Any], count: int, seconds: float = 5) -> list[Any]:
    """Up to `count` of what reaches `inbox` within `seconds`."""
    got: list[Any] = []
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            while len(got) < count:
                got.append(await inbox.get())
    return got


async def test_a_user_cannot_push_a_bot_message_into_another_conversation(
    moodbot_model: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Before, alice's JWT put a message of her own making into another visitor's chat
    (socket.io `room`) and had the bot post it in a Rocket.Chat channel (`channel`,
    `room_id`): Rasa sends a custom payload where it names."""
    phishing = {"text": "Your session expired: log in again at https://evil.example"}
    pushes = [
        ("socketio", _bot({"data": phishing, "room": VICTIM})),
        ("socketio", _bot({"data": phishing, "room": VICTIM}, where="metadata")),
        ("rocketchat", _bot({**phishing, "channel": "#general"})),
        ("rocketchat", _bot({**phishing, "room_id": "GENERAL"})),
        ("rocketchat", _bot({**phishing, "roomId": "GENERAL"})),
        # A bulk POST, whose events are read in a thread.
        (
            "socketio",
            [{"event": "bot", "text": "hi"}] * 1_000 + [_bot({"data": phishing, "room": VICTIM})],
        ),
    ]
    caplog.set_level(logging.INFO, logger="server.auth.refusals")
    alice = _bearer("alice", "user")
    async with server(moodbot_model) as (url, rocket), session(url, VICTIM) as victim:
        async with httpx.AsyncClient(base_url=url) as client:
            answers = [
                await client.post(SIDE_EFFECTS.format("alice", channel), json=event, headers=alice)
                for channel, event in pushes
            ]
            tracker = await client.get("/conversations/alice/tracker", headers=alice)
        await asyncio.sleep(0.3)  # what was emitted has reached the client

    assert [a.status_code for a in answers] == [403] * len(pushes), answers[0].text
    assert answers[0].json()["reason"] == "NotAuthorized"
    assert victim.empty()
    assert rocket.posted == []
    assert [e for e in tracker.json()["events"] if e["event"] == "bot"] == []  # nothing stored
    assert "role 'user' of 'alice' may not send a bot message to room 'victim-session'" in (
        caplog.text
    )


async def test_a_users_bot_message_to_its_own_conversation_and_an_admins_anywhere(
    moodbot_model: Path,
) -> None:
    """What stays as in Rasa: a custom payload naming the user's own conversation (or none)
    is sent, and an admin's (or the static token's) goes to the session it names."""
    async with server(moodbot_model) as (url, _), session(url, "alice") as own:
        async with session(url, VICTIM) as other, httpx.AsyncClient(base_url=url) as client:
            mine = await client.post(
                SIDE_EFFECTS.format("alice", "socketio"),
                json=[_bot({"data": {"text": "own room"}, "room": "alice"}), _bot({"x": 1})],
                headers=_bearer("alice", "user"),
            )
            admin = await client.post(
                SIDE_EFFECTS.format("ops", "socketio"),
                json=_bot({"data": {"text": "from the admin"}, "room": VICTIM}),
                headers=_bearer("ops", "admin"),
            )
            by_token = await client.post(
                SIDE_EFFECTS.format("ops", "socketio") + f"&token={TOKEN}",
                json=_bot({"data": {"text": "with the token"}, "room": VICTIM}),
            )
            pushed = await _received(other, 2)
        received = [await asyncio.wait_for(own.get(), 5) for _ in range(2)]

    assert mine.status_code == 200, mine.text
    assert received == [{"text": "own room"}, {"x": 1}]
    assert admin.status_code == 200, admin.text
    assert by_token.status_code == 200, by_token.text
    assert pushed == [{"text": "from the admin"}, {"text": "with the token"}]


async def test_a_rocketchat_users_bot_message_may_name_its_own_room(moodbot_model: Path) -> None:
    """A Rocket.Chat conversation is `<room id>:<user id>`, and its bot messages go to that
    room: a custom message naming the room (as `roomId`, `room_id` or `channel`) goes where a
    plain one goes, and is sent; one naming another room stays refused. Before, every custom
    message naming its own room was a 403 for such a user."""
    own, other = "ROOM1", "GENERAL"
    headers = _bearer(f"{own}:u1", "user")
    customs = [
        {"text": "a", "roomId": own},
        {"text": "b", "room_id": own},
        {"text": "c", "channel": own},
    ]
    async with server(moodbot_model) as (url, rocket), httpx.AsyncClient(base_url=url) as client:
        sent = [
            await client.post(
                SIDE_EFFECTS.format(f"{own}:u1", "rocketchat"), json=_bot(c), headers=headers
            )
            for c in customs
        ]
        refused = await client.post(
            SIDE_EFFECTS.format(f"{own}:u1", "rocketchat"),
            json=_bot({"text": "d", "roomId": other}),
            headers=headers,
        )

    assert [a.status_code for a in sent] == [200] * 3, sent[0].text
    assert [p.get("roomId") or p.get("channel") for p in rocket.posted] == [own] * 3
    assert [p["text"] for p in rocket.posted] == ["a", "b", "c"]
    assert refused.status_code == 403


async def test_a_refusal_line_tells_a_long_room_from_its_conversation(
    moodbot_model: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A room and a conversation id over 120 characters that differ in their middle print
    alike once cut: the line quotes them where they differ (before, two ids looking alike)."""
    own, room = "a" * 100 + "X" + "a" * 100, "a" * 100 + "Y" + "a" * 100
    caplog.set_level(logging.INFO, logger="server.auth.refusals")
    async with server(moodbot_model) as (url, _), httpx.AsyncClient(base_url=url) as client:
        refused = await client.post(
            SIDE_EFFECTS.format(own, "socketio"),
            json=_bot({"data": {"text": "hi"}, "room": room}),
            headers=_bearer(own, "user"),
        )
    assert refused.status_code == 403
    (line,) = [r.getMessage() for r in caplog.records if "bot message" in r.getMessage()]
    assert len(line) < 1_000, len(line)
    assert "'" + "a" * 20 + "Y" in line and "a" * 20 + "X" in line, line


async def test_a_user_whose_conversation_is_no_rocketchat_id_cannot_send_to_rocketchat(
    moodbot_model: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Rocket.Chat sends to the room a conversation id names, and takes a room's name
    (`support`, `#support`), a user (`@bob`) or a user id (a direct message) there: before, a
    `user` JWT so named had even plain bot messages posted there. Now `output_channel=
    rocketchat` is refused for it (403, logged), and so is storing a user message from
    Rocket.Chat (where reminders and `latest` then go); `latest` naming Rocket.Chat answers
    the messages instead; a conversation of the Rocket.Chat form and an admin are sent as
    before."""
    caplog.set_level(logging.INFO, logger="server.auth.refusals")
    plain = {"event": "bot", "text": "Your session expired: log in at https://evil.example"}
    greet = {"name": "greet"}
    async with server(moodbot_model) as (url, rocket), httpx.AsyncClient(base_url=url) as client:
        refused = []
        for name in ("support", "#support", "@bob", "XkT3bQ9uH2mZp7LwA"):
            headers = _bearer(name, "user")
            at = f"/conversations/{quote(name, safe='')}"
            refused += [
                await client.post(SIDE_EFFECTS.format(quote(name, safe=""), "rocketchat"),
                                  json=plain, headers=headers),
                await client.post(f"{at}/trigger_intent?output_channel=rocketchat",
                                  json=greet, headers=headers),
                await client.post(f"{at}/execute?output_channel=rocketchat",
                                  json={"name": "utter_greet"}, headers=headers),
            ]  # fmt: skip
        # A user event saying the conversation came through Rocket.Chat (where its reminders
        # and `latest` would then go): refused to the user, stored by an admin.
        headers = _bearer("support", "user")
        said = {"event": "user", "text": "hi", "input_channel": "rocketchat"}
        at = "/conversations/support/tracker/events"
        claimed = [
            await client.post(at, json=said, headers=headers),
            await client.put(at, json=[said], headers=headers),
        ]
        stored = await client.post(at, json=said, headers=_bearer("ops", "admin"))
        latest = await client.post("/conversations/support/trigger_intent?output_channel=latest",
                                   json=greet, headers=headers)  # fmt: skip
        posted_by_users = list(rocket.posted)
        own = await client.post(SIDE_EFFECTS.format("ROOM1:u1", "rocketchat"), json=plain,
                                headers=_bearer("ROOM1:u1", "user"))  # fmt: skip
        admin = await client.post(SIDE_EFFECTS.format("support", "rocketchat"), json=plain,
                                  headers=_bearer("ops", "admin"))  # fmt: skip

    assert [r.status_code for r in refused] == [403] * len(refused), refused[0].text
    assert refused[0].json()["reason"] == "NotAuthorized"
    assert refused[0].json()["message"] == "User has insufficient permissions."
    assert [r.status_code for r in claimed] == [403, 403], claimed[0].text
    assert stored.status_code == 200, stored.text
    assert latest.status_code == 200, latest.text
    assert [m["text"] for m in latest.json()["messages"]] == ["Hey! How are you?"]
    assert posted_by_users == []
    assert own.status_code == 200 and admin.status_code == 200
    assert [(p.get("roomId"), p["text"]) for p in rocket.posted] == [
        ("ROOM1", plain["text"]),
        ("support", plain["text"]),
    ]
    assert (
        "role 'user' of 'support' may not send to Rocket.Chat from conversation 'support' "
        "(not a Rocket.Chat conversation id, <room id>:<user id>)" in caplog.text
    )
    assert "role 'user' of 'support' may not store a user message from Rocket.Chat" in (caplog.text)
