"""A turn the response timeout cuts off: its client is answered 503, and the turn runs on to
its end under the conversation's lock and is stored whole, on every tracker store."""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from server import tasks
from server.api import runner
from server.api.server import ServerOptions, build_app
from tests.api.conftest import open_client
from tests.fake_http import serve_json
from tests.trackers.persistence_fixtures import tracker_store_config

STORES = ["memory", "sqlite", "postgres", "mariadb", "redis", "dynamo"]
# Cuts the held turn; the next request (the rest of the cut turn, then its own, on moto's
# DynamoDB too) fits in it on a loaded host.
TIMEOUT = 3.0


@contextmanager
def held_nlg() -> Iterator[tuple[str, threading.Event]]:
    """An NLG server whose answers wait until the yielded event is set (then say "ok")."""
    release = threading.Event()

    def respond(path: str, body: bytes) -> tuple[int, Any]:
        release.wait(60)
        return 200, {"text": "ok"}

    with serve_json(respond) as url:
        try:
            yield f"{url}/nlg", release
        finally:
            release.set()


def turns(tracker: dict[str, Any]) -> list[str]:
    """The user messages and actions of a tracker, in order, after the session's start."""
    named = []
    for event in tracker["events"]:
        if event["event"] == "user":
            named.append(f"user:{event['text']}")
        elif event["event"] == "action" and event["name"] != "action_session_start":
            named.append(event["name"])
    return named


@asynccontextmanager
async def held_server(
    make_client: Callable[..., Any], tmp_path: Path, store: str
) -> AsyncIterator[tuple[Any, threading.Event]]:
    """A client of a server on `store` whose NLG answers wait for the yielded event."""
    async with tracker_store_config(store, tmp_path) as tracker_store:
        with held_nlg() as (nlg, release):
            endpoints = {"tracker_store": tracker_store, "nlg": {"url": nlg}}
            yield await make_client(endpoints=endpoints, response_timeout=TIMEOUT), release


