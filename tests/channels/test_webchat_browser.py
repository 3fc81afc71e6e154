"""botfront's rasa-webchat widget, in headless Chromium, against moodbot's socket.io channel.

Needs chromium, the playwright package and the widget's bundle, which
`tests/channels/webchat/fetch.sh` downloads (`npm pack`, checksum pinned; .ci/run calls it).
Skipped without them, except in CI.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from server.api.app import create_app
from server.api.runner import server_app
from server.api.server import ServerOptions
from server.channels import attach_channels, load_channels
from server.dialogue.messages import UserMessage
from tests.browser import CHROMIUM, CHROMIUM_ARGS, require, require_chromium, served_on_a_thread
from tests.scale.socketio_workers import socketio_workers

if TYPE_CHECKING:
    from playwright.sync_api import Page

WEBCHAT_VERSION = "1.0.1"
BUNDLE = Path(__file__).parent / "webchat" / ".cache" / f"rasa-webchat-{WEBCHAT_VERSION}.js"
# Where rasa-webchat keeps its state, the session id among it.
STORED_SESSION_ID = "JSON.parse(localStorage.getItem('chat_session')).session_id"
SOCKETIO = {
    "user_message_evt": "user_uttered",
    "bot_message_evt": "bot_uttered",
    "session_persistence": True,
    "metadata_key": "customData",
}


@pytest.fixture(scope="module")
def moodbot(moodbot_copy: Callable[[str], Path]) -> Path:
    return moodbot_copy("moodbot")


@pytest.fixture(scope="module")
def bot_url(moodbot: Path) -> Iterator[str]:
    app = server_app(
        ServerOptions(
            model_path=moodbot,
            enable_api=True,
            credentials={"socketio": SOCKETIO},
            cors=["*"],
            default_tracker_store={"type": "in_memory"},
        )
    )
    with served_on_a_thread(app) as url:
        yield url


# What the bot of the rich-messages test answers, by the user's text.
RICH: dict[str, dict[str, Any]] = {
    "paragraphs": {
        "text": "First paragraph.\n\nSecond paragraph.",
        "buttons": [{"title": "Yes", "payload": "/affirm"}, {"title": "No", "payload": "/deny"}],
    },
    "rooms": {
        "elements": [
            {
                "title": f"Room {n}",
                "subtitle": f"{n} beds",
                "image_url": f"https://example.test/room{n}.png",
                # Facebook's generic template, which the widget reads: postback buttons.
                "buttons": [{"type": "postback", "title": f"Book {n}", "payload": f"/book_{n}"}],
            }
            for n in (1, 2)
        ]
    },
    "video": {"attachment": {"type": "video", "payload": {"src": "https://example.test/tour.mp4"}}},
    # rasa-sdk's `dispatcher.utter_message(buttons=...)`: `text` is null.
    "choose": {"text": None, "buttons": [{"title": "Maybe", "payload": "/maybe"}]},
    "links": {
        "text": "Where to?",
        "buttons": [
            {"title": "Docs", "type": "web_url", "url": "https://example.test/docs"},
            {"title": "Ask", "type": "postback", "payload": "/ask"},
            {"title": "Site", "url": "https://example.test/site"},  # as Rocket.Chat reads it
        ],
    },
}


async def rich_bot(message: UserMessage) -> None:
    """The channel contract without a model: a rich message for a known text, else an echo."""
    assert message.output_channel is not None
    reply = RICH.get(message.text or "", {"text": f"echo: {message.text}"})
    await message.output_channel.send_response(message.sender_id, reply)


@pytest.fixture(scope="module")
def rich_bot_url() -> Iterator[str]:
    app = create_app()
    channels = load_channels({"socketio": {**SOCKETIO, "cors_allowed_origins": "*"}})
    attach_channels(app, channels, rich_bot)
    with served_on_a_thread(app) as url:
        yield url


def page_html(bot_url: str) -> str:
    props = {
        "selector": "#webchat",
        "socketUrl": bot_url,
        "socketPath": "/socket.io/",
        "customData": {"language": "en"},
        "embedded": True,
        "title": "Moodbot",
        "params": {"storage": "local"},
    }
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>shop</title></head>
<body><div id="webchat"></div>
<script src="/webchat.js"></script>
<script>WebChat.default({json.dumps(props)}, null);</script>
</body></html>"""


