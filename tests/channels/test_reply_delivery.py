"""A reply a channel cannot shape or deliver never costs the user's turn: the message and
what the bot did are stored, the failure is logged, and the webhook still answers."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import socketio
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from tests.channels.conftest import concertbot_server
from tests.channels.fake_rocketchat import FakeRocketChat
from tests.serving import serving

BOT, PASSWORD = "concertbot", "bot-password"
ODD_BUTTONS = {"text": "pick one", "buttons": ["Yes", "No"]}


@contextlib.asynccontextmanager
async def action_server(response: dict[str, Any]) -> AsyncIterator[str]:
    """An action server whose every action answers `response` (rasa-sdk's wire format)."""
    app = FastAPI()

    async def webhook(request: Request) -> JSONResponse:
        return JSONResponse({"events": [], "responses": [response]})

    app.add_api_route("/webhook", webhook, methods=["POST"])
    async with serving(app) as url:
        yield f"{url}/webhook"


async def _user_texts(bot_url: str, conversation: str) -> list[str]:
    async with httpx.AsyncClient(base_url=bot_url) as client:
        events = (await client.get(f"/conversations/{conversation}/tracker")).json()["events"]
    return [e["text"] for e in events if e["event"] == "user"]


async def test_buttons_that_are_not_objects_do_not_lose_a_socketio_turn(
    concertbot_model: Path,
) -> None:
    async with (
        action_server(ODD_BUTTONS) as action_url,
        concertbot_server(concertbot_model, action_url, {"socketio": {}}) as bot_url,
    ):
        client = socketio.AsyncClient(reconnection=False)
        inbox: list[Any] = []
        client.on("bot_uttered", inbox.append)
        await client.connect(bot_url, transports=["websocket"])
        sid = client.get_sid()
        assert sid is not None
        await client.emit("user_uttered", {"message": "search concerts"})
        await client.emit("user_uttered", {"message": "hi"})
        for _ in range(100):
            if inbox and inbox[-1] == {"text": "Hey there!"}:
                break
            await client.sleep(0.05)
        await client.disconnect()
        texts = await _user_texts(bot_url, sid)
    # Before: shaping the buttons failed, and the turn was never stored.
    assert texts == ["search concerts", "hi"]
    assert inbox[0] == {
        "text": "pick one",
        "quick_replies": [
            {"content_type": "text", "title": "Yes", "payload": "Yes"},
            {"content_type": "text", "title": "No", "payload": "No"},
        ],
    }


async def test_buttons_that_are_not_objects_do_not_lose_a_rocketchat_turn(
    concertbot_model: Path,
) -> None:
    rocket = FakeRocketChat(BOT, PASSWORD)
    async with serving(rocket.app) as rocket_url, action_server(ODD_BUTTONS) as action_url:
        credentials = {"rocketchat": {"user": BOT, "password": PASSWORD, "server_url": rocket_url}}
        async with concertbot_server(concertbot_model, action_url, credentials) as bot_url:
            webhook = f"{bot_url}/webhooks/rocketchat/webhook"
            payload = rocket.outgoing_payload(
                token="", user_id="AliceId", user_name="alice", text="search concerts"
            )
            answer = await rocket.send(webhook, payload)
            texts = await _user_texts(bot_url, "GENERAL:AliceId")
    assert answer.status_code == 200
    assert texts == ["search concerts"]
    (posted,) = rocket.posted
    assert posted["attachments"][0]["actions"][1] == {
        "type": "button",
        "text": "No",
        "msg": "No",
        "msg_in_chat_window": True,
    }


async def test_a_rocketchat_that_fails_replies_keeps_the_turn(concertbot_model: Path) -> None:
    rocket = FakeRocketChat(BOT, PASSWORD)
    rocket.failure = (502, "<html>502 Bad Gateway</html>")
    async with serving(rocket.app) as rocket_url, action_server({"text": "x"}) as action_url:
        credentials = {"rocketchat": {"user": BOT, "password": PASSWORD, "server_url": rocket_url}}
        async with concertbot_server(concertbot_model, action_url, credentials) as bot_url:
            payload = rocket.outgoing_payload(
                token="", user_id="AliceId", user_name="alice", text="hi"
            )
            answer = await rocket.send(f"{bot_url}/webhooks/rocketchat/webhook", payload)
            texts = await _user_texts(bot_url, "GENERAL:AliceId")
    assert answer.status_code == 200
    assert texts == ["hi"]


async def test_a_reply_longer_than_rocketchat_takes_arrives_in_pieces(
    concertbot_model: Path,
) -> None:
    paragraph = "The band plays " + "loud " * 400 + "music.\n"  # 2,021 characters
    long_text = (paragraph * 6).strip() + " \U0001f3b8" * 1000  # and 1,000 guitars (2 units)
    rocket = FakeRocketChat(BOT, PASSWORD)
    async with serving(rocket.app) as rocket_url, action_server({"text": long_text}) as url:
        credentials = {"rocketchat": {"user": BOT, "password": PASSWORD, "server_url": rocket_url}}
        async with concertbot_server(concertbot_model, url, credentials) as bot_url:
            payload = rocket.outgoing_payload(
                token="", user_id="AliceId", user_name="alice", text="search concerts"
            )
            await rocket.send(f"{bot_url}/webhooks/rocketchat/webhook", payload)
    # Before: Rocket.Chat refused the message (over 5,000 characters) and nothing arrived.
    texts = [str(text) for text in rocket.texts_in("GENERAL")]
    assert len(texts) == 4
    assert all(len(text.encode("utf-16-le")) // 2 <= 5000 for text in texts)
    assert " ".join(texts).split() == long_text.split()


async def _three_part_reply_to_rocketchat(
    rocket: FakeRocketChat, model: Path, **settings: Any
) -> list[str]:
    """A turn whose reply is three posts; returns the user texts the conversation holds."""
    async with serving(rocket.app) as rocket_url, action_server({"text": THREE_PARTS}) as url:
        credentials = {
            "rocketchat": {"user": BOT, "password": PASSWORD, "server_url": rocket_url, **settings}
        }
        async with concertbot_server(model, url, credentials) as bot_url:
            await _search_concerts(rocket, bot_url)
            return await _user_texts(bot_url, "GENERAL:AliceId")


async def _search_concerts(
    rocket: FakeRocketChat, bot_url: str, room: str = "GENERAL", thread: str | None = None
) -> None:
    """Alice asks the bot in `room` (in `thread`) through the outgoing webhook."""
    payload = rocket.outgoing_payload(
        token="",
        user_id="AliceId",
        user_name="alice",
        text="search concerts",
        room_id=room,
        thread=thread,
    )
    answer = await rocket.send(f"{bot_url}/webhooks/rocketchat/webhook", payload)
    assert answer.status_code == 200


THREE_PARTS = "Foo Fighters\n\nKaty Perry\n\nThe Beatles"


async def test_a_rocketchat_that_does_not_answer_is_waited_for_once_a_turn(
    concertbot_model: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rocket = FakeRocketChat(BOT, PASSWORD)
    rocket.stall = 1.5
    texts = await _three_part_reply_to_rocketchat(rocket, concertbot_model, timeout=0.3)
    assert texts == ["search concerts"]
    # Before: each of the three posts waited the timeout in turn, holding the conversation.
    assert rocket.post_calls == 1
    lost = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert "did not answer within 0.3 s" in lost[0]
    assert lost[1].startswith("rocketchat: 2 more bot messages to room GENERAL not sent")


async def test_a_rate_limited_bot_user_is_told_how_to_lift_the_limit(
    concertbot_model: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rocket = FakeRocketChat(BOT, PASSWORD)
    rocket.posts_per_minute = 1  # a bot user without the `bot` role, near its limit
    await _three_part_reply_to_rocketchat(rocket, concertbot_model)
    assert rocket.texts_in("GENERAL") == ["Foo Fighters"]
    # Before: the third post was tried too, refused as the second, and the log said why not.
    assert rocket.post_calls == 2
    lost = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert "the bot user 'concertbot' is rate-limited" in lost[0]
    assert "You must wait 42 seconds" in lost[0] and "`bot` role" in lost[0]
    assert lost[1].startswith("rocketchat: 1 more bot message to room GENERAL not sent")


async def test_a_refused_login_is_tried_once_a_turn(
    concertbot_model: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rocket = FakeRocketChat(BOT, "the-password-was-changed")
    texts = await _three_part_reply_to_rocketchat(rocket, concertbot_model)
    assert texts == ["search concerts"]
    # The webhook's login to learn the bot's id, then the first post's. Before: one more
    # for each other post, each a failure Rocket.Chat counts towards blocking the user.
    assert rocket.login_calls == 2
    lost = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert "refused the login of bot user 'concertbot' (HTTP 401 Unauthorized)" in lost[0]
    assert lost[1].startswith("rocketchat: 2 more bot messages to room GENERAL not sent")


async def test_a_turn_that_gave_up_on_rocketchat_does_not_cost_later_turns_their_posts(
    concertbot_model: Path,
) -> None:
    """The give-up is the turn's own: once Rocket.Chat answers again, the next turns (in
    another room and thread, or in the same room) post their whole reply."""
    rocket = FakeRocketChat(BOT, PASSWORD)
    rocket.stall = 3.0
    async with serving(rocket.app) as rocket_url, action_server({"text": THREE_PARTS}) as url:
        settings = {"user": BOT, "password": PASSWORD, "server_url": rocket_url, "timeout": 1}
        credentials = {"rocketchat": settings}
        async with concertbot_server(concertbot_model, url, credentials) as bot_url:
            await _search_concerts(rocket, bot_url)
            assert rocket.post_calls == 1  # the turn gave up after its first post
            rocket.stall = None
            await _search_concerts(rocket, bot_url, "R2", thread="T1")
            await _search_concerts(rocket, bot_url)
    parts = THREE_PARTS.split("\n\n")
    in_r2 = [p for p in rocket.posted if p.get("roomId") == "R2"]
    assert [(p["text"], p.get("tmid")) for p in in_r2] == [(text, "T1") for text in parts]
    assert rocket.texts_in("GENERAL")[-3:] == parts
