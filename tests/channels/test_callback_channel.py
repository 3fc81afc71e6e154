"""The callback channel answers "success" and POSTs each bot message to the configured URL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request, Response

from server.api.app import create_app
from server.channels import attach_channels, load_channels
from tests.channels.conftest import echo
from tests.serving import serving


class Receiver:
    """A local HTTP server standing in for the user's callback endpoint."""

    def __init__(self) -> None:
        self.received: list[tuple[dict[str, Any], dict[str, str]]] = []
        self.status = 200
        self.app = FastAPI()
        self.app.add_api_route("/bot", self.receive, methods=["POST"])

    async def receive(self, request: Request) -> Response:
        self.received.append((await request.json(), {**request.headers, **request.query_params}))
        return Response(status_code=self.status)


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[Receiver, str]]:
    r = Receiver()
    async with serving(r.app) as url:
        yield r, f"{url}/bot"


async def _bot(credentials: dict[str, Any]) -> tuple[httpx.AsyncClient, Any]:
    (channel,) = load_channels({"callback": credentials})
    app = create_app()
    attach_channels(app, [channel], echo)
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bot")
    return client, channel


async def _say_hello(credentials: dict[str, Any], sender: str) -> httpx.Response:
    client, channel = await _bot(credentials)
    try:
        return await client.post(
            "/webhooks/callback/webhook", json={"sender": sender, "message": "hello"}
        )
    finally:
        await client.aclose()
        await channel.aclose()


async def test_replies_are_posted_to_the_callback_url(receiver: tuple[Receiver, str]) -> None:
    r, url = receiver
    client, channel = await _bot({"url": url, "headers": {"X-Bot": "b1"}, "token": "tk"})
    try:
        health = await client.get("/webhooks/callback/")
        answer = await client.post(
            "/webhooks/callback/webhook", json={"sender": "c1", "message": "hello"}
        )
    finally:
        await client.aclose()
        await channel.aclose()
    assert health.json() == {"status": "ok"}
    assert answer.status_code == 200
    assert answer.text == "success"
    assert answer.headers["content-type"].startswith("text/plain")
    assert [body for body, _ in r.received] == [
        {"recipient_id": "c1", "text": "echo: hello"},
        {"recipient_id": "c1", "text": "from c1 via callback"},
    ]
    headers = r.received[0][1]
    assert headers["x-bot"] == "b1" and headers["token"] == "tk"


async def test_a_failing_receiver_does_not_fail_the_webhook(
    receiver: tuple[Receiver, str],
) -> None:
    r, url = receiver
    r.status = 500
    answer = await _say_hello({"url": url}, "c2")
    assert answer.text == "success"
    assert len(r.received) == 2


async def test_a_receiver_that_is_down_does_not_fail_the_webhook() -> None:
    from bench.tcp_proxy import free_port

    answer = await _say_hello({"url": f"http://127.0.0.1:{free_port()}/bot"}, "c3")
    assert answer.text == "success"


async def test_pushed_messages_use_the_same_output(receiver: tuple[Receiver, str]) -> None:
    r, url = receiver
    (channel,) = load_channels({"callback": {"url": url}})
    output = channel.get_output_channel()
    assert output is not None
    await output.send_response("c4", {"text": "Remember to call John!"})
    await channel.aclose()
    assert r.received[0][0] == {"recipient_id": "c4", "text": "Remember to call John!"}


async def test_a_redirect_is_not_followed_and_is_logged_as_not_delivered(
    receiver: tuple[Receiver, str], caplog: pytest.LogCaptureFixture
) -> None:
    r, url = receiver
    r.status = 307
    answer = await _say_hello({"url": url}, "c5")
    assert answer.text == "success"
    # Before: a 3xx answer was taken as delivered, without a word.
    assert "answered HTTP 307 to a bot message, which was not delivered" in caplog.text
