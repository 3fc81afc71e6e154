"""Rocket.Chat end to end: a fake Rocket.Chat sends webhooks to the whole server (concertbot
and its rasa-sdk action server) and receives the bot's replies through its REST API."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from server.channels.rocketchat import (
    RecentMessageIds,
    RocketChatInput,
    rocketchat_messages,
    text_pieces,
)
from server.channels.rocketchat_api import RocketChatAPI, RocketChatError, RocketChatUnavailable
from tests.channels.conftest import concertbot_server
from tests.channels.fake_rocketchat import FakeRocketChat
from tests.serving import failing_handshakes, serving, serving_from_the_first_retry
from tests.trackers.persistence_fixtures import (
    REDIS,
    delete_redis_keys,
    require_service,
    unique_name,
)

BOT, PASSWORD, HOOK_TOKEN = "concertbot", "bot-password", "outgoing-hook-token"


@contextlib.asynccontextmanager
async def rocketchat_bot(
    model: Path,
    action_url: str,
    webhook_token: str | None = HOOK_TOKEN,
    stores: dict[str, Any] | None = None,
) -> AsyncIterator[tuple[FakeRocketChat, str, str]]:
    """A fake Rocket.Chat and the bot wired to it; yields (rocket, webhook URL, bot URL)."""
    rocket = FakeRocketChat(BOT, PASSWORD)
    async with serving(rocket.app) as rocket_url:
        rocket.site_url = rocket_url
        async with concertbot_server(
            model, action_url, _credentials(rocket_url, webhook_token), stores=stores
        ) as bot_url:
            yield rocket, f"{bot_url}/webhooks/rocketchat/webhook", bot_url


def _credentials(rocket_url: str, webhook_token: str | None) -> dict[str, Any]:
    credentials: dict[str, Any] = {
        "rocketchat": {"user": BOT, "password": PASSWORD, "server_url": rocket_url}
    }
    if webhook_token:
        credentials["rocketchat"]["webhook_token"] = webhook_token
    return credentials


@pytest.fixture
async def wired(
    concertbot_model: Path,
    action_servers,  # noqa: ANN001
) -> AsyncIterator[tuple[FakeRocketChat, str, str]]:
    async with rocketchat_bot(concertbot_model, action_servers["concertbot"].url) as wired:
        yield wired


async def _tracker(bot_url: str, conversation: str) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=bot_url) as client:
        return (await client.get(f"/conversations/{conversation}/tracker")).json()


async def test_a_user_message_gets_the_bots_reply_in_the_room(wired) -> None:  # noqa: ANN001
    rocket, webhook, bot_url = wired
    async with httpx.AsyncClient() as client:
        for path in ("/webhooks/rocketchat/", "/webhooks/rocketchat"):  # Rasa's health route
            health = await client.get(bot_url + path)
            assert (health.status_code, health.json()) == (200, {"status": "ok"}), path
    payload = rocket.outgoing_payload(
        token=HOOK_TOKEN, user_id="AliceId", user_name="alice", text="search concerts"
    )
    answer = await rocket.send(webhook, payload)
    assert answer.status_code == 200
    # Rocket.Chat takes it as a success, neither retried nor posted as a message of its own.
    assert rocket.outgoing_outcome(answer) == "done"
    assert rocket.texts_in("GENERAL") == ["Foo Fighters, Katy Perry"]
    assert rocket.logins == 1


async def test_every_answer_to_an_outgoing_webhook_is_one_it_does_not_retry(
    wired,  # noqa: ANN001
) -> None:
    """Rocket.Chat 6 retries an outgoing webhook call whose answer is empty, as one that
    failed (0.1 s, 1 s, 10 s, 100 s... later, "Retry failed URL calls" being on by default).
    Before, the webhook answered 200 with an empty body (as Rasa, which so answers each
    message up to seven times): every message was sent again and again."""
    rocket, webhook, _ = wired
    message = rocket.outgoing_payload(token=HOOK_TOKEN, user_id="U1", user_name="u", text="hi")
    own = rocket.outgoing_payload(token=HOOK_TOKEN, user_id=rocket.bot_id, user_name=BOT, text="x")
    for payload in (message, own, message, {"token": HOOK_TOKEN, "not": "a message"}):
        answer = await rocket.send(webhook, payload)
        assert rocket.outgoing_outcome(answer) == "done"
    answer = await rocket.send(webhook, b"not json")
    assert rocket.outgoing_outcome(answer) == "done"
    assert rocket.texts_in("GENERAL") == ["Hey there!"]


async def test_a_wrong_or_missing_token_is_refused(wired) -> None:  # noqa: ANN001
    rocket, webhook, _ = wired
    wrong = rocket.outgoing_payload(token="guess", user_id="AliceId", user_name="alice", text="hi")
    answer = await rocket.send(webhook, wrong)
    assert answer.status_code == 401
    body = answer.json()
    assert body["status"] == "failure" and body["code"] == 401
    assert "token" in body["message"]
    missing = dict(wrong)
    del missing["token"]
    assert (await rocket.send(webhook, missing)).status_code == 401
    assert rocket.posted == []


async def test_a_flood_of_wrong_tokens_logs_a_bounded_number_of_lines(
    wired,  # noqa: ANN001
    caplog: pytest.LogCaptureFixture,
) -> None:
    rocket, webhook, _ = wired
    wrong = rocket.outgoing_payload(token="guess", user_id="AliceId", user_name="alice", text="hi")
    caplog.set_level(logging.INFO)
    # 40 refusals (60 before: 25 ms of CPU each), twice the 20 lines a minute logs in full.
    for _ in range(40):
        assert (await rocket.send(webhook, wrong)).status_code == 401
    lines = [r.getMessage() for r in caplog.records if "efused" in r.getMessage()]
    assert 1 <= len(lines) <= 25, len(lines)
    assert "POST /webhooks/rocketchat/webhook" in lines[0] and "wrong webhook token" in lines[0]
    assert "guess" not in caplog.text


async def test_the_bots_own_messages_are_ignored(wired) -> None:  # noqa: ANN001
    rocket, webhook, bot_url = wired
    own = rocket.outgoing_payload(
        token=HOOK_TOKEN, user_id=rocket.bot_id, user_name=BOT, text="Hey there!"
    )
    integration = rocket.outgoing_payload(
        token=HOOK_TOKEN, user_id="x", user_name="other.bot", text="hi", bot={"i": "integrationId"}
    )
    assert (await rocket.send(webhook, own)).status_code == 200
    assert (await rocket.send(webhook, integration)).status_code == 200
    assert rocket.posted == []
    for conversation in (f"GENERAL:{rocket.bot_id}", "GENERAL:x"):
        events = (await _tracker(bot_url, conversation))["events"]
        assert [e for e in events if e["event"] == "user"] == []


async def test_own_messages_are_ignored_when_the_bot_logs_in_by_email(
    concertbot_model: Path,
    action_servers,  # noqa: ANN001
) -> None:
    rocket = FakeRocketChat(BOT, PASSWORD)
    url = action_servers["concertbot"].url
    async with serving(rocket.app) as rocket_url:
        login = {"user": rocket.bot_email, "password": PASSWORD, "server_url": rocket_url}
        async with concertbot_server(concertbot_model, url, {"rocketchat": login}) as bot_url:
            # The first call this process gets is the bot's own reply (another worker, or
            # before a restart, posted it): its user_name is not the e-mail it logs in with.
            own = rocket.outgoing_payload(
                token="", user_id=rocket.bot_id, user_name=BOT, text="Hey there!"
            )
            assert (await rocket.send(f"{bot_url}/webhooks/rocketchat/webhook", own)).is_success
            events = (await _tracker(bot_url, f"GENERAL:{rocket.bot_id}"))["events"]
    # Before: it was taken for a user's message and answered, a loop with itself.
    assert rocket.posted == []
    assert [e for e in events if e["event"] == "user"] == []


async def test_two_users_in_one_room_are_two_conversations(wired) -> None:  # noqa: ANN001
    rocket, webhook, bot_url = wired
    for user_id, name, text in [
        ("AliceId", "alice", "search concerts"),
        ("BobId", "bob", "hi"),
        ("AliceId", "alice", "compare reviews"),
    ]:
        payload = rocket.outgoing_payload(
            token=HOOK_TOKEN, user_id=user_id, user_name=name, text=text
        )
        assert (await rocket.send(webhook, payload)).status_code == 200
    alice = await _tracker(bot_url, "GENERAL:AliceId")
    bob = await _tracker(bot_url, "GENERAL:BobId")
    assert rocket.texts_in("GENERAL")[:2] == ["Foo Fighters, Katy Perry", "Hey there!"]
    assert rocket.texts_in("GENERAL")[2].startswith("concerts from slots: [{'artist'")
    assert alice["slots"]["concerts"] is not None
    assert bob["slots"]["concerts"] is None
    assert [e["text"] for e in alice["events"] if e["event"] == "user"] == [
        "search concerts",
        "compare reviews",
    ]


async def test_an_expired_login_is_renewed_once(wired) -> None:  # noqa: ANN001
    rocket, webhook, _ = wired
    first = rocket.outgoing_payload(
        token=HOOK_TOKEN, user_id="AliceId", user_name="alice", text="hi"
    )
    await rocket.send(webhook, first)
    rocket.expire_logins()
    second = rocket.outgoing_payload(
        token=HOOK_TOKEN, user_id="AliceId", user_name="alice", text="search venues"
    )
    await rocket.send(webhook, second)
    assert rocket.texts_in("GENERAL") == [
        "Hey there!",
        "here are some venues I found",
        "Big Arena, Rock Cellar",
    ]
    assert rocket.unauthorized == 1
    assert rocket.logins == 2


async def test_livechat_visitor_messages_are_answered_in_the_livechat_room(
    wired,  # noqa: ANN001
) -> None:
    rocket, webhook, bot_url = wired
    payload = rocket.livechat_payload(
        room_id="LiveRoom1",
        visitor_id="VisitorId1",
        visitor_name="guest-1",
        messages=[
            {
                "_id": "m1",
                "u": {"_id": "VisitorId1", "username": "guest-1", "name": "guest-1"},
                "username": "guest-1",
                "msg": "hi",
                "ts": "2024-01-01T00:00:00.000Z",
            },
            {
                "_id": "m2",
                "u": {"_id": rocket.bot_id, "username": BOT, "name": "Bot"},
                "username": BOT,
                "agentId": rocket.bot_id,
                "msg": "Hey there!",
                "ts": "2024-01-01T00:00:01.000Z",
            },
        ],
    )
    answer = await rocket.send(webhook, payload, **{"X-RocketChat-Livechat-Token": HOOK_TOKEN})
    assert answer.status_code == 200
    assert rocket.texts_in("LiveRoom1") == ["Hey there!"]
    tracker = await _tracker(bot_url, "LiveRoom1:VisitorId1")
    assert [e["text"] for e in tracker["events"] if e["event"] == "user"] == ["hi"]


async def test_a_livechat_visitors_page_views_and_closing_comment_are_not_messages(
    wired,  # noqa: ANN001
) -> None:
    """With "Send visitor navigation history on webhook request", Rocket.Chat sends each page
    the visitor opens ("<title> - <url>", written by rocket.cat: an agent's message); when the
    visitor closes the chat, its closing comment ("Closed by visitor", written by the visitor,
    `closingMessage`) comes as a message of theirs. Before, the bot answered the closing
    comment, in the closed chat, as something the visitor said."""
    rocket, webhook, bot_url = wired
    visitor = {"_id": "VisitorId2", "username": "guest-2", "name": "guest-2"}
    page = rocket.page_view("LiveRoom2", "Pricing", "https://shop.example.test/pricing")
    said = {"_id": "m3", "rid": "LiveRoom2", "u": visitor, "msg": "hi"}
    closing = {"_id": "m4", "rid": "LiveRoom2", "u": visitor, "msg": "Closed by visitor"}
    for stored, kind in (
        (page, "livechat_navigation_history"),
        (said, None),
        (closing, "livechat-close"),
    ):
        message = rocket.livechat_message(stored, visitor, kind)
        payload = rocket.livechat_payload(
            room_id="LiveRoom2", visitor_id="VisitorId2", visitor_name="guest-2", messages=[message]
        )
        answer = await rocket.send(webhook, payload, **{"X-RocketChat-Livechat-Token": HOOK_TOKEN})
        assert answer.status_code == 200
    tracker = await _tracker(bot_url, "LiveRoom2:VisitorId2")
    assert [e["text"] for e in tracker["events"] if e["event"] == "user"] == ["hi"]
    assert rocket.texts_in("LiveRoom2") == ["Hey there!"]


async def test_a_closed_livechats_transcript_is_not_answered_again(
    wired,  # noqa: ANN001
) -> None:
    """With "Send request on chat close", Rocket.Chat posts the whole transcript (type
    LivechatSession, its messages without ids) to the same webhook: every visitor message
    of it was handled again, the bot answering the closed chat."""
    rocket, webhook, bot_url = wired
    token = {"X-RocketChat-Livechat-Token": HOOK_TOKEN}
    visitor = {"room_id": "LiveRoom2", "visitor_id": "VisitorId2", "visitor_name": "guest-2"}
    hi = {"username": "guest-2", "msg": "hi", "ts": "2024-01-01T00:00:00.000Z"}
    new = rocket.livechat_payload(
        **visitor, messages=[{"_id": "m1", "u": {"_id": "VisitorId2", "username": "guest-2"}, **hi}]
    )
    assert (await rocket.send(webhook, new, **token)).status_code == 200
    answer = {"username": BOT, "agentId": rocket.bot_id, "msg": "Hey there!", "ts": hi["ts"]}
    closed = rocket.livechat_payload(**visitor, messages=[hi, answer], kind="LivechatSession")
    assert (await rocket.send(webhook, closed, **token)).status_code == 200
    assert rocket.texts_in("LiveRoom2") == ["Hey there!"]
    tracker = await _tracker(bot_url, "LiveRoom2:VisitorId2")
    assert [e["text"] for e in tracker["events"] if e["event"] == "user"] == ["hi"]


async def test_without_a_configured_token_any_webhook_is_taken(
    concertbot_model: Path,
    action_servers,  # noqa: ANN001
) -> None:
    url = action_servers["concertbot"].url
    async with rocketchat_bot(concertbot_model, url, webhook_token=None) as (rocket, webhook, _):
        payload = rocket.outgoing_payload(token="", user_id="U1", user_name="u1", text="hi")
        assert (await rocket.send(webhook, payload)).status_code == 200
        empty = await rocket.send(webhook, None)  # type: ignore[arg-type]
        assert empty.status_code == 200
    assert rocket.texts_in("GENERAL") == ["Hey there!"]


def test_rich_messages_become_rocketchat_attachments() -> None:
    message = {
        "text": "pick",
        "buttons": [{"title": "Yes", "payload": "/affirm"}],
        "image": "https://example.test/a.png",
    }
    assert rocketchat_messages("R1", message) == [
        {
            "roomId": "R1",
            "text": "pick",
            "attachments": [
                {
                    "actions": [
                        {
                            "type": "button",
                            "text": "Yes",
                            "msg": "/affirm",
                            "msg_in_chat_window": True,
                        }
                    ]
                }
            ],
        },
        {
            "roomId": "R1",
            "attachments": [{"image_url": "https://example.test/a.png", "collapsed": False}],
        },
    ]
    assert rocketchat_messages("R1", {"custom": {"channel": "#alerts", "text": "x"}}) == [
        {"channel": "#alerts", "text": "x"}
    ]


def test_a_link_button_opens_its_url() -> None:
    """Rocket.Chat's action button opens its `url`. Before (and in Rasa), a button's `url`
    was dropped: the button sent an empty message."""
    message = {"text": "Read more", "buttons": [{"title": "Docs", "url": "https://example.test/d"}]}
    (body,) = rocketchat_messages("R1", message)
    assert body["attachments"][0]["actions"] == [
        {"type": "button", "text": "Docs", "url": "https://example.test/d"}
    ]


def test_a_custom_message_naming_a_room_id_is_posted_there() -> None:
    """Rasa passes a custom message's keys to rocketchat_API's chat_post_message, whose
    `room_id` is the room posted to. Before, the message went to the conversation's room (a
    `roomId` was added, and Rocket.Chat ignores `room_id`)."""
    custom = {"text": "to ops", "room_id": "OpsRoom", "alias": "Bot"}
    assert rocketchat_messages("R1", {"custom": custom}) == [
        {"roomId": "OpsRoom", "text": "to ops", "alias": "Bot"}
    ]
    # With a `channel` too, the channel wins, as in Rasa (which drops `room_id`).
    both = {"text": "x", "channel": "#alerts", "room_id": "OpsRoom"}
    assert rocketchat_messages("R1", {"custom": both}) == [{"channel": "#alerts", "text": "x"}]


def test_a_custom_message_names_one_room_as_rocketchat_7_4_requires() -> None:
    """Rocket.Chat 7.4 and later refuse a `chat.postMessage` naming both `channel` and
    `roomId`, or holding a key it does not know. Before, a custom message holding both (or an
    empty `channel`, which Rasa takes for none) was sent so and refused: the message was lost."""
    both = {"text": "x", "channel": "#alerts", "roomId": "OpsRoom"}
    assert rocketchat_messages("R1", {"custom": both}) == [{"channel": "#alerts", "text": "x"}]
    empty = {"text": "x", "channel": "", "room_id": "OpsRoom"}
    assert rocketchat_messages("R1", {"custom": empty}) == [{"roomId": "OpsRoom", "text": "x"}]
    assert rocketchat_messages("R1", {"custom": {"text": "x", "channel": None}}) == [
        {"roomId": "R1", "text": "x"}
    ]


def test_a_custom_message_that_is_no_object_is_logged_as_lost(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A custom message is a `chat.postMessage` body, so an object. Before, a text or a
    list was left out without a word: the user got nothing and the log said nothing."""
    caplog.set_level(logging.WARNING)
    assert rocketchat_messages("R1", {"text": "hi", "custom": ["a", "b"]}) == [
        {"roomId": "R1", "text": "hi"}
    ]
    (line,) = [r.getMessage() for r in caplog.records]
    assert "custom message" in line and "R1" in line and "list" in line


