"""Redis dropping a connection while a conversation of Rasa's layout (one JSON string) is
turned into our list on first read: the client gets the conversation, or a 503 to retry
while Redis is away; the string is never lost nor half converted."""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from redis.asyncio import Redis

from bench.tcp_proxy import TcpProxy, free_port
from server.trackers import redis_store as module
from tests.trackers.persistence_fixtures import (
    REDIS,
    delete_redis_keys,
    require_service,
    unique_name,
)
from tests.trackers.test_redis_client import drop

RASA_EVENTS = [
    {"event": "action", "name": "action_session_start", "timestamp": 1.0},
    {"event": "session_started", "timestamp": 1.0},
    {"event": "action", "name": "action_listen", "timestamp": 1.0},
    {"event": "user", "text": "hi", "parse_data": {"intent": {"name": "greet"}}, "timestamp": 2.0},
]


async def stored_by_rasa(make_client: Callable[..., Any], name: str) -> tuple[str, str, Redis, Any]:
    """Conversation "ann" as Rasa stores it (one JSON string) under a prefix of its own, and
    a server with that Redis as its tracker store: the prefix, the key, a client of its own
    to look at Redis, and the server's client."""
    require_service("Redis", REDIS)
    prefix = unique_name(name)
    redis = {"type": "redis", "url": REDIS[0], "port": REDIS[1], "key_prefix": prefix}
    other = Redis(host=REDIS[0], port=REDIS[1], decode_responses=True)
    key = f"{prefix}:tracker:ann"
    await other.set(key, json.dumps({"sender_id": "ann", "events": RASA_EVENTS}))
    return prefix, key, other, await make_client(endpoints={"tracker_store": redis})


async def test_a_connection_dropped_while_rasas_layout_is_converted_is_retried(
    make_client: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The connection watching the string drops (Redis's `timeout`, a failover) after the
    string was read: its transaction fails as if the key had changed. Before, the store took
    that for another process's conversion, read the key as a list again and answered a 500
    (`StoreFailed`, WRONGTYPE). Now it looks again and converts: the client gets the
    conversation, and the key is our list of Rasa's events."""
    prefix, key, other, client = await stored_by_rasa(make_client, "left9layout")
    convert, watch = module.off_loop_if_long, module.watched
    watching: list[tuple[Redis, Any]] = []  # each transaction's client and pipeline
    dropped: list[Any] = []

    @contextlib.asynccontextmanager
    async def noted(redis_client: Redis, *keys: str) -> AsyncIterator[Any]:
        async with watch(redis_client, *keys) as pipe:
            watching.append((redis_client, pipe))
            yield pipe

    async def dropping_the_watching_connection(function: Any, items: Any) -> Any:
        if function is module._encoded and not dropped:  # the string was read
            redis_client, pipe = watching[-1]
            await drop(redis_client, pipe.connection, by=other)
            dropped.append(pipe)
        return await convert(function, items)

    monkeypatch.setattr(module, "watched", noted)
    monkeypatch.setattr(module, "off_loop_if_long", dropping_the_watching_connection)
    try:
        response = await client.get("/conversations/ann/tracker")
        assert response.status_code == 200, response.text
        assert dropped
        assert [e["event"] for e in response.json()["events"]] == [e["event"] for e in RASA_EVENTS]
        assert await other.type(key) == "list"
        assert [json.loads(item) for item in await other.lrange(key, 0, -1)] == RASA_EVENTS
    finally:
        await other.aclose()
        await delete_redis_keys(prefix)


async def test_redis_gone_while_rasas_layout_is_converted_is_a_503_and_loses_nothing(
    make_client: Callable[..., Any],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Redis goes away after the string was read: a 503 with Rasa's error body and a
    Retry-After, a log line, and the string as it was; once Redis is back the same request
    converts it and answers the conversation."""
    require_service("Redis", REDIS)
    proxy = TcpProxy(REDIS, port=free_port())
    await proxy.restore()
    prefix = unique_name("left9layout")
    redis = {"type": "redis", "url": REDIS[0], "port": proxy.port, "key_prefix": prefix}
    other = Redis(host=REDIS[0], port=REDIS[1], decode_responses=True)
    key = f"{prefix}:tracker:ann"
    stored = json.dumps({"sender_id": "ann", "events": RASA_EVENTS})
    await other.set(key, stored)
    client = await make_client(endpoints={"tracker_store": redis})
    convert = module.off_loop_if_long
    away = [True]

    async def redis_goes_away(function: Any, items: Any) -> Any:
        if function is module._encoded and away[0]:
            await proxy.cut()
        return await convert(function, items)

    monkeypatch.setattr(module, "off_loop_if_long", redis_goes_away)
    try:
        with caplog.at_level(logging.WARNING):
            response = await client.get("/conversations/ann/tracker")
        assert response.status_code == 503, response.text
        body = response.json()
        assert body["status"] == "failure" and body["code"] == 503, body
        assert body["reason"] == "ServiceUnavailable", body
        assert response.headers["retry-after"]
        assert "Traceback" not in response.text
        assert any("tracker store" in r.getMessage().lower() for r in caplog.records)
        assert await other.get(key) == stored  # nothing lost, nothing half converted

        away[0] = False
        await proxy.restore()
        response = await client.get("/conversations/ann/tracker")
        assert response.status_code == 200, response.text
        assert len(response.json()["events"]) == len(RASA_EVENTS)
        assert [json.loads(item) for item in await other.lrange(key, 0, -1)] == RASA_EVENTS
    finally:
        await proxy.cut()
        await other.aclose()
        await delete_redis_keys(prefix)


async def test_a_connection_dropped_before_rasas_layout_is_read_is_retried(
    make_client: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The connection watching the string drops before the string is read (a failover, or
    the read of a long string cut): redis-py then fails the read itself as a transaction
    whose watch was lost. Before, that escaped the retry and the client got a 500 (StoreFailed,
    'reconnected while watching keys'). Now it is looked at again: the conversation, and the
    key is our list."""
    prefix, key, other, client = await stored_by_rasa(make_client, "review69layout")
    watch = module.watched
    dropped: list[Any] = []

    @contextlib.asynccontextmanager
    async def dropping_once_watched(redis_client: Redis, *keys: str) -> AsyncIterator[Any]:
        async with watch(redis_client, *keys) as pipe:
            if not dropped:
                await drop(redis_client, pipe.connection, by=other)
                dropped.append(pipe)
            yield pipe

    monkeypatch.setattr(module, "watched", dropping_once_watched)
    try:
        response = await client.get("/conversations/ann/tracker")
        assert dropped
        assert response.status_code == 200, response.text
        assert [e["event"] for e in response.json()["events"]] == [e["event"] for e in RASA_EVENTS]
        assert [json.loads(item) for item in await other.lrange(key, 0, -1)] == RASA_EVENTS
    finally:
        await other.aclose()
        await delete_redis_keys(prefix)
