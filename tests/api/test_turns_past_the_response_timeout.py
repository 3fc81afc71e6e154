"""A turn the response timeout cuts off: its client is answered 503, and the turn runs on to
its end under the conversation's lock and is stored whole, on every tracker store."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

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
    async with tracker_store_config(store, tmp_path) as tracker_store:
        with held_nlg() as (nlg, release):
            endpoints = {"tracker_store": tracker_store, "nlg": {"url": nlg}}
            client = await make_client(endpoints=endpoints, response_timeout=TIMEOUT)
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


@pytest.mark.parametrize("store", ["memory", "sqlite"])
async def test_a_triggered_intent_cut_off_runs_on_and_is_stored_whole(
    make_client: Callable[..., Any], tmp_path: Path, store: str
) -> None:
    """The same for `trigger_intent` (and `execute`): before, the turn was cancelled and
    nothing of it was stored."""
    async with tracker_store_config(store, tmp_path) as tracker_store:
        with held_nlg() as (nlg, release):
            endpoints = {"tracker_store": tracker_store, "nlg": {"url": nlg}}
            client = await make_client(endpoints=endpoints, response_timeout=TIMEOUT)
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