def test_long_texts_are_cut_at_line_breaks_or_spaces() -> None:
    lines = "\n".join(["a" * 60] * 5)  # 304 characters
    assert rocketchat_messages("R1", {"text": lines}, max_length=130) == [
        {"roomId": "R1", "text": "\n".join(["a" * 60] * 2)},
        {"roomId": "R1", "text": "\n".join(["a" * 60] * 2)},
        {"roomId": "R1", "text": "a" * 60},
    ]
    buttons = [{"title": "Yes", "payload": "/affirm"}]
    parts = rocketchat_messages("R1", {"text": "b" * 250, "buttons": buttons}, max_length=100)
    assert [p["text"] for p in parts] == ["b" * 100, "b" * 100, "b" * 50]
    assert "attachments" not in parts[0] and parts[2]["attachments"][0]["actions"]


def test_a_long_text_is_never_cut_inside_a_character_people_see_as_one() -> None:
    """An emoji with a skin tone, a family joined by ZWJs, a flag, a letter with a combining
    accent: each is several code points, and was cut between them where the size limit fell
    (a thumb and a loose skin-tone swatch, a family in pieces, "FR" as two letters). Now cut
    between the characters a reader sees (grapheme clusters)."""
    import regex  # type: ignore[import-untyped]

    graphemes = [
        "\U0001f44d\U0001f3fd",
        "\U0001f468\u200d\U0001f469\u200d\U0001f467",
        "\U0001f1eb\U0001f1f7",
        "e\u0301",
    ]
    text = "".join(graphemes * 40)  # no space nor line break to cut at
    for max_length in range(100, 112):
        pieces = [p["text"] for p in rocketchat_messages("R1", {"text": text}, max_length)]
        assert "".join(pieces) == text
        for piece in pieces:
            assert len(piece.encode("utf-16-le")) // 2 <= max_length
            assert regex.findall(r"\X", piece)[0] in graphemes, (max_length, piece[:3])
            assert regex.findall(r"\X", piece)[-1] in graphemes, (max_length, piece[-3:])
    # One character longer than the limit (a letter under 150 accents) is still cut: no
    # post may pass Rocket.Chat's limit.
    zalgo = "a" + "\u0301" * 150
    assert [len(p) for p in text_pieces(zalgo, 100)] == [100, 51]


