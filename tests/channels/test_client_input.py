"""What a client sends is kept exactly as sent, or refused with a 400, whatever the store:
conversation ids a tracker store cannot hold are a 400 on every route that takes one, on
PostgreSQL (which refuses them) as on SQLite (which would have kept them); numbers come back
as sent; and a channel that could not record a message says so instead of answering as if it
had."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from fastapi import APIRouter, Request

from server.api.runner import server_app
from server.api.server import ServerOptions
from server.channels import InputChannel
from server.dialogue.messages import CollectingOutputChannel, UserMessage
from server.training.train import train
from tests.shared_data import MOODBOT
from tests.trackers.persistence_fixtures import postgres_database

NUL_SENDER = "a\x00b"
LONG_SENDER = "x" * 256


@pytest.fixture(scope="module")
def moodbot_archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("models")
    return train(MOODBOT / "config.yml", MOODBOT / "domain.yml", [MOODBOT / "data"], out).path


@pytest.fixture
async def serve(moodbot_archive: Path) -> AsyncIterator[Callable[..., Any]]:
    """`await serve(tracker_store, credentials)`: a client on a started server app."""
    async with AsyncExitStack() as stack:

        async def start(
            tracker_store: dict[str, Any], credentials: dict[str, Any] | None = None
        ) -> httpx.AsyncClient:
            options = ServerOptions(
                model_path=moodbot_archive,
                enable_api=True,
                endpoints={"tracker_store": tracker_store},
                credentials=credentials,
            )
            app = server_app(options, metrics=False)
            await stack.enter_async_context(app.router.lifespan_context(app))
            return await stack.enter_async_context(
                httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bot")
            )

        yield start


async def refused_everywhere(client: httpx.AsyncClient, sender: str) -> None:
    for query in ("", "?stream=true"):
        answer = await client.post(
            f"/webhooks/rest/webhook{query}", json={"sender": sender, "message": "hi"}
        )
        assert answer.status_code == 400, answer.text
        assert "conversation id" in answer.json()["message"]
    tracker = await client.get(f"/conversations/{quote(sender)}/tracker")
    assert tracker.status_code == 400


async def test_ids_postgresql_cannot_hold_are_a_400_not_a_lost_message(serve: Any) -> None:
    """Before, on PostgreSQL the REST webhook answered 200 with no reply (the turn failed on
    the store and the message was lost) and GET /tracker answered 500."""
    async with postgres_database() as store:
        client = await serve(store)
        await refused_everywhere(client, NUL_SENDER)
        await refused_everywhere(client, LONG_SENDER)
        answer = await client.post("/webhooks/rest/webhook", json={"sender": "ok", "message": "hi"})
        assert answer.status_code == 200 and answer.json()[0]["recipient_id"] == "ok"


async def test_the_same_ids_are_refused_on_sqlite(serve: Any, tmp_path: Path) -> None:
    """The same rule on every store: a conversation must not work on SQLite and break after
    moving to PostgreSQL."""
    client = await serve({"type": "sql", "dialect": "sqlite", "db": str(tmp_path / "t.db")})
    await refused_everywhere(client, NUL_SENDER)
    await refused_everywhere(client, LONG_SENDER)


async def test_the_callback_channel_answers_503_when_the_message_could_not_be_recorded(
    serve: Any,
) -> None:
    """Before, it answered "success" and the message was lost."""
    down = {"type": "redis", "url": "127.0.0.1", "port": 1}  # nothing listens on port 1
    client = await serve(down, credentials={"callback": {"url": "http://127.0.0.1:1/bot"}})
    answer = await client.post("/webhooks/callback/webhook", json={"sender": "u", "message": "hi"})
    assert answer.status_code == 503
    bad = await client.post(
        "/webhooks/callback/webhook", json={"sender": NUL_SENDER, "message": "hi"}
    )
    assert bad.status_code == 400


async def test_the_rocketchat_webhook_answers_503_when_the_message_could_not_be_recorded(
    serve: Any,
) -> None:
    """Before, it answered 200, so Rocket.Chat did not retry, and the message was lost."""
    down = {"type": "redis", "url": "127.0.0.1", "port": 1}  # nothing listens on port 1
    rocket = {"user": "bot", "password": "pw", "server_url": "http://127.0.0.1:1"}
    client = await serve(down, credentials={"rocketchat": rocket})
    outgoing = {"channel_id": "GENERAL", "user_id": "U1", "user_name": "u1", "text": "hi"}
    answer = await client.post("/webhooks/rocketchat/webhook", json=outgoing)
    assert answer.status_code == 503
    assert answer.json()["status"] == "failure"


async def test_callback_and_rocketchat_bodies_are_read_as_the_rest_webhook_reads_them(
    serve: Any, tmp_path: Path
) -> None:
    """Before, a body nested too deep for the decoder was a 500 on both, and the callback
    channel stored NaN metadata as null where the REST webhook answers 400."""
    store = {"type": "sql", "dialect": "sqlite", "db": str(tmp_path / "t.db")}
    rocket = {"user": "bot", "password": "pw", "server_url": "http://127.0.0.1:1"}
    credentials = {"callback": {"url": "http://127.0.0.1:1/bot"}, "rocketchat": rocket}
    client = await serve(store, credentials=credentials)
    deep = b'{"sender": "deep", "message": "hi", "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    nan = b'{"sender": "nan", "message": "hi", "metadata": {"a": NaN}}'
    headers = {"Content-Type": "application/json"}
    for body in (deep, nan):
        answer = await client.post("/webhooks/callback/webhook", content=body, headers=headers)
        assert answer.status_code == 400, answer.text
        assert answer.json()["reason"] == "BadRequest"
    ignored = await client.post("/webhooks/rocketchat/webhook", content=deep, headers=headers)
    assert ignored.status_code == 200  # as any body that is not a JSON object
    for sender in ("deep", "nan"):
        tracker = (await client.get(f"/conversations/{sender}/tracker")).json()
        assert not [e for e in tracker["events"] if e["event"] == "user"]


BIG = 123456789012345678901234567890  # beyond 64 bits


async def test_integers_beyond_64_bits_come_back_as_sent(serve: Any, tmp_path: Path) -> None:
    """Before, the SQL store read them back as floats (1.2345678901234568e+29), and the REST
    channel read them as floats already."""
    client = await serve({"type": "sql", "dialect": "sqlite", "db": str(tmp_path / "t.db")})
    await client.post(
        "/webhooks/rest/webhook", json={"sender": "big", "message": "hi", "metadata": {"n": BIG}}
    )
    slot = {"event": "slot", "name": "n", "value": BIG}
    await client.post("/conversations/big/tracker/events", json=[slot])
    client_of_another_process = await serve(
        {"type": "sql", "dialect": "sqlite", "db": str(tmp_path / "t.db")}
    )
    events = (await client_of_another_process.get("/conversations/big/tracker")).json()["events"]
    user = next(e for e in events if e["event"] == "user")
    assert user["metadata"]["n"] == BIG and isinstance(user["metadata"]["n"], int)
    assert events[-1]["value"] == BIG and isinstance(events[-1]["value"], int)


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/webhooks/rest/webhook", b'{"sender": "nan", "message": "hi", "metadata": {"a": NaN}}'),
        ("/conversations/nan/tracker/events", b'[{"event": "slot", "name": "x", "value": NaN}]'),
        ("/model/parse", b'{"text": "hi", "x": Infinity}'),
        # Valid JSON that reads as infinity, and half a surrogate pair: before, stored, and
        # every later GET of the tracker was a 500.
        ("/conversations/nan/tracker/events", b'[{"event": "slot", "name": "x", "value": 1e400}]'),
        ("/webhooks/rest/webhook", b'{"sender": "nan", "message": "hi", "metadata": {"a": 1e400}}'),
        ("/webhooks/rest/webhook", b'{"sender": "nan", "message": "hi \\ud83d"}'),
    ],
)
async def test_nan_and_infinity_are_a_400_and_nothing_is_stored(
    serve: Any, tmp_path: Path, path: str, body: bytes
) -> None:
    """They are not JSON (or not JSON an answer could hold again). Before, the slot event was
    stored (its value as null) and the client got a 500; the REST channel stored the metadata
    with null in place of NaN."""
    client = await serve({"type": "sql", "dialect": "sqlite", "db": str(tmp_path / "t.db")})
    answer = await client.post(path, content=body, headers={"Content-Type": "application/json"})
    assert answer.status_code == 400
    assert answer.json()["reason"] == "BadRequest"
    tracker = (await client.get("/conversations/nan/tracker")).json()
    assert not [e for e in tracker["events"] if e["event"] in ("user", "slot")]


def _nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


async def test_json_nested_more_than_100_levels_is_refused_before_it_is_stored(
    serve: Any, tmp_path: Path
) -> None:
    """Before, only nesting too deep for the decoder (about 1,000 levels) was refused: a slot
    value 900 levels deep was a 500 from the SQL store's encoder, one 600 deep was stored and
    made every later GET /story of the conversation a 500, and the open REST webhook kept
    metadata 900 deep."""
    client = await serve({"type": "sql", "dialect": "sqlite", "db": str(tmp_path / "t.db")})
    headers = {"Content-Type": "application/json"}
    for depth in (101, 600, 900):
        slot = b'[{"event": "slot", "name": "x", "value": ' + _nested(depth) + b"}]"
        events = await client.post(f"/conversations/d{depth}/tracker/events", content=slot)
        assert events.status_code == 400, (depth, events.text)
        assert events.json()["message"] == "The JSON body is nested too deeply."
        story = await client.get(f"/conversations/d{depth}/story")
        assert story.status_code == 404, (depth, story.text)
        message = b'{"sender": "m%d", "message": "hi", "metadata": %s}' % (depth, _nested(depth))
        webhook = await client.post("/webhooks/rest/webhook", content=message, headers=headers)
        assert webhook.status_code == 400, (depth, webhook.text)
    slot = b'[{"event": "slot", "name": "x", "value": ' + _nested(98) + b"}]"
    assert (await client.post("/conversations/ok/tracker/events", content=slot)).status_code == 200
    assert (await client.get("/conversations/ok/story")).status_code == 200


async def test_an_intent_message_whose_entities_nest_5000_deep_is_answered(
    serve: Any, tmp_path: Path
) -> None:
    """Before, `/greet{...}` with entity JSON 5,000 levels deep was a RecursionError in the
    turn: a 500 from the REST webhook and from POST /messages, and no answer."""
    client = await serve({"type": "sql", "dialect": "sqlite", "db": str(tmp_path / "t.db")})
    text = '/greet{"name": ' + "[" * 5000 + "]" * 5000 + "}"
    webhook = await client.post("/webhooks/rest/webhook", json={"sender": "d", "message": text})
    assert webhook.status_code == 200, webhook.text
    assert webhook.json()[0]["recipient_id"] == "d"
    added = await client.post("/conversations/e/messages", json={"text": text, "sender": "user"})
    assert added.status_code == 200, added.text
    assert added.json()["latest_message"]["intent"]["name"] == "greet"
    tracker = (await client.get("/conversations/d/tracker")).json()
    assert tracker["latest_message"]["intent"]["name"] == "greet"
    assert tracker["latest_message"]["entities"] == []


class JsonChannel(InputChannel):
    """docs/channels.md's custom channel: `request.json()` reads with the standard library,
    which takes a lone UTF-16 surrogate (`"\\ud800"`, half an emoji cut by a JavaScript
    client) that no store can encode."""

    name = "mine"

    @classmethod
    def from_credentials(cls, credentials: dict[str, Any] | None) -> JsonChannel:
        return cls()

    def router(self, on_new_message: Any) -> APIRouter:
        router = APIRouter(prefix=self.url_prefix())

        @router.post("/webhook")
        async def receive(request: Request) -> list[dict[str, Any]]:
            body = await request.json()
            out = CollectingOutputChannel()
            await on_new_message(
                UserMessage(body["text"], body["user"], self.name, output_channel=out)
            )
            return out.messages

        return router


async def test_a_custom_channels_sender_with_a_lone_surrogate_is_a_400(
    serve: Any, tmp_path: Path
) -> None:
    """Before, the turn reached the SQLite store, which could not encode the id: a 500 and an
    ERROR traceback in the log, on every message of that sender."""
    store = {"type": "sql", "dialect": "sqlite", "db": str(tmp_path / "t.db")}
    client = await serve(store, credentials={f"{__name__}.JsonChannel": None})
    body = b'{"text": "hi", "user": "a\\ud800b"}'
    answer = await client.post(
        "/webhooks/mine/webhook", content=body, headers={"content-type": "application/json"}
    )
    assert answer.status_code == 400, answer.text
    assert "conversation id" in answer.json()["message"]
    fine = await client.post("/webhooks/mine/webhook", json={"text": "hi", "user": "a\u00e9b"})
    assert fine.status_code == 200 and fine.json()[0]["recipient_id"] == "a\u00e9b"