@pytest.mark.parametrize("store", STORES)
async def test_a_message_cut_off_is_answered_503_and_its_turn_is_stored_whole(
    make_client: Callable[..., Any],
    tmp_path: Path,
    store: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Before, the turn was cancelled with its request: the user's message and the bot's
    answer were both lost, and the next message was taken as if the first had never come."""
    caplog.set_level(logging.INFO, logger="server.channels.rest")
    async with held_server(make_client, tmp_path, store) as (client, release):
        cut = await client.post("/webhooks/rest/webhook", json={"sender": "c", "message": "hi"})
        assert cut.status_code == 503, cut.text
        assert cut.json()["reason"] == "ResponseTimeout"
        release.set()
        # Waits for the cut turn's lock, then sees that turn's events.
        after = await client.post(
            "/webhooks/rest/webhook", json={"sender": "c", "message": "great"}
        )
        assert after.status_code == 200, after.text
        assert [m["text"] for m in after.json()] == ["ok"]
        tracker = (await client.get("/conversations/c/tracker")).json()
    assert turns(tracker) == [
        "action_listen",
        "user:hi",
        "utter_greet",
        "action_listen",
        "user:great",
        "utter_happy",
        "action_listen",
    ]
    said = (
        "rest: the turn of a message from c, cut off by the response timeout, ended and was stored"
    )
    assert said in caplog.messages
    # Before, the warning said the request "was cancelled": its turn was not.
    assert (
        "POST /webhooks/rest/webhook took longer than the response timeout of 3.0 s and was "
        "answered 503; its turn runs on to its end and is stored"
    ) in caplog.messages, caplog.messages


@pytest.mark.parametrize("store", ["memory", "sqlite"])
async def test_a_triggered_intent_cut_off_runs_on_and_is_stored_whole(
    make_client: Callable[..., Any], tmp_path: Path, store: str
) -> None:
    """The same for `trigger_intent` (and `execute`): before, the turn was cancelled and
    nothing of it was stored."""
    async with held_server(make_client, tmp_path, store) as (client, release):
        cut = await client.post("/conversations/t/trigger_intent", json={"name": "greet"})
        assert cut.status_code == 503, cut.text
        release.set()
        after = await client.post("/conversations/t/execute", json={"name": "utter_happy"})
        assert after.status_code == 200, after.text
        tracker = (await client.get("/conversations/t/tracker")).json()
    assert turns(tracker) == [
        "action_listen",
        "user:EXTERNAL: greet",
        "utter_greet",
        "action_listen",
        "utter_happy",
    ]


@pytest.mark.parametrize("store", ["memory", "sqlite"])
async def test_a_tracker_read_beside_a_first_turn_does_not_start_its_session_twice(
    make_client: Callable[..., Any], tmp_path: Path, store: str
) -> None:
    """GET /conversations/<id>/tracker of a conversation the store does not hold yet, while
    its first turn runs (a turn the response timeout cut off runs on): the conversation keeps
    one session start. The read does not store the session start it shows (nor does Rasa
    3.6's `fetch_full_tracker_with_initial_session`), so it needs no lock: a read that stored
    it, tried, doubled the session start."""
    async with held_server(make_client, tmp_path, store) as (client, release):
        cut = await client.post("/webhooks/rest/webhook", json={"sender": "g", "message": "hi"})
        assert cut.status_code == 503, cut.text
        read = await client.get("/conversations/g/tracker")
        assert read.status_code == 200, read.text
        release.set()
        after = await client.post(
            "/webhooks/rest/webhook", json={"sender": "g", "message": "great"}
        )
        assert after.status_code == 200, after.text
        tracker = (await client.get("/conversations/g/tracker")).json()
    names = [e.get("name") or e["event"] for e in tracker["events"]]
    assert names.count("session_started") == 1, names


async def test_the_stop_waits_for_a_triggered_intent_cut_off(
    moodbot_model: Path, tmp_path: Path
) -> None:
    """The server stops (the lifespan ends) while a `trigger_intent` the response timeout cut
    off still runs: the stop waits for it in the graceful period and it is stored whole.
    Before, the stop did not wait for it (only channels' turns were counted): the clients
    and the store closed under it and nothing of the turn was stored."""
    async with tracker_store_config("sqlite", tmp_path) as tracker_store:
        with held_nlg() as (nlg, release):
            endpoints = {"tracker_store": tracker_store, "nlg": {"url": nlg}}
            options = ServerOptions(
                model_path=moodbot_model,
                enable_api=True,
                endpoints=endpoints,
                models_dir=tmp_path / "models",
                response_timeout=TIMEOUT,
            )
            app = build_app(options)
            runner._serve_lifecycle(app, options)  # the stop's wait, as `botserver run`
            async with app.router.lifespan_context(app):
                transport = httpx.ASGITransport(app=app)
                async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                    cut = await client.post(
                        "/conversations/s/trigger_intent", json={"name": "greet"}
                    )
                    assert cut.status_code == 503, cut.text
                threading.Timer(1.0, release.set).start()  # as the stop begins
        async with AsyncExitStack() as stack:
            client = await open_client(stack, moodbot_model, tmp_path, endpoints=endpoints)
            tracker = (await client.get("/conversations/s/tracker")).json()
    assert turns(tracker) == [
        "action_listen",
        "user:EXTERNAL: greet",
        "utter_greet",
        "action_listen",
    ]


async def test_past_the_bound_of_turns_running_on_a_cut_off_turn_is_cancelled_whole(
    make_client: Callable[..., Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Turns cut off by the response timeout pile up while an NLG or action server stalls:
    past `MOST_RUNNING_ON` running on, one more is cancelled as before (503, nothing of it
    stored, its lock released at once) with a warning. Before, there was no bound."""
    monkeypatch.setattr(tasks, "MOST_RUNNING_ON", 0)
    async with held_server(make_client, tmp_path, "memory") as (client, release):
        cut = await client.post("/conversations/b/trigger_intent", json={"name": "greet"})
        assert cut.status_code == 503, cut.text
        release.set()
        # Under the conversation's lock: a turn that ran on would be stored by then.
        after = await client.post("/conversations/b/execute", json={"name": "utter_happy"})
        assert after.status_code == 404, after.text  # nothing of the conversation stored
    assert any("this one is cancelled, nothing of it stored" in m for m in caplog.messages)
