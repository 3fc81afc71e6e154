"""/inspect in headless Chromium: chat with the bot, watch the tracker update, screenshot.

Needs Debian's chromium at /usr/bin/chromium (`apt-get install -y chromium`) and the
`playwright` Python package (test extra); skipped without them, except in CI.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from server.api.runner import server_app
from server.api.server import ServerOptions
from server.auth import AuthConfig
from server.training.train import train
from tests.browser import CHROMIUM, CHROMIUM_ARGS, require_chromium, served_on_a_thread
from tests.shared_data import MOODBOT

TOKEN = "inspect-secret"


@pytest.fixture(scope="module")
def server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    models = tmp_path_factory.mktemp("models")
    archive = train(MOODBOT / "config.yml", MOODBOT / "domain.yml", [MOODBOT / "data"], models).path
    app = server_app(
        ServerOptions(
            model_path=archive,
            enable_api=True,
            auth=AuthConfig(token=TOKEN),
            default_tracker_store={"type": "in_memory"},
        )
    )
    with served_on_a_thread(app) as url:
        yield url


def test_inspect_needs_the_token(server_url: str) -> None:
    assert httpx.get(server_url + "/inspect").status_code == 401
    page = httpx.get(server_url + f"/inspect?token={TOKEN}")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert page.headers["referrer-policy"] == "no-referrer"


def test_chat_and_live_tracker_in_chromium(server_url: str, tmp_path: Path) -> None:
    require_chromium()
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.goto(f"{server_url}/inspect?token={TOKEN}&conversation=browser-1")
            expect(page.locator("#conversation-id")).to_have_value("browser-1")
            expect(page.locator("#status")).to_contain_text("live", timeout=10_000)

            page.fill("#chat-input", "hello")
            page.click("#chat-send")
            expect(page.locator(".msg.user").first).to_have_text("hello")
            expect(page.locator(".msg.bot").first).to_contain_text(
                "Hey! How are you?", timeout=10_000
            )
            events = page.locator("#tracker-events")
            expect(events).to_contain_text("utter_greet", timeout=10_000)
            expect(page.locator("#intent-ranking")).to_contain_text("greet")

            # A button of the bot's message sends its payload.
            page.locator(".msg.bot button", has_text="great").first.click()
            expect(page.locator(".msg.bot").nth(1)).to_contain_text(
                "Great, carry on!", timeout=10_000
            )
            expect(events).to_contain_text("utter_happy", timeout=10_000)
            expect(page.locator("#intent-ranking")).to_contain_text("mood_great")

            # The tracker view follows turns made elsewhere too (polled every second).
            httpx.post(
                server_url + "/webhooks/rest/webhook",
                json={"sender": "browser-1", "message": "goodbye"},
                timeout=10,
            )
            expect(events).to_contain_text("utter_goodbye", timeout=10_000)

            shot = tmp_path / "inspect.png"
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    data = shot.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    assert len(data) > 5_000
    keep = os.environ.get("BOTSERVER_KEEP_SCREENSHOT")
    if keep:
        shutil.copy(shot, keep)