def site(bot_url: str) -> Starlette:
    """A customer's site: a page with the widget, on another origin than the bot."""
    html = page_html(bot_url)
    bundle = BUNDLE.read_bytes()
    return Starlette(
        routes=[
            Route("/", lambda request: HTMLResponse(html)),
            Route("/webchat.js", lambda request: Response(bundle, media_type="text/javascript")),
        ]
    )


@contextlib.contextmanager
def widget_visits(bot_url: str) -> Iterator[Callable[[], Page]]:
    """Opens, on each call, a page of a site holding the widget pointed at `bot_url`, for a
    new visitor (nothing stored); on a failure the pages' console is printed."""
    require_chromium()
    require(
        BUNDLE.exists(),
        f"the webchat test needs rasa-webchat's bundle: run {BUNDLE.parent.parent / 'fetch.sh'}",
    )
    from playwright.sync_api import sync_playwright

    with served_on_a_thread(site(bot_url)) as site_url, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        logs: list[str] = []

        def visit() -> Page:
            page = browser.new_page(viewport={"width": 1000, "height": 900})
            page.on("console", lambda m: logs.append(m.text))
            page.goto(f"{site_url}/")
            return page

        try:
            yield visit
        except Exception:
            print("\n".join(logs))
            raise
        finally:
            browser.close()


@contextlib.contextmanager
def widget_page(bot_url: str) -> Iterator[Page]:
    """A browser page of a site holding the widget pointed at `bot_url`."""
    with widget_visits(bot_url) as visit:
        yield visit()


def tracker(bot_url: str, conversation_id: str) -> dict[str, Any]:
    answer = httpx.get(f"{bot_url}/conversations/{conversation_id}/tracker", timeout=10)
    answer.raise_for_status()
    result: dict[str, Any] = answer.json()
    return result


def test_webchat_chats_with_moodbot_and_keeps_the_session_across_a_reload(bot_url: str) -> None:
    with widget_page(bot_url) as page:
        from playwright.sync_api import expect

        box = page.locator(".rw-new-message")
        box.fill("hello")
        box.press("Enter")
        responses = page.locator(".rw-response")
        expect(responses.first).to_have_text("Hey! How are you?", timeout=10_000)
        session_id = page.evaluate(STORED_SESSION_ID)

        # utter_greet's buttons, as quick replies; a click sends the payload.
        replies = page.locator(".rw-reply")
        expect(replies).to_have_text(["great", "super sad"])
        replies.filter(has_text="super sad").click()
        expect(page.locator(".rw-client").last).to_have_text("super sad")
        # utter_cheer_up: a text and an image.
        cheer_up = "Here is something to cheer you up:"
        expect(responses.nth(1)).to_have_text(cheer_up, timeout=10_000)
        expect(page.locator(".rw-image-frame")).to_have_attribute(
            "src", "https://i.imgur.com/nGF1K8f.jpg"
        )
        expect(responses.nth(2)).to_have_text("Did that help you?")

        conversation = tracker(bot_url, session_id)
        assert conversation["latest_message"]["intent"]["name"] == "mood_unhappy"
        # customData, the widget's metadata, reaches the tracker (metadata_key: customData).
        assert conversation["latest_message"]["metadata"] == {"language": "en"}

        # A reload: the widget asks for its stored session, the server confirms it, the
        # messages so far stay, and the conversation goes on where it was.
        page.reload()
        expect(responses).to_have_count(3, timeout=10_000)
        expect(page.locator(".rw-client")).to_have_text(["hello", "super sad"])
        box.fill("yes")
        box.press("Enter")
        expect(responses.nth(3)).to_have_text("Great, carry on!", timeout=10_000)
        assert page.evaluate(STORED_SESSION_ID) == session_id

        # A message the server pushes (an external event) reaches the open page.
        pushed = httpx.post(
            f"{bot_url}/conversations/{session_id}/trigger_intent?output_channel=socketio",
            json={"name": "goodbye"},
            timeout=10,
        )
        assert pushed.status_code == 200
        expect(responses.nth(4)).to_have_text("Bye", timeout=10_000)

    events = tracker(bot_url, session_id)["events"]
    texts = [event["text"] for event in events if event["event"] == "user"]
    assert texts == ["hello", "/mood_unhappy", "yes", "EXTERNAL: goodbye"]