def test_a_long_text_with_windows_line_breaks_is_cut_before_them() -> None:
    """A text whose lines end in CR LF (a response written on Windows): CR LF is one line
    break (one grapheme cluster), dropped whole at a cut. Before, a piece was cut between
    the two and ended in a stray CR, or the next began with the line break, an empty
    first line."""
    for width in range(95, 101):
        text = "a" * width + "\r\n" + "b" * 50
        assert text_pieces(text, 100) == ["a" * width, "b" * 50], width
    lines = "\r\n".join(["word " * 5] * 40)
    for piece in text_pieces(lines, 100):
        assert not piece.endswith(("\r", "\n")) and not piece.startswith(("\r", "\n"))


def test_a_text_of_one_endless_character_is_cut_in_time_linear_in_its_length(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A letter under 200,000 combining accents (an echo of what a user typed, a broken
    action server): one grapheme cluster, cut at the limit. The clusters are read up to each
    cut only: before, the text's whole rest was read again for each piece (0.9 s of the
    event loop for 100,000 accents cut in pieces of 100, growing with the square)."""
    from server.channels import rocketchat

    read: list[int] = []

    class Counting:
        def __init__(self, pattern: Any) -> None:
            self.pattern = pattern

        def finditer(self, text: str, *args: Any) -> Iterator[Any]:
            for match in self.pattern.finditer(text, *args):
                read.append(match.end() - match.start())
                yield match

    monkeypatch.setattr(rocketchat, "_GRAPHEME", Counting(rocketchat._GRAPHEME))
    text = "a" + "\u0301" * 200_000
    pieces = text_pieces(text, 100)
    assert "".join(pieces) == text and len(pieces) == 2001
    assert sum(read) <= 2 * len(text)  # before: 200 million


def test_an_empty_text_is_not_posted() -> None:
    """Before, as in Rasa, a reply of blanks, or an empty paragraph between two blank lines
    too many, was posted as an empty message."""
    assert rocketchat_messages("R1", {"text": "Foo\n\n\n\nBar"}) == [
        {"roomId": "R1", "text": "Foo"},
        {"roomId": "R1", "text": "Bar"},
    ]
    assert rocketchat_messages("R1", {"text": " \n "}) == []
    # a paragraph of spaces alone is as empty a bubble (Rasa's split keeps it)
    assert rocketchat_messages("R1", {"text": "Foo\n\n  \n\nBar"}) == [
        {"roomId": "R1", "text": "Foo"},
        {"roomId": "R1", "text": "Bar"},
    ]
    buttons = [{"title": "Yes", "payload": "/affirm"}]  # with buttons, the text may be empty
    assert rocketchat_messages("R1", {"text": "", "buttons": buttons})[0]["text"] == ""


def test_a_long_text_with_buttons_posts_no_empty_piece_before_them() -> None:
    """A text with buttons, too long for one post, that begins with a line break: its pieces
    before the buttons' post skip the blank one, as a text without buttons does. Before, an
    empty message was posted first (an empty bubble in the room)."""
    buttons = [{"title": "Yes", "payload": "/affirm"}]
    posted = rocketchat_messages("R1", {"text": "\r\n" + "a" * 8, "buttons": buttons}, 5)
    assert [body["text"] for body in posted] == ["aaaaa", "aaa"]
    assert "attachments" in posted[-1]


async def test_a_retried_webhook_call_is_not_recorded_twice(wired) -> None:  # noqa: ANN001
    import asyncio

    rocket, webhook, bot_url = wired
    payload = rocket.outgoing_payload(
        token=HOOK_TOKEN, user_id="RetryId", user_name="retry", text="hi", room_id="R1"
    )
    # Rocket.Chat retries a call it timed out on, the first one maybe still running.
    answers = await asyncio.gather(rocket.send(webhook, payload), rocket.send(webhook, payload))
    later = await rocket.send(webhook, payload)
    live = rocket.livechat_payload(
        room_id="LiveRoom2",
        visitor_id="VisitorId2",
        visitor_name="guest-2",
        messages=[{"_id": "lm1", "u": {"_id": "VisitorId2"}, "username": "guest-2", "msg": "hi"}],
    )
    for _ in range(2):
        await rocket.send(webhook, live, **{"X-RocketChat-Livechat-Token": HOOK_TOKEN})
    tracker = await _tracker(bot_url, "R1:RetryId")
    live_tracker = await _tracker(bot_url, "LiveRoom2:VisitorId2")
    assert [a.status_code for a in (*answers, later)] == [200, 200, 200]
    # Before: each call was a turn, recorded and answered.
    assert [e["text"] for e in tracker["events"] if e["event"] == "user"] == ["hi"]
    assert rocket.texts_in("R1") == ["Hey there!"]
    assert [e["text"] for e in live_tracker["events"] if e["event"] == "user"] == ["hi"]
    assert rocket.texts_in("LiveRoom2") == ["Hey there!"]


async def test_a_message_in_a_thread_is_answered_in_that_thread(wired) -> None:  # noqa: ANN001
    """Rocket.Chat sends a thread's message with the thread's id (`tmid`). Before, the bot
    answered in the room's main timeline, away from the thread (as Rasa does)."""
    rocket, webhook, bot_url = wired
    in_thread = rocket.outgoing_payload(
        token=HOOK_TOKEN, user_id="AliceId", user_name="alice", text="hi", thread="ThreadTop0001"
    )
    in_room = rocket.outgoing_payload(
        token=HOOK_TOKEN, user_id="AliceId", user_name="alice", text="search concerts"
    )
    for payload in (in_thread, in_room):
        assert (await rocket.send(webhook, payload)).status_code == 200
    assert [(p["text"], p.get("tmid")) for p in rocket.posted] == [
        ("Hey there!", "ThreadTop0001"),
        ("Foo Fighters, Katy Perry", None),
    ]
    # One conversation for the user in the room, whether they write in a thread or not.
    tracker = await _tracker(bot_url, "GENERAL:AliceId")
    assert [e["text"] for e in tracker["events"] if e["event"] == "user"] == [
        "hi",
        "search concerts",
    ]


