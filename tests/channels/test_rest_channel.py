"""The REST channel answers Rasa's webhook with the bot's messages, as Rasa does."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import APIRouter

from server.api.app import create_app
from server.api.server import ServerOptions, build_app
from server.channels import attach_channels, load_channels
from server.channels.channel import InputChannel, OnNewMessage
from server.dialogue.messages import OutputChannel, UserMessage
from server.errors import LockTimeout
from tests.channels.conftest import echo
from tests.dialogue.conversation_fixtures import train_archive, write_files
from tests.serving import serving


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    app = create_app()
    attach_channels(app, load_channels({"rest": None}), echo)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://bot") as c:
        yield c


async def test_health(client: httpx.AsyncClient) -> None:
    answer = await client.get("/webhooks/rest/")
    assert answer.status_code == 200
    assert answer.json() == {"status": "ok"}


async def test_a_message_gets_the_bots_messages_split_as_rasa_does(
    client: httpx.AsyncClient,
) -> None:
    answer = await client.post("/webhooks/rest/webhook", json={"sender": "u1", "message": " hi "})
    assert answer.status_code == 200
    assert answer.json() == [
        {"recipient_id": "u1", "text": "echo: hi"},
        {"recipient_id": "u1", "text": "from u1 via rest"},
    ]


async def test_buttons_and_images(client: httpx.AsyncClient) -> None:
    buttons = await client.post("/webhooks/rest/webhook", json={"sender": 7, "message": "buttons"})
    assert buttons.json() == [
        {
            "recipient_id": "7",
            "text": "pick one",
            "buttons": [
                {"title": "Yes", "payload": "/affirm"},
                {"title": "No", "payload": "/deny"},
            ],
        }
    ]
    image = await client.post("/webhooks/rest/webhook", json={"sender": "u", "message": "image"})
    assert image.json() == [
        {"recipient_id": "u", "text": "look"},
        {"recipient_id": "u", "image": "https://example.test/a.png"},
    ]


async def test_sender_defaults_and_input_channel_can_be_given(client: httpx.AsyncClient) -> None:
    answer = await client.post(
        "/webhooks/rest/webhook", json={"message": "x", "input_channel": "web"}
    )
    assert answer.json()[1] == {"recipient_id": "default", "text": "from default via web"}


@contextlib.asynccontextmanager
async def recording_client(
    credentials: dict[str, Any], handled: list[UserMessage]
) -> AsyncIterator[httpx.AsyncClient]:
    """A client of an app serving `credentials`' channels, appending each message handled."""
    app = create_app()

    async def record(message: UserMessage) -> None:
        handled.append(message)
        await echo(message)

    attach_channels(app, load_channels(credentials), record)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://bot") as c:
        yield c


async def test_input_channel_cannot_name_another_channel_of_the_server() -> None:
    """A REST client could otherwise speak as another channel: the conversation's channel
    is where its reminders (and `output_channel=latest` pushes) go, so `"input_channel":
    "rocketchat"` with `"sender": "GENERAL"` had the bot post into that Rocket.Chat room.
    Before: handled as if it came through that channel."""
    handled: list[UserMessage] = []
    credentials = {"rest": None, "callback": {"url": "http://127.0.0.1:9/bot"}}
    async with recording_client(credentials, handled) as c:
        for stream in ("", "?stream=true"):
            body = {"sender": "GENERAL", "message": "x", "input_channel": "callback"}
            answer = await c.post("/webhooks/rest/webhook" + stream, json=body)
            assert answer.status_code == 400
            assert "'input_channel'" in answer.json()["message"]
        own = await c.post("/webhooks/rest/webhook", json={"message": "x", "input_channel": "rest"})
        other = await c.post(
            "/webhooks/rest/webhook", json={"message": "x", "input_channel": "mobile-app"}
        )
    assert [m.input_channel for m in handled] == ["rest", "mobile-app"]
    assert own.status_code == other.status_code == 200


class RestOnlyInput(InputChannel):
    """A custom channel that only answers its webhook: it has no output channel of its own."""

    name = "kiosk"

    def router(self, on_new_message: OnNewMessage) -> APIRouter:
        return APIRouter()


async def test_input_channel_may_name_a_served_channel_that_pushes_nothing() -> None:
    """Only a served channel that can push messages on its own is refused: one without an
    output channel (a REST-only custom channel) has nowhere to send a reminder, so naming it
    is stored as sent. Before: 400 for any served channel's name."""
    handled: list[UserMessage] = []
    credentials = {"rest": None, f"{__name__}.RestOnlyInput": None}
    async with recording_client(credentials, handled) as c:
        for stream in ("", "?stream=true"):
            body = {"sender": "u", "message": "x", "input_channel": "kiosk"}
            answer = await c.post("/webhooks/rest/webhook" + stream, json=body)
            assert answer.status_code == 200
    assert [m.input_channel for m in handled] == ["kiosk", "kiosk"]


