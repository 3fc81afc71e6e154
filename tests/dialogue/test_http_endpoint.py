"""What an outbound endpoint sends: its JSON written once a call, a long one off the loop."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import orjson
import pytest

from server import http_clients
from server.channels.callback import CallbackOutput, Deliveries
from server.dialogue import http_endpoint
from server.dialogue.action_client import ActionServerClient
from server.dialogue.http_endpoint import HttpEndpoint, json_content
from server.dialogue.nlg_client import NLGClient
from server.trackers.events import EVENTS_PER_PIECE
from tests.loop_lag import loop_hold


class RefusingTwice(httpx.AsyncBaseTransport):
    """Refuses the first two connections (nothing sent), then answers `answer`."""

    def __init__(self, answer: dict[str, Any]) -> None:
        self.answer = answer
        self.tries = 0
        self.bodies: list[bytes] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.tries += 1
        if self.tries <= 2:
            raise httpx.ConnectError("connection refused", request=request)
        self.bodies.append(await request.aread())
        return httpx.Response(200, json=self.answer)


@pytest.fixture
def encodes(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """What is written as JSON, a call of the encoder each; the pauses between tries skipped."""
    written: list[Any] = []
    encode = http_endpoint._json_bytes

    def recorded(body: Any) -> bytes:
        written.append(body)
        return encode(body)

    async def no_pause(seconds: float) -> None:
        return None

    monkeypatch.setattr(http_endpoint, "_json_bytes", recorded)
    monkeypatch.setattr(http_clients, "_pause", no_pause)
    return written


async def test_an_action_call_tried_three_times_writes_its_json_once(
    encodes: list[Any],
) -> None:
    """Before, each try wrote the whole tracker out again: three times the event loop's
    work for a server restarting. Now the body is written once a call."""
    transport = RefusingTwice({"events": [], "responses": []})
    client = ActionServerClient({"url": "http://actions.test/webhook"}, transport=transport)
    try:
        await client.run("action_search", "u1", {"events": [{"event": "action"}]}, None)
    finally:
        await client.aclose()
    assert transport.tries == 3
    assert len(encodes) == 1
    assert json.loads(transport.bodies[0])["next_action"] == "action_search"


async def test_an_nlg_call_tried_three_times_writes_its_json_once(encodes: list[Any]) -> None:
    transport = RefusingTwice({"text": "hi"})
    client = NLGClient({"url": "http://nlg.test/nlg"}, transport=transport)
    try:
        message = await client.generate("utter_greet", {"events": []}, "rest")
    finally:
        await client.endpoint.aclose()
    assert message is not None and message["text"] == "hi"
    assert (transport.tries, len(encodes)) == (3, 1)


async def test_a_callback_post_tried_three_times_writes_its_json_once(
    encodes: list[Any],
) -> None:
    """The callback channel's POST of a bot message is tried again as the other clients'
    calls are: its JSON is written once, whatever the tries."""
    transport = RefusingTwice({})
    endpoint = HttpEndpoint("http://receiver.test/bot", transport=transport)
    try:
        await CallbackOutput(endpoint, Deliveries()).send_response("u1", {"text": "hi"})
    finally:
        await endpoint.aclose()
    assert (transport.tries, len(encodes)) == (3, 1)
    assert json.loads(transport.bodies[0]) == {"recipient_id": "u1", "text": "hi"}


def long_tracker(events: int) -> dict[str, Any]:
    said = {"text": "/greet é", "intent": {"name": "greet", "confidence": 1.0}, "entities": []}
    turn = [
        {"event": "user", "timestamp": 1.5, "text": "/greet é", "parse_data": said},
        {"event": "action", "timestamp": 1.6, "name": "utter_greet", "confidence": None},
        {"event": "bot", "timestamp": 1.7, "text": "Hello!", "data": {}, "metadata": {}},
        {"event": "action", "timestamp": 1.8, "name": "action_listen"},
    ]
    return {"sender_id": "long", "slots": {"a": 1}, "events": turn * (events // 4)}


async def test_a_long_body_is_written_as_orjson_writes_it_whole(encodes: list[Any]) -> None:
    """A thread does not free the loop from orjson, which holds the GIL for a whole call:
    the events are written 500 a call."""
    tracker = long_tracker(4_000)
    body = {"next_action": "x", "tracker": tracker, "domain": {"intents": ["a"]}}
    assert await json_content(body) == orjson.dumps(body)
    assert len(encodes) > 8
    assert max(len(piece) for piece in encodes if isinstance(piece, list)) == EVENTS_PER_PIECE
    # What orjson cannot write (an integer beyond 64 bits) is written by the stdlib.
    tracker["events"][1234]["timestamp"] = 2**70
    assert json.loads(await json_content(body)) == body
    # A key that is no string, beside the long list, is written
    # as the stdlib writes it in the whole: the same JSON values, whatever the pieces.
    odd: dict[Any, Any] = {7: {None: True}, **body}
    whole = json.dumps(odd, separators=(",", ":"))
    assert json.loads(await json_content(odd)) == json.loads(whole)


@pytest.mark.timing
@pytest.mark.parametrize("server", ["action", "nlg"])
async def test_a_long_conversation_sent_to_a_server_leaves_the_loop_free(server: str) -> None:
    """Before, a 100,000-event tracker was written out as JSON on the event loop at each
    try of an action or NLG call (orjson, 14-17 ms): every other conversation waited. Now
    it is written in a thread, 500 events per call of the encoder, so the loop gets in
    between."""
    sent: list[int] = []

    def answer(request: httpx.Request) -> httpx.Response:
        sent.append(len(request.content))
        return httpx.Response(200, json={"events": []} if server == "action" else {"text": "hi"})

    transport = httpx.MockTransport(answer)
    tracker = long_tracker(100_000)
    call: Callable[[dict[str, Any]], Awaitable[Any]]
    if server == "action":
        client = ActionServerClient({"url": "http://actions.test/webhook"}, transport=transport)
        endpoint = client.endpoint
        call = lambda state: client.run("action_search", "long", state, None)  # noqa: E731
    else:
        nlg = NLGClient({"url": "http://nlg.test/nlg"}, transport=transport)
        endpoint = nlg.endpoint
        call = lambda state: nlg.generate("utter_greet", state, "rest")  # noqa: E731
    try:
        await call({"events": []})  # the client is made
        async with loop_hold() as hold:
            await call(tracker)
    finally:
        await endpoint.aclose()
    assert sent[1] > 8_000_000
    # The loop's own work in its longest gap: 17 ms before, 1 ms now.
    assert hold.loop_busiest < 0.006 * hold.slowness, hold