def test_a_reply_in_a_thread_keeps_every_post_in_it() -> None:
    reply = {"text": "one\n\ntwo", "image": "https://example.test/a.png"}
    bodies = rocketchat_messages("R1", reply, thread="T1")
    assert [(b.get("text"), b["tmid"]) for b in bodies] == [
        ("one", "T1"),
        ("two", "T1"),
        (None, "T1"),
    ]
    # A custom message naming another room or channel is not put in this room's thread.
    elsewhere = rocketchat_messages("R1", {"custom": {"channel": "#ops", "text": "x"}}, thread="T1")
    assert "tmid" not in elsewhere[0]


async def test_an_outgoing_webhooks_trigger_word_is_not_part_of_the_message(
    wired,  # noqa: ANN001
) -> None:
    """With trigger words set, Rocket.Chat calls the webhook only for messages starting with
    one and says which (`trigger_word`). Before, the word was read as part of the message
    (as in Rasa): "@concertbot search concerts" was no longer understood."""
    rocket, webhook, bot_url = wired
    for text in ("@concertbot: search concerts", "@concertbot", "@concertbots"):
        payload = rocket.outgoing_payload(
            token=HOOK_TOKEN, user_id="AliceId", user_name="alice", text=text
        )
        assert (await rocket.send(webhook, {**payload, "trigger_word": "@concertbot"})).is_success
    tracker = await _tracker(bot_url, "GENERAL:AliceId")
    # The word alone, or beginning a longer word, is kept as written.
    assert [e["text"] for e in tracker["events"] if e["event"] == "user"] == [
        "search concerts",
        "@concertbot",
        "@concertbots",
    ]
    assert rocket.texts_in("GENERAL")[0] == "Foo Fighters, Katy Perry"


