"""Two requests to one conversation at once, one through the REST webhook and one through
`/conversations/<id>/messages`: the conversation's lock orders them, as in Rasa."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from tests.serving import serving
from tests.trackers.persistence_fixtures import (
    REDIS,
    delete_redis_keys,
    require_service,
    unique_name,
)


@pytest.mark.parametrize("lock", ["in_memory", "redis"])
async def test_a_message_posted_during_a_webhook_turn_waits_for_it(
    lock: str, make_client: Callable[..., Any]
) -> None:
    nlg = FastAPI()
    slow_turn_running = asyncio.Event()

    @nlg.post("/nlg")
    async def generate(request: Request) -> JSONResponse:
        name = (await request.json())["response"]
        if name == "utter_greet":  # the webhook's turn: slow, while the other one arrives
            slow_turn_running.set()
            await asyncio.sleep(0.5)
        return JSONResponse({"text": name})

    prefix = unique_name("tworoutes")
    lock_store: dict[str, Any] = {"type": "in_memory"}
    if lock == "redis":
        require_service("Redis", REDIS)
        lock_store = {"type": "redis", "url": REDIS[0], "port": REDIS[1], "key_prefix": prefix}
    try:
        async with serving(nlg) as url:
            client = await make_client(
                endpoints={
                    "tracker_store": {"type": "in_memory"},
                    "lock_store": lock_store,
                    "nlg": {"url": f"{url}/nlg"},
                }
            )
            webhook = asyncio.create_task(
                client.post("/webhooks/rest/webhook", json={"sender": "bo", "message": "/greet"})
            )
            await asyncio.wait_for(slow_turn_running.wait(), 30)
            logged = await client.post(
                "/conversations/bo/messages", json={"text": "/mood_great", "sender": "user"}
            )
            assert logged.status_code == 200, logged.text
            assert (await webhook).json() == [{"recipient_id": "bo", "text": "utter_greet"}]
    finally:
        if lock == "redis":
            await delete_redis_keys(prefix, db=1)

    events = (await client.get("/conversations/bo/tracker")).json()["events"]
    said = [(e["event"], e.get("text") or e.get("name")) for e in events]
    greet = said.index(("user", "/greet"))
    assert said[greet + 1 : greet + 4] == [
        ("user_featurization", None),
        ("action", "utter_greet"),
        ("bot", "utter_greet"),
    ]
    assert said[greet + 4 :] == [("action", "action_listen"), ("user", "/mood_great")]
    # The logged message's reply, as the tracker it answered with: after the whole turn.
    assert [e["event"] for e in logged.json()["events"]][-1] == "user"