def test_webchat_shows_links_paragraphs_a_carousel_and_a_video(rich_bot_url: str) -> None:
    with widget_page(rich_bot_url) as page:
        from playwright.sync_api import expect

        box = page.locator(".rw-new-message")
        responses = page.locator(".rw-response")

        # A link button is a link in the widget (before, and in Rasa, its url was dropped:
        # a button that sent nothing); a postback button sends its payload.
        box.fill("links")
        box.press("Enter")
        links = page.locator("a.rw-reply")
        expect(links).to_have_text(["Docs", "Site"], timeout=10_000)
        expect(links.first).to_have_attribute("href", "https://example.test/docs")
        expect(links.last).to_have_attribute("href", "https://example.test/site")
        page.locator("div.rw-reply", has_text="Ask").click()
        expect(responses.last).to_have_text("echo: /ask", timeout=10_000)

        box.fill("paragraphs")
        box.press("Enter")
        expect(responses).to_have_text(
            ["Where to?", "echo: /ask", "First paragraph.", "Second paragraph."], timeout=10_000
        )
        expect(page.locator(".rw-reply")).to_have_text(["Yes", "No"])

        box.fill("rooms")
        box.press("Enter")
        cards = page.locator(".rw-carousel-card")
        expect(cards).to_have_count(2, timeout=10_000)
        expect(page.locator(".rw-carousel-card-title")).to_have_text(["Room 1", "Room 2"])
        expect(page.locator(".rw-carousel-card-subtitle")).to_have_text(["1 beds", "2 beds"])
        cards.nth(1).get_by_text("Book 2").click()
        expect(responses.last).to_have_text("echo: /book_2", timeout=10_000)

        box.fill("video")
        box.press("Enter")
        expect(page.locator(".rw-videoFrame")).to_have_attribute(
            "src", "https://example.test/tour.mp4", timeout=10_000
        )

        # Buttons without a text: before, the widget showed "null" above them.
        box.fill("choose")
        box.press("Enter")
        expect(page.locator(".rw-reply", has_text="Maybe")).to_be_visible(timeout=10_000)
        expect(responses.last).to_have_text("")


def test_webchat_visitors_get_their_replies_from_two_workers(moodbot: Path, tmp_path: Path) -> None:
    """`--workers 2`: the widget starts on HTTP long-polling, whose requests the kernel
    spreads over the workers; each visitor's session goes on whichever worker a request
    reaches. Before, 2 of 8 visitors got no reply (engine.io's 400 "Invalid session" from the
    worker that did not hold the session) and others only after retries."""
    with socketio_workers(moodbot, tmp_path, SOCKETIO) as url, widget_visits(url) as visit:
        from playwright.sync_api import expect

        for _ in range(8):
            page = visit()
            box = page.locator(".rw-new-message")
            box.fill("hello")
            box.press("Enter")
            expect(page.locator(".rw-response").first).to_have_text(
                "Hey! How are you?", timeout=5_000
            )
            session_id = page.evaluate(STORED_SESSION_ID)
            page.close()
            said = [e["text"] for e in tracker(url, session_id)["events"] if e["event"] == "user"]
            assert said == ["hello"]