async def test_a_trigger_word_that_begins_a_longer_name_is_kept(wired) -> None:  # noqa: ANN001
    """Rocket.Chat matches a trigger word at the start of the text, so `@concertbot` also calls
    the webhook for `@concertbot.dev ...` (user names may hold `.` and `-`). Before, the word
    was cut off there and the bot read `.dev search concerts`; a word followed by a combining
    accent or an apostrophe lost its tail the same way. A word followed by a no-break space or
    a full-width colon is left out, as with a space or a colon."""
    rocket, webhook, bot_url = wired
    texts = (
        "@concertbot.dev search concerts",
        "@concertbot-test hi",
        "@concertbot\u2019s list",
        "@concertbote\u0301 hi",
        "@concertbot\u00a0: search concerts",
        "@concertbot\uff1asearch concerts",
    )
    for text in texts:
        payload = rocket.outgoing_payload(
            token=HOOK_TOKEN, user_id="AliceId", user_name="alice", text=text
        )
        payload["trigger_word"] = "@concertbot" if "\u0301" not in text else "@concertbote"
        assert (await rocket.send(webhook, payload)).is_success
    tracker = await _tracker(bot_url, "GENERAL:AliceId")
    assert [e["text"] for e in tracker["events"] if e["event"] == "user"] == [
        *texts[:4],
        "search concerts",
        "search concerts",
    ]


async def test_ids_that_are_no_strings_are_no_conversation(wired) -> None:  # noqa: ANN001
    """Rocket.Chat's room and user ids are strings. Before, an object or a list became a
    conversation named after its Python text (`{'a': 1}:U`) and the bot posted to a room of
    that name."""
    rocket, webhook, bot_url = wired
    hi = rocket.outgoing_payload(token=HOOK_TOKEN, user_id="U", user_name="u", text="hi")
    livechat = rocket.livechat_payload(
        room_id="LiveRoom", visitor_id="V", visitor_name="v", messages=[{"_id": "m1", "msg": "hi"}]
    )
    for payload in (
        {**hi, "channel_id": {"a": 1}},
        {**hi, "user_id": ["U"], "user_name": None},
        {**livechat, "_id": ["LiveRoom"]},
    ):
        answer = await rocket.send(webhook, payload, **{"X-RocketChat-Livechat-Token": HOOK_TOKEN})
        assert answer.status_code == 200
    assert rocket.posted == []
    for conversation in ("{'a': 1}:U", "GENERAL:['U']", "['LiveRoom']:V"):
        events = (await _tracker(bot_url, conversation))["events"]
        assert [e for e in events if e["event"] == "user"] == []


async def test_an_edited_message_is_answered_as_rasa_answers_it(wired) -> None:  # noqa: ANN001
    """Rocket.Chat sends an edited message again (an outgoing webhook's "Run on edits", on by
    default) with its id and `isEdited: true`. Before, it was taken for a retry of the
    original and ignored, logged as such; Rasa answers it. A retry of the edit is not."""
    rocket, webhook, bot_url = wired
    first = rocket.outgoing_payload(
        token=HOOK_TOKEN, user_id="EditId", user_name="editor", text="hi", room_id="R7"
    )
    edited = {**first, "text": "hello", "isEdited": True}
    answers = [await rocket.send(webhook, p) for p in (first, edited, edited)]
    tracker = await _tracker(bot_url, "R7:EditId")
    assert [a.status_code for a in answers] == [200, 200, 200]
    assert [e["text"] for e in tracker["events"] if e["event"] == "user"] == ["hi", "hello"]
    assert rocket.texts_in("R7") == ["Hey there!", "Hey there!"]


async def test_a_retry_that_another_worker_receives_is_not_answered_twice(
    concertbot_model: Path,
    action_servers,  # noqa: ANN001
    tmp_path: Path,
) -> None:
    """Two workers on one tracker store and one lock store, Rocket.Chat retrying a call (the
    first one still running, or done) on the other: before, each worker took the message,
    and the user read the bot's answer twice."""
    require_service("Redis", REDIS)
    prefix = unique_name("infra2_rc")
    stores = {
        "tracker_store": {"type": "sql", "dialect": "sqlite", "db": str(tmp_path / "bot.db")},
        "lock_store": {"type": "redis", "url": REDIS[0], "port": REDIS[1], "key_prefix": prefix},
    }
    url = action_servers["concertbot"].url
    try:
        async with (
            rocketchat_bot(concertbot_model, url, stores=stores) as (rocket, first, _),
            concertbot_server(
                concertbot_model, url, _credentials(rocket.site_url, HOOK_TOKEN), stores=stores
            ) as second_url,
        ):
            second = f"{second_url}/webhooks/rocketchat/webhook"
            payload = rocket.outgoing_payload(
                token=HOOK_TOKEN, user_id="TwoId", user_name="two", text="hi", room_id="R9"
            )
            answers = await asyncio.gather(
                rocket.send(first, payload), rocket.send(second, payload)
            )
            later = await rocket.send(second, payload)
            tracker = await _tracker(second_url, "R9:TwoId")
    finally:
        await delete_redis_keys(prefix)
    assert [a.status_code for a in (*answers, later)] == [200, 200, 200]
    assert [e["text"] for e in tracker["events"] if e["event"] == "user"] == ["hi"]
    assert rocket.texts_in("R9") == ["Hey there!"]


