"""A stored conversation this server cannot read (Redis: Rasa's one-string layout whose
value is not Rasa's tracker JSON, or a list item that is not JSON; SQL: a row whose data is
not JSON): a 500 with Rasa's error body, a log line naming the conversation and no
traceback, and the stored value as it was."""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import create_async_engine

from server.brokers.export import select_events
from server.trackers.events import event_from_dict
from server.trackers.factory import create_tracker_store
from server.trackers.redis_store import RedisTrackerStore
from server.trackers.sql_engine import async_url
from tests.trackers.persistence_fixtures import (
    REDIS,
    delete_redis_keys,
    require_service,
    unique_name,
)

CORRUPT_RASA_VALUES = {
    "not JSON": '{"events": [',
    "JSON that is not an object": "[1, 2, 3]",
    "an object without events": json.dumps({"name": "ann"}),
    "events that are not a list": json.dumps({"name": "ann", "events": "greet"}),
    # (Before review73: an AttributeError as it was converted, a 500 with a traceback.)
    "events that are not objects": json.dumps({"name": "ann", "events": [1, None]}),
    "empty": "",
    # (Before: a RecursionError, a generic 500 and a traceback in the log.)
    "nested too deeply": '{"events": [' + "[" * 100_000 + "]" * 100_000 + "]}",
}