class NotReadyInput(RestOnlyInput):
    """A custom channel whose output channel needs what only its first request sets up."""

    name = "late"

    def get_output_channel(self) -> OutputChannel | None:
        raise RuntimeError("not connected yet")


class SetUpByRouterInput(RestOnlyInput):
    """A custom channel ported from Rasa's socket.io one: its output channel exists once
    `router()` has built what it sends through, and is None before."""

    name = "app"
    sender: OutputChannel | None = None

    def router(self, on_new_message: OnNewMessage) -> APIRouter:
        self.sender = RestOnlyOutput()
        return APIRouter()

    def get_output_channel(self) -> OutputChannel | None:
        return self.sender


class RestOnlyOutput(OutputChannel):
    name = "app"

    async def send_response(self, recipient_id: str, message: dict[str, Any]) -> None:
        return None


@pytest.mark.parametrize("channel", [NotReadyInput, SetUpByRouterInput])
async def test_a_channel_defining_an_output_channel_is_taken_as_pushing(
    channel: type[InputChannel],
) -> None:
    """Whether a channel may push is read from its class (it defines `get_output_channel`),
    not asked at load: a REST client may not take its name. Before, each was asked: one
    whose output channel is made by `router()` answered None and its name was accepted (its
    conversation's reminders then went through it to that sender id); one that cannot make
    it before its first request raised, so the start had to catch it."""
    handled: list[UserMessage] = []
    credentials = {"rest": None, f"{__name__}.{channel.__name__}": None}
    async with recording_client(credentials, handled) as c:
        body = {"sender": "u", "message": "x", "input_channel": channel.name}
        answer = await c.post("/webhooks/rest/webhook", json=body)
    assert answer.status_code == 400
    assert handled == []


async def test_no_message_is_an_empty_answer_as_in_rasa(client: httpx.AsyncClient) -> None:
    answer = await client.post("/webhooks/rest/webhook", json={"sender": "u9"})
    assert answer.status_code == 200
    assert answer.json() == []


async def test_no_message_with_stream_is_an_empty_stream(client: httpx.AsyncClient) -> None:
    """Before, `[]` as `application/json`: a client reading the stream line by line took
    the list for a bot message (Rasa's stream never ends: its turn fails before `DONE`)."""
    answer = await client.post("/webhooks/rest/webhook?stream=true", json={"sender": "u9"})
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/event-stream")
    assert answer.content == b""