async def test_json_no_answer_could_hold_is_not_recorded(wired) -> None:  # noqa: ANN001
    rocket, webhook, bot_url = wired
    good = rocket.outgoing_payload(
        token=HOOK_TOKEN, user_id="OddId", user_name="odd", text="hi", room_id="R2"
    )
    async with httpx.AsyncClient() as client:
        for text in ('"hi \\ud83d"', "NaN", "1e400"):
            body = httpx.Response(200, json=good).text.replace('"hi"', text)
            assert (await client.post(webhook, content=body)).status_code == 200
    await rocket.send(webhook, good)
    async with httpx.AsyncClient(base_url=bot_url) as client:
        answer = await client.get("/conversations/R2:OddId/tracker")
    # Before: the surrogate was stored, and every later read of the conversation failed (500).
    assert answer.status_code == 200
    assert [e["text"] for e in answer.json()["events"] if e["event"] == "user"] == ["hi"]


def test_the_memory_of_message_ids_is_bounded() -> None:
    recent = RecentMessageIds(size=2)
    assert [recent.add(i) for i in ("a", "b", "a", "c")] == [True, True, False, True]
    assert recent.add("a")  # the oldest was forgotten when "c" came
    recent.forget("a")  # a message that could not be recorded: its retry is taken
    assert recent.add("a")


async def test_a_message_too_long_to_read_is_answered_in_the_room(wired) -> None:  # noqa: ANN001
    rocket, webhook, bot_url = wired
    payload = rocket.outgoing_payload(
        token=HOOK_TOKEN, user_id="LongId", user_name="long", text="a" * 100_001, room_id="R3"
    )
    answer = await rocket.send(webhook, payload)
    # Before: refused in the log only; the room heard nothing.
    assert answer.status_code == 200
    assert rocket.texts_in("R3") == [
        "The message is 100,001 characters long; at most 100,000 are read."
    ]
    tracker = await _tracker(bot_url, "R3:LongId")
    assert [e for e in tracker["events"] if e["event"] == "user"] == []


def test_a_huge_message_id_is_remembered_in_a_bounded_size() -> None:
    """Without `webhook_token` anyone may post webhooks: each remembered id held the whole
    `message_id` (up to the 10 MB body), 10,000 of them, and the id was stored with the
    user event. Now a long id is remembered (and stored) as its digest: retries of it are
    still told apart from other messages."""
    channel = RocketChatInput.from_credentials(
        {
            "user": BOT,
            "password": PASSWORD,
            "server_url": "http://127.0.0.1:9",
            "webhook_token": "t",
        }
    )

    def ids(message_id: str, text: str = "hi", **more: object) -> list[str | None]:
        payload = {"channel_id": "R1", "user_id": "U1", "text": text, "message_id": message_id}
        found = channel._user_messages({**payload, **more})
        return [i for i, _ in found] + [m.message_id for _, m in found]

    huge_a, huge_b = "a" * 1_000_000, "a" * 999_999 + "b"
    first, stored = ids(huge_a)
    assert first is not None and len(first) <= 100 and stored == first
    assert ids(huge_a) == [first, first]  # a retry: the same id
    assert ids(huge_b)[0] != first
    edited = ids(huge_a, "hello", isEdited=True)[0]
    assert edited is not None and len(edited) <= 100 and edited != first
    assert ids("Gs7ZPXrLkdN9kH3oP") == ["Gs7ZPXrLkdN9kH3oP"] * 2  # Rocket.Chat's own: as sent


@pytest.mark.parametrize("written", ["{url}\n", "  {url}", "\t{url}"])
async def test_a_server_url_with_a_line_break_or_a_space_before_it_is_read_as_rasa_reads_it(
    written: str,
) -> None:
    """A URL from an environment variable or a file often ends with a line break: Rasa's
    Rocket.Chat client (requests) logs in all the same. Before, every login failed (httpx
    refused the line break; a space before the scheme was read as a path)."""
    rocket = FakeRocketChat(BOT, PASSWORD)
    async with serving(rocket.app) as rocket_url:
        url = written.format(url=rocket_url)
        channel = RocketChatInput.from_credentials(
            {"user": BOT, "password": PASSWORD, "server_url": url}
        )
        try:
            await channel.api.login()
        finally:
            await channel.api.aclose()
    assert rocket.logins == 1


async def test_a_refused_login_says_why() -> None:
    """Before, only the status: a wrong password and two-factor authentication on the bot
    user (e-mail codes are on by default for a user with a verified address) read alike."""
    rocket = FakeRocketChat(BOT, PASSWORD)
    async with serving(rocket.app) as rocket_url:
        wrong = RocketChatAPI(rocket_url, BOT, "wrong")
        with pytest.raises(RocketChatError, match=r"'concertbot' \(HTTP 401 Unauthorized\)"):
            await wrong.login()
        rocket.two_factor = True
        api = RocketChatAPI(rocket_url, BOT, PASSWORD)
        with pytest.raises(RocketChatError, match=r"\(HTTP 401 totp-required: turn two-factor"):
            await api.login()
        await wrong.aclose()
        await api.aclose()


async def test_a_login_answer_nested_too_deeply_is_a_refused_login() -> None:
    """Before, a RecursionError escaped the login: the webhook whose message made the bot
    look up its own id answered 500, and the message was not answered."""
    from fastapi import FastAPI
    from fastapi.responses import Response

    app = FastAPI()

    async def login() -> Response:
        return Response(b"[" * 100_000 + b"]" * 100_000, media_type="application/json")

    app.add_api_route("/api/v1/login", login, methods=["POST"])
    async with serving(app) as rocket_url:
        api = RocketChatAPI(rocket_url, BOT, PASSWORD)
        try:
            with pytest.raises(RocketChatUnavailable, match=r"refused the login .*\(HTTP 200\)"):
                await api.login()
        finally:
            await api.aclose()