@pytest.mark.parametrize("value", CORRUPT_RASA_VALUES.values(), ids=CORRUPT_RASA_VALUES.keys())
async def test_rasas_layout_holding_no_tracker_is_a_clear_500_that_keeps_it(
    value: str, make_client: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    """Before: an unmapped error (JSONDecodeError, AttributeError, TypeError), a generic 500
    and a traceback in the log; an object without events was converted to nothing and the
    key deleted. Now the log names the conversation and what is wrong with it, and the key
    still holds what it held."""
    require_service("Redis", REDIS)
    prefix = unique_name("left10corrupt")
    redis = {"type": "redis", "url": REDIS[0], "port": REDIS[1], "key_prefix": prefix}
    other = Redis(host=REDIS[0], port=REDIS[1], decode_responses=True)
    key = f"{prefix}:tracker:ann"
    await other.set(key, value)
    client = await make_client(endpoints={"tracker_store": redis})
    try:
        async for _ in _turns_are_clear_500s(client, caplog, "'ann'", "Rasa's layout"):
            assert await other.get(key) == value  # nothing lost, nothing converted
    finally:
        await other.aclose()
        await delete_redis_keys(prefix)


async def test_a_list_item_that_is_not_json_is_a_clear_500(
    make_client: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    """Before: a JSONDecodeError, a generic 500 and a traceback in the log. (One nested too
    deeply to read is left out: `test_a_stored_event_too_deep_to_serve_is_left_out...`.)"""
    item = "{oops"
    require_service("Redis", REDIS)
    prefix = unique_name("left10corrupt")
    redis = {"type": "redis", "url": REDIS[0], "port": REDIS[1], "key_prefix": prefix}
    other = Redis(host=REDIS[0], port=REDIS[1], decode_responses=True)
    key = f"{prefix}:tracker:bob"
    items = [json.dumps({"event": "action", "name": "action_listen", "timestamp": 1.0}), item]
    await other.rpush(key, *items)
    client = await make_client(endpoints={"tracker_store": redis})
    try:
        await _reads_are_clear_500s(client, "bob", caplog)
        assert await other.lrange(key, 0, -1) == items
    finally:
        await other.aclose()
        await delete_redis_keys(prefix)


@pytest.mark.parametrize(
    "broken",
    [b"not json", b"\xff{", b'{"events": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"],
    ids=["not JSON", "not UTF-8", "nested too deeply"],
)
async def test_retention_keeps_a_corrupt_conversation_and_prunes_the_others(
    broken: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    """Before: the first conversation of Rasa's layout that was not JSON stopped the prune
    with a JSONDecodeError, and old conversations after it stayed. Now it is kept, with a
    warning naming it, and the prune goes on."""
    require_service("Redis", REDIS)
    prefix = unique_name("left10corrupt")
    store = RedisTrackerStore(
        {"type": "redis", "url": REDIS[0], "port": REDIS[1], "key_prefix": prefix}
    )
    other = Redis(host=REDIS[0], port=REDIS[1])
    old = {"event": "action", "name": "action_listen", "timestamp": 1.0}
    try:
        await other.set(f"{prefix}:tracker:broken", broken)
        for name in ("old1", "old2", "old3"):
            await store.append(name, [old])
        with caplog.at_level(logging.WARNING):
            deleted = await store.delete_older_than(time.time())
        assert deleted == 3
        assert sorted(await store.keys()) == ["broken"]
        assert await other.get(f"{prefix}:tracker:broken") == broken
        assert any("'broken'" in r.getMessage() for r in caplog.records)
    finally:
        await store.close()
        await other.aclose()
        await delete_redis_keys(prefix)


async def _turns_are_clear_500s(
    client: Any, caplog: pytest.LogCaptureFixture, *said: str
) -> AsyncIterator[None]:
    """Reading conversation `ann` and a turn on it (the API's and the REST channel's): each
    a 500 with Rasa's body, nothing of the store in it, and an error line in the log, without
    a traceback, holding each of `said`. Yields after each, for a look at what is stored."""
    for method, path, body in [
        ("GET", "/conversations/ann/tracker", None),
        ("POST", "/conversations/ann/messages", {"text": "hello", "sender": "user"}),
        ("POST", "/webhooks/rest/webhook", {"sender": "ann", "message": "hello"}),
    ]:
        caplog.clear()
        with caplog.at_level(logging.INFO):
            response = await client.request(method, path, json=body)
        assert response.status_code == 500, (path, response.text)
        answer = response.json()
        assert answer["reason"] == "ServerError" and answer["code"] == 500, answer
        assert "Traceback" not in response.text and "events" not in response.text
        errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert errors and not any(r.exc_info for r in errors), path
        logged = "\n".join(r.getMessage() for r in errors)
        assert all(words in logged for words in said), logged
        yield


async def _reads_are_clear_500s(
    client: Any, sender_id: str, caplog: pytest.LogCaptureFixture, why: str = "not JSON"
) -> None:
    """Reading the conversation (its tracker, its story) is a 500 with Rasa's body, and the
    log's error line names it and `why` (the event that is not JSON), without a traceback."""
    for path in [f"/conversations/{sender_id}/tracker", f"/conversations/{sender_id}/story"]:
        caplog.clear()
        with caplog.at_level(logging.INFO):
            response = await client.get(path)
        assert response.status_code == 500, (path, response.text)
        assert response.json()["reason"] == "ServerError"
        errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert errors and not any(r.exc_info for r in errors), path
        logged = "\n".join(r.getMessage() for r in errors)
        assert f"'{sender_id}'" in logged and why in logged, logged


async def test_an_sql_row_that_is_not_json_is_a_clear_500(
    make_client: Callable[..., Any], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Before: a JSONDecodeError, a generic 500 and a traceback in the log. (Data nested too
    deeply to read is left out: `test_a_stored_event_too_deep_to_serve_is_left_out...`.)"""
    data = "{oops"
    stored = {"type": "sql", "dialect": "sqlite", "db": str(tmp_path / "trackers.db")}
    store = create_tracker_store(stored)
    listen = {"event": "action", "name": "action_listen", "timestamp": time.time()}
    try:
        await store.append("cy", [listen, listen])
    finally:
        await store.close()
    with sqlite3.connect(tmp_path / "trackers.db") as db:
        db.execute("UPDATE events SET data = ? WHERE id = (SELECT MAX(id) FROM events)", (data,))
    client = await make_client(endpoints={"tracker_store": stored})
    await _reads_are_clear_500s(client, "cy", caplog)
    with sqlite3.connect(tmp_path / "trackers.db") as db:
        assert db.execute("SELECT data FROM events ORDER BY id").fetchall()[-1] == (data,)


@pytest.mark.parametrize("layout", ["Rasa's", "a list"])
async def test_a_value_that_is_not_utf8_is_a_clear_500_that_keeps_it(
    layout: str, make_client: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    """Bytes that are no UTF-8 text (Rasa's string, or a list item): before review73, a
    UnicodeDecodeError as Redis's answer was read, a generic 500 with a traceback, and
    `botserver export` a traceback."""
    require_service("Redis", REDIS)
    prefix = unique_name("review73utf8")
    redis = {"type": "redis", "url": REDIS[0], "port": REDIS[1], "key_prefix": prefix}
    raw = Redis(host=REDIS[0], port=REDIS[1])  # bytes in, bytes out
    key = f"{prefix}:tracker:dee"
    listen = json.dumps({"event": "action", "name": "action_listen", "timestamp": 1.0})
    if layout == "Rasa's":
        await raw.set(key, b'{"events": [\xff]}')
    else:
        await raw.rpush(key, listen, b"\xff\xfe")
    stored = await raw.dump(key)
    client = await make_client(endpoints={"tracker_store": redis})
    try:
        await _reads_are_clear_500s(client, "dee", caplog, why="not UTF-8 text")
        assert await raw.dump(key) == stored  # kept as it was
        # The other conversations are served as before (the connection that read it is sane).
        response = await client.get("/conversations/eve/tracker")
        assert response.status_code == 200 and response.json()["sender_id"] == "eve"
    finally:
        await raw.aclose()
        await delete_redis_keys(prefix)


async def test_retention_keeps_a_long_list_holding_an_item_that_is_not_utf8(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A list too long for the prune script is read back by the prune itself: an item that
    is not UTF-8 text there keeps the conversation, with a warning naming it, and the prune
    goes on. Before review73: a UnicodeDecodeError with a traceback stopped the prune."""
    require_service("Redis", REDIS)
    prefix = unique_name("review73long")
    store = RedisTrackerStore(
        {"type": "redis", "url": REDIS[0], "port": REDIS[1], "key_prefix": prefix}
    )
    raw = Redis(host=REDIS[0], port=REDIS[1])
    old = json.dumps({"event": "action", "name": "action_listen", "timestamp": 1.0})
    try:
        await raw.rpush(f"{prefix}:tracker:long", b"\xff", *[old] * 150)
        await raw.rpush(f"{prefix}:tracker:other", old)
        with caplog.at_level(logging.WARNING):
            assert await store.delete_older_than(time.time()) == 1
        assert await store.keys() == ["long"]
        assert any("'long'" in r.getMessage() for r in caplog.records)
        assert await raw.llen(f"{prefix}:tracker:long") == 151
    finally:
        await store.close()
        await raw.aclose()
        await delete_redis_keys(prefix)


async def test_a_key_name_that_is_not_utf8_is_skipped_by_prune_and_export(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A key under the store's prefix whose name is not UTF-8 (written by another program):
    before, SCAN's answer failed to decode, and the prune and `botserver export` stopped with
    a UnicodeDecodeError. Now it is left alone with one warning naming it, the rest done."""
    require_service("Redis", REDIS)
    prefix = unique_name("left14keyname")
    store = RedisTrackerStore(
        {"type": "redis", "url": REDIS[0], "port": REDIS[1], "key_prefix": prefix}
    )
    raw = Redis(host=REDIS[0], port=REDIS[1])
    odd = f"{prefix}:tracker:".encode() + b"\xff\xfe"
    old = {"event": "action", "name": "action_listen", "timestamp": 1.0}
    try:
        await raw.rpush(odd, json.dumps(old))
        for name in ("old1", "old2"):
            await store.append(name, [old])
        await store.append("new", [{**old, "timestamp": time.time() + 60}])

        with caplog.at_level(logging.WARNING):
            assert await store.delete_older_than(time.time()) == 2
        warned = [r.getMessage() for r in caplog.records if repr(odd) in r.getMessage()]
        assert len(warned) == 1, [r.getMessage() for r in caplog.records]
        assert await raw.llen(odd) == 1

        caplog.clear()
        with caplog.at_level(logging.WARNING):
            selection = await select_events(store)
        assert selection.conversations == ["new"]
        assert [r.getMessage() for r in caplog.records if repr(odd) in r.getMessage()]
    finally:
        await store.close()
        await raw.aclose()
        await delete_redis_keys(prefix)


@pytest.mark.parametrize(
    "events", [None, {"S": "[]"}], ids=["no events attribute", "events that are no list"]
)
async def test_a_dynamodb_item_holding_no_event_list_is_a_clear_500_that_keeps_it(
    events: dict[str, Any] | None,
    make_client: Callable[..., Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Another program's DynamoDB item (or one whose events were removed by hand): a turn on
    it answers as Redis's object without events does, a 500 with Rasa's body and a log line
    naming it, and the item is left as it was. Before, an item without `events` read as an
    empty conversation, and the turn's append wrote a new list into it."""
    import boto3

    from tests.trackers.persistence_fixtures import (
        delete_dynamo_table,
        moto_credentials,
        moto_endpoint,
    )

    with moto_credentials():
        endpoint = moto_endpoint()
        table = unique_name("corruptdyn")
        dynamo = {"type": "dynamo", "table_name": table, "endpoint_url": endpoint}
        store = create_tracker_store(dynamo)
        try:
            await store.ping()  # (makes the table)
        finally:
            await store.close()
        raw = boto3.client("dynamodb", region_name="us-east-1", endpoint_url=endpoint)
        item: dict[str, Any] = {"sender_id": {"S": "ann"}, "name": {"S": "ann"}}
        if events is not None:
            item["events"] = events
        raw.put_item(TableName=table, Item=item)
        client = await make_client(endpoints={"tracker_store": dynamo})
        try:
            async for _ in _turns_are_clear_500s(client, caplog, "Conversation 'ann'"):
                kept = raw.get_item(TableName=table, Key={"sender_id": {"S": "ann"}})["Item"]
                assert kept == item  # nothing lost, nothing written into it
        finally:
            delete_dynamo_table(endpoint, table)


# A slot event another program stored, `levels` lists and objects deep: readable as JSON
# (up to about 1,000), too deep to serve (more than 500).
def _deep_slot(levels: int, at: float) -> str:
    event = json.dumps({"event": "slot", "name": "x", "timestamp": at, "value": "DEEP"})
    return event.replace('"DEEP"', "[" * (levels - 1) + "]" * (levels - 1))


async def _stored_with_deep_last_event(
    kind: str, config: dict[str, Any], sender_id: str, deep: str
) -> Callable[[], Any]:
    """Conversation `sender_id` stored as an action listen, then `deep` written raw as
    another program would (Redis: a list item; SQL: a row's data; DynamoDB: an event kept
    as text). Returns a coroutine function giving the deep event's text as the store holds it."""
    # As this server stores it: the message id of what follows is chained to its hash.
    listen = event_from_dict(
        {"event": "action", "name": "action_listen", "timestamp": time.time() - 5}
    ).as_dict()
    if kind == "redis":
        other = Redis(host=REDIS[0], port=REDIS[1], decode_responses=True)
        key = f"{config['key_prefix']}:tracker:{sender_id}"
        await other.rpush(key, json.dumps(listen), deep)
        await other.aclose()

        async def redis_raw() -> Any:
            client = Redis(host=REDIS[0], port=REDIS[1], decode_responses=True)
            try:
                return await client.lindex(key, 1)
            finally:
                await client.aclose()

        return redis_raw
    if kind == "dynamo":
        import boto3

        store = create_tracker_store(config)
        try:
            await store.ping()  # (makes the table)
        finally:
            await store.close()
        raw = boto3.client("dynamodb", region_name="us-east-1", endpoint_url=config["endpoint_url"])
        item = {
            "sender_id": {"S": sender_id},
            "events": {"L": [{"M": _dynamo_map(listen)}, {"S": deep}]},
        }
        await asyncio.to_thread(raw.put_item, TableName=config["table_name"], Item=item)

        async def dynamo_raw() -> Any:
            key = {"sender_id": {"S": sender_id}}
            got = await asyncio.to_thread(raw.get_item, TableName=config["table_name"], Key=key)
            return got["Item"]["events"]["L"][1]["S"]

        return dynamo_raw
    store = create_tracker_store(config)
    try:
        await store.append(sender_id, [listen, listen])
    finally:
        await store.close()
    engine = create_async_engine(async_url(config, default_db="rasa"))
    try:
        async with engine.begin() as connection:
            newest = sqlalchemy.text("SELECT MAX(id) FROM events")
            last = (await connection.execute(newest)).scalar()
            await connection.execute(
                sqlalchemy.text("UPDATE events SET data = :data WHERE id = :id"),
                {"data": deep, "id": last},
            )
    finally:
        await engine.dispose()

    async def sql_raw() -> Any:
        reader = create_async_engine(async_url(config, default_db="rasa"))
        try:
            async with reader.connect() as connection:
                chosen = sqlalchemy.text("SELECT data FROM events WHERE id = :id")
                return (await connection.execute(chosen, {"id": last})).scalar()
        finally:
            await reader.dispose()

    return sql_raw


def _dynamo_map(event: dict[str, Any]) -> dict[str, Any]:
    """An event's DynamoDB map, as boto3's serializer writes it (scalars and maps)."""
    return {key: _dynamo_value(value) for key, value in event.items()}


def _dynamo_value(value: Any) -> dict[str, Any]:
    if value is None:
        return {"NULL": True}
    if isinstance(value, bool):
        return {"BOOL": value}
    if isinstance(value, str):
        return {"S": value}
    if isinstance(value, dict):
        return {"M": _dynamo_map(value)}
    return {"N": repr(value)}


# 980 levels: read (orjson's limit is 1,024; the stdlib's, Python's recursion limit, less
# the stack it is read at), too deep to write back. 100,000: too deep for any reader.
@pytest.mark.parametrize(
    ("kind", "levels"),
    [
        *[(kind, 980) for kind in ("sqlite", "postgres", "mariadb", "redis", "dynamo")],
        ("sqlite", 100_000),
        ("redis", 100_000),
    ],
)
async def test_a_stored_event_too_deep_to_serve_is_left_out_and_the_conversation_goes_on(
    kind: str,
    levels: int,
    tracker_store: Callable[..., Any],
    make_client: Callable[..., Any],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An event another program stored, nested more than 500 levels deep. Before: from some
    936 levels its tracker was a 500 with a traceback (RecursionError), and with a broker
    every turn too; one too deep to read was a 500 naming it, on every turn. The conversation
    was stuck for good. Now every reader of the store leaves it out, with a warning naming
    the conversation, and the conversation goes on; the store keeps the event as it was."""
    deep = _deep_slot(levels, time.time() - 4)
    config = await tracker_store(kind, tmp_path)
    raw = await _stored_with_deep_last_event(kind, config, "deb", deep)
    client = await make_client(endpoints={"tracker_store": config})
    with caplog.at_level(logging.WARNING):
        response = await client.get("/conversations/deb/tracker")
    assert response.status_code == 200, response.text
    assert [e["event"] for e in response.json()["events"]] == ["action"]
    warned = [r.getMessage() for r in caplog.records if "'deb'" in r.getMessage()]
    assert any("nested more than 500 levels" in line for line in warned), warned
    for _ in range(2):
        turn = await client.post(
            "/conversations/deb/messages", json={"text": "hello", "sender": "user"}
        )
        assert turn.status_code == 200, turn.text
    story = await client.get("/conversations/deb/story")
    assert story.status_code == 200 and "hello" in story.text, story.text
    tracker = (await client.get("/conversations/deb/tracker")).json()
    assert [e["event"] for e in tracker["events"]] == ["action", "user", "user"]
    assert await raw() == deep  # the store keeps the deep event as it was
    store = create_tracker_store(config)
    try:
        selected = (await select_events(store, ["deb"])).selected
    finally:
        await store.close()
    assert [json.loads(item.text)["event"] for item in selected] == ["action", "user", "user"]


async def test_a_turn_after_an_event_too_deep_to_serve_is_chained_as_export_chains_it(
    rabbitmq: dict[str, Any],
    make_client: Callable[..., Any],
    tmp_path: Path,
) -> None:
    """Before: every turn hashed the deep event as the one before (a RecursionError, a 500
    on every message); `botserver export` skipped it and chained the next event to the one
    before it. Now the turn's messages name what export names: the same ids, chained alike."""
    from server.brokers.ordering import PREVIOUS_ID_HEADER
    from tests.brokers.test_rabbitmq_broker import consume

    config = {"type": "sql", "dialect": "sqlite", "db": str(tmp_path / "trackers.db")}
    deep = _deep_slot(980, time.time() - 4)
    await _stored_with_deep_last_event("sqlite", config, "deb", deep)
    client = await make_client(endpoints={"tracker_store": config, "event_broker": rabbitmq})
    turn = await client.post(
        "/conversations/deb/messages", json={"text": "hello", "sender": "user"}
    )
    assert turn.status_code == 200, turn.text
    [message] = await consume(rabbitmq["queues"][0], expected=1)
    live = {message.message_id: (message.headers or {}).get(PREVIOUS_ID_HEADER)}
    store = create_tracker_store(config)
    try:
        selected = (await select_events(store, ["deb"])).selected
    finally:
        await store.close()
    exported = {item.message_id: item.previous_id for item in selected}
    assert len(exported) == 2 and live.items() <= exported.items(), (live, exported)
