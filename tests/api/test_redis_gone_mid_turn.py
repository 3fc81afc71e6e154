"""Redis going away in the middle of a turn (lock store and tracker store on it): the client
gets a 503 to retry, nothing of the turn is half-stored, and the conversation goes on at
once when Redis is back."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from bench.tcp_proxy import TcpProxy, free_port
from server.trackers.redis_store import RedisTrackerStore
from tests.loop_lag import paced
from tests.serving import serving
from tests.trackers.persistence_fixtures import (
    REDIS,
    delete_redis_keys,
    require_service,
    unique_name,
)


@pytest.mark.timing
async def test_a_turn_redis_left_midway_is_a_503_and_the_next_one_goes_on_at_once(
    make_client: Callable[..., Any],
) -> None:
    require_service("Redis", REDIS)
    proxy = TcpProxy(REDIS, port=free_port())
    await proxy.restore()
    prefix = unique_name("midturn")
    nlg = FastAPI()
    cut_at: list[str] = []

    @nlg.post("/nlg")
    async def generate(request: Request) -> JSONResponse:
        text = (await request.json())["response"]
        if text in cut_at:  # the turn has loaded and holds the lock: Redis goes away
            await proxy.cut()
        return JSONResponse({"text": text})

    redis = {"type": "redis", "url": REDIS[0], "port": proxy.port, "key_prefix": prefix}
    store = RedisTrackerStore({**redis, "port": REDIS[1]})  # the conversation as stored
    try:
        async with serving(nlg) as url:
            client = await make_client(
                endpoints={
                    "tracker_store": redis,
                    "lock_store": {**redis, "lock_lifetime": 30},
                    "nlg": {"url": f"{url}/nlg"},
                }
            )
            hello = {"sender": "ann", "message": "/greet"}
            first = await client.post("/webhooks/rest/webhook", json=hello)
            assert first.json() == [{"recipient_id": "ann", "text": "utter_greet"}]
            stored = list(await store.load("ann") or [])

            cut_at.append("utter_happy")
            great = {"sender": "ann", "message": "/mood_great"}
            response = await client.post("/webhooks/rest/webhook", json=great)
            assert response.status_code == 503, response.text
            assert response.headers["retry-after"]
            assert list(await store.load("ann") or []) == stored  # nothing half-stored

            await proxy.restore()
            cut_at.clear()
            started = time.monotonic()
            response = await client.post("/webhooks/rest/webhook", json=great)
            assert response.json() == [{"recipient_id": "ann", "text": "utter_happy"}]
            # Not the 30 s lease the lost turn held.
            assert time.monotonic() - started < paced(5, below=25)
            events = [e["event"] for e in await store.load("ann") or []]
            assert events[: len(stored)] == [e["event"] for e in stored]
            assert events.count("user") == 2
    finally:
        await store.close()
        await proxy.cut()
        await delete_redis_keys(prefix)
        await delete_redis_keys(prefix, db=1)