async def test_an_answer_trickling_in_is_bounded_by_the_timeout_as_a_whole() -> None:
    """httpx bounds each read by `timeout`: an answer sent a few bytes at a time, each piece
    within it, held the post (and the conversation's lock) as long as it trickled."""
    import asyncio

    from fastapi import FastAPI
    from fastapi.responses import JSONResponse, StreamingResponse

    app = FastAPI()

    async def login() -> JSONResponse:
        return JSONResponse({"status": "success", "data": {"authToken": "t", "userId": "B"}})

    async def post_message() -> StreamingResponse:
        async def trickle() -> Any:
            for piece in ('{"success"', ": ", "true", "}"):
                await asyncio.sleep(0.25)
                yield piece.encode()

        return StreamingResponse(trickle(), media_type="application/json")

    app.add_api_route("/api/v1/login", login, methods=["POST"])
    app.add_api_route("/api/v1/chat.postMessage", post_message, methods=["POST"])
    async with serving(app) as url:
        api = RocketChatAPI(url, BOT, PASSWORD, timeout=0.6)
        try:
            with pytest.raises(RocketChatUnavailable, match="did not answer within 0.6 s"):
                await api.post_message({"roomId": "R1", "text": "hi"})
        finally:
            await api.aclose()


async def test_a_rocketchat_whose_certificate_is_not_trusted_is_logged_as_such(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before, `cannot reach Rocket.Chat at ...: ConnectError`, as for one that is down: nothing
    said that TLS verification failed (as the callback channel now says). Not tried again, as
    a connection refused is: no retry will trust the certificate."""
    from server import http_clients
    from tests.tls_certificates import self_signed

    pauses: list[float] = []

    async def pause(delay: float) -> None:
        pauses.append(delay)

    monkeypatch.setattr(http_clients, "_pause", pause)

    rocket = FakeRocketChat(BOT, PASSWORD)
    cert, key = self_signed(tmp_path)
    async with serving(rocket.app, ssl_certfile=str(cert), ssl_keyfile=str(key)) as url:
        api = RocketChatAPI(url, BOT, PASSWORD)
        try:
            with pytest.raises(RocketChatUnavailable, match="CERTIFICATE_VERIFY_FAILED"):
                await api.login()
        finally:
            await api.aclose()
    assert rocket.logins == 0
    assert pauses == []


async def test_a_cookie_an_answer_sets_is_not_sent_back() -> None:
    """Rasa's Rocket.Chat client (requests, no session) never sends a cookie back. Before, the
    pooled client kept the cookie the login's or a post's answer set (a load balancer's, a
    proxy's session) and sent it with every later post, whatever the conversation."""
    rocket = FakeRocketChat(BOT, PASSWORD)
    rocket.set_cookie = "session=alice-room-R1"
    async with serving(rocket.app) as url:
        api = RocketChatAPI(url, BOT, PASSWORD)
        try:
            await api.post_message({"roomId": "R1", "text": "for alice"})
            await api.post_message({"roomId": "R2", "text": "for bob"})
        finally:
            await api.aclose()
    assert rocket.texts_in("R2") == ["for bob"]
    assert rocket.cookies_sent == [None, None]


@pytest.mark.parametrize("trouble", ["slow", "refused"])
async def test_turns_waiting_for_a_login_that_fails_share_its_failure(trouble: str) -> None:
    """Many users at once while Rocket.Chat does not answer the login (or refuses it): the
    posts that waited for the login in flight are answered by its failure. Before, each
    tried a login of its own once the last had failed, one after another: the fifth user's
    turn held its conversation five timeouts, and each refusal counted towards Rocket.Chat
    blocking the bot user."""
    rocket = FakeRocketChat(BOT, PASSWORD)
    password = PASSWORD
    if trouble == "slow":
        rocket.login_stall = 5.0
    else:
        rocket.login_stall, password = 0.2, "the-password-was-changed"
    async with serving(rocket.app) as url:
        api = RocketChatAPI(url, BOT, password, timeout=0.5)
        try:
            posts = [api.post_message({"roomId": f"R{n}", "text": "hi"}) for n in range(5)]
            outcomes = await asyncio.gather(*posts, return_exceptions=True)
            assert all(isinstance(o, RocketChatUnavailable) for o in outcomes), outcomes
            assert rocket.login_calls == 1
            # The login is tried again by the next post, once the failed one is over.
            with pytest.raises(RocketChatUnavailable):
                await api.post_message({"roomId": "R1", "text": "again"})
            assert rocket.login_calls == 2
        finally:
            await api.aclose()


async def test_a_200_that_is_not_rocketchats_answer_is_a_lost_post() -> None:
    """A proxy's page answered 200 (a maintenance page, a login portal) for a post that never
    reached Rocket.Chat. Before, the post counted as made: the reply was lost without a line
    in the log. Rocket.Chat answers every post it made with `"success": true`."""
    rocket = FakeRocketChat(BOT, PASSWORD)
    async with serving(rocket.app) as url:
        api = RocketChatAPI(url, BOT, PASSWORD)
        try:
            await api.post_message({"roomId": "R1", "text": "first"})
            rocket.failure = (200, "<html>Down for maintenance</html>")
            with pytest.raises(RocketChatError, match=r"HTTP 200 without Rocket.Chat's success"):
                await api.post_message({"roomId": "R1", "text": "lost"})
        finally:
            await api.aclose()
    assert rocket.texts_in("R1") == ["first"]


async def test_an_answer_inflating_past_the_limit_is_not_read_whole() -> None:
    """20 KB of gzip inflating to 20 MB, as a broken proxy or a hostile `server_url` may
    answer: read up to the limit every other outgoing client keeps (10 MB, decompressed),
    then refused. Before, inflated whole into memory, however large, each post."""
    import gzip

    from fastapi import FastAPI, Response

    huge = b'{"success": true, "pad": "' + b"a" * 20_000_000 + b'"}'
    bomb = gzip.compress(huge)
    assert len(bomb) < 100_000
    app = FastAPI()

    async def login() -> dict[str, Any]:
        return {"status": "success", "data": {"authToken": "t", "userId": "B"}}

    async def post_message() -> Response:
        headers = {"content-encoding": "gzip"}
        return Response(bomb, media_type="application/json", headers=headers)

    app.add_api_route("/api/v1/login", login, methods=["POST"])
    app.add_api_route("/api/v1/chat.postMessage", post_message, methods=["POST"])
    async with serving(app) as url:
        api = RocketChatAPI(url, BOT, PASSWORD)
        try:
            with pytest.raises(RocketChatError, match="more than 10485760 bytes"):
                await api.post_message({"roomId": "R1", "text": "hi"})
        finally:
            await api.aclose()


async def test_a_login_redirected_elsewhere_says_where_to() -> None:
    """A proxy sending `http://` on to `https://` (or another path): the redirect is not
    followed (the password would go wherever it leads), and the refusal says where it leads.
    Before, "refused the login of bot user 'concertbot' (HTTP 308)", read as a wrong
    password."""
    from fastapi import FastAPI
    from fastapi.responses import RedirectResponse

    app = FastAPI()

    async def moved() -> RedirectResponse:
        return RedirectResponse("https://chat.example.test/api/v1/login", 308)

    app.add_api_route("/api/v1/login", moved, methods=["POST"])
    async with serving(app) as url:
        api = RocketChatAPI(url, BOT, PASSWORD)
        try:
            with pytest.raises(RocketChatError) as raised:
                await api.login()
        finally:
            await api.aclose()
    assert str(raised.value) == (
        "Rocket.Chat refused the login of bot user 'concertbot' (HTTP 308 redirecting to "
        "https://chat.example.test/api/v1/login, not followed: set server_url to where it "
        "leads, https://chat.example.test)"
    )


class _ClosingIdleConnections(BaseHTTPRequestHandler):
    """Rocket.Chat's login and post, on a server whose keep-alive timeout (here 1.2 s) fires
    as a request arrives on the connection it is closing: no answer, the connection closed.
    Rocket.Chat's own (Node) closes idle connections after 5 s, httpx's default kept them 5 s."""

    protocol_version = "HTTP/1.1"
    posted: list[str] = []

    def do_POST(self) -> None:  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
        idle = time.monotonic() - getattr(self, "answered_at", time.monotonic())
        if idle > 1.2:
            self.close_connection = True
            return
        answer: dict[str, Any]
        if self.path == "/api/v1/login":
            answer = {"status": "success", "data": {"authToken": "t", "userId": "B"}}
        else:
            self.posted.append(body["text"])
            answer = {"success": True}
        sent = json.dumps(answer).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(sent)))
        self.end_headers()
        self.wfile.write(sent)
        self.answered_at = time.monotonic()

    def log_message(self, *args: Any) -> None:
        pass