async def test_a_body_that_is_not_json_is_rasas_400(client: httpx.AsyncClient) -> None:
    answer = await client.post(
        "/webhooks/rest/webhook", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert answer.status_code == 400
    body = answer.json()
    assert body["status"] == "failure" and body["code"] == 400
    assert body["reason"] == "BadRequest"


async def test_a_body_nested_too_deeply_is_told_so_not_called_invalid(
    client: httpx.AsyncClient,
) -> None:
    """JSON nested deeper than the server reads (100 levels) is valid JSON: the 400 says
    what is wrong with it, as the API's routes do. Before, "The request body is not valid
    JSON.", which sent a client looking for a syntax error (found by review)."""
    deep = b'{"sender": "u1", "message": "hi", "metadata": {"x": ' + b"[" * 200 + b"]" * 200
    answer = await client.post("/webhooks/rest/webhook", content=deep + b"}}")
    assert answer.status_code == 400
    assert answer.json()["message"] == "The JSON body is nested too deeply."
    broken = await client.post("/webhooks/rest/webhook", content=deep + b"}")
    assert broken.json()["message"] == "The request body is not valid JSON."


async def test_a_failing_turn_returns_what_was_collected(client: httpx.AsyncClient) -> None:
    answer = await client.post("/webhooks/rest/webhook", json={"sender": "u", "message": "boom"})
    assert answer.status_code == 200
    assert answer.json() == [{"recipient_id": "u", "text": "before"}]


@pytest.mark.parametrize("stream", ["false", "true"])
async def test_a_turn_failing_on_a_bug_logs_its_traceback_once(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture, stream: str
) -> None:
    """Before, the log had one line (`RuntimeError: the turn failed`) and no traceback: the
    bug could not be found from the log."""
    caplog.set_level(logging.ERROR)
    body = {"sender": "u", "message": "boom"}
    await client.post(f"/webhooks/rest/webhook?stream={stream}", json=body)
    [record] = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert record.getMessage() == "rest: message from u failed: RuntimeError: the turn failed"
    assert record.exc_info is not None and record.exc_info[0] is RuntimeError


async def test_a_repeated_stream_parameter_is_read_by_its_first_value(
    client: httpx.AsyncClient,
) -> None:
    """As Rasa reads `?stream=`; before, the last value was read (a JSON list here)."""
    answer = await client.post(
        "/webhooks/rest/webhook?stream=true&stream=false", json={"sender": "s", "message": "hi"}
    )
    assert answer.headers["content-type"].startswith("text/event-stream")
    # Sanic drops blank values: the first value is the first that is not empty.
    blank_first = await client.post(
        "/webhooks/rest/webhook?stream=&stream=true", json={"sender": "s", "message": "hi"}
    )
    assert blank_first.headers["content-type"].startswith("text/event-stream")


async def test_stream_sends_one_json_message_per_line(client: httpx.AsyncClient) -> None:
    answer = await client.post(
        "/webhooks/rest/webhook?stream=true", json={"sender": "s", "message": "hi"}
    )
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/event-stream")
    lines = [json.loads(line) for line in answer.text.splitlines()]
    assert lines == [
        {"recipient_id": "s", "text": "echo: hi"},
        {"recipient_id": "s", "text": "from s via rest"},
    ]


async def test_a_stream_whose_turn_fails_ends_with_what_was_said(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    answer = await client.post(
        "/webhooks/rest/webhook?stream=true", json={"sender": "s", "message": "boom"}
    )
    await asyncio.sleep(0)  # the turn's end is logged as it ends
    assert answer.status_code == 200
    assert [json.loads(line) for line in answer.text.splitlines()] == [
        {"recipient_id": "s", "text": "before"}
    ]
    assert "rest: message from s failed: RuntimeError: the turn failed" in caplog.text


async def test_a_body_sent_in_several_chunks_is_read_whole(client: httpx.AsyncClient) -> None:
    async def pieces() -> AsyncIterator[bytes]:
        body = json.dumps({"sender": "chunks", "message": "in three parts"}).encode()
        for start in range(0, len(body), 16):
            yield body[start : start + 16]

    answer = await client.post("/webhooks/rest/webhook", content=pieces())
    assert answer.status_code == 200
    assert answer.json()[0] == {"recipient_id": "chunks", "text": "echo: in three parts"}


@pytest.mark.parametrize(
    "body",
    [
        {"sender": "u1", "message": 5},
        {"sender": "u1", "message": ["hi"]},
        {"sender": {"a": 1}, "message": "hi"},
        {"sender": True, "message": "hi"},
        {"sender": "u1", "message": "hi", "metadata": '{"plan": "pro"}'},
        {"sender": "u1", "message": "hi", "metadata": ["pro"]},
        {"sender": "u1", "message": "hi", "input_channel": 5},
        {"sender": "u1", "message": "hi", "input_channel": ["web"]},
    ],
    ids=[
        "number-message",
        "list-message",
        "object-sender",
        "bool-sender",
        "text-metadata",
        "list-metadata",
        "number-input-channel",
        "list-input-channel",
    ],
)
async def test_a_message_or_sender_of_the_wrong_type_is_a_400(
    client: httpx.AsyncClient, body: dict[str, object]
) -> None:
    """Before, a 200: `[]` for a message that is no string (the message silently dropped), and
    a conversation named `{'a': 1}` for an object as sender; metadata that is no object was
    dropped without a word (Rasa fails such a turn and answers `[]`), and so was an
    `input_channel` that is no string: the turn was stored as `rest` (Rasa stores the number
    or list as the conversation's channel)."""
    for stream in ("", "?stream=true"):
        answer = await client.post("/webhooks/rest/webhook" + stream, json=body)
        assert answer.status_code == 400
        error = answer.json()
        assert error["reason"] == "BadRequest"
        assert error["message"] in (
            "The 'message' must be a string.",
            "The 'sender' must be a string or a number.",
            "The 'metadata' must be a JSON object.",
            "The 'input_channel' must be a string.",
        )


async def test_a_number_as_sender_is_its_text(client: httpx.AsyncClient) -> None:
    answer = await client.post("/webhooks/rest/webhook", json={"sender": 42, "message": "hi"})
    assert answer.status_code == 200
    assert answer.json()[0]["recipient_id"] == "42"


STREAM_BOT = {
    "config.yml": """recipe: default.v1
language: en
pipeline:
- name: KeywordIntentClassifier
policies:
- name: RulePolicy
""",
    "domain.yml": """version: "3.1"
intents: [greet]
responses:
  utter_greet:
  - text: any channel
  - text: streamed
    channel: queue
  - text: collected
    channel: collector
""",
    "data/rules.yml": """version: "3.1"
rules:
- rule: greet
  steps:
  - intent: greet
  - action: utter_greet
""",
    "data/nlu.yml": """version: "3.1"
nlu:
- intent: greet
  examples: |
    - hi
    - hello
""",
}


async def test_response_variations_are_picked_by_rasas_output_channel_names(
    tmp_path: Path,
) -> None:
    # Before: a streamed turn went by the name 'rest', so a Rasa project's `channel: queue`
    # variation was never said. Rasa names the streaming output 'queue' and the plain one
    # 'collector'; the stored input_channel is 'rest' for both.
    model = train_archive(write_files(STREAM_BOT, tmp_path), tmp_path / "models")
    options = ServerOptions(
        model_path=model,
        endpoints={"tracker_store": {"type": "in_memory"}},  # not botserver.db in the cwd
        enable_api=True,
        models_dir=model.parent,
    )
    async with serving(build_app(options)) as url, httpx.AsyncClient(base_url=url) as bot:
        streamed = await bot.post(
            "/webhooks/rest/webhook?stream=true", json={"sender": "s", "message": "hi"}
        )
        collected = await bot.post("/webhooks/rest/webhook", json={"sender": "c", "message": "hi"})
        tracker = (await bot.get("/conversations/s/tracker")).json()
    assert [json.loads(line)["text"] for line in streamed.text.splitlines()] == ["streamed"]
    assert [m["text"] for m in collected.json()] == ["collected"]
    assert tracker["latest_input_channel"] == "rest"


async def test_stream_is_read_as_rasa_reads_a_boolean(client: httpx.AsyncClient) -> None:
    body = {"sender": "flags", "message": "hi"}
    answers = {
        flag: await client.post(f"/webhooks/rest/webhook?stream={flag}", json=body)
        for flag in ("True", "false", "0", "", "1", "yes", "maybe")
    }
    assert answers["True"].headers["content-type"].startswith("text/event-stream")
    for plain in ("false", "0", ""):
        assert answers[plain].json()[0] == {"recipient_id": "flags", "text": "echo: hi"}
    # Rasa reads these as false; a client sending them means true (before: 1 and yes
    # streamed, as no Rasa server does).
    for wrong in ("1", "yes", "maybe"):
        assert answers[wrong].status_code == 400
        assert answers[wrong].json()["details"] == {"parameter": "stream", "in": "query"}


async def test_a_client_leaving_a_stream_does_not_cut_the_turn_short() -> None:
    # Before: the turn was cancelled when the client went away, between two of its messages:
    # whatever the actions had done, the turn was not stored.
    release, cancelled, finished = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def slow_turn(message: UserMessage) -> None:
        assert message.output_channel is not None
        await message.output_channel.send_response(message.sender_id, {"text": "first"})
        try:
            await release.wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise
        await message.output_channel.send_response(message.sender_id, {"text": "second"})
        finished.set()

    app = create_app()
    attach_channels(app, load_channels({"rest": None}), slow_turn)
    async with serving(app) as url, httpx.AsyncClient(base_url=url) as bot:
        body = {"sender": "leaver", "message": "hi"}
        async with bot.stream("POST", "/webhooks/rest/webhook?stream=true", json=body) as answer:
            first = await anext(answer.aiter_lines())
        with contextlib.suppress(TimeoutError):  # the server notices the client left
            await asyncio.wait_for(cancelled.wait(), 0.3)
        release.set()
        await asyncio.wait_for(finished.wait(), 2)
    assert json.loads(first) == {"recipient_id": "leaver", "text": "first"}
    assert not cancelled.is_set()


async def test_a_streamed_turn_that_could_not_be_recorded_is_a_503() -> None:
    async def busy(message: UserMessage) -> None:
        raise LockTimeout("conversation 'busy' is locked")

    app = create_app()
    attach_channels(app, load_channels({"rest": None}), busy)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        answer = await c.post(
            "/webhooks/rest/webhook?stream=true", json={"sender": "busy", "message": "hi"}
        )
    # Before: 200 with an empty stream, as if the bot had nothing to say; the message was lost.
    assert answer.status_code == 503
    assert answer.json()["reason"] == "ServiceUnavailable"


async def test_messages_while_no_model_is_loaded_are_answered_empty_with_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from tests.channels.conftest import modelless_app

    app = modelless_app(tmp_path, {"rest": None})
    caplog.set_level(logging.INFO)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://bot"
    ) as client:
        answers = [
            await client.post("/webhooks/rest/webhook", json={"sender": f"u{i}", "message": "hi"})
            for i in range(5)
        ]
    # As Rasa: an empty list, not an error status a Rasa client would not expect.
    assert [(a.status_code, a.json()) for a in answers] == [(200, [])] * 5
    # Before: one ERROR line per message, flooding the log while the model server is slow.
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    said = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(said) == 1 and "no model is loaded" in said[0]