async def test_a_post_after_a_quiet_moment_does_not_meet_a_closing_connection() -> None:
    """Before, the pooled client kept an idle connection 5 s, as long as Rocket.Chat's Node
    keeps it: a post as Rocket.Chat closed it got no answer and was lost ("Server
    disconnected without sending a response"). Now kept 1 s, as the other outgoing clients'."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _ClosingIdleConnections)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    api = RocketChatAPI(f"http://127.0.0.1:{server.server_port}", BOT, PASSWORD)
    try:
        await api.post_message({"roomId": "R1", "text": "first"})
        await asyncio.sleep(1.5)  # the quiet moment itself, not a wait for something
        await api.post_message({"roomId": "R1", "text": "after a quiet moment"})
    finally:
        await api.aclose()
        server.shutdown()
        server.server_close()
    assert _ClosingIdleConnections.posted == ["first", "after a quiet moment"]


async def test_a_post_that_could_not_connect_is_tried_again_once_rocketchat_listens(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Rocket.Chat restarting, its port refusing connections for a moment: nothing of the
    call was sent, so it is tried again after a short back-off, and the reply shows once.
    Before, lost at the first refused connection."""
    rocket = FakeRocketChat(BOT, PASSWORD)
    async with serving_from_the_first_retry(rocket.app, monkeypatch) as (url, pauses):
        api = RocketChatAPI(url, BOT, PASSWORD)
        try:
            await api.post_message({"roomId": "R1", "text": "hi"})
        finally:
            await api.aclose()
    assert pauses == [0.25]  # the login's connection; the post's went through
    assert rocket.texts_in("R1") == ["hi"]


async def test_a_rocketchat_that_stays_down_is_given_up_after_two_more_tries(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from bench.tcp_proxy import free_port
    from server import http_clients

    pauses: list[float] = []

    async def pause(delay: float) -> None:
        pauses.append(delay)

    monkeypatch.setattr(http_clients, "_pause", pause, raising=False)
    caplog.set_level(logging.INFO)
    url = f"http://127.0.0.1:{free_port()}"
    api = RocketChatAPI(url, BOT, PASSWORD)
    try:
        with pytest.raises(RocketChatUnavailable, match=f"cannot reach Rocket.Chat at {url}"):
            await api.post_message({"roomId": "R1", "text": "hi"})
    finally:
        await api.aclose()
    assert pauses == [0.25, 1.0]
    assert f"rocketchat: /api/v1/login at {url}: cannot connect (" in caplog.text


class _HangingUpOnPosts(BaseHTTPRequestHandler):
    """Rocket.Chat's login; a post is read whole, then the connection closed without an
    answer (a proxy restarting as the post went through): it may have been posted."""

    protocol_version = "HTTP/1.1"
    posted: list[str] = []

    def do_POST(self) -> None:  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
        if self.path != "/api/v1/login":
            self.posted.append(body["text"])
            self.close_connection = True
            return
        sent = json.dumps({"status": "success", "data": {"authToken": "t", "userId": "B"}})
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(sent)))
        self.end_headers()
        self.wfile.write(sent.encode())

    def log_message(self, *args: Any) -> None:
        pass


async def test_a_post_that_went_out_is_not_tried_again() -> None:
    """`chat.postMessage` is not idempotent: a post that reached the server and got no
    answer may be in the room already, and a retry would show it twice."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _HangingUpOnPosts)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    api = RocketChatAPI(f"http://127.0.0.1:{server.server_port}", BOT, PASSWORD)
    try:
        with pytest.raises(RocketChatError, match="disconnected without sending a response"):
            await api.post_message({"roomId": "R1", "text": "once"})
    finally:
        await api.aclose()
        server.shutdown()
        server.server_close()
    assert _HangingUpOnPosts.posted == ["once"]


async def test_tries_of_a_call_that_could_not_connect_stay_within_the_timeout() -> None:
    """A connection that fails slowly (a TLS proxy closing it after 0.6 s: its backend is
    down) is not tried again past `timeout`, which bounds the call as a whole, retries and
    their pauses included: the conversation's lock is held that long at most. Before, each
    try had a `timeout` of its own: three tries and 1.25 s of pauses, 3.05 s for a 1 s
    timeout (3 × timeout + 1.25 s at most)."""
    async with failing_handshakes(after=0.6) as (url, taken):
        api = RocketChatAPI(url, BOT, PASSWORD, timeout=1.0)
        try:
            with pytest.raises(RocketChatUnavailable, match=f"Rocket.Chat at {url}"):
                await api.post_message({"roomId": "R1", "text": "hi"})
        finally:
            await api.aclose()
    # One try, or two when the pause leaves time; never the third (0.6 + 0.25 + 0.6 s).
    assert 1 <= len(taken) < 3
